"""Concurrency across real processes (``spawn`` and ``fork``) and threads, with exact counts.

Each worker process opens ``Store(url)`` itself, as a web worker would. Every increment's return
value is collected: the values must be exactly ``1..N`` (no duplicate, no gap) and the final value
exactly ``N``. Lock holders log ``enter``/``exit`` to one shared file, which would show any overlap.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from sharedstate import NotSupportedError, Store
from tests import workers

PROCESSES = 8
THREADS = 4

# op -> how to read the final value back
RMW_OPS = ["counter", "incr", "edit", "update", "dict_incr", "update_item"]


def final_value(store: Store, op: str, name: str) -> int:
    if op in ("counter", "incr"):
        return int(store.get(name))
    if op in ("edit", "update"):
        return int(store.get(name)["n"])
    return int(store.dict(name)["n"])


def hammer_processes(
    url: str, namespace: str, tmp_path: Path, context: str, op: str, per_thread: int, timeout: float = 240
) -> list[int]:
    outs = [tmp_path / f"out-{op}-{i}.json" for i in range(PROCESSES)]
    args = [(url, namespace, op, "shared", THREADS, per_thread, str(out)) for out in outs]
    workers.run_processes(context, workers.hammer, args, timeout)
    values: list[int] = []
    for out in outs:
        values.extend(workers.read_result(out)["values"])
    return values


def assert_exact(values: list[int], total: int) -> None:
    duplicates = sorted({v for v in values if values.count(v) > 1})[:10]
    assert not duplicates, f"values returned more than once: {duplicates}"
    assert len(values) == total
    assert sorted(values) == list(range(1, total + 1)), "the returned values have gaps"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_counter_8_processes_4_threads(shared_url: str, namespace: str, tmp_path: Path, context: str) -> None:
    values = hammer_processes(shared_url, namespace, tmp_path, context, "counter", per_thread=25)
    total = PROCESSES * THREADS * 25
    assert_exact(values, total)
    with Store(shared_url, namespace=namespace) as store:
        assert store.counter("shared").get() == total


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", ["incr", "edit", "update", "dict_incr", "update_item"])
def test_read_modify_write_8_processes_exact(
    shared_url: str, namespace: str, tmp_path: Path, op: str
) -> None:
    per_thread = 10 if op in ("edit", "update", "update_item") else 25
    context = "spawn" if op == "edit" else "fork"
    values = hammer_processes(shared_url, namespace, tmp_path, context, op, per_thread)
    total = PROCESSES * THREADS * per_thread
    assert_exact(values, total)
    with Store(shared_url, namespace=namespace) as store:
        assert final_value(store, op, "shared") == total


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("op", RMW_OPS)
def test_read_modify_write_8_processes_exact_stress(
    shared_url: str, namespace: str, tmp_path: Path, op: str
) -> None:
    per_thread = 200 if op in ("edit", "update", "update_item") else 500
    values = hammer_processes(shared_url, namespace, tmp_path, "spawn", op, per_thread, timeout=1100)
    total = PROCESSES * THREADS * per_thread
    assert_exact(values, total)
    with Store(shared_url, namespace=namespace) as store:
        assert final_value(store, op, "shared") == total


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op", RMW_OPS)
def test_read_modify_write_threads_exact(store: Store, op: str) -> None:
    """The same exactness with threads only, on every backend (``memory://`` included)."""
    threads, per_thread = 16, 10 if op in ("edit", "update", "update_item") else 30
    step = workers._increment_op(store, op, "shared")
    values: list[int] = []
    errors: list[BaseException] = []
    guard = threading.Lock()
    start = threading.Barrier(threads)

    def run() -> None:
        try:
            start.wait()
            mine = [step() for _ in range(per_thread)]
        except BaseException as exc:
            errors.append(exc)
            raise
        with guard:
            values.extend(mine)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    assert_exact(values, threads * per_thread)
    assert final_value(store, op, "shared") == threads * per_thread


def check_lock_log(log: Path, acquisitions: int) -> None:
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * acquisitions
    fences: list[int] = []
    for i in range(0, len(lines), 2):
        enter, exit_ = lines[i].split(), lines[i + 1].split()
        assert enter[0] == "enter", f"line {i + 1}: {lines[i]!r}: two holders overlapped"
        assert exit_ == ["exit", enter[1]], f"line {i + 2}: {lines[i + 1]!r}: two holders overlapped"
        fences.append(int(enter[2]))
    # Fencing tokens grow in the order the holders got the lock.
    assert all(a < b for a, b in itertools.pairwise(fences)), fences


@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_lock_excludes_processes_and_threads(
    shared_url: str, namespace: str, tmp_path: Path, context: str
) -> None:
    threads, rounds = 2, 4
    log = tmp_path / "lock.log"
    outs = [tmp_path / f"lock-{i}.json" for i in range(PROCESSES)]
    args = [(shared_url, namespace, "L", threads, rounds, 0.005, str(log), str(out)) for out in outs]
    workers.run_processes(context, workers.lock_holder, args, timeout=240)
    for out in outs:
        workers.read_result(out)
    check_lock_log(log, PROCESSES * threads * rounds)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_lock_excludes_processes_stress(shared_url: str, namespace: str, tmp_path: Path) -> None:
    threads, rounds = 4, 25
    log = tmp_path / "lock.log"
    outs = [tmp_path / f"lock-{i}.json" for i in range(PROCESSES)]
    args = [(shared_url, namespace, "L", threads, rounds, 0.002, str(log), str(out)) for out in outs]
    workers.run_processes("spawn", workers.lock_holder, args, timeout=1100)
    for out in outs:
        workers.read_result(out)
    check_lock_log(log, PROCESSES * threads * rounds)


@pytest.mark.timeout(120)
def test_lock_excludes_threads(store: Store, tmp_path: Path) -> None:
    """Mutual exclusion among threads of one process, on every backend (``memory://`` included)."""
    log = tmp_path / "lock.log"
    threads, rounds = 8, 5
    errors: list[BaseException] = []

    def run() -> None:
        me = f"x-{threading.get_ident()}"
        try:
            for _ in range(rounds):
                with store.lock("L", ttl=30, timeout=60) as lock:
                    workers.append_line(log, f"enter {me} {lock.fencing_token}")
                    time.sleep(0.002)
                    workers.append_line(log, f"exit {me}")
        except BaseException as exc:
            errors.append(exc)
            raise

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    check_lock_log(log, threads * rounds)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op", ["add", "setdefault", "pop"])
def test_single_winner_across_processes(shared_url: str, namespace: str, tmp_path: Path, op: str) -> None:
    """``add``, ``dict.setdefault`` and ``dict.pop`` racing in 8 processes: exactly one wins."""
    with Store(shared_url, namespace=namespace) as store:
        if op == "pop":
            store.dict("race")["item"] = "the prize"
        go_at = time.time() + 1.0  # after every process started
        outs = [tmp_path / f"race-{i}.json" for i in range(PROCESSES)]
        args = [(shared_url, namespace, op, "race", f"p{i}", go_at, str(out)) for i, out in enumerate(outs)]
        workers.run_processes("fork", workers.race_once, args, timeout=60)
        results = [workers.read_result(out)["result"] for out in outs]
        if op == "add":
            assert sorted(results) == [False] * (PROCESSES - 1) + [True]
            winner = f"p{results.index(True)}"
            assert store.get("race") == winner
        elif op == "setdefault":
            stored = store.dict("race")["item"]
            assert stored in {f"p{i}" for i in range(PROCESSES)}
            assert results == [stored] * PROCESSES  # everybody got the one stored value
        else:
            assert results.count("the prize") == 1, results
            assert results.count(None) == PROCESSES - 1, results
            assert "item" not in store.dict("race")


@pytest.mark.timeout(120)
def test_store_inherited_across_fork(shared_store: Store, tmp_path: Path) -> None:
    """A ``Store`` already in use by the parent keeps working in forked children and the parent.

    The parent has open connections when it forks (from this thread and from a thread that has
    ended), and keeps incrementing while the children do. (Forking while another thread of the
    parent is inside an operation is not supported: see the SQLite backend's notes on fork.)
    """
    assert shared_store.incr("n") == 1
    helper = threading.Thread(target=lambda: shared_store.get("n"))
    helper.start()
    helper.join()
    children, per_child = 4, 50
    outs = [tmp_path / f"child-{i}.json" for i in range(children)]
    parent_values: list[int] = []

    def parent_side() -> None:
        for _ in range(per_child):
            parent_values.append(shared_store.incr("n"))

    args = [(shared_store, "n", per_child, str(o)) for o in outs]
    workers.run_processes("fork", workers.hammer_inherited, args, 60, meanwhile=parent_side)
    values = [1, *parent_values]
    for out in outs:
        values.extend(workers.read_result(out)["values"])
    total = 1 + (children + 1) * per_child
    assert_exact(values, total)
    assert shared_store.get("n") == total


@pytest.mark.timeout(60)
def test_memory_store_refuses_a_forked_child(tmp_path: Path) -> None:
    """``memory://`` used from another process raises, naming ``sqlite://``, instead of forking state."""
    store = Store("memory://")
    store.set("k", "parent")
    store.set("n", 1)
    out = tmp_path / "child.json"
    workers.run_processes("fork", workers.use_inherited_store, [(store, str(out))], timeout=30)
    report = workers.read_result(out)
    for what in ("get", "set", "incr", "counter"):
        assert report[what].get("raised") == NotSupportedError.__name__, (what, report[what])
        assert "sqlite://" in report[what]["message"]
    # The parent's data is untouched by the child and still served to the parent.
    assert store.get("k") == "parent"
    assert store.incr("n") == 2
