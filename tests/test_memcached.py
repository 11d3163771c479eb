"""What is particular to ``memcached://``: TTL rules, the item size limit, key encoding, unsigned
counters, eviction warning, failures and restarts. The shared suite covers the contract itself."""

from __future__ import annotations

import multiprocessing
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sharedstate import Store
from sharedstate.errors import BackendUnavailableError, NotSupportedError, ValueTooLargeError
from tests import servers

pytest.importorskip("pymemcache")

from sharedstate.backends.memcached import (
    ITEM_OVERHEAD,
    MAX_KEY_BYTES,
    MemcachedBackend,
    exptime,
    memcached_key,
)

INT64_MAX = 2**63 - 1
MEMCACHED_BIN = shutil.which("memcached") or "/usr/bin/memcached"


@pytest.fixture
def url() -> str:
    found = servers.MEMCACHED.start()
    if found is None:
        servers.unavailable(servers.MEMCACHED.reason)
    assert found is not None
    return found


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url, namespace=f"mc{uuid.uuid4().hex[:10]}") as s:
        yield s


def remaining_ttl(store: Store, key: str) -> int:
    """memcached's own view of the seconds ``key`` has left (-1: no expiry)."""
    backend = store.backend
    assert isinstance(backend, MemcachedBackend)
    mkey = memcached_key(store._keyspace.full_key(key))
    with backend._connection() as client:
        reply: bytes = client.raw_command(f"mg {mkey} t".encode())
    assert reply.startswith(b"HD"), reply
    return int(reply.split()[1][1:])


