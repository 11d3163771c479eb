"""Does storage stay bounded when most writes create new keys with a short TTL?

    python benchmarks/bench_growth.py                   # 30 s, 4 processes, sqlite (+ postgresql)
    python benchmarks/bench_growth.py --seconds 45 --only sqlite

The load of cache entries and visitor sessions: ``--processes`` spawned processes write only new
keys (a ~200-byte dict each) with a ``--ttl`` of 1 s, as fast as they can, for ``--seconds``. Every
``--every`` seconds the table shows the writes so far, the rows in the table and how many of them
are live, and the size on disk: the database and its WAL for SQLite, the table with its indexes
and TOAST for PostgreSQL. Bounded means: expired rows stay a small multiple of what one second of
writes leaves behind, and the files stop growing once the sweep keeps up.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from typing import Any

POSTGRES_URL = os.environ.get("SHAREDSTATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def writer(url: str, namespace: str, ttl: float, stop_at: float, written: Any) -> None:
    from sharedstate import Store

    with Store(url, namespace=namespace) as store:
        i = 0
        while time.time() < stop_at:
            store.set(f"visitor:{os.getpid()}:{i}", {"seen": i, "pad": "x" * 150}, ttl=ttl)
            i += 1
            if i % 100 == 0:
                with written.get_lock():
                    written.value += 100


class SQLiteProbe:
    def __init__(self, path: str) -> None:
        self.path = path

    def sample(self) -> tuple[int, int, int]:
        """(rows, live rows, bytes on disk: db + WAL)."""
        size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            rows, live = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE expires_at IS NULL OR expires_at > ?)"
                " FROM sharedstate",
                (time.time(),),
            ).fetchone()
        finally:
            conn.close()
        return int(rows), int(live), size

    def sizes(self) -> str:
        def mb(p: str) -> str:
            return f"{os.path.getsize(p) / 1e6:.1f}" if os.path.exists(p) else "0"

        return f"db {mb(self.path)} MB, wal {mb(self.path + '-wal')} MB"


class PostgresProbe:
    def __init__(self, url: str, table: str) -> None:
        self.url, self.table = url, table

    def sample(self) -> tuple[int, int, int]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE expires_at IS NULL OR expires_at > now()),"
                f" pg_total_relation_size('{self.table}') FROM {self.table}"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def sizes(self) -> str:
        return "table + indexes + TOAST"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")


def run(name: str, url: str, probe: Any, args: argparse.Namespace) -> list[tuple[Any, ...]]:
    from sharedstate import Store

    namespace = f"growth{uuid.uuid4().hex[:6]}"
    Store(url, namespace=namespace).close()  # creates the table before the clock starts
    ctx = mp.get_context("spawn")
    written = ctx.Value("q", 0)
    start = time.time() + 1.0  # spawned interpreters start during this second
    stop_at = start + args.seconds
    procs = [
        ctx.Process(target=writer, args=(url, namespace, args.ttl, stop_at, written))
        for _ in range(args.processes)
    ]
    for p in procs:
        p.start()
    rows_out: list[tuple[Any, ...]] = []
    next_sample = start + args.every
    while True:
        time.sleep(max(0.0, next_sample - time.time()))
        rows, live, size = probe.sample()
        elapsed = time.time() - start
        rows_out.append((name, f"{elapsed:.0f}", written.value, rows, live, rows - live, size / 1e6))
        print(f"  {name} t={elapsed:.0f}s writes={written.value} rows={rows} live={live}", file=sys.stderr)
        if next_sample >= stop_at:
            break
        next_sample = min(next_sample + args.every, stop_at)
    for p in procs:
        p.join(60)
    print(f"  {name} at the end: {probe.sizes()}", file=sys.stderr)
    return rows_out


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=2):
            return True
    except Exception:
        return False


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of writes")
    parser.add_argument("--processes", type=int, default=4, help="writer processes")
    parser.add_argument("--ttl", type=float, default=1.0, help="TTL of every key, seconds")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--only", default="", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()} or {"sqlite", "postgresql"}

    results: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory(prefix="sharedstate-growth-") as tmp:
        if "sqlite" in wanted:
            path = os.path.join(tmp, "growth.sqlite3")
            results += run("sqlite://", f"sqlite:///{path}", SQLiteProbe(path), args)
        if "postgresql" in wanted:
            if postgres_reachable():
                table = f"sharedstate_growth_{uuid.uuid4().hex[:8]}"
                probe = PostgresProbe(POSTGRES_URL, table)
                try:
                    results += run("postgresql://", f"{POSTGRES_URL}?table={table}", probe, args)
                finally:
                    probe.drop()
            else:
                print(f"  postgresql: not reachable at {POSTGRES_URL}, skipped", file=sys.stderr)

    print()
    print(f"{args.processes} processes writing new keys with ttl={args.ttl:g}s for {args.seconds:g}s")
    print()
    print("| backend | t (s) | writes | rows | live rows | expired rows | size on disk (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, t, writes, rows, live, expired, size in results:
        print(f"| {name} | {t} | {writes:,} | {rows:,} | {live:,} | {expired:,} | {size:.1f} |")


if __name__ == "__main__":
    main()
