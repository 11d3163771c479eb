"""What is specific to ``lmdb://``: map growth across processes, reader slots, fork safety, URL
options, a SIGKILL inside a write transaction, long keys and bounded sweeping.

The shared suites (conformance, bad input, concurrency, faults, properties, async contract) run on
lmdb too, through ``tests/conftest.py``; these tests cover what they cannot see.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sharedstate import Store
from sharedstate.backends import backend_from_url
from sharedstate.errors import BackendUnavailableError
from tests import servers

lmdb = pytest.importorskip("lmdb") if not servers.IN_CI else __import__("lmdb")

from sharedstate.backends.lmdb import (  # noqa: E402 - after the skip: needs the lmdb module
    DEFAULT_MAP_SIZE,
    DEFAULT_MAX_READERS,
    MAX_DIRECT_KEY,
    LMDBBackend,
)

SMALL_MAP = 64 * 1024
FORK = multiprocessing.get_context("fork")


def url_of(tmp_path: Path, query: str = "") -> str:
    return f"lmdb:///{tmp_path}/state.lmdb" + (f"?{query}" if query else "")


def entries_in(backend: LMDBBackend) -> tuple[int, int]:
    """(entries, expiry index rows) stored now, expired ones included."""
    shared = backend._env()
    with shared.env.begin() as txn:
        return (
            txn.stat(shared.main)["entries"] - 1,  # the main database also holds the index's record
            txn.stat(shared.expiry)["entries"],
        )


# -- a full map grows, in every process --------------------------------------------------------


def _fill(url: str, prefix: str, count: int, size: int) -> None:
    with Store(url, namespace="grow") as store:
        for i in range(count):
            store.backend.set(f"grow/{prefix}{i}", bytes([i % 256]) * size)


def test_full_map_grows_across_processes(tmp_path: Path) -> None:
    """A 64 KiB map takes 2 MB from a child process (it grows, nothing is lost), and the parent,
    which opened the environment with the small map before, then reads all of it and writes more."""
    url = url_of(tmp_path, f"map_size={SMALL_MAP}")
    parent = backend_from_url(url)
    parent.set("grow/first", b"x")  # the parent's map is the small one
    child = FORK.Process(target=_fill, args=(url, "c", 500, 4000))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    for i in range(500):
        entry = parent.get(f"grow/c{i}")
        assert entry is not None and entry.value == bytes([i % 256]) * 4000
    for i in range(500):  # and the parent's own writes past its small map succeed
        parent.set(f"grow/p{i}", b"y" * 4000)
    assert sum(1 for _ in parent.scan("grow/")) == 1001
    assert isinstance(parent, LMDBBackend)
    assert parent._env().map_size > SMALL_MAP
    parent.close()


def test_full_map_grows_under_threads(tmp_path: Path) -> None:
    """Threads of one process filling a small map: every write lands, none fails."""
    backend = backend_from_url(url_of(tmp_path, f"map_size={SMALL_MAP}"))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                backend.set(f"t{n}/{i}", b"z" * 2000)
                backend.incr("total")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    total = backend.get("total")
    assert total is not None and total.value == 1600
    backend.close()


# -- reader slots -------------------------------------------------------------------------------


def test_many_threads_count_exactly(tmp_path: Path) -> None:
    """64 threads of one process (each a reader and a writer) with the default reader slots."""
    backend = backend_from_url(url_of(tmp_path))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(100):
                backend.incr("n")
                backend.get("n")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    entry = backend.get("n")
    assert entry is not None and entry.value == 6400
    backend.close()


def _hold_readers(path: str, count: int, ready: Any, release: Any) -> None:
    env = lmdb.open(path, max_readers=count, max_dbs=2)
    txns = [env.begin() for _ in range(count)]
    ready.set()
    release.wait(60)
    for txn in txns:
        txn.abort()


def test_reader_slots_exhausted_is_a_clear_error(tmp_path: Path) -> None:
    """Every reader slot taken by another process: a clear error that says nothing was applied and
    names the option to raise; once they are free, reads work again."""
    url = url_of(tmp_path, "max_readers=2")
    backend = backend_from_url(url)
    backend.set("k", b"v")
    backend.close()
    ready, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold_readers, args=(f"{tmp_path}/state.lmdb", 2, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        backend = backend_from_url(url)
        with pytest.raises(BackendUnavailableError) as caught:
            backend.get("k")
        assert caught.value.applied is False
        assert "max_readers" in str(caught.value)
    finally:
        release.set()
        holder.join(30)
    assert backend.get("k") is not None
    backend.close()


# -- fork safety ---------------------------------------------------------------------------------


def _use_inherited(backend: LMDBBackend, out: Any) -> None:
    parent_env = backend._shared.env if backend._shared is not None else None
    for _ in range(500):
        backend.incr("forked")
    out.put(backend._env().env is not parent_env)


def test_forked_child_opens_its_own_environment(tmp_path: Path) -> None:
    """A child forked while the parent's environment is open (and in use by a thread) uses an
    environment of its own; both keep counting exactly, and the parent goes on after the child."""
    backend = backend_from_url(url_of(tmp_path))
    assert isinstance(backend, LMDBBackend)
    backend.incr("forked")
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            backend.get("forked")

    busy = threading.Thread(target=reader)
    busy.start()
    out = FORK.Queue()
    try:
        children = [FORK.Process(target=_use_inherited, args=(backend, out)) for _ in range(3)]
        for child in children:
            child.start()
        for _ in range(500):
            backend.incr("forked")
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        assert [out.get(timeout=10) for _ in children] == [True, True, True]
    finally:
        stop.set()
        busy.join()
    entry = backend.get("forked")
    assert entry is not None and entry.value == 1 + 500 + 3 * 500
    backend.close()


def _incr_once(backend: LMDBBackend) -> None:
    backend.incr("forked")


def test_fork_while_another_thread_opens_the_environment(tmp_path: Path) -> None:
    """A fork that lands while another thread holds the lock a backend opens its environment
    under: the child (where that thread does not exist) still opens its own, instead of waiting
    forever for a lock nobody will release."""
    backend = backend_from_url(url_of(tmp_path))
    assert isinstance(backend, LMDBBackend)
    backend.incr("forked")
    with backend._open_lock:  # as if a thread of this process were inside _open at the fork
        child = FORK.Process(target=_incr_once, args=(backend,))
        child.start()
        child.join(20)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0
    entry = backend.get("forked")
    assert entry is not None and entry.value == 2
    backend.close()


# -- a SIGKILL inside a write transaction ---------------------------------------------------------


def _die_inside_write(backend: LMDBBackend, ready: Any) -> None:
    def op(txn: Any, shared: Any) -> None:
        txn.put(b"victim/half", b"never committed")
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)

    backend._write(op)


def test_sigkill_inside_write_transaction(tmp_path: Path) -> None:
    """A process killed while it holds LMDB's write mutex: the next writer proceeds at once (LMDB
    recovers the robust mutex), its uncommitted write never appears, and every acknowledged write
    is still there."""
    backend = backend_from_url(url_of(tmp_path))
    for _ in range(100):
        backend.incr("acked")
    ready = FORK.Event()
    victim = FORK.Process(target=_die_inside_write, args=(backend, ready))
    victim.start()
    assert ready.wait(30)
    victim.join(30)
    assert victim.exitcode == -signal.SIGKILL
    started = time.monotonic()
    assert backend.incr("acked") == 101
    assert time.monotonic() - started < 5
    assert backend.get("victim/half") is None
    backend.close()


def _write_until_stopped(url: str, key: str, started: Any, stop: Any) -> None:
    backend = backend_from_url(url)
    backend.incr(key)
    started.set()
    while not stop.is_set():
        backend.incr("contended")
        backend.incr(key)
    backend.close()


def _write_until_killed(url: str, started: Any) -> None:
    """The victim's loop: it never looks at a shared ``multiprocessing.Event`` (``is_set`` takes
    the event's lock, and a victim killed holding it would leave every survivor waiting on it)."""
    backend = backend_from_url(url)
    backend.incr("victim")
    started.set()
    while True:
        backend.incr("contended")
        backend.incr("victim")


