"""Who should wait for SQLite's write lock: SQLite's busy handler, or a retry loop in Python?

    python benchmarks/bench_sqlite_wait.py                       # 2 and 4 processes, 5 rounds
    python benchmarks/bench_sqlite_wait.py --processes 2,4,8 --rounds 7 --ops 2000

N spawned processes increment one key ``--ops`` times each, for every subject in turn, in
``--rounds`` interleaved rounds (medians shown):

- ``busy handler``: ``sqlite://`` as shipped; a write waits for the lock in SQLite's busy
  handler (``PRAGMA busy_timeout``).
- ``retry loop``: the same backend with ``wait_in_sqlite = False``: busy timeout 0 and the Python
  retry loop (jittered sleeps from 25 µs growing to 5 ms), what ``AsyncSQLiteBackend`` does.
- ``raw sqlite3``: the floor, plain ``sqlite3`` with a busy timeout, ``BEGIN IMMEDIATE``, one
  upsert, ``COMMIT`` (WAL, ``synchronous=NORMAL``).
- ``diskcache``: ``Cache.incr``.

Columns: ops/s over the whole run; CPU µs and context switches (voluntary + involuntary) per
increment, summed over the workers; fairness, the first worker's finishing time over the last's
(1.0: every process got the same share of the lock); the slowest single increment (ms).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parent.parent / "src")
SUBJECTS = ["sharedstate (busy handler)", "sharedstate (retry loop)", "raw sqlite3 (floor)", "diskcache"]


def _opener(subject: str, tmp: str) -> Any:
    """A function incrementing the key, opened (and connected) in the worker."""
    if subject.startswith("sharedstate"):
        sys.path.insert(0, SRC)
        from sharedstate import Store

        store = Store(f"sqlite:///{tmp}/ss.sqlite3")
        if "retry" in subject:
            store.backend.wait_in_sqlite = False  # type: ignore[attr-defined]
        return store.incr
    if subject.startswith("raw"):
        import sqlite3

        conn = sqlite3.connect(f"{tmp}/raw.sqlite3", timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER)")

        def incr(key: str) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO kv VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET value = value + 1", (key,)
            )
            conn.execute("COMMIT")

        return incr
    import diskcache

    cache = diskcache.Cache(f"{tmp}/diskcache")
    return lambda key: cache.incr(key, default=0)


def _worker(subject: str, tmp: str, key: str, ops: int, ready: Any, start: Any, done: Any) -> None:
    incr = _opener(subject, tmp)
    incr(key + "-warmup")
    ready.put(None)
    start.wait()
    before, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    clock, slowest = time.perf_counter, 0.0
    for _ in range(ops):
        t0 = clock()
        incr(key)
        slowest = max(slowest, clock() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    switches = (after.ru_nvcsw + after.ru_nivcsw) - (usage.ru_nvcsw + usage.ru_nivcsw)
    done.put((time.perf_counter(), before, cpu, switches, slowest))


def cell(subject: str, tmp: str, processes: int, ops: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ready, start, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    key = f"k{time.monotonic_ns()}"
    procs = [
        ctx.Process(target=_worker, args=(subject, tmp, key, ops, ready, start, done))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    results = [done.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    ends = [r[0] - began for r in results]
    total = processes * ops
    return {
        "ops": total / max(ends),
        "cpu_us": sum(r[2] for r in results) / total * 1e6,
        "switches": sum(r[3] for r in results) / total,
        "fairness": min(ends) / max(ends),
        "slowest_ms": max(r[4] for r in results) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", default="2,4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="ss-wait-")
    runs: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    try:
        for round_no in range(args.rounds):
            for n in [int(x) for x in args.processes.split(",")]:
                order = SUBJECTS if round_no % 2 == 0 else SUBJECTS[::-1]
                for subject in order:
                    print(
                        f"  round {round_no + 1}/{args.rounds}: {n} x {subject}", file=sys.stderr, flush=True
                    )
                    for k, v in cell(subject, tmp, n, args.ops).items():
                        runs[(n, subject)][k].append(v)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.ops} increments per process, one key, medians of {args.rounds} interleaved rounds "
        f"(load average at the end: {os.getloadavg()[0]:.1f})\n"
    )
    print("| processes | subject | ops/s | vs raw floor | CPU µs/op | switches/op | fairness | slowest ms |")
    print("|---|---|---|---|---|---|---|---|")
    for (n, subject), cells in runs.items():
        m = {k: statistics.median(v) for k, v in cells.items()}
        floor = statistics.median(runs[(n, "raw sqlite3 (floor)")]["ops"])
        print(
            f"| {n} | {subject} | {m['ops']:,.0f} | {m['ops'] / floor:.2f}x | {m['cpu_us']:.1f} "
            f"| {m['switches']:.2f} | {m['fairness']:.2f} | {m['slowest_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
