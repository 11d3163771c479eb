"""limits fixed-window hits/s: ``sharedstate+`` storages against limits' own ``redis://``, one run.

    python benchmarks/bench_limits.py              # 5 rounds, 4 processes, 3,000 hits each
    python benchmarks/bench_limits.py --quick      # a smoke test
    python benchmarks/bench_limits.py --rounds 7 --hits 5000 --processes 4

Workload: ``--processes`` spawned processes each call ``FixedWindowRateLimiter.hit`` ``--hits``
times on a "1000000 per minute" limit, over 64 identifiers (clients), the way a rate-limited app
does once per request. hits/s = all hits / (last process done - first process started), after a
warm-up and a start barrier. One round measures every subject once (the order rotates each round),
so a slow spell of the shared machine falls on all alike; a cell is the median of the rounds.

Subjects: ``sharedstate+sqlite`` (a file in a temporary directory), ``sharedstate+redis``, and
limits' own ``RedisStorage`` (``redis://``, its Lua ``incr_expire`` script), both on the same Redis
server. Targets (ratios measured in this run): sharedstate+sqlite >= 1.5x limits redis://,
sharedstate+redis >= 1.0x limits redis://.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

RUN = uuid.uuid4().hex[:8]
REDIS_URL = os.environ.get("SHAREDSTATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TARGETS = {"sharedstate+sqlite": 1.5, "sharedstate+redis": 1.0}
PEER = "limits redis://"


def _storage(subject: str, directory: str) -> Any:
    from limits.storage import storage_from_string

    import sharedstate.limits  # noqa: F401  (registers the schemes)

    if subject == "sharedstate+sqlite":
        return storage_from_string(f"sharedstate+sqlite:///{directory}/limits.db", namespace=f"bench{RUN}")
    if subject == "sharedstate+redis":
        return storage_from_string(f"sharedstate+{REDIS_URL}", namespace=f"bench{RUN}")
    return storage_from_string(REDIS_URL, key_prefix=f"LIMITSBENCH{RUN}")


def _worker(subject: str, directory: str, hits: int, barrier: Any, out: Any) -> None:
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter

    limiter = FixedWindowRateLimiter(_storage(subject, directory))
    item = parse("1000000/minute")
    clients = [f"10.0.0.{i}" for i in range(64)]
    for i in range(200):  # warm-up: connections, prepared statements, scripts loaded
        limiter.hit(item, clients[i % 64])
    barrier.wait()
    start = time.monotonic()
    for i in range(hits):
        limiter.hit(item, clients[i % 64])
    out.put((start, time.monotonic()))


def measure(subject: str, directory: str, processes: int, hits: int) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(subject, directory, hits, barrier, out)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    spans = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    storage = _storage(subject, directory)
    storage.reset()
    return processes * hits / (max(end for _, end in spans) - min(start for start, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--hits", type=int, default=3000, help="hits per process per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 300 hits: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.hits = 2, 300
    subjects = ["sharedstate+sqlite", "sharedstate+redis", PEER]
    results: dict[str, list[float]] = {s: [] for s in subjects}
    directory = tempfile.mkdtemp(prefix="bench-limits-")
    try:
        for round_number in range(args.rounds):
            shift = round_number % len(subjects)
            for subject in subjects[shift:] + subjects[:shift]:
                results[subject].append(measure(subject, directory, args.processes, args.hits))
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    medians = {s: statistics.median(v) for s, v in results.items()}
    print(
        f"\nlimits FixedWindowRateLimiter.hit, {args.processes} processes x {args.hits} hits, "
        f"median of {args.rounds} interleaved rounds\n"
    )
    print("| storage | hits/s (median) | rounds (hits/s) |")
    print("|---|---|---|")
    for subject in subjects:
        rounds = ", ".join(f"{v:,.0f}" for v in results[subject])
        print(f"| {subject} | {medians[subject]:,.0f} | {rounds} |")
    print()
    for subject, target in TARGETS.items():
        ratio = medians[subject] / medians[PEER]
        verdict = "met" if ratio >= target else "NOT met"
        print(f"{subject} / {PEER}: {ratio:.2f}x (target >= {target:.1f}x: {verdict})")


if __name__ == "__main__":
    main()
