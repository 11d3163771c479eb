"""Crashes: processes killed with SIGKILL while they hold a lock, sit inside ``edit`` or write.

A killed holder frees its lock when the lease runs out (not before, and not much later), its
unsaved changes are never saved, and every acknowledged operation survives: the final count lies
between the acknowledged operations and those plus the operations the killed processes had in
flight. SQLite files pass ``PRAGMA integrity_check`` afterwards.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from sharedstate import Store
from tests import workers

LEASE = 1.0
# Generous: the machine is shared, so only a gross overrun (a lock that never frees) fails.
SLACK = 4.0


def wait_for_file(path: Path, process: Any, limit: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert process.is_alive(), f"worker exited early with code {process.exitcode}"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {limit}s"
        time.sleep(0.01)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


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


def start_victim(what: str, url: str, namespace: str, tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    marker = tmp_path / f"{what}-marker.json"
    ctx = multiprocessing.get_context("fork")
    victim = ctx.Process(
        target=workers.hold_and_hang, args=(url, namespace, what, "res", LEASE, str(marker)), daemon=True
    )
    victim.start()
    try:
        held = wait_for_file(marker, victim)
    except BaseException:
        victim.kill()
        victim.join(5)
        raise
    return victim, held


@pytest.mark.timeout(60)
def test_sigkill_while_holding_lock(shared_url: str, namespace: str, tmp_path: Path) -> None:
    victim, held = start_victim("lock", shared_url, namespace, tmp_path)
    victim.kill()  # SIGKILL: no finally, no atexit, no release
    victim.join(10)
    assert victim.exitcode == -9
    with Store(shared_url, namespace=namespace) as store:
        lock = store.lock("res", ttl=5)
        lock.acquire(timeout=LEASE + SLACK)
        acquired_at = time.time()
        try:
            assert acquired_at >= held["before"] + LEASE - 0.05, "the lock was taken before its lease ran out"
            assert acquired_at <= held["at"] + LEASE + SLACK
        finally:
            lock.release()
    assert_sqlite_intact(shared_url)


@pytest.mark.timeout(60)
def test_sigkill_inside_edit(shared_url: str, namespace: str, tmp_path: Path) -> None:
    with Store(shared_url, namespace=namespace) as store:
        store.set("res", {"n": 5})
        victim, held = start_victim("edit", shared_url, namespace, tmp_path)
        victim.kill()
        victim.join(10)
        assert victim.exitcode == -9
        with store.edit("res", timeout=LEASE + SLACK) as obj:
            entered_at = time.time()
            assert obj == {"n": 5}  # the killed body's changes were never saved
            obj["n"] += 1
        assert entered_at >= held["before"] + LEASE - 0.05, "edit entered before the killed lease ran out"
        assert entered_at <= held["at"] + LEASE + SLACK
        assert store.get("res") == {"n": 6}
    assert_sqlite_intact(shared_url)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op", ["edit", "incr"])
def test_sigkill_workers_mid_run(shared_url: str, namespace: str, tmp_path: Path, op: str) -> None:
    """Four workers loop; two are killed at random moments; the survivors carry on.

    Each worker acknowledges (appends to its file) every operation that returned, before starting
    the next, so each killed worker has at most one operation in flight and unacknowledged.
    """
    rng = random.Random()
    n_workers, n_killed = 4, 2
    acks = [tmp_path / f"ack-{i}" for i in range(n_workers)]
    stop = tmp_path / "stop"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=workers.loop_and_ack,
            args=(shared_url, namespace, op, "count", LEASE, str(ack), str(stop)),
            daemon=True,
        )
        for ack in acks
    ]
    try:
        for p in procs:
            p.start()
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
    assert len(acked) <= final <= len(acked) + n_killed
    assert max(acked) <= final
    assert_sqlite_intact(shared_url)
