"""Async backends against the sync ones (and, where there is one, the raw async driver), in one run.

    python benchmarks/bench_async.py                      # every subject, 5 rounds
    python benchmarks/bench_async.py --only sqlite --rounds 7
    python benchmarks/bench_async.py --quick              # tiny cells, a smoke test

Workload, the same for every subject: ``--processes`` (4) spawned processes increment one key
``--ops`` times each, at the backend level (``Backend.incr`` / ``await AsyncBackend.incr``):

- ``incr ops/s``: one caller per process (a thread, or one asyncio task awaiting each call in
  turn), ops/s over the whole run;
- ``incr ops/s, 16 tasks``: async subjects only, 16 tasks per process sharing the backend;
- ``lost``: expected minus the final value, worst round (above 0 is a correctness bug);
- ``max lag ms``: async subjects only, the latest wake-up of a task that sleeps 5 ms at a time
  on each process's loop while the increments run, less the time the process waited for a CPU
  meanwhile (4 processes on 2 cores wait a lot; the loop is not to blame for that). The bound the
  async backends keep: 50 ms.

A round measures every subject once (interleaved, so a slow spell of the shared machine falls on
all alike); each cell is the median of the rounds. Read the ratios printed under the table.

To add subjects (redis://, postgresql://, a raw driver), add ``Subject`` entries to ``SUBJECTS``:
an opener that runs in the worker process and returns an object with ``incr(key)`` (sync) or
``async incr(key)`` (async) and ``close()`` / ``aclose()``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

RUN = os.environ.setdefault("SHAREDSTATE_BENCH_RUN", uuid.uuid4().hex[:8])
LAG_PERIOD = 0.005  # seconds the lag probe sleeps at a time


# -- subjects --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    name: str
    kind: str  # "sync" or "async"
    opener: Callable[[str], Any]  # runs in the worker: url -> client
    url_of: Callable[[str], str | None]  # tmp dir -> the URL (None: unavailable, row skipped)
    ratio_to: str | None = None  # the subject this one's incr is compared with under the table


def sqlite_url(tmp: str) -> str:
    return f"sqlite:///{tmp}/bench-async.sqlite3"


def open_sync(url: str) -> Any:
    from sharedstate.backends import backend_from_url

    return backend_from_url(url)


def open_async(url: str) -> Any:
    from sharedstate.backends import async_backend_from_url

    return async_backend_from_url(url)


def open_sqlite_threaded(url: str) -> Any:
    """The design not taken for async sqlite://: each call of the sync backend in a thread."""
    from sharedstate.backends.offload import ThreadedBackend
    from sharedstate.backends.sqlite import SQLiteBackend

    class ThreadedSQLite(ThreadedBackend):
        sync_class = SQLiteBackend
        schemes = ("sqlite",)

    return ThreadedSQLite.from_url(url)


SUBJECTS: list[Subject] = [
    Subject("sqlite:// sync", "sync", open_sync, sqlite_url),
    Subject("sqlite:// async (on the loop)", "async", open_async, sqlite_url, ratio_to="sqlite:// sync"),
    Subject(
        "sqlite:// async (each call in a thread)",
        "async",
        open_sqlite_threaded,
        sqlite_url,
        ratio_to="sqlite:// sync",
    ),
    # redis:// and postgresql:// rows (sync, async, raw driver) go here.
]


# -- workers ---------------------------------------------------------------------------------------


def _worker(
    subject: Subject, url: str, key: str, ops: int, tasks: int, ready: Any, start: Any, out: Any
) -> None:
    client = subject.opener(url)
    if subject.kind == "sync":
        client.incr(key + "-warm")
        ready.release()
        start.wait()
        for _ in range(ops):
            client.incr(key)
        out.put((time.monotonic(), 0.0))
        client.close()
        return
    asyncio.run(_async_worker(client, key, ops, tasks, ready, start, out))


