"""Group commit of ``incr`` in the async ``sqlite://`` backend (``sharedstate.backends.coalesce``).

Increments of one key that have to wait for the write lock are written together, in one
transaction: each caller must still see exactly what it would have seen alone, the calls running
one after another in arrival order (values, overflow, a non-integer, ttl on create, failures,
cancellation). The write lock is held by a plain sqlite3 connection of the test, so the group
forms for sure; then it is released (or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sharedstate import BackendUnavailableError, Store
from sharedstate.backends.coalesce import IncrGroup
from sharedstate.backends.kit import INT64_MAX, INT64_MIN, fits_int64
from sharedstate.backends.sqlite import AsyncSQLiteBackend
from tests import async_workers, workers

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
OVERFLOW = "overflow"


def as_alone(start: int | None, bys: list[int]) -> tuple[list[object], int]:
    """What increments by ``bys`` return run one after another from ``start`` (None: absent):
    each value or ``OVERFLOW``; and the final value."""
    value = 0 if start is None else start
    results: list[object] = []
    for by in bys:
        if fits_int64(value + by):
            value += by
            results.append(value)
        else:
            results.append(OVERFLOW)
    return results, value


def run(path: Path, scenario: Callable[[AsyncSQLiteBackend], Awaitable[T]], query: str = "") -> T:
    async def main() -> T:
        backend = AsyncSQLiteBackend.from_url(f"sqlite:///{path}{query}")
        try:
            await backend.set("warm", 1)  # the file and table exist before the test locks them
            return await scenario(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold ``path``'s write lock (``BEGIN IMMEDIATE`` on a connection of our own) until exit."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


async def grouped(
    backend: AsyncSQLiteBackend, key: str, calls: list[tuple[int, float | None]]
) -> tuple[list[asyncio.Task[int]], IncrGroup]:
    """Start ``incr(key, by, ttl)`` for each call (the write lock must be held), in this order;
    return the tasks once all of them are waiting in one group (of the first call's ttl)."""
    tasks = [asyncio.create_task(backend.incr(key, by, ttl)) for by, ttl in calls]
    ttl = calls[0][1]
    for _ in range(1000):
        await asyncio.sleep(0)
        group = backend._coalescer.pending(key, ttl)
        if group is not None and len(group.members) == sum(1 for _, t in calls if t == ttl):
            return tasks, group
    raise AssertionError("the increments never formed a group")


async def outcomes(tasks: list[asyncio.Task[int]]) -> list[object]:
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [OVERFLOW if isinstance(r, OverflowError) else r for r in results]


def changes(backend: AsyncSQLiteBackend) -> int:
    conn = backend.sync._local.conn
    assert conn is not None
    return conn.total_changes


def stored(path: Path, key: str) -> object:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT value FROM sharedstate WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def test_a_group_is_one_write_each_caller_its_own_value(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    bys = [1, 5, -3, 7, -20, 2, 1, 100, -1, 4] * 5

    async def scenario(b: AsyncSQLiteBackend) -> None:
        await b.set("n", 10)
        with write_lock(path):
            tasks, _ = await grouped(b, "n", [(by, None) for by in bys])
            before = changes(b)
        assert await outcomes(tasks) == as_alone(10, bys)[0]
        assert changes(b) - before == 1  # one upsert for all fifty
        assert b._coalescer.pending("n", None) is None
        assert await b.incr("n") == 10 + sum(bys) + 1  # alone again

    run(path, scenario)
    assert stored(path, "n") == 10 + sum(bys) + 1


@pytest.mark.parametrize(
    ("start", "bys"),
    [
        (INT64_MAX - 5, [3, 5, -4, 2, 10, -1]),  # some overflow, the others go on from where they were
        (INT64_MAX - 5, [10, -10]),  # the sum fits, the first alone does not
        (INT64_MIN + 5, [-3, -5, 4, -2, -10, 1]),
        (INT64_MIN + 5, [-10, 10]),
        (None, [INT64_MAX, INT64_MAX, INT64_MIN]),  # partial sums beyond int64 from an absent key
        (-5, [INT64_MAX, 3, INT64_MIN, INT64_MIN]),
        (INT64_MAX - 100, [1, 2, 3]),  # near the bound but no overflow: still one write
    ],
)
def test_overflow_in_a_group_is_as_alone(tmp_path: Path, start: int | None, bys: list[int]) -> None:
    path = tmp_path / "s.db"
    expected, final = as_alone(start, bys)

    async def scenario(b: AsyncSQLiteBackend) -> None:
        if start is not None:
            await b.set("n", start)
        with write_lock(path):
            tasks, _ = await grouped(b, "n", [(by, None) for by in bys])
        assert await outcomes(tasks) == expected

    run(path, scenario)
    assert stored(path, "n") == final


def test_a_non_integer_refuses_every_member_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def scenario(b: AsyncSQLiteBackend) -> None:
        await b.set("s", b"text")
        with write_lock(path):
            tasks, _ = await grouped(b, "s", [(by, None) for by in (1, 2, -3, 4)])
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, TypeError) for r in results), results
        assert len({str(r) for r in results}) == 1 and "'s'" in str(results[0])
        entry = await b.get("s")
        assert entry is not None and entry.value == b"text"

    run(path, scenario)