def _counts(backend: LMDBBackend, keys: list[str]) -> list[int]:
    return [0 if (entry := backend.get(key)) is None else int(entry.value) for key in keys]


@pytest.mark.timeout(180)
def test_writers_survive_a_writer_killed_again_and_again(tmp_path: Path) -> None:
    """Writers contend for LMDB's write lock while another writer is SIGKILLed, 25 times over: each
    time, every survivor goes on writing within seconds and finishes when told to. Without the
    write lock of our own (``lock_writes``), a writer waiting on LMDB's mutex when its owner was
    killed was, now and then, never woken: this loop hung a survivor in most runs."""
    url = url_of(tmp_path)
    backend = backend_from_url(url)
    assert isinstance(backend, LMDBBackend)
    backend.incr("contended")  # the parent's environment is open at each fork
    rng = random.Random()
    stop = FORK.Event()
    keys = [f"survivor/{i}" for i in range(3)]
    survivors = []
    for key in keys:
        started = FORK.Event()
        survivor = FORK.Process(target=_write_until_stopped, args=(url, key, started, stop), daemon=True)
        survivor.start()
        survivors.append(survivor)
        assert started.wait(30)
    try:
        for kill in range(25):
            started = FORK.Event()
            victim = FORK.Process(target=_write_until_killed, args=(url, started), daemon=True)
            victim.start()
            assert started.wait(30)
            time.sleep(rng.uniform(0.0, 0.02))
            victim.kill()
            victim.join(10)
            assert victim.exitcode == -signal.SIGKILL
            before = _counts(backend, keys)
            deadline = time.monotonic() + 5
            while any(now <= then for now, then in zip(_counts(backend, keys), before, strict=True)):
                assert time.monotonic() < deadline, f"a writer was never woken after kill {kill + 1}"
                time.sleep(0.005)
        stop.set()
        for survivor in survivors:
            survivor.join(10)
            assert survivor.exitcode == 0
    finally:
        stop.set()
        for survivor in survivors:
            if survivor.is_alive():
                survivor.kill()
                survivor.join(10)
    backend.close()


