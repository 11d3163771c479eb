"""Async server backends against their drivers, side by side in one run: incr on one key.

    python benchmarks/bench_async_servers.py            # full run (a few minutes on 2 shared cores)
    python benchmarks/bench_async_servers.py --quick    # tiny cells, a smoke test
    python benchmarks/bench_async_servers.py --only redis

Subjects (each increments one key and awaits the new value):
- ``sharedstate async redis://``: ``AsyncRedisBackend.incr`` (INCRBY through its own pool).
- ``redis.asyncio INCR``: ``redis.asyncio.Redis.from_url(url).incr(key)``, through redis-py's pool.
- ``sharedstate async postgresql://``: ``AsyncPostgresBackend.incr`` (an ``UPDATE ... RETURNING`` of
  a live integer; the upsert only when that finds no such row).
- ``psycopg async UPDATE RETURNING``: ``UPDATE t SET n = n + 1 WHERE k = %s RETURNING n`` on a
  psycopg_pool ``AsyncConnectionPool`` of the same size (10) in autocommit mode.
- ``psycopg async, sharedstate's SQL``: that pool running sharedstate's own incr statements on its
  table (not a peer: it splits the PostgreSQL gap into the statement's share and the Python path's).

Workloads: ``1 task`` and ``16 tasks`` in one process; ``4 proc x 16 tasks`` (spawned processes,
started together at a barrier). Each cell is ops/s over the whole cell, the median of ``--repeat``
rounds; a round measures every subject once (who goes first alternates), so the subjects
interleave. The machine is shared and noisy: read the ratios printed under the table, above all
the median of the per-round ratios (each pairs two cells measured moments apart).

``server_rows()`` lists the subjects; the lead may move it into ``bench_async.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RUN = os.environ.setdefault("SHAREDSTATE_BENCH_RUN", uuid.uuid4().hex[:8])
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_TABLE = f"sharedstate_abench_{RUN}"
PEER_TABLE = f"abench_peer_{RUN}"
POOL_SIZE = 10


class Client:
    """One subject in one process: ``incr`` the key, ``aclose`` at the end."""

    async def incr(self) -> int:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class OursRedis(Client):
    def __init__(self) -> None:
        from sharedstate.backends.redis import AsyncRedisBackend

        self.backend = AsyncRedisBackend.from_url(REDIS_URL)
        self.key = f"abench:{RUN}:ours"

    async def incr(self) -> int:
        return await self.backend.incr(self.key)

    async def aclose(self) -> None:
        await self.backend.aclose()


class PeerRedis(Client):
    def __init__(self) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(REDIS_URL)
        self.key = f"abench:{RUN}:peer"

    async def incr(self) -> int:
        return int(await self.client.incr(self.key))

    async def aclose(self) -> None:
        await self.client.aclose()


class OursPostgres(Client):
    def __init__(self) -> None:
        from sharedstate.backends.postgres import AsyncPostgresBackend

        self.backend = AsyncPostgresBackend.from_url(f"{PG_URL}?table={PG_TABLE}&pool_size={POOL_SIZE}")

    async def incr(self) -> int:
        return await self.backend.incr("n")

    async def aclose(self) -> None:
        await self.backend.aclose()


class PeerPostgres(Client):
    def __init__(self) -> None:
        import psycopg_pool

        self.pool: Any = psycopg_pool.AsyncConnectionPool(
            PG_URL, min_size=1, max_size=POOL_SIZE, kwargs={"autocommit": True}, open=False
        )
        self.sql = f"UPDATE {PEER_TABLE} SET n = n + 1 WHERE k = %s RETURNING n"
        self.opened = False

    async def incr(self) -> int:
        if not self.opened:
            await self.pool.open()
            self.opened = True
        async with self.pool.connection() as conn:
            row = await (await conn.execute(self.sql, ("n",))).fetchone()
        return int(row[0])

    async def aclose(self) -> None:
        await self.pool.close()


class PeerPostgresOurSQL(PeerPostgres):
    """The same raw psycopg pool, running sharedstate's own incr statement on sharedstate's table.

    Not a peer: it splits the gap to the raw ``UPDATE`` into the statement's share (this row vs
    the peer) and the share of sharedstate's Python path (sharedstate's row vs this one).
    """

    def __init__(self) -> None:
        super().__init__()
        from sharedstate.backends.postgres import _Statements

        statements = _Statements(PG_TABLE)
        self.sql, self.upsert = statements.incr_live, statements.incr

    async def incr(self) -> int:
        if not self.opened:
            await self.pool.open()
            self.opened = True
        params = {"key": "raw", "by": 1, "version": secrets.randbits(62) + 1, "ttl": None}
        async with self.pool.connection() as conn:
            # As AsyncPostgresBackend.incr: the UPDATE of a live integer, else the upsert.
            row = await (await conn.execute(self.sql, params)).fetchone()
            if row is None:
                row = await (await conn.execute(self.upsert, params)).fetchone()
        return int(row[0])


@dataclass(frozen=True)
class Subject:
    name: str
    server: str  # "redis" or "postgresql": which --only selects it
    make: Callable[[], Client]


def server_rows() -> list[tuple[str, str, str]]:
    """(row title, sharedstate subject, peer subject): the comparisons this benchmark prints."""
    return [
        ("async redis:// incr vs redis.asyncio INCR", "sharedstate async redis://", "redis.asyncio INCR"),
        (
            "async postgresql:// incr vs psycopg UPDATE RETURNING",
            "sharedstate async postgresql://",
            "psycopg async UPDATE RETURNING",
        ),
        (
            "  of which the statement: sharedstate's SQL run raw vs UPDATE RETURNING",
            "psycopg async, sharedstate's SQL",
            "psycopg async UPDATE RETURNING",
        ),
        (
            "  of which the Python path: async postgresql:// vs its SQL run raw",
            "sharedstate async postgresql://",
            "psycopg async, sharedstate's SQL",
        ),
    ]


SUBJECTS = [
    Subject("sharedstate async redis://", "redis", OursRedis),
    Subject("redis.asyncio INCR", "redis", PeerRedis),
    Subject("sharedstate async postgresql://", "postgresql", OursPostgres),
    Subject("psycopg async UPDATE RETURNING", "postgresql", PeerPostgres),
    Subject("psycopg async, sharedstate's SQL", "postgresql", PeerPostgresOurSQL),
]
BY_NAME = {s.name: s for s in SUBJECTS}


# -- running one cell ----------------------------------------------------------------------------


async def _tasks(client: Client, tasks: int, ops: int) -> list[int]:
    async def one(count: int) -> list[int]:
        return [await client.incr() for _ in range(count)]

    batches = await asyncio.gather(*(one(ops // tasks) for _ in range(tasks)))
    return [v for batch in batches for v in batch]


async def _measure(make: Callable[[], Client], tasks: int, ops: int) -> tuple[float, float, list[int]]:
    """Warm up (connect, grow the pool), then time ``ops`` increments by ``tasks`` tasks."""
    client = make()
    try:
        await _tasks(client, tasks, tasks * 4)
        started = time.perf_counter()
        values = await _tasks(client, tasks, ops)
        return started, time.perf_counter(), values
    finally:
        await client.aclose()


def _in_process(name: str, tasks: int, ops: int, barrier: Any, out: Any) -> None:
    """A spawned worker: warm up, wait for the others, run, report (start, end) in wall-clock time."""
    make = BY_NAME[name].make

    async def main() -> tuple[float, float, int]:
        client = make()
        try:
            await _tasks(client, tasks, tasks * 4)
            await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
            started = time.time()
            values = await _tasks(client, tasks, ops)
            return started, time.time(), len(values)
        finally:
            await client.aclose()

    out.put(asyncio.run(main()))


def run_cell(subject: Subject, workload: str, ops: int) -> float:
    """ops/s of ``subject`` on ``workload``."""
    if workload == "1 task":
        started, ended, values = asyncio.run(_measure(subject.make, 1, ops))
        return len(values) / (ended - started)
    if workload == "16 tasks":
        started, ended, values = asyncio.run(_measure(subject.make, 16, ops))
        return len(values) / (ended - started)
    processes, tasks = 4, 16
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_in_process, args=(subject.name, tasks, ops // processes, barrier, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(60)
    total = sum(count for _, _, count in results)
    return total / (max(end for _, end, _ in results) - min(start for start, _, _ in results))


# -- setup, rounds, table -----------------------------------------------------------------------


def _reachable(url: str, port: int) -> bool:
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        with socket.create_connection((host, urlsplit(url).port or port), 1):
            return True
    except OSError:
        return False


def _pg(statement: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(statement)


def setup(servers: set[str]) -> None:
    if "postgresql" in servers:
        from sharedstate.backends.postgres import ddl

        _pg(ddl(PG_TABLE))
        _pg(f"CREATE TABLE IF NOT EXISTS {PEER_TABLE} (k text PRIMARY KEY, n bigint NOT NULL)")
        _pg(f"INSERT INTO {PEER_TABLE} VALUES ('n', 0) ON CONFLICT DO NOTHING")


def teardown(servers: set[str]) -> None:
    if "postgresql" in servers:
        _pg(f"DROP TABLE IF EXISTS {PEER_TABLE}")
        _pg(f'DROP TABLE IF EXISTS "{PG_TABLE}"')
    if "redis" in servers:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        client.delete(f"abench:{RUN}:ours", f"abench:{RUN}:peer")
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny cells: a smoke test")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (default 7); cells are medians")
    parser.add_argument("--only", default="redis,postgresql", help="servers to run: redis,postgresql")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    addresses = {"redis": (REDIS_URL, 6379), "postgresql": (PG_URL, 5432)}
    servers = {s for s in wanted if s in addresses and _reachable(*addresses[s])}
    for missing in sorted(wanted - servers):
        print(f"skipping {missing}: server not reachable", file=sys.stderr)
    subjects = [s for s in SUBJECTS if s.server in servers]
    workloads = {"1 task": 1000, "16 tasks": 4000, "4 proc x 16 tasks": 6400}
    if args.quick:
        workloads = {name: max(64, ops // 20) for name, ops in workloads.items()}
        args.repeat = 1
    setup(servers)
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    try:
        for round_no in range(args.repeat):
            # Alternate who goes first, so a load that drifts during a round favours nobody.
            order = subjects if round_no % 2 == 0 else subjects[::-1]
            for workload, ops in workloads.items():
                for subject in order:
                    cells[subject.name, workload].append(run_cell(subject, workload, ops))
            print(f"round {round_no + 1}/{args.repeat} done", file=sys.stderr)
    finally:
        teardown(servers)

    median = {key: statistics.median(values) for key, values in cells.items()}
    width = max(len(s.name) for s in subjects) + 2
    print(f"\nincr ops/s, median of {args.repeat} interleaved rounds (python {sys.version.split()[0]})\n")
    print("subject".ljust(width) + "".join(w.rjust(20) for w in workloads))
    for subject in subjects:
        print(subject.name.ljust(width) + "".join(f"{median[subject.name, w]:20,.0f}" for w in workloads))
    print()
    for title, ours, peer in server_rows():
        if ours not in BY_NAME or BY_NAME[ours].server not in servers:
            continue
        print(title)
        for w in workloads:
            # Paired: each round's ratio, measured minutes apart at most; robust to a drifting load.
            paired = [a / b for a, b in zip(cells[ours, w], cells[peer, w], strict=True)]
            low, high = min(paired), max(paired)
            print(
                f"  {w:<20} ratio of medians {median[ours, w] / median[peer, w]:.2f}x, median of per-round "
                f"ratios {statistics.median(paired):.2f}x (range {low:.2f}-{high:.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
