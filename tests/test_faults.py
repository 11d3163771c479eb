"""Crashes: processes killed with SIGKILL while they hold a lock, sit inside ``edit`` or write.

Every test runs over both APIs (``api``): the sync one in forked processes, and the async one in
spawned processes each running an event loop (``AsyncStore``, as a uvicorn worker does), where
the next holder also waits with the async API.

A killed holder frees its lock when the lease runs out (not before, and not much later), its
unsaved changes are never saved, and every acknowledged operation survives: the final count lies
between the acknowledged operations and those plus the operations the killed processes had in
flight. SQLite files pass ``PRAGMA integrity_check`` afterwards.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from sharedstate import AsyncStore, Store
from tests import async_workers, workers

LEASE = 1.0
# Generous: the machine is shared, so only a gross overrun (a lock that never frees) fails.
SLACK = 4.0
# Tasks per async worker in the mid-run test: each is one more operation in flight at a kill.
ASYNC_TASKS = 2


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def context_for(api: str) -> Any:
    """Forked processes for the sync API; spawned ones (a fresh interpreter, as uvicorn's
    workers) for the async API, so no event loop or loop-bound state is inherited."""
    return multiprocessing.get_context("fork" if api == "sync" else "spawn")


def wait_for_file(path: Path, process: Any, limit: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert process.is_alive(), f"worker exited early with code {process.exitcode}"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {limit}s"
        time.sleep(0.01)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def wait_for_acks(acks: list[Path], procs: list[Any], limit: float = 30.0) -> None:
    """Wait until every worker has acknowledged an operation (it is past its start-up)."""
    deadline = time.monotonic() + limit
    while not all(ack.exists() for ack in acks):
        assert all(p.is_alive() for p in procs), "a worker exited early"
        assert time.monotonic() < deadline, f"the workers did not start within {limit}s"
        time.sleep(0.02)


def assert_sqlite_intact(url: str) -> None:
    if not url.startswith("sqlite:"):
        return
    with Store(url) as store:
        path = store.backend.path  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def start_victim(
    what: str, url: str, namespace: str, tmp_path: Path, api: str = "sync"
) -> tuple[Any, dict[str, Any]]:
    marker = tmp_path / f"{what}-marker.json"
    hold_and_hang = workers.hold_and_hang if api == "sync" else async_workers.hold_and_hang
    victim = context_for(api).Process(
        target=hold_and_hang, args=(url, namespace, what, "res", LEASE, str(marker)), daemon=True
    )
    victim.start()
    try:
        held = wait_for_file(marker, victim)
    except BaseException:
        victim.kill()
        victim.join(5)
        raise
    return victim, held


def take_lock_after(api: str, url: str, namespace: str) -> float:
    """Take lock ``"res"`` as the next holder (with ``api``), release it; returns when it got in."""
    if api == "sync":
        with Store(url, namespace=namespace) as store:
            lock = store.lock("res", ttl=5)
            lock.acquire(timeout=LEASE + SLACK)
            try:
                return time.time()
            finally:
                lock.release()

    async def take() -> float:
        async with (
            AsyncStore(url, namespace=namespace) as store,
            store.lock("res", ttl=5, timeout=LEASE + SLACK),
        ):
            return time.time()

    return asyncio.run(take())


def edit_after(api: str, url: str, namespace: str) -> tuple[float, Any]:
    """Edit ``"res"`` as the next holder (with ``api``), adding 1 to ``n``; returns when it got in
    and the value it found."""
    if api == "sync":
        with Store(url, namespace=namespace) as store, store.edit("res", timeout=LEASE + SLACK) as obj:
            entered_at, found = time.time(), dict(obj)
            obj["n"] += 1
        return entered_at, found

    async def edit() -> tuple[float, Any]:
        async with (
            AsyncStore(url, namespace=namespace) as store,
            store.edit("res", timeout=LEASE + SLACK) as obj,
        ):
            entered_at, found = time.time(), dict(obj)
            obj["n"] += 1
        return entered_at, found

    return asyncio.run(edit())


@pytest.mark.timeout(60)
def test_sigkill_while_holding_lock(shared_url: str, namespace: str, tmp_path: Path, api: str) -> None:
    victim, held = start_victim("lock", shared_url, namespace, tmp_path, api)
    victim.kill()  # SIGKILL: no finally, no atexit, no release
    victim.join(10)
    assert victim.exitcode == -9
    acquired_at = take_lock_after(api, shared_url, namespace)
    assert acquired_at >= held["before"] + LEASE - 0.05, "the lock was taken before its lease ran out"
    assert acquired_at <= held["at"] + LEASE + SLACK
    assert_sqlite_intact(shared_url)


@pytest.mark.timeout(60)
def test_sigkill_inside_edit(shared_url: str, namespace: str, tmp_path: Path, api: str) -> None:
    with Store(shared_url, namespace=namespace) as store:
        store.set("res", {"n": 5})
        victim, held = start_victim("edit", shared_url, namespace, tmp_path, api)
        victim.kill()
        victim.join(10)
        assert victim.exitcode == -9
        entered_at, found = edit_after(api, shared_url, namespace)
        assert found == {"n": 5}  # the killed body's changes were never saved
        assert entered_at >= held["before"] + LEASE - 0.05, "edit entered before the killed lease ran out"
        assert entered_at <= held["at"] + LEASE + SLACK
        assert store.get("res") == {"n": 6}
    assert_sqlite_intact(shared_url)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op", ["edit", "incr"])
def test_sigkill_workers_mid_run(shared_url: str, namespace: str, tmp_path: Path, op: str, api: str) -> None:
    """Four workers loop; two are killed at random moments; the survivors carry on.

    Each worker (each task of an async worker) acknowledges (appends to its file) every operation
    that returned, before starting the next, so each killed worker has at most one operation per
    task in flight and unacknowledged.
    """
    rng = random.Random()
    n_workers, n_killed = 4, 2
    in_flight_per_worker = 1 if api == "sync" else ASYNC_TASKS
    acks = [tmp_path / f"ack-{i}" for i in range(n_workers)]
    stop = tmp_path / "stop"
    ctx = context_for(api)
    procs = [
        ctx.Process(
            target=workers.loop_and_ack if api == "sync" else async_workers.loop_and_ack,
            args=(shared_url, namespace, op, "count", LEASE, str(ack), str(stop))
            + (() if api == "sync" else (ASYNC_TASKS,)),
            daemon=True,
        )
        for ack in acks
    ]
    try:
        for p in procs:
            p.start()
        if api == "async":  # a spawned interpreter takes a while to import: kill mid-run, not mid-import
            wait_for_acks(acks, procs)
        for victim in procs[:n_killed]:
            time.sleep(rng.uniform(0.3, 0.8))
            assert victim.is_alive(), f"worker exited early with code {victim.exitcode}"
            victim.kill()
            victim.join(10)
            assert victim.exitcode == -9
        acked_at_last_kill = len(workers.read_acks(acks))
        # A lease left by a killed edit runs out; the survivors go on.
        deadline = time.monotonic() + LEASE + SLACK
        while len(workers.read_acks(acks)) < acked_at_last_kill + 5:
            assert time.monotonic() < deadline, "the survivors made no progress after the kills"
            time.sleep(0.05)
        stop.touch()
        for p in procs[n_killed:]:
            p.join(LEASE + SLACK + 10)
            assert p.exitcode == 0, f"surviving worker exit code {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)

    acked = workers.read_acks(acks)
    assert len(acked) == len(set(acked)), "an acknowledged value was handed out twice"
    with Store(shared_url, namespace=namespace) as store:
        raw = store.get("count")
        final = raw["n"] if op == "edit" else raw
    assert len(acked) <= final <= len(acked) + n_killed * in_flight_per_worker
    assert max(acked) <= final
    assert_sqlite_intact(shared_url)
