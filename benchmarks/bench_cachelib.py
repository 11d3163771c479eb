"""cachelib's ``inc`` across processes: ``SharedStateCache`` against cachelib's ``FileSystemCache``.

    python benchmarks/bench_cachelib.py                      # inc: 4 processes, 5 rounds
    python benchmarks/bench_cachelib.py --rounds 7 --ops 2000
    python benchmarks/bench_cachelib.py --gunicorn           # also: Flask-Caching under gunicorn -w 4

- **inc**: ``--processes`` spawned processes (4) each call ``cache.inc("hits")`` ``--ops`` times
  (1,000) on one key, all started together. ops/s over the whole run; lost = processes x ops minus
  the final value. Rounds are interleaved (every subject once per round, so a slow spell of the
  shared machine falls on all alike); a cell is the median of the rounds, lost the worst round.
  Subjects: ``SharedStateCache("sqlite:///...")`` and ``cachelib.FileSystemCache`` (whose ``inc`` is
  cachelib's ``BaseCache.inc``: a get, then a set), each in a fresh temporary directory per round.
- **--gunicorn**: the Flask-Caching app in tests/apps/caching_app.py under ``gunicorn -w 4`` (sync
  workers), once per ``CACHE_TYPE``; 200 requests, all 200 at once, each doing
  ``cache.cache.inc("hits")``; then 40 requests read the count back, and the table shows what each
  worker process read (SimpleCache keeps one cache per process, so each worker has its own count).
  Missing: 200 minus the lowest count a worker read.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

SUBJECTS = ["sharedstate sqlite://", "cachelib FileSystemCache"]
TARGET_RATIO = 3.0


def make_cache(subject: str, workdir: str) -> Any:
    if subject == "sharedstate sqlite://":
        from sharedstate.cachelib import SharedStateCache

        return SharedStateCache(f"sqlite:///{workdir}/cache.sqlite3", default_timeout=0)
    from cachelib import FileSystemCache

    return FileSystemCache(f"{workdir}/fscache", default_timeout=0, threshold=0)


def worker(subject: str, workdir: str, ops: int, barrier: Any) -> None:
    cache = make_cache(subject, workdir)
    cache.get("warm-up")  # open files and connections before the clock starts
    barrier.wait()
    for _ in range(ops):
        cache.inc("hits")


def measure_inc(subject: str, processes: int, ops: int) -> tuple[float, int]:
    """One round: (ops/s, lost) for ``subject``."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-cachelib-") as workdir:
        make_cache(subject, workdir).get("create")
        barrier = ctx.Barrier(processes + 1)
        procs = [ctx.Process(target=worker, args=(subject, workdir, ops, barrier)) for _ in range(processes)]
        for p in procs:
            p.start()
        barrier.wait()
        started = time.perf_counter()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - started
        if any(p.exitcode for p in procs):
            raise SystemExit(f"{subject}: a worker failed")
        final = make_cache(subject, workdir).get("hits") or 0
    total = processes * ops
    return total / elapsed, total - final


def run_inc(args: argparse.Namespace) -> None:
    subjects = [s for s in SUBJECTS if not args.only or any(o in s for o in args.only.split(","))]
    rates: dict[str, list[float]] = {s: [] for s in subjects}
    lost: dict[str, list[int]] = {s: [] for s in subjects}
    for r in range(args.rounds):
        for subject in subjects:  # interleaved: every subject once per round
            rate, missing = measure_inc(subject, args.processes, args.ops)
            rates[subject].append(rate)
            lost[subject].append(missing)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    total = args.processes * args.ops
    print(f"\ninc on one key: {args.processes} processes x {args.ops} each, {args.rounds} interleaved rounds")
    print(f"| subject | inc ops/s (median) | lost of {total} (worst round) | lost per round |")
    print("|---|---|---|---|")
    for s in subjects:
        per_round = ", ".join(str(n) for n in lost[s])
        print(f"| {s} | {statistics.median(rates[s]):,.0f} | {max(lost[s])} | {per_round} |")
    ours, peer = "sharedstate sqlite://", "cachelib FileSystemCache"
    if ours in rates and peer in rates:
        ratio = statistics.median(rates[ours]) / statistics.median(rates[peer])
        verdict = "PASS" if ratio >= TARGET_RATIO and max(lost[ours]) == 0 else "FAIL"
        pct = 100 * statistics.median(lost[peer]) / total
        print("\nRatios measured in this run (ours / peer):")
        print(
            f"  SharedStateCache sqlite:// inc vs FileSystemCache inc: {ratio:.2f}x "
            f"(target >= {TARGET_RATIO:.0f}x with 0 lost; ours lost {max(lost[ours])}) {verdict}"
        )
        print(f"  FileSystemCache lost a median {pct:.0f}% of its increments")


GUNICORN_SUBJECTS = {
    "SharedStateCache sqlite://": "sharedstate.cachelib.SharedStateCache",
    "SimpleCache": "SimpleCache",
    "FileSystemCache": "FileSystemCache",
}


def run_gunicorn(args: argparse.Namespace) -> None:
    from tests.apps import caching_app

    n = args.requests
    print(f"\nFlask-Caching under gunicorn -w 4: {n} requests at once, each cache.cache.inc('hits')")
    print("| CACHE_TYPE | distinct values returned | count each worker reads after | missing (worst) |")
    print("|---|---|---|---|")
    for name, cache_type in GUNICORN_SUBJECTS.items():
        with tempfile.TemporaryDirectory(prefix="bench-cachelib-gunicorn-") as workdir:
            env = {
                "CACHING_APP_TYPE": cache_type,
                "CACHING_APP_URL": f"sqlite:///{workdir}/cache.sqlite3",
                "CACHING_APP_DIR": f"{workdir}/fscache",
                "CACHING_APP_INSTANCE": f"{workdir}/instance",
            }
            with caching_app.serve(env, Path(workdir) / "gunicorn.log", workers=4) as port:
                hits = caching_app.fire(port, "/inc?sleep=0.01", args.requests, args.requests)
                reads = caching_app.fire(port, "/get", 40, 4)
        per_pid: dict[int, int] = {}
        for r in reads:
            per_pid[r["pid"]] = r["n"]
        counts = sorted(per_pid.values())
        shown = " / ".join(str(c) for c in counts)
        distinct = len({h["n"] for h in hits})
        print(f"| {name} | {distinct} of {len(hits)} | {shown} | {args.requests - counts[0]} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--only", default="", help="comma-separated parts of subject names")
    parser.add_argument("--gunicorn", action="store_true", help="also run the Flask-Caching gunicorn count")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    os.environ.pop("SHAREDSTATE_URL", None)
    run_inc(args)
    if args.gunicorn:
        run_gunicorn(args)


if __name__ == "__main__":
    main()