# -- deferred syncing ---------------------------------------------------------------------------


def test_deferred_sync_flushes_within_the_interval(tmp_path: Path) -> None:
    """sync=false: a write leaves the environment dirty; the process's flusher flushes it within
    about ``sync_interval``, without any further write; closing ends the flusher."""
    backend = backend_from_url(url_of(tmp_path, "sync_interval=0.05"))
    assert isinstance(backend, LMDBBackend)
    backend.set("k", b"v")
    shared = backend._env()
    assert shared.dirty and shared._flusher is not None and shared._flusher.is_alive()
    deadline = time.monotonic() + 5
    while shared.dirty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not shared.dirty
    backend.close()
    shared._flusher.join(5)
    assert not shared._flusher.is_alive()


# -- URL options -----------------------------------------------------------------------------------


def test_url_options(tmp_path: Path) -> None:
    query = "map_size=1048576&max_readers=50&sync=true&sync_interval=2.5"
    backend = LMDBBackend.from_url(url_of(tmp_path, query))
    assert (backend.map_size, backend.max_readers, backend.sync, backend.sync_interval) == (
        1048576,
        50,
        True,
        2.5,
    )
    backend.set("k", 1)
    assert backend._env().env.info()["max_readers"] == 50
    backend.close()
    defaults = LMDBBackend.from_url(url_of(tmp_path))
    assert (defaults.map_size, defaults.max_readers, defaults.sync) == (
        DEFAULT_MAP_SIZE,
        DEFAULT_MAX_READERS,
        False,
    )
    assert defaults.describe() == f"lmdb:///{tmp_path}/state.lmdb"