async def _async_worker(
    client: Any, key: str, ops: int, tasks: int, ready: Any, start: Any, out: Any
) -> None:
    await client.incr(key + "-warm")
    ready.release()
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    stop = asyncio.Event()
    worst = [0.0]

    async def probe() -> None:
        while not stop.is_set():
            before, queued = time.monotonic(), _waiting_for_cpu()
            await asyncio.sleep(LAG_PERIOD)
            late = time.monotonic() - before - LAG_PERIOD
            worst[0] = max(worst[0], late - (_waiting_for_cpu() - queued))

    async def caller(count: int) -> None:
        for _ in range(count):
            await client.incr(key)

    prober = asyncio.create_task(probe())
    share, extra = divmod(ops, tasks)
    await asyncio.gather(*(caller(share + (i < extra)) for i in range(tasks)))
    done = time.monotonic()
    stop.set()
    await prober
    out.put((done, worst[0]))
    await client.aclose()


def _waiting_for_cpu() -> float:
    """Seconds this thread has been runnable but not running (Linux schedstat; 0 elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def measure(subject: Subject, url: str, ops: int, processes: int, tasks: int) -> tuple[float, int, float]:
    """One cell: (ops/s, lost updates, worst loop lag in seconds)."""
    ctx = mp.get_context("spawn")
    key = f"bench{RUN}/{uuid.uuid4().hex[:8]}"
    ready, start, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(subject, url, key, ops, tasks, ready, start, out))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    began = time.monotonic()
    start.set()
    results = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise RuntimeError(f"{subject.name}: a worker exited with {w.exitcode}")
    elapsed = max(done for done, _ in results) - began
    final = _final_value(url, key)
    return processes * ops / elapsed, processes * ops - final, max(lag for _, lag in results)


def _final_value(url: str, key: str) -> int:
    from sharedstate.backends import backend_from_url

    backend = backend_from_url(url)
    entry = backend.get(key)
    backend.close()
    return 0 if entry is None else int(entry.value)


# -- the table -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000, help="increments per process")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=16, help="tasks per process in the many-tasks column")
    parser.add_argument("--only", default="", help="comma-separated substrings of subject names")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.ops = 1, 200
    wanted = [w for w in args.only.split(",") if w]
    subjects = [s for s in SUBJECTS if not wanted or any(w in s.name for w in wanted)]
    tmp = tempfile.mkdtemp(prefix="bench-async-")
    urls = {s.name: s.url_of(tmp) for s in subjects}
    subjects = [s for s in subjects if urls[s.name] is not None]

    cells: dict[tuple[str, str], list[float]] = {}
    lost: dict[str, int] = {}
    for round_number in range(args.rounds):
        for subject in subjects:  # interleaved: every subject once per round
            url = urls[subject.name]
            assert url is not None
            columns = [("incr", 1)] + ([("incr16", args.tasks)] if subject.kind == "async" else [])
            for column, tasks in columns:
                rate, missing, lag = measure(subject, url, args.ops, args.processes, tasks)
                cells.setdefault((subject.name, column), []).append(rate)
                if subject.kind == "async":
                    cells.setdefault((subject.name, "lag"), []).append(lag * 1000)
                lost[subject.name] = max(lost.get(subject.name, 0), missing)
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

    def cell(name: str, column: str, fmt: str) -> str:
        values = cells.get((name, column))
        return format(statistics.median(values), fmt) if values else "n/a"

    def worst(name: str) -> str:
        values = cells.get((name, "lag"))
        return f"{max(values):.1f}" if values else "n/a"

    print(
        f"\n{args.processes} processes x {args.ops} increments of one key, median of {args.rounds} "
        f"interleaved rounds; Python {sys.version.split()[0]}\n"
    )
    print(
        f"| subject | incr ops/s | incr ops/s, {args.tasks} tasks | lost | max lag ms (median) "
        "| max lag ms (worst round) |"
    )
    print("|---|---|---|---|---|---|")
    for s in subjects:
        print(
            f"| {s.name} | {cell(s.name, 'incr', ',.0f')} | {cell(s.name, 'incr16', ',.0f')} "
            f"| {lost[s.name]} | {cell(s.name, 'lag', '.1f')} | {worst(s.name)} |"
        )
    print()
    for s in subjects:
        if s.ratio_to and (s.ratio_to, "incr") in cells:
            base = statistics.median(cells[(s.ratio_to, "incr")])
            ratio = statistics.median(cells[(s.name, "incr")]) / base
            print(f"{s.name} incr / {s.ratio_to} incr: {ratio:.2f}x")


if __name__ == "__main__":
    main()
