"""The SQLite file itself: deleted or replaced under running processes, special characters in its
path, and expired rows that must not pile up.

Counting tests use real processes: two that were running before the file changed, and one started
after, all incrementing one counter; each appends every value it got to its own file.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from sharedstate import BackendUnavailableError, Store
from sharedstate.backends.sqlite import SQLiteBackend
from tests.workers import append_line


def count_until_stopped(url: str, ack: str, control: str) -> None:
    """Increment ``n`` until ``control/stop`` exists, appending each value to ``ack``.

    While ``control/pause`` exists it increments nothing and says so with ``ack.paused`` (so the
    parent knows no increment is in flight), keeping its connection open like an idle worker.
    """
    paused = Path(ack + ".paused")
    with Store(url) as store:
        while not os.path.exists(os.path.join(control, "stop")):
            if os.path.exists(os.path.join(control, "pause")):
                paused.touch()
                time.sleep(0.005)
                continue
            if paused.exists():
                paused.unlink()
            append_line(ack, str(store.incr("n")))


def acked(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def wait_until(condition: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def sqlite_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


def run_with_file_change(tmp_path: Path, db: Path, change: Any) -> tuple[list[int], list[int]]:
    """Two counting processes run; paused (idle, connections open), the file is changed by
    ``change()``; they resume, and once both have counted again a third process joins.

    Returns (values acknowledged before the change, values acknowledged after it).
    """
    url = f"sqlite:///{db}"
    control = tmp_path / "control"
    control.mkdir()
    acks = [tmp_path / f"ack{i}" for i in range(3)]
    ctx = multiprocessing.get_context("fork")

    def start(ack: Path) -> Any:
        proc = ctx.Process(target=count_until_stopped, args=(url, str(ack), str(control)), daemon=True)
        proc.start()
        return proc

    procs = [start(acks[0]), start(acks[1])]
    try:
        wait_until(lambda: all(len(acked(a)) >= 30 for a in acks[:2]), "the first two to count")
        (control / "pause").touch()
        wait_until(lambda: all(Path(f"{a}.paused").exists() for a in acks[:2]), "both to pause")
        before = [acked(a) for a in acks[:2]]
        change()
        (control / "pause").unlink()
        wait_until(
            lambda: all(len(acked(a)) > len(b) + 5 for a, b in zip(acks, before, strict=False)),
            "both to count again after the change",
        )
        procs.append(start(acks[2]))
        wait_until(lambda: len(acked(acks[2])) >= 100, "the new process to count")
        (control / "stop").touch()
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0, f"a counting process exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    after = [v for a, b in zip(acks, before, strict=False) for v in acked(a)[len(b) :]]
    after += acked(acks[2])
    return [v for b in before for v in b], after


def read_counter_and_check(db: Path) -> tuple[int, dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    with Store(f"sqlite:///{db}") as store:
        return store.get("n"), store.get("marker")


@pytest.mark.timeout(120)
def test_file_deleted_under_running_processes(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"

    def delete() -> None:
        for path in sqlite_files(db):
            path.unlink(missing_ok=True)

    before, after = run_with_file_change(tmp_path, db, delete)
    assert sorted(before) == list(range(1, len(before) + 1))
    final, _ = read_counter_and_check(db)
    # Everyone counted in the one file now at the path: from 1, no value twice, none lost.
    assert sorted(after) == list(range(1, final + 1))


@pytest.mark.timeout(120)
def test_file_replaced_under_running_processes(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    replacement = tmp_path / "restored.sqlite3"
    with Store(f"sqlite:///{replacement}") as store:
        store.incr("n", 1000)
        store.set("marker", {"from": "the replacement", "items": list(range(50))})
    assert not Path(f"{replacement}-wal").exists()  # checkpointed on close: one self-contained file

    before, after = run_with_file_change(tmp_path, db, lambda: os.replace(replacement, db))
    assert sorted(before) == list(range(1, len(before) + 1))
    final, marker = read_counter_and_check(db)
    # The old file's WAL was not applied to the new file: its counter went on from 1000 ...
    assert sorted(after) == list(range(1001, final + 1))
    # ... and its other content is intact.
    assert marker == {"from": "the replacement", "items": list(range(50))}


def test_reads_follow_a_replaced_file(tmp_path: Path) -> None:
    db, replacement = tmp_path / "state.sqlite3", tmp_path / "new.sqlite3"
    with Store(f"sqlite:///{db}") as store, Store(f"sqlite:///{replacement}") as other:
        store.set("k", "old")
        other.set("k", "new")
        other.close()
        os.replace(replacement, db)
        time.sleep(0.2)  # reads check the file at most every 0.1 s
        assert store.get("k") == "new"


def test_directory_deleted_under_a_running_process(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    with Store(f"sqlite:///{directory}/state.sqlite3") as store:
        store.set("k", 1)
        for path in sqlite_files(directory / "state.sqlite3"):
            path.unlink()
        directory.rmdir()
        time.sleep(0.01)  # writes check the file at most every millisecond
        with pytest.raises(BackendUnavailableError, match="does not exist") as raised:
            store.set("k", 2)
        assert raised.value.applied is False


# -- '#', '?' and '%' in the path -----------------------------------------------------------------


def test_hash_in_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="%23"):
        Store(f"sqlite:///{tmp_path}/app#1.db")
    assert list(tmp_path.iterdir()) == []  # and nothing was created under a cut-short name


def test_question_mark_in_path_is_refused_as_an_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        Store(f"sqlite:///{tmp_path}/app?1.db")


@pytest.mark.parametrize(("encoded", "name"), [("app%231.db", "app#1.db"), ("a%3Fb%25.db", "a?b%.db")])
def test_percent_encoded_path_is_decoded(tmp_path: Path, encoded: str, name: str) -> None:
    with Store(f"sqlite:///{tmp_path}/{encoded}?timeout=5") as store:
        store.set("k", "v")
        assert store.backend.path == str(tmp_path / name)  # type: ignore[attr-defined]
        described = store.backend.describe()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [name]
    with Store(described) as again:  # describe() gives a URL that opens the same file
        assert again.get("k") == "v"


def test_timeout_is_validated() -> None:
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="timeout"):
            SQLiteBackend.from_url(f"sqlite:///x.db?timeout={bad}")


@pytest.mark.parametrize("op", ["incr", "set", "update"])
def test_write_lock_held_elsewhere_waits_timeout_once_then_fails_unapplied(tmp_path: Path, op: str) -> None:
    """The sync backend waits in SQLite's busy handler: no retry may wait a whole timeout again."""
    path = tmp_path / "locked.db"
    store = Store(f"sqlite:///{path}?timeout=0.5")
    store.incr("n")  # connected, file checked: the next write takes the hot path
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        began = time.monotonic()
        with pytest.raises(BackendUnavailableError) as raised:
            if op == "incr":
                store.incr("n")
            elif op == "set":
                store.set("n", 5)
            else:
                store.update("n", lambda n: n + 1)
        elapsed = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert raised.value.applied is False
    assert "locked" in str(raised.value)
    assert 0.4 < elapsed < 0.95, f"waited {elapsed:.2f}s for a timeout of 0.5s"
    assert store.get("n") == 1  # nothing applied, and the store works again
    assert store.incr("n") == 2