class OwnMemcached:
    """A memcached process of this test's own, on a free port it keeps across restarts."""

    def __init__(self, *extra: str, unix_socket: Path | None = None) -> None:
        if not Path(MEMCACHED_BIN).exists():
            servers.unavailable("memcached is not installed")
        self.port = servers.free_port()
        self.extra = list(extra)
        self.unix_socket = unix_socket
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"memcached://{self.unix_socket}"
        return f"memcached://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.unix_socket is not None:
            listen = ["-s", str(self.unix_socket)]
        else:
            listen = ["-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        command = [MEMCACHED_BIN, *listen, "-m", "16", "-u", "root", *self.extra]
        self.process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        if self.unix_socket is None:
            servers.wait_for_port(self.port)
            return
        deadline = time.monotonic() + 10
        while not self.unix_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_memcached() -> Iterator[OwnMemcached]:
    server = OwnMemcached()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- URLs ------------------------------------------------------------------------------------


def test_url_default_port_and_options() -> None:
    backend = MemcachedBackend.from_url("memcached://127.0.0.1?timeout=0.5")
    assert backend.server == ("127.0.0.1", 11211)
    assert backend.timeout == backend.connect_timeout == 0.5
    backend = MemcachedBackend.from_url("memcached://localhost:1234/?timeout=3&connect_timeout=1")
    assert (backend.server, backend.timeout, backend.connect_timeout) == (("localhost", 1234), 3, 1)
    assert MemcachedBackend.from_url("memcached:///tmp/mc.sock").server == "/tmp/mc.sock"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("memcached://u:hunter2@127.0.0.1", "no authentication"),
        ("memcached://a:1,b:2", "several servers"),
        ("memcached://127.0.0.1?tiemout=1", "unknown option"),
        ("memcached://127.0.0.1?timeout=0", "positive"),
        ("memcached://", "names no server"),
    ],
)
def test_bad_urls_are_refused(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        MemcachedBackend.from_url(bad)
    assert "hunter2" not in str(info.value)


# -- TTLs ------------------------------------------------------------------------------------


def test_exptime_rounds_up_and_switches_to_unix_time_after_30_days() -> None:
    assert exptime(None) == 0
    assert exptime(0.001) == 2  # ceil, plus the tick memcached's clock may already be into
    assert exptime(1) == 2
    assert exptime(29.5) == 31
    month = 30 * 24 * 3600
    assert exptime(month - 1) == month
    now = time.time()
    absolute = exptime(month + 10)
    assert now + month + 10 < absolute <= time.time() + month + 13


def test_ttl_over_30_days_is_kept(store: Store) -> None:
    # Sent as relative seconds, memcached would read 31 days as a unix time in 1970: gone at once.
    store.set("long", "kept", ttl=31 * 24 * 3600)
    assert store.get("long") == "kept"
    assert 31 * 24 * 3600 <= remaining_ttl(store, "long") <= 31 * 24 * 3600 + 3
    store.set("short", "kept", ttl=100)
    assert 100 <= remaining_ttl(store, "short") <= 102
    store.set("forever", "kept")
    assert remaining_ttl(store, "forever") == -1


def test_ttl_never_expires_early_and_expires_within_two_seconds_late(store: Store) -> None:
    # memcached's clock ticks once a second; set at three phases of it, each with ttl=1.
    started = []
    for i in range(3):
        started.append(time.monotonic())  # before the call: the server applies the set later
        store.set(f"k{i}", i, ttl=1)
        time.sleep(0.33)
    for i, t0 in enumerate(started):
        time.sleep(max(0.0, t0 + 0.95 - time.monotonic()))
        value = store.get(f"k{i}")
        # Gone is only wrong if the get returned within the ttl (a stalled test proves nothing).
        assert value == i or time.monotonic() >= t0 + 1, f"k{i} expired before its ttl"
    deadline = started[-1] + 5
    while any(store.get(f"k{i}") is not None for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [store.get(f"k{i}") for i in range(3)] == [None, None, None]


def test_touch_keeps_the_version_and_sets_a_new_expiry(store: Store) -> None:
    store.set("t", "v", ttl=100)
    full = store._keyspace.full_key("t")
    before = store.backend.get(full)
    assert store.touch("t", 1000)
    assert 1000 <= remaining_ttl(store, "t") <= 1002
    assert store.backend.get(full) == before
    assert store.touch("t", None)
    assert remaining_ttl(store, "t") == -1
    assert not store.touch("missing", 10)


# -- values ----------------------------------------------------------------------------------


def test_oversize_value_raises_and_keeps_the_old_value(store: Store) -> None:
    store.set("doc", "old")
    # Under the store's 1 MiB max_value_size, over what memcached can hold with its item header.
    with pytest.raises(ValueTooLargeError, match="nothing was written"):
        store.set("doc", "x" * (1024 * 1024 - 40))
    assert store.get("doc") == "old"
    with pytest.raises(ValueTooLargeError):
        store.add("new", "x" * (1024 * 1024 - 40))
    assert store.get("new") is None
    # In a batch, one value too large for memcached refuses the batch before anything is sent.
    with pytest.raises(ValueTooLargeError):
        store.set_many({"small": "s", "doc": "x" * (1024 * 1024 - 40)})
    assert store.get_many(["small", "doc"]) == {"doc": "old"}


def test_ttl_is_the_ttl_asked_counted_down_in_whole_seconds(store: Store) -> None:
    """memcached is sent ceil(ttl) + 1 (never early); ttl() takes the added tick back off."""
    store.set("k", "v", ttl=30)
    assert store.ttl("k") in (29.0, 30.0)
    store.set_many({"a": 1}, ttl=2.5)
    assert store.ttl("a") in (2.0, 3.0)


def test_largest_value_that_fits_is_stored(store: Store) -> None:
    backend = store.backend
    full = store._keyspace.full_key("edge")
    limit = 1024 * 1024 - len(memcached_key(full)) - ITEM_OVERHEAD
    backend.set(full, b"y" * limit)
    entry = backend.get(full)
    assert entry is not None and entry.value == b"y" * limit
    with pytest.raises(ValueTooLargeError):
        backend.set(full, b"z" * (limit + 1))
    entry = backend.get(full)
    assert entry is not None and entry.value == b"y" * limit


def test_integers_are_decimal_text_and_decode(store: Store) -> None:
    store.set("n", 42)
    entry = store.backend.get(store._keyspace.full_key("n"))
    assert entry is not None and entry.value == b"42"
    assert store.get("n") == 42
    assert store.incr("n") == 43


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["with space", "new\nline", "tab\tand\x01ctrl", "ünïcødé ☃", "x" * 300, "~looks-encoded", "ok:key"],
)
def test_any_key_round_trips(store: Store, key: str) -> None:
    store.set(key, {"key": key})
    assert store.get(key) == {"key": key}
    mkey = memcached_key(store._keyspace.full_key(key))
    assert len(mkey.encode()) <= MAX_KEY_BYTES
    assert all(0x21 <= ord(ch) <= 0x7E for ch in mkey)


def test_encoded_keys_are_deterministic_and_distinct(store: Store) -> None:
    assert memcached_key("plain:key") == "plain:key"
    assert memcached_key("a b") == memcached_key("a b") != memcached_key("a  b")
    long_a, long_b = "k" * 400 + "a", "k" * 400 + "b"
    assert memcached_key(long_a) != memcached_key(long_b)
    store.set(long_a, 1)
    store.set(long_b, 2)
    store.set("a b", 3)
    # A safe key equal to another key's encoded form cannot exist: encoded forms start with "~".
    assert memcached_key(memcached_key("a b")) != memcached_key("a b")
    assert (store.get(long_a), store.get(long_b), store.get("a b")) == (1, 2, 3)
    assert memcached_key("x" * 250) == "x" * 250
    assert memcached_key("x" * 251).startswith("~")


# -- incr on unsigned counters -----------------------------------------------------------------


def test_incr_goes_negative_and_back(store: Store) -> None:
    counter = store.counter("c")
    assert counter.incr() == 1
    assert counter.decr(3) == -2
    assert counter.incr() == -1  # memcached cannot incr "-2": a CAS loop does
    assert counter.incr(5) == 4
    assert counter.decr(4) == 0
    assert counter.decr() == -1
    assert counter.get() == -1
    assert store.incr("fresh", -7) == -7


def test_incr_on_non_integer_raises_type_error_and_keeps_the_value(store: Store) -> None:
    for value in ["text", 1.5, [1], {"a": 1}, True, "42"]:
        store.set("v", value)
        for by in (1, -1):
            with pytest.raises(TypeError):
                store.incr("v", by)
            assert store.get("v") == value


def test_incr_overflow_raises_and_keeps_the_value(store: Store) -> None:
    store.set("big", INT64_MAX - 1)
    assert store.incr("big") == INT64_MAX
    with pytest.raises(OverflowError):
        store.incr("big")
    assert store.get("big") == INT64_MAX
    store.set("low", -(2**63))
    with pytest.raises(OverflowError):
        store.incr("low", -1)
    assert store.get("low") == -(2**63)
    with pytest.raises(OverflowError):
        store.incr("other", 2**64)
    assert store.get("other") is None


def test_incr_ttl_applies_on_creation_only_and_cas_path_keeps_expiry(store: Store) -> None:
    assert store.incr("n", 5, ttl=100) == 5
    assert 100 <= remaining_ttl(store, "n") <= 102
    assert store.incr("n", 1, ttl=5000) == 6
    assert store.incr("n", -10, ttl=5000) == -4  # the CAS path re-sends the remaining seconds
    assert store.incr("n", 1) == -3
    assert 95 <= remaining_ttl(store, "n") <= 102


@pytest.mark.timeout(60)
def test_mixed_native_and_cas_increments_from_threads_are_exact(store: Store) -> None:
    rounds, threads = 150, 4
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(rounds):
                store.incr("mixed", -1)
                store.incr("mixed", 2)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert store.get("mixed") == rounds * threads


def _incr_worker(url: str, namespace: str, n: int, queue: multiprocessing.Queue[list[int]]) -> None:
    with Store(url, namespace=namespace) as store:
        counter = store.counter("hits")
        queue.put([counter.incr() for _ in range(n)])


@pytest.mark.timeout(120)
def test_8_spawned_processes_get_unique_exact_values(url: str) -> None:
    namespace, processes, per_process = f"mc{uuid.uuid4().hex[:10]}", 8, 150
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[int]] = context.Queue()
    workers = [
        context.Process(target=_incr_worker, args=(url, namespace, per_process, queue))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    seen = [v for _ in workers for v in queue.get(timeout=90)]
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert sorted(seen) == list(range(1, processes * per_process + 1))
    with Store(url, namespace=namespace) as store:
        assert store.counter("hits").get() == processes * per_process


# -- what memcached cannot do --------------------------------------------------------------


def test_listing_keys_is_not_supported(store: Store) -> None:
    store.set("a", 1)
    with pytest.raises(NotSupportedError, match="cannot list keys"):
        store.keys()
    with pytest.raises(NotSupportedError):
        len(store.dict("d"))


def test_locks_and_pop_work_with_meta_delete(store: Store) -> None:
    lock = store.lock("job", ttl=5)
    lock.acquire(timeout=1)
    with pytest.raises(Exception, match="within"):
        store.lock("job", ttl=5).acquire(timeout=0.1)
    lock.release()
    store.lock("job", ttl=5).acquire(timeout=1)
    items = store.dict("d")
    items["x"] = 1
    assert items.pop("x") == 1
    assert items.pop("x", None) is None


def test_eviction_warning_once(store: Store) -> None:
    assert store.backend.may_evict
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store._keyspace.warn_if_evictable("a counter")
        store._keyspace.warn_if_evictable("a lock")
    assert len(caught) == 1
    assert issubclass(caught[0].category, RuntimeWarning)
    assert "may evict" in str(caught[0].message)


def _edit(store: Store) -> None:
    with store.edit("e", default={}) as value:
        value["n"] = 1


def test_state_objects_warn_that_memcached_may_evict(url: str) -> None:
    makers: list[Callable[[Store], object]] = [
        lambda s: s.counter("hits"),
        lambda s: s.dict("d"),
        lambda s: s.lock("l"),
        lambda s: s.update("u", lambda v: 1),
        _edit,
    ]
    for make in makers:
        with Store(url) as fresh, pytest.warns(RuntimeWarning, match="may evict") as record:
            make(fresh)
        assert record[0].filename == __file__  # the caller's line, not one inside sharedstate


# -- failures ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_closed_port_raises_unavailable_quickly() -> None:
    url = f"memcached://127.0.0.1:{servers.free_port()}"
    store = Store(url)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=re.escape(url)) as info:
        store.get("x")
    assert time.monotonic() - started < 5
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