def test_ttl_applies_when_the_group_creates_the_key(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def scenario(b: AsyncSQLiteBackend) -> None:
        await b.set("old", 7)  # exists without ttl: a group's ttl does not apply
        await b.set("expired", 50, ttl=0.05)
        await asyncio.sleep(0.1)
        with write_lock(path):
            created, _ = await grouped(b, "new", [(2, 60.0)] * 4)
            kept, _ = await grouped(b, "old", [(1, 60.0)] * 3)
            renewed, _ = await grouped(b, "expired", [(1, 30.0)] * 3)
            # Different ttls never share a group: two groups of one key.
            mixed = [asyncio.create_task(b.incr("mixed", 1, ttl)) for ttl in (None, 60.0, None, 60.0)]
            await asyncio.sleep(0)
            assert b._coalescer.pending("mixed", None) is not None
            assert b._coalescer.pending("mixed", 60.0) is not None
        assert await outcomes(created) == [2, 4, 6, 8]
        assert 59 < (await b.expiry("new") or 0) <= 60
        assert await outcomes(kept) == [8, 9, 10]
        assert await b.expiry("old") is None
        assert await outcomes(renewed) == [1, 2, 3]  # the expired value is gone
        assert 29 < (await b.expiry("expired") or 0) <= 30
        assert sorted(await asyncio.gather(*mixed)) == [1, 2, 3, 4]

    run(path, scenario)


def test_a_cancelled_waiter_is_not_applied_and_the_others_go_on(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def scenario(b: AsyncSQLiteBackend) -> None:
        with write_lock(path):
            tasks, group = await grouped(b, "n", [(1, None), (10, None), (100, None), (1000, None)])
            tasks[0].cancel()  # the one that started the group
            tasks[2].cancel()
            await asyncio.sleep(0.01)  # the driver retries meanwhile, without them
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert isinstance(results[2], asyncio.CancelledError)
        assert (results[1], results[3]) == (10, 1010)
        assert [m.by for m in group.sent] == [10, 1000]

        # Every member cancelled: the group ends having written nothing.
        with write_lock(path):
            tasks, _ = await grouped(b, "n", [(5, None), (5, None)])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(100):
            if b._coalescer.pending("n", None) is None and not b._coalescer._drivers:
                break
            await asyncio.sleep(0.01)
        assert not b._coalescer._drivers
        assert await b.incr("n") == 1011

    run(path, scenario)


def test_a_failed_group_write_fails_every_member_alike(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def scenario(b: AsyncSQLiteBackend) -> None:
        await b.set("n", 1)
        with write_lock(path) as lock:
            tasks, _ = await grouped(b, "n", [(1, None), (-2, None), (3, None)])
            # Refused when the group writes: a constraint, not a busy lock (not retried).
            lock.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON sharedstate WHEN NEW.key = 'n'"
                " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
            lock.execute("COMMIT")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, BackendUnavailableError) for r in results), results
        assert {(str(r), r.applied) for r in results} == {(str(results[0]), False)}  # type: ignore[union-attr]
        assert "refused by a trigger" in str(results[0])
        assert len({id(r) for r in results}) == 3  # each its own exception
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("DROP TRIGGER refuse")
        assert await b.incr("n", 5) == 6  # nothing of the group was applied

    run(path, scenario)


def test_a_group_that_waits_past_timeout_fails_every_member_alike(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def scenario(b: AsyncSQLiteBackend) -> None:
        with write_lock(path):
            tasks, _ = await grouped(b, "n", [(1, None)] * 3)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, BackendUnavailableError) and r.applied is False for r in results), results
        assert len({str(r) for r in results}) == 1 and "waited" in str(results[0])
        assert await b.incr("n") == 1

    run(path, scenario, query="?timeout=0.2")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_group_write_on_a_full_disk_fails_every_member_alike(small_disk: Path) -> None:
    path = small_disk / "s.db"
    filler = small_disk / "filler"

    async def scenario(b: AsyncSQLiteBackend) -> None:
        await b.set("n", 1)
        with write_lock(path):
            tasks, _ = await grouped(b, "n", [(1, None), (2, None), (3, None)])
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
                while True:  # until the disk is full
                    f.write(os.urandom(4096))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, BackendUnavailableError) for r in results), results
        assert {(str(r), r.applied) for r in results} == {(str(results[0]), False)}  # type: ignore[union-attr]
        assert "full" in str(results[0])
        filler.unlink()
        assert await b.incr("n", 10) == 11  # nothing of the group was applied

    run(path, scenario)


def test_processes_of_many_tasks_count_exactly(tmp_path: Path, namespace: str) -> None:
    """4 spawned processes of 25 tasks each incrementing one counter: every value unique, the
    total exact, and increments written together (fewer row changes than increments)."""
    url = f"sqlite:///{tmp_path}/state.sqlite3"
    processes, tasks, per_task = 4, 25, 20
    outs = [tmp_path / f"out{i}.json" for i in range(processes)]
    start_at = time.time() + 2  # after every spawned child imported and opened its store
    args = [(url, namespace, tasks, per_task, start_at, str(out)) for out in outs]
    workers.run_processes("spawn", async_workers.count_sqlite_changes, args, timeout=120)
    results: list[dict[str, Any]] = [json.loads(out.read_text()) for out in outs]
    values: list[int] = []
    for result in results:
        assert result["errors"] == []
        values += result["values"]
    total = processes * tasks * per_task
    assert sorted(values) == list(range(1, total + 1))
    assert sum(r["changes"] for r in results) < total, results  # some were grouped
    with Store(url, namespace=namespace) as store:
        assert store.get("n") == total
