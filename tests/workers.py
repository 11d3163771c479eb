"""Worker functions for the multi-process tests (importable, so ``spawn`` children can run them).

Every worker opens its own ``Store(url, namespace=...)`` the way a web worker process would, and
reports through files: a result file written once at the end (JSON, renamed into place so the
parent never reads half of it), or an acknowledgement file appended to after every completed
operation, which survives a ``SIGKILL`` of the worker.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sharedstate import ConflictError, Store


def append_line(path: str | Path, line: str) -> None:
    """Append one line with a single ``write`` on an ``O_APPEND`` descriptor.

    Concurrent appenders (threads and processes) never interleave within a line, and the line is
    in the kernel before this returns, so it survives ``SIGKILL`` of the writer.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def write_result(path: str | Path, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _increment_op(store: Store, op: str, name: str) -> Callable[[], int]:
    """One increment of the shared integer by way of ``op``; returns the value it produced."""
    if op == "counter":
        counter = store.counter(name)
        return counter.incr
    if op == "incr":
        return lambda: store.incr(name)
    if op == "dict_incr":
        items = store.dict(name)
        return lambda: items.incr("n")
    if op == "update_item":
        items = store.dict(name)
        return lambda: items.update_item("n", lambda v: v + 1, default=0)
    if op == "update":
        return lambda: store.update(name, lambda s: {**s, "n": s["n"] + 1}, default={"n": 0})["n"]
    if op == "edit":

        def edit() -> int:
            with store.edit(name, default={"n": 0}) as obj:
                obj["n"] += 1
                value: int = obj["n"]
            return value

        return edit
    raise ValueError(f"unknown op {op!r}")


def hammer(url: str, namespace: str, op: str, name: str, threads: int, per_thread: int, out: str) -> None:
    """Run ``threads`` threads that each increment ``name`` ``per_thread`` times by way of ``op``.

    Writes ``{"values": [...], "errors": [...]}`` to ``out``: every value an increment returned.
    """
    values: list[int] = []
    errors: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(threads)
    with Store(url, namespace=namespace) as store:

        def run() -> None:
            mine: list[int] = []
            try:
                step = _increment_op(store, op, name)
                start.wait()
                for _ in range(per_thread):
                    mine.append(step())
            except BaseException:
                with guard:
                    errors.append(traceback.format_exc())
            with guard:
                values.extend(mine)

        pool = [threading.Thread(target=run) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    write_result(out, {"values": values, "errors": errors, "pid": os.getpid()})


def hammer_inherited(store: Store, name: str, count: int, out: str) -> None:
    """Increment ``name`` with a ``Store`` inherited from the parent across ``fork``."""
    values: list[int] = []
    errors: list[str] = []
    try:
        for _ in range(count):
            values.append(store.incr(name))
    except BaseException:
        errors.append(traceback.format_exc())
    write_result(out, {"values": values, "errors": errors, "pid": os.getpid()})


def lock_holder(
    url: str, namespace: str, name: str, threads: int, rounds: int, hold: float, log: str, out: str
) -> None:
    """Threads that each take lock ``name`` ``rounds`` times and log ``enter``/``exit`` around a sleep.

    If two holders ever overlapped, the log would show two ``enter`` lines in a row.
    """
    errors: list[str] = []
    guard = threading.Lock()
    with Store(url, namespace=namespace) as store:

        def run() -> None:
            me = f"{os.getpid()}-{threading.get_ident()}"
            try:
                for _ in range(rounds):
                    with store.lock(name, ttl=30, timeout=60) as lock:
                        append_line(log, f"enter {me} {lock.fencing_token}")
                        time.sleep(hold)
                        append_line(log, f"exit {me}")
            except BaseException:
                with guard:
                    errors.append(traceback.format_exc())

        pool = [threading.Thread(target=run) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    write_result(out, {"errors": errors, "pid": os.getpid()})


def race_once(url: str, namespace: str, op: str, name: str, ident: str, go_at: float, out: str) -> None:
    """Try one contended single-winner operation at wall time ``go_at``; report what it returned."""
    with Store(url, namespace=namespace) as store:
        items = store.dict(name)
        delay = go_at - time.time()
        if delay > 0:
            time.sleep(delay)
        result: Any
        if op == "add":
            result = store.add(name, ident)
        elif op == "setdefault":
            result = items.setdefault("item", ident)
        elif op == "pop":
            result = items.pop("item", None)
        else:
            raise ValueError(op)
    write_result(out, {"result": result, "pid": os.getpid()})


def loop_and_ack(url: str, namespace: str, op: str, name: str, lease: float, ack: str, stop: str) -> None:
    """Increment ``name`` until the file ``stop`` exists, appending every acknowledged value to ``ack``.

    ``op`` is ``"edit"`` (with a lease of ``lease`` seconds) or ``"incr"``. A value is appended only
    after the operation returned, and before the next one starts, so after a ``SIGKILL`` at most one
    operation is in flight and unacknowledged.
    """
    with Store(url, namespace=namespace) as store:
        while not os.path.exists(stop):
            if op == "edit":
                try:
                    with store.edit(name, default={"n": 0}, lease=lease) as obj:
                        obj["n"] += 1
                        value = obj["n"]
                except ConflictError:
                    continue  # stalled past the lease (busy machine): not saved, not acknowledged
            elif op == "incr":
                value = store.incr(name)
            else:
                raise ValueError(op)
            append_line(ack, str(value))


def hold_and_hang(url: str, namespace: str, what: str, name: str, lease: float, marker: str) -> None:
    """Take lock ``name`` (or enter ``edit(name)``), record when, then hang until killed."""
    with Store(url, namespace=namespace) as store:
        store.get(name)  # connect first, so "before" is close to the acquisition
        # The lease starts after "before" and before "at": it cannot end before before + lease.
        before = time.time()
        if what == "lock":
            with store.lock(name, ttl=lease):
                write_result(marker, {"before": before, "at": time.time(), "pid": os.getpid()})
                time.sleep(600)
        elif what == "edit":
            with store.edit(name, default={"n": 0}, lease=lease) as obj:
                obj["n"] += 1000  # must never be saved: this process dies inside the body
                obj["victim"] = os.getpid()
                write_result(marker, {"before": before, "at": time.time(), "pid": os.getpid()})
                time.sleep(600)
        else:
            raise ValueError(what)


def use_inherited_store(store: Store, out: str) -> None:
    """In a forked child, call the parent's ``store`` and report what each call raised."""
    report: dict[str, Any] = {}
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("k"),
        "set": lambda: store.set("k", "from child"),
        "incr": lambda: store.incr("n"),
        "counter": lambda: store.counter("c").incr(),
    }
    for what, call in calls.items():
        try:
            report[what] = {"returned": repr(call())}
        except BaseException as exc:
            report[what] = {"raised": type(exc).__name__, "message": str(exc)}
    write_result(out, report)


# -- parent side ------------------------------------------------------------------------------


def run_processes(
    context: str,
    target: Callable[..., None],
    arg_lists: list[tuple[Any, ...]],
    timeout: float,
    meanwhile: Callable[[], None] | None = None,
) -> None:
    """Start one process per argument tuple in multiprocessing ``context``; wait; check exit codes.

    ``meanwhile`` runs in the parent after every process started. Processes still running after
    ``timeout`` seconds are killed (only these, by their own handle) and the call fails.
    """
    import multiprocessing

    ctx = multiprocessing.get_context(context)
    procs = [ctx.Process(target=target, args=args, daemon=True) for args in arg_lists]
    try:
        for p in procs:
            p.start()
        if meanwhile is not None:
            meanwhile()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [p.pid for p in procs if p.is_alive()]
        assert not hung, f"worker processes {hung} still running after {timeout}s"
        codes = [p.exitcode for p in procs]
        assert codes == [0] * len(procs), f"worker exit codes: {codes}"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def read_result(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        data: dict[str, Any] = json.load(f)
    errors = data.get("errors") or []
    assert not errors, f"worker {data.get('pid')} failed:\n" + "\n".join(errors)
    return data


def read_acks(paths: list[Path]) -> list[int]:
    """Every acknowledged value in the ack files (a missing file: the worker acknowledged nothing)."""
    values: list[int] = []
    for path in paths:
        if path.exists():
            values.extend(int(line) for line in path.read_text().splitlines() if line.strip())
    return values