@pytest.mark.timeout(30)
def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = Store(f"memcached://127.0.0.1:{port}?timeout=0.5")
        # set asks the server's item size limit first; with no reply the set itself is never sent.
        for op, applied in ((lambda: store.get("x"), None), (lambda: store.set("x", 1), False),
                            (lambda: store.incr("x"), None)):  # fmt: skip
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                op()
            assert time.monotonic() - started < 5
            assert info.value.applied is applied


@pytest.mark.timeout(60)
def test_same_store_works_again_after_a_restart(own_memcached: OwnMemcached) -> None:
    store = Store(own_memcached.url, namespace="restart")
    store.set("before", 1)
    assert store.incr("n") == 1
    own_memcached.stop()
    for op in (lambda: store.get("before"), lambda: store.set("during", 1), lambda: store.incr("n")):
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=re.escape(own_memcached.url)):
            op()
        assert time.monotonic() - started < 5
    own_memcached.start()
    # memcached keeps nothing across a restart (one more reason it is for caches only).
    assert store.get("before") is None
    store.set("after", "works")
    assert store.get("after") == "works"
    assert store.incr("n") == 1
    store.close()


@pytest.mark.timeout(60)
def test_idle_pooled_connections_survive_a_restart(own_memcached: OwnMemcached) -> None:
    store = Store(own_memcached.url, namespace="pool")
    store.set("k", 1)  # leaves a pooled connection that the restart closes
    own_memcached.stop()
    own_memcached.start()
    assert store.get("k") is None  # the stale connection is replaced, not reported as a failure
    store.close()