# -- expired rows under a load of new keys with short TTLs ---------------------------------------


def write_new_keys(url: str, namespace: str, count: int) -> None:
    """Cache entries / visitor sessions: every write a new key with a TTL that soon runs out."""
    with Store(url, namespace=namespace) as store:
        for i in range(count):
            store.set(f"visitor:{os.getpid()}:{i}", {"seen": i, "pad": "x" * 150}, ttl=0.01)


def count_rows(url: str, namespace: str) -> tuple[int, int]:
    """(rows, expired rows) of ``namespace``, straight from the database."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE expires_at <= ?) FROM sharedstate"
                " WHERE key >= ? AND key < ?",
                (time.time(), f"{namespace}/", f"{namespace}0"),
            ).fetchone()
        finally:
            conn.close()
        return int(row[0]), int(row[1])
    import psycopg

    base, _, query = url.partition("?")
    table = dict(p.split("=", 1) for p in query.split("&"))["table"]
    with psycopg.connect(base, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT count(*), count(*) FILTER (WHERE expires_at <= now()) FROM "{table}"'
            " WHERE key >= %s AND key < %s",
            (f"{namespace}/", f"{namespace}0"),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_expired_rows_stay_bounded_under_new_keys(backend: str, namespace: str, tmp_path: Path) -> None:
    """Three processes write only new keys with a 10 ms TTL. The lazy sweep removes at least as
    many expired rows as they write, so what is left is about one sweep interval per process; and
    the SQLite WAL stays bounded while they write."""
    from tests import servers

    url = servers.backend_url(backend, tmp_path)
    processes, per_process = 3, 3000 if backend == "sqlite" else 1500
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=write_new_keys, args=(url, namespace, per_process)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    wal = Path(url.removeprefix("sqlite:///") + "-wal")
    largest_wal = 0
    while any(proc.is_alive() for proc in procs):
        if backend == "sqlite" and wal.exists():
            largest_wal = max(largest_wal, wal.stat().st_size)
        time.sleep(0.02)
    for proc in procs:
        proc.join(150)
        assert proc.exitcode == 0
    rows, expired = count_rows(url, namespace)
    written = processes * per_process
    # Every process sweeps after every 100 writes, up to twice what it wrote: left over are at
    # most the rows since each one's last sweep and those still live at that sweep (bounded by
    # 300 per process here). The old pacing (200 rows per 500 writes) left 60% of them.
    assert expired <= processes * 300, f"{expired} of {written} written rows are expired and unswept"
    assert rows <= processes * 300 + 50
    # The WAL was emptied now and then, instead of growing by a page or three with every write.
    assert largest_wal <= 40 * 1024 * 1024, f"the WAL grew to {largest_wal / 1e6:.0f} MB"


def _in_thread(fn: Any) -> Any:
    import threading

    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_a_thread_per_request_reuses_the_connection_of_ended_threads(tmp_path: Path) -> None:
    """werkzeug's threaded server starts a thread per request: each used to open a connection."""
    with Store(f"sqlite:///{tmp_path}/state.sqlite3") as store:
        backend = store.backend
        assert isinstance(backend, SQLiteBackend)

        def request(i: int) -> int:
            store.set(f"k{i}", i)
            assert store.get(f"k{i}") == i
            return id(backend._local.conn)

        assert len({_in_thread(lambda i=i: request(i)) for i in range(20)}) == 1
        assert len(backend._spares) == 1
    assert backend._spares == []  # closed with the store


def test_a_reused_connection_follows_a_replaced_file(tmp_path: Path) -> None:
    db, replacement = tmp_path / "state.sqlite3", tmp_path / "new.sqlite3"
    with Store(f"sqlite:///{db}") as store, Store(f"sqlite:///{replacement}") as other:
        store.set("k", "old")
        assert _in_thread(lambda: store.get("k")) == "old"  # leaves its connection to a new thread
        other.set("k", "new")
        other.close()
        os.replace(replacement, db)
        assert _in_thread(lambda: store.get("k")) == "new"  # checked at once, not after 0.1 s


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_takes_the_parents_spare_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.sqlite3"
    with Store(url) as store:
        store.set("k", 1)
        spare = _in_thread(lambda: (store.get("k"), id(store.backend._local.conn))[1])
        assert [id(s[0]) for s in store.backend._spares] == [spare]
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()

        def child() -> None:
            value = store.get("k")  # the inherited store, in the child
            queue.put((value, id(store.backend._local.conn) != spare))

        proc = ctx.Process(target=child)
        proc.start()
        assert queue.get(timeout=30) == (1, True)
        proc.join(30)
        assert proc.exitcode == 0
        assert store.get("k") == 1 and [id(s[0]) for s in store.backend._spares] == [spare]
