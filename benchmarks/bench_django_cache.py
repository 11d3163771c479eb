"""Django cache backends side by side: SharedStateCache next to Django's own, in one run.

    .venv/bin/python benchmarks/bench_django_cache.py [--rounds 3] [--processes 4] [--incrs 500]

Subjects (each a ``CACHES`` entry, the way a project configures it): Django's ``LocMemCache``
(one process only: latency reference), ``FileBasedCache``, ``DatabaseCache`` on SQLite and
``RedisCache``; ``SharedStateCache`` on ``sqlite://`` and ``redis://``.

- **incr**: ``--processes`` spawned processes each call ``cache.incr("hits")`` ``--incrs`` times;
  ops/s from the first worker's start to the last one's end, lost increments (calls that returned
  but whose increment is not in the final value) and calls that raised (worst round).
- **get / set**: one process, median latency of single calls on 100 keys holding a small dict.

Rounds are interleaved (every subject once per round) so a slow spell of the shared machine falls on
all alike; a cell is the median of its rounds (lost increments: the worst round). Ratios compare
SharedStateCache with Django's backend on the same storage (SQLite file, Redis).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

REDIS = os.environ.get("SHAREDSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Spawned workers import this module again: they must see the same run id (key prefixes, namespaces).
RUN = os.environ.setdefault("SHAREDSTATE_BENCH_RUN", uuid.uuid4().hex[:8])
VALUE = {"user": 42, "name": "Ada", "roles": ["admin", "dev"], "score": 3.5}


def subjects(tmp: str) -> dict[str, dict[str, Any]]:
    return {
        "django LocMemCache": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "django FileBasedCache": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": f"{tmp}/files",
            "OPTIONS": {"MAX_ENTRIES": 10**6},
        },
        "django DatabaseCache (sqlite)": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "bench_cache",
            "OPTIONS": {"MAX_ENTRIES": 10**6},
        },
        "SharedStateCache sqlite://": {
            "BACKEND": "sharedstate.django.SharedStateCache",
            "LOCATION": f"sqlite:///{tmp}/ss.sqlite3",
            "OPTIONS": {"namespace": f"bench{RUN}"},
        },
        "django RedisCache": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS,
            "KEY_PREFIX": f"djbench{RUN}",
        },
        "SharedStateCache redis://": {
            "BACKEND": "sharedstate.django.SharedStateCache",
            "LOCATION": REDIS,
            "OPTIONS": {"namespace": f"bench{RUN}"},
        },
    }


def configure(tmp: str) -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="bench",
            CACHES={name: params for name, params in subjects(tmp).items()},
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{tmp}/db.sqlite3"}},
            INSTALLED_APPS=[],
        )
        import django

        django.setup()


def incr_worker(tmp: str, name: str, count: int, start: Any, times: Any, failures: Any, slot: int) -> None:
    configure(tmp)
    from django.core.cache import caches

    cache = caches[name]
    cache.get("warm-up")  # connect before the clock starts
    start.wait()
    began = time.time()  # wall clock: comparable across the processes of one machine
    failed = 0
    for _ in range(count):
        try:
            cache.incr("hits")
        except Exception:  # e.g. DatabaseCache on SQLite: "database is locked"
            failed += 1
    times[2 * slot], times[2 * slot + 1] = began, time.time()
    failures[slot] = failed


def measure_incr(tmp: str, name: str, processes: int, count: int) -> tuple[float, int, int]:
    """Increments per second from the first worker's start to the last one's end (process start-up
    and exit are not counted), the increments lost (not counting those that raised), and how many
    raised."""
    from django.core.cache import caches

    cache = caches[name]
    cache.set("hits", 0, timeout=None)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(processes)
    times = ctx.Array("d", 2 * processes)
    failures = ctx.Array("i", processes)
    procs = [
        ctx.Process(target=incr_worker, args=(tmp, name, count, start, times, failures, i))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs), f"{name}: a worker failed"
    elapsed = max(times[1::2]) - min(times[0::2])
    failed = sum(failures)
    total = processes * count
    return total / elapsed, total - failed - int(cache.get("hits")), failed


def measure_latency(name: str, n: int = 100, reps: int = 5) -> tuple[float, float]:
    from django.core.cache import caches

    cache = caches[name]
    gets: list[float] = []
    sets: list[float] = []
    for _ in range(reps):
        for i in range(n):
            t = time.perf_counter()
            cache.set(f"k{i}", VALUE)
            sets.append(time.perf_counter() - t)
        for i in range(n):
            t = time.perf_counter()
            cache.get(f"k{i}")
            gets.append(time.perf_counter() - t)
    return statistics.median(gets) * 1e6, statistics.median(sets) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--incrs", type=int, default=500, help="incr calls per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        configure(tmp)
        from django.core.cache import caches
        from django.core.management import call_command

        call_command("createcachetable", verbosity=0)
        names = list(subjects(tmp))
        results: dict[str, dict[str, list[float]]] = {
            n: {"ops": [], "lost": [], "failed": [], "get": [], "set": []} for n in names
        }
        for _ in range(args.rounds):
            for name in names:
                get_us, set_us = measure_latency(name)
                results[name]["get"].append(get_us)
                results[name]["set"].append(set_us)
                if "LocMem" not in name:
                    ops, lost, failed = measure_incr(tmp, name, args.processes, args.incrs)
                    results[name]["ops"].append(ops)
                    results[name]["lost"].append(lost)
                    results[name]["failed"].append(failed)
        for name in names:
            caches[name].clear()
        total = args.processes * args.incrs
        print(
            f"{args.rounds} rounds, {args.processes} processes x {args.incrs} incr; "
            "medians (lost: worst round)\n"
        )
        print(f"| subject | incr ops/s | incr lost (of {total}) | incr raised | get µs | set µs |")
        print("|---|---|---|---|---|---|")
        med: dict[str, dict[str, float]] = {}
        for name in names:
            r = results[name]
            med[name] = {k: statistics.median(v) for k, v in r.items() if v}
            ops = f"{med[name]['ops']:,.0f}" if r["ops"] else "n/a (one process)"
            lost = f"{max(r['lost']):.0f}" if r["lost"] else "n/a"
            failed = f"{max(r['failed']):.0f}" if r["failed"] else "n/a"
            print(f"| {name} | {ops} | {lost} | {failed} | {med[name]['get']:.1f} | {med[name]['set']:.1f} |")
        print("\nRatios in this run (SharedStateCache / Django's backend on the same storage):")
        for ours, peer in (
            ("SharedStateCache sqlite://", "django DatabaseCache (sqlite)"),
            ("SharedStateCache sqlite://", "django FileBasedCache"),
            ("SharedStateCache redis://", "django RedisCache"),
        ):
            a, b = med[ours], med[peer]
            print(
                f"  {ours} vs {peer}: incr {a['ops'] / b['ops']:.3g}x ops/s, "
                f"get {a['get'] / b['get']:.3g}x latency, set {a['set'] / b['set']:.3g}x latency"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
