"""Worker functions for the multi-process ``AsyncStore`` tests (importable by ``spawn`` children).

Each worker runs one event loop with an ``AsyncStore`` of its own, the way one uvicorn worker
would, and writes its result to a JSON file (``tests.workers.write_result``).
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from typing import Any

from sharedstate import AsyncStore, ConflictError
from tests.workers import append_line, write_result


def count(url: str, namespace: str, tasks: int, per_task: int, out: str) -> None:
    """``tasks`` tasks each increment counter ``"n"`` ``per_task`` times; values to ``out``."""

    async def main() -> dict[str, Any]:
        values: list[int] = []
        errors: list[str] = []
        async with AsyncStore(url, namespace=namespace) as store:
            counter = store.counter("n")

            async def task() -> None:
                for _ in range(per_task):
                    try:
                        values.append(await counter.incr())
                    except Exception:
                        errors.append(traceback.format_exc())

            await asyncio.gather(*(task() for _ in range(tasks)))
        return {"values": values, "errors": errors}

    write_result(out, asyncio.run(main()))


def count_sqlite_changes(
    url: str, namespace: str, tasks: int, per_task: int, start_at: float, out: str
) -> None:
    """``count`` on ``sqlite://`` from ``start_at`` (unix time, so the processes contend), also
    reporting how many rows this process's connection wrote (``total_changes``): fewer than its
    increments when some were written together."""

    async def main() -> dict[str, Any]:
        values: list[int] = []
        errors: list[str] = []
        async with AsyncStore(url, namespace=namespace) as store:
            counter = store.counter("n")
            await store.get("warm")  # open the connection before counting its changes
            conn = store.backend.sync._local.conn  # type: ignore[attr-defined]
            before = conn.total_changes
            await asyncio.sleep(max(0.0, start_at - time.time()))

            async def task() -> None:
                for _ in range(per_task):
                    try:
                        values.append(await counter.incr())
                    except Exception:
                        errors.append(traceback.format_exc())

            await asyncio.gather(*(task() for _ in range(tasks)))
            changes = conn.total_changes - before
        return {"values": values, "errors": errors, "changes": changes}

    write_result(out, asyncio.run(main()))


def hold_and_hang(url: str, namespace: str, what: str, name: str, lease: float, marker: str) -> None:
    """``tests.workers.hold_and_hang`` in an event loop: take ``async with store.lock(name)`` (or
    enter ``async with store.edit(name)``), record when, then hang (awaiting) until killed."""

    async def main() -> None:
        async with AsyncStore(url, namespace=namespace) as store:
            await store.get(name)  # connect first, so "before" is close to the acquisition
            before = time.time()
            if what == "lock":
                async with store.lock(name, ttl=lease):
                    write_result(marker, {"before": before, "at": time.time(), "pid": os.getpid()})
                    await asyncio.sleep(600)
            elif what == "edit":
                async with store.edit(name, default={"n": 0}, lease=lease) as obj:
                    obj["n"] += 1000  # must never be saved: this process dies inside the body
                    obj["victim"] = os.getpid()
                    write_result(marker, {"before": before, "at": time.time(), "pid": os.getpid()})
                    await asyncio.sleep(600)
            else:
                raise ValueError(what)

    asyncio.run(main())


def loop_and_ack(
    url: str, namespace: str, op: str, name: str, lease: float, ack: str, stop: str, tasks: int = 1
) -> None:
    """``tests.workers.loop_and_ack`` with ``tasks`` asyncio tasks in one event loop: each task
    increments ``name`` until the file ``stop`` exists and appends every acknowledged value to
    ``ack``. After a ``SIGKILL`` at most ``tasks`` operations are in flight and unacknowledged."""

    async def main() -> None:
        async with AsyncStore(url, namespace=namespace) as store:

            async def task() -> None:
                while not os.path.exists(stop):
                    if op == "edit":
                        try:
                            async with store.edit(name, default={"n": 0}, lease=lease) as obj:
                                obj["n"] += 1
                                value = obj["n"]
                        except ConflictError:
                            continue  # stalled past the lease (busy machine): not saved, not acknowledged
                    elif op == "incr":
                        value = await store.incr(name)
                    else:
                        raise ValueError(op)
                    append_line(ack, str(value))

            await asyncio.gather(*(task() for _ in range(tasks)))

    asyncio.run(main())


def cache_caller(url: str, namespace: str, tasks: int, start_at: float, out: str) -> None:
    """``tasks`` tasks call one cached coroutine at ``start_at`` (wall clock); each computation
    increments ``"computed"``. Writes the results every task got."""

    async def main() -> dict[str, Any]:
        async with AsyncStore(url, namespace=namespace) as store:

            @store.cached(ttl=60, name="slow")
            async def slow(x: int) -> int:
                await store.incr("computed")
                await asyncio.sleep(0.5)
                return x * 2

            await asyncio.sleep(max(0.0, start_at - time.time()))
            results = await asyncio.gather(*(slow(21) for _ in range(tasks)))
        return {"results": list(results)}

    write_result(out, asyncio.run(main()))


def run_queue_wait() -> float:
    """Seconds this thread has spent ready to run but waiting for a CPU (Linux schedstat), 0 elsewhere.

    On a loaded machine (2 cores shared by many processes) a process can wait tens of ms for a CPU
    however well its event loop behaves; that wait is the machine's, not the loop's.
    """
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def contend_with_probe(url: str, namespace: str, seconds: float, tasks: int, out: str) -> None:
    """Contend for one lock and one edited key for ``seconds`` while a probe task wakes every
    5 ms; writes the probe's worst lateness (``max_lateness``), its worst lateness not explained by
    the kernel's run queue (``max_blocked``: the loop was kept busy or blocked by this process) and
    how many lock holds and edits completed.

    Each contender pauses 2 ms between its operations, as a request handler does between
    requests: the processes contend hard for the key, but leave the shared CPUs some air, so a
    late wake-up means a blocked loop, not a starved process."""

    async def main() -> dict[str, Any]:
        done = {"locks": 0, "edits": 0}
        lateness: list[float] = []
        blocked: list[float] = []
        async with AsyncStore(url, namespace=namespace) as store:
            stop = time.monotonic() + seconds

            async def probe() -> None:
                while time.monotonic() < stop:
                    before, queued = time.monotonic(), run_queue_wait()
                    await asyncio.sleep(0.005)
                    late = time.monotonic() - before - 0.005
                    lateness.append(late)
                    # Minus the time the loop's thread was ready but the kernel ran others.
                    blocked.append(late - (run_queue_wait() - queued))

            async def locker() -> None:
                while time.monotonic() < stop:
                    async with store.lock("L", ttl=10):
                        await asyncio.sleep(0.001)
                    done["locks"] += 1
                    await asyncio.sleep(0.002)

            async def editor() -> None:
                while time.monotonic() < stop:
                    async with store.edit("E", default={"n": 0}, lease=10) as obj:
                        obj["n"] += 1
                    done["edits"] += 1
                    await asyncio.sleep(0.002)

            workers = [locker() for _ in range(tasks)] + [editor() for _ in range(tasks)]
            await asyncio.gather(probe(), *workers)
        return {"max_lateness": max(lateness), "max_blocked": max(blocked), "wakeups": len(lateness), **done}

    write_result(out, asyncio.run(main()))