@pytest.mark.parametrize(
    "url",
    [
        "lmdb://host/dir",  # a host
        "lmdb:///",  # no directory
        "lmdb:///tmp/x?map_size=big",
        "lmdb:///tmp/x?map_size=1000",  # under the minimum
        "lmdb:///tmp/x?max_readers=0",
        "lmdb:///tmp/x?sync_interval=-1",
        "lmdb:///tmp/x?nope=1",
        "lmdb:///tmp/x#frag",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        LMDBBackend.from_url(url)


def test_missing_parent_directory_is_unavailable(tmp_path: Path) -> None:
    backend = backend_from_url(f"lmdb:///{tmp_path}/no/such/dir")
    with pytest.raises(BackendUnavailableError) as caught:
        backend.get("k")
    assert caught.value.applied is False
    assert "does not exist" in str(caught.value)


# -- keys longer than LMDB's keys ---------------------------------------------------------------


def test_long_keys_round_trip_and_scan(tmp_path: Path) -> None:
    backend = backend_from_url(url_of(tmp_path))
    long_a = "p/" + "é" * (MAX_DIRECT_KEY)  # 1000+ bytes: stored under a digest
    long_b = "q/" + "a" * 5000
    backend.set(long_a, b"A")
    assert backend.incr(long_b, 3) == 3
    backend.set("p/short", b"s")
    entry = backend.get(long_a)
    assert entry is not None and entry.value == b"A"
    assert sorted(backend.scan("p/")) == sorted([long_a, "p/short"])
    assert sorted(backend.scan("q/")) == [long_b]
    assert backend.delete(long_a) and backend.get(long_a) is None
    backend.close()


# -- sweeping -----------------------------------------------------------------------------------


def test_sweep_reads_only_the_expired_part(tmp_path: Path) -> None:
    """sweep(limit) removes at most ``limit`` expired entries, oldest first, and leaves the live
    ones; the expiry index holds one row per entry with a TTL, no more."""
    backend = backend_from_url(url_of(tmp_path))
    assert isinstance(backend, LMDBBackend)
    for i in range(50):
        backend.set(f"short{i}", b"x", ttl=0.05)
    for i in range(30):
        backend.set(f"long{i}", b"x", ttl=3600)
    for i in range(20):
        backend.set(f"kept{i}", b"x")
    backend.set("short0", b"x", ttl=0.05)  # a rewrite replaces its index row
    backend.touch("long0", None)  # and touch moves it (here: out of the index)
    assert entries_in(backend) == (100, 79)
    time.sleep(0.1)
    assert backend.sweep(limit=10) == 10
    assert entries_in(backend) == (90, 69)
    assert backend.sweep() == 40
    assert backend.sweep() == 0
    assert entries_in(backend) == (50, 29)
    assert sorted(backend.scan("long")) == sorted(f"long{i}" for i in range(30))
    backend.close()


def _write_new_keys(url: str, prefix: str, count: int) -> None:
    backend = backend_from_url(url)
    for i in range(count):
        backend.set(f"{prefix}{i}", b"v" * 100, ttl=0.01)
    backend.close()


def test_expired_entries_stay_bounded_under_new_keys(tmp_path: Path) -> None:
    """Three processes write only new keys with a 10 ms TTL: the sweeps paced by writes keep what
    is left to about the entries of the last TTL (a few hundred at LMDB's speed) and one sweep
    interval per process, not the 9000 entries written."""
    url = url_of(tmp_path)
    procs = [FORK.Process(target=_write_new_keys, args=(url, f"p{n}/", 3000)) for n in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    backend = backend_from_url(url)
    assert isinstance(backend, LMDBBackend)
    left, indexed = entries_in(backend)
    assert left == indexed
    assert left <= 1500, left
    backend.close()
