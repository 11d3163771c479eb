"""The backend kit (sharedstate.backends.kit): the helpers every backend shares."""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sharedstate.backends import kit
from sharedstate.backends.sqlite import SQLiteBackend

# -- successor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", None),
        ("a", "b"),
        ("user:", "user;"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
        ("x\ud7ff", "x\ue000"),  # the surrogates are skipped
        ("é", "ê"),
    ],
)
def test_successor(prefix: str, expected: str | None) -> None:
    assert kit.successor(prefix) == expected


def test_successor_bounds_exactly_the_keys_with_the_prefix() -> None:
    alphabet = ["a", "b", "\ud7ff", "\ue000", "\U0010ffff"]
    keys = ["".join(p) for n in range(4) for p in itertools.product(alphabet, repeat=n)]
    keys = [k for k in keys if "\ud7ff" not in k or k.endswith("\ud7ff")]  # fewer, still covering
    for prefix in [k for k in keys if len(k) <= 2]:
        end = kit.successor(prefix)
        for key in keys:
            in_range = prefix <= key and (end is None or key < end)
            assert in_range == key.startswith(prefix), (prefix, key, end)
            # UTF-8 byte order agrees (what a database compares), surrogates aside
            if end is not None and "\ud7ff" not in end:
                assert (key.encode() < end.encode()) == (key < end)


# -- integers --------------------------------------------------------------------------------


def test_fits_int64() -> None:
    assert kit.fits_int64(kit.INT64_MAX) and kit.fits_int64(kit.INT64_MIN) and kit.fits_int64(0)
    assert not kit.fits_int64(kit.INT64_MAX + 1)
    assert not kit.fits_int64(kit.INT64_MIN - 1)
    assert not kit.fits_int64(True)  # a bool is not stored as an integer
    assert not kit.fits_int64(1.0)
    assert (kit.INT64_MIN, kit.INT64_MAX) == (-(2**63), 2**63 - 1)


def test_incr_errors_name_the_key() -> None:
    assert isinstance(kit.not_an_integer("k"), TypeError)
    assert "'k'" in str(kit.not_an_integer("k")) and "not an integer" in str(kit.not_an_integer("k"))
    assert isinstance(kit.overflows("k"), OverflowError)
    assert "'k'" in str(kit.overflows("k")) and "64-bit" in str(kit.overflows("k"))


# -- versions --------------------------------------------------------------------------------


def test_random_version_is_positive_and_fits_a_bigint() -> None:
    versions = [kit.random_version() for _ in range(1000)]
    assert all(1 <= v <= 2**62 for v in versions)
    assert len(set(versions)) == len(versions)


def test_application_seeding_random_does_not_bring_a_version_back(tmp_path: Path) -> None:
    # A key deleted and re-created must get a new version, even when the application reseeds
    # random's global generator (random.seed(0) in every worker): else a compare-and-set holding
    # the old version would overwrite the new entry (ABA).
    backend = SQLiteBackend(str(tmp_path / "db.sqlite3"))
    try:
        random.seed(0)
        backend.set("k", b"old")
        old = backend.get("k")
        assert old is not None
        backend.delete("k")
        random.seed(0)
        backend.set("k", b"new")
        new = backend.get("k")
        assert new is not None and new.version != old.version
        assert not backend.compare_and_set("k", old.version, b"lost").stored
        assert backend.get("k") == new
    finally:
        backend.close()


def _in_child(fn: Callable[[], bytes]) -> bytes:
    """Run ``fn()`` (returning bytes) in a forked child; its result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, fn())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


def test_a_forked_child_never_repeats_its_parents_versions() -> None:
    child = _in_child(lambda: repr([kit.random_version() for _ in range(5)]).encode())
    parent = repr([kit.random_version() for _ in range(5)]).encode()
    assert child != parent


# -- PerProcess ------------------------------------------------------------------------------


def test_per_process_makes_one_value_per_process_across_threads() -> None:
    made: list[object] = []
    barrier = threading.Barrier(8)

    def make() -> object:
        value = object()
        made.append(value)
        return value

    holder = kit.PerProcess(make)
    seen: list[object] = []

    def use() -> None:
        barrier.wait()
        seen.append(holder.get())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and seen == made * 8
    assert holder.current() is made[0]


def test_per_process_take_and_current() -> None:
    holder = kit.PerProcess(list)
    assert holder.current() is None and holder.take() is None
    value = holder.get()
    assert holder.take() is value
    assert holder.current() is None
    assert holder.get() is not value  # made afresh after take


def test_per_process_child_makes_its_own_and_never_touches_the_parents() -> None:
    a, b = socket.socketpair()
    holder: kit.PerProcess[object] = kit.PerProcess(lambda: a)
    assert holder.get() is a

    def child() -> bytes:
        before = holder.current()
        taken = holder.take()  # the parent's socket is set aside, not handed out
        fresh = kit.PerProcess(lambda: "fresh")
        holder._make = lambda: "child's"
        return repr((before, taken, holder.get(), fresh.get())).encode()

    assert _in_child(child) == repr((None, None, "child's", "fresh")).encode()
    # The child neither closed nor shut down the parent's socket: it still works.
    a.sendall(b"ping")
    assert b.recv(4) == b"ping"
    assert holder.get() is a
    a.close()
    b.close()


# -- has_pending_input -----------------------------------------------------------------------


def test_has_pending_input() -> None:
    a, b = socket.socketpair()
    try:
        assert not kit.has_pending_input(a)
        assert not kit.has_pending_input(a.fileno())
        b.sendall(b"x")
        assert kit.has_pending_input(a)
        a.recv(1)
        assert not kit.has_pending_input(a)
        b.close()  # end of stream: the peer closed it
        assert kit.has_pending_input(a)
    finally:
        a.close()
        b.close()


def test_chunks_cut_a_batch_in_order() -> None:
    assert kit.chunks([], 3) == []
    assert kit.chunks([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5, 6], [7]]
    assert kit.chunks("abc", 5) == ["abc"]


# -- increments applied as one -------------------------------------------------------------


def _one_by_one(start: int, bys: list[int]) -> list[int] | None:
    """The values of increments by ``bys`` from ``start``, one after another; None if one overflows."""
    values = []
    for by in bys:
        start += by
        if not kit.fits_int64(start):
            return None
        values.append(start)
    return values


def test_partial_sum_bounds_and_results_as_alone() -> None:
    rng = random.Random(7)
    edges = [kit.INT64_MIN, kit.INT64_MIN + 1, -1, 0, 1, kit.INT64_MAX - 1, kit.INT64_MAX]
    for _ in range(2000):
        bys = [rng.choice([rng.randint(-5, 5), rng.choice(edges)]) for _ in range(rng.randint(1, 6))]
        low, high = kit.partial_sum_bounds(bys)
        for start in [*edges, low, high, low - 1, high + 1, rng.randint(-100, 100)]:
            if not kit.fits_int64(start):
                continue
            alone = _one_by_one(start, bys)
            assert (alone is not None) == (low <= start <= high), (start, bys)
            if alone is not None:
                assert kit.results_as_alone(start + sum(bys), bys) == alone
    assert kit.partial_sum_bounds([]) == (kit.INT64_MIN, kit.INT64_MAX)