@pytest.mark.timeout(60)
def test_unix_socket_url(tmp_path: Path) -> None:
    server = OwnMemcached(unix_socket=tmp_path / "mc.sock")
    server.start()
    try:
        assert server.url == f"memcached://{tmp_path}/mc.sock"
        with Store(server.url) as store:
            store.set("k", "v")
            assert store.get("k") == "v"
            assert store.incr("n", -2) == -2
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_server_without_cas_is_refused_clearly() -> None:
    server = OwnMemcached("-C")
    server.start()
    try:
        with Store(server.url) as store:
            store.set("k", "v")
            with pytest.raises(NotSupportedError, match="CAS disabled"):
                store.update("k", lambda v: v + "!")
    finally:
        server.stop()


# -- TTLs past memcached's clock ----------------------------------------------------------------


# Both end after 2038-01-19: 1e300 is past every backend's limit (validation.MAX_SECONDS), 20 years
# only past memcached's.
@pytest.mark.parametrize(("ttl", "why"), [(1e300, "100 years"), (20 * 365 * 24 * 3600.0, "2038")])
def test_ttl_memcached_cannot_hold_is_refused_before_anything_is_sent(
    store: Store, ttl: float, why: str
) -> None:
    store.set("k", "old")
    store.incr("n")
    for op in (
        lambda: store.set("k", "new", ttl=ttl),
        lambda: store.add("fresh", 1, ttl=ttl),
        lambda: store.incr("n", ttl=ttl),
        lambda: store.incr("fresh-counter", -1, ttl=ttl),
        lambda: store.touch("k", ttl),
    ):
        with pytest.raises(ValueError, match=why):
            op()
    assert store.get("k") == "old"
    assert store.get("fresh") is None and store.get("fresh-counter") is None
    assert store.get("n") == 1
    store.set("k", "ten years", ttl=10 * 365 * 24 * 3600.0)  # before 2038: stored, and it lives
    assert store.get("k") == "ten years"
    assert remaining_ttl(store, "k") > 9 * 365 * 24 * 3600


@pytest.mark.timeout(30)
def test_error_replies_are_unavailable_with_the_cause(store: Store) -> None:
    backend = store.backend
    assert isinstance(backend, MemcachedBackend)
    # A command memcached answers with CLIENT_ERROR: the driver's error, wrapped.
    with pytest.raises(BackendUnavailableError) as info:
        backend._call("bad", lambda c: c.raw_command(b"set k 0 0 notanumber"))
    assert info.value.applied is False
    assert info.value.__cause__ is not None
