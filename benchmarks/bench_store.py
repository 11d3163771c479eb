"""sharedstate backends against their peers, side by side in one run.

    python benchmarks/bench_store.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_store.py --quick    # tiny cells, a smoke test
    python benchmarks/bench_store.py --only sqlite,diskcache
    python benchmarks/bench_store.py --only redis --processes 8   # more writers on one key

Workloads, the same for every subject:
- incr: 4 processes (``--processes``) increment one key K times each; ops/s over the whole run,
  and lost updates (expected minus the final value; above 0 is a correctness bug of that subject),
  and the workers' CPU time per op (user + system: the client side only, so a server's work is not
  in it). Under contention ops/s swings with the lock's hand-offs; CPU per op moves far less.
- rmw: 4 processes read-modify-write one small JSON object (``n += 1``) the way a user of that
  library would write it; ops/s and lost updates.
- get / set: one process, median latency in microseconds of single operations (warmed up).

Each cell is the median of ``--repeat`` rounds (lost updates: the worst round); a round measures
every subject once. The machine is shared and noisy: read the ratios printed under the table, not
the absolute numbers. Each ratio is the median of the rounds' own ratios (ours and the peer measured
back to back), with their range, so a drift of the machine between rounds cancels out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

PROCESSES = 4  # the default of --processes
OBJECT = {"n": 0, "owner": "bench", "tags": ["a", "b", "c"], "ratio": 0.5}
# Inherited by spawned workers through the environment, so every process uses the same keys.
RUN = os.environ.setdefault("SHAREDSTATE_BENCH_RUN", uuid.uuid4().hex[:8])


# -- subjects: how each library does each workload ------------------------------------------------
# A subject is (name, opener) where opener(config) runs in the worker process and returns a Client.


class Client:
    def incr(self, key: str) -> None:
        raise NotImplementedError

    def rmw(self, key: str) -> None:
        raise NotImplementedError

    def get(self, key: str) -> Any:
        raise NotImplementedError

    def set(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def count(self, key: str) -> int:
        """The final value of an incr key."""
        return int(self.get(key) or 0)

    def object_n(self, key: str) -> int:
        """The final ``n`` of an rmw key."""
        return int((self.get(key) or OBJECT)["n"])


class SharedStateClient(Client):
    def __init__(self, url: str, rmw_with: str = "update") -> None:
        from sharedstate import Store

        self.store = Store(url, namespace=f"bench{RUN}")
        self.rmw_with = rmw_with

    def incr(self, key: str) -> None:
        self.store.incr(key)

    def rmw(self, key: str) -> None:
        if self.rmw_with == "edit":
            with self.store.edit(key, default=dict(OBJECT)) as obj:
                obj["n"] += 1
        else:
            self.store.update(key, lambda o: {**o, "n": o["n"] + 1}, default=OBJECT)

    def get(self, key: str) -> Any:
        return self.store.get(key)

    def set(self, key: str, value: Any) -> None:
        self.store.set(key, value)


class DiskcacheClient(Client):
    def __init__(self, directory: str) -> None:
        import diskcache

        self.cache = diskcache.Cache(directory)

    def incr(self, key: str) -> None:
        self.cache.incr(key, default=0)

    def rmw(self, key: str) -> None:
        with self.cache.transact():  # diskcache's documented way to make a read-modify-write atomic
            obj = self.cache.get(key, default=OBJECT)
            self.cache.set(key, {**obj, "n": obj["n"] + 1})

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def set(self, key: str, value: Any) -> None:
        self.cache.set(key, value)


class ManagerClient(Client):
    """A multiprocessing.Manager dict guarded by a managed Lock: the stdlib answer."""

    def __init__(self, proxies: tuple[Any, Any]) -> None:
        self.d, self.lock = proxies

    def incr(self, key: str) -> None:
        with self.lock:
            self.d[key] = self.d.get(key, 0) + 1

    def rmw(self, key: str) -> None:
        with self.lock:
            obj = self.d.get(key, OBJECT)
            self.d[key] = {**obj, "n": obj["n"] + 1}

    def get(self, key: str) -> Any:
        return self.d.get(key)

    def set(self, key: str, value: Any) -> None:
        self.d[key] = value


class CachelibClient(Client):
    """cachelib's FileSystemCache: ``inc`` is documented atomic in BaseCache but is get + set."""

    def __init__(self, directory: str) -> None:
        from cachelib import FileSystemCache

        self.cache = FileSystemCache(directory, threshold=0, default_timeout=0)

    def incr(self, key: str) -> None:
        self.cache.inc(key)

    def rmw(self, key: str) -> None:
        obj = self.cache.get(key) or OBJECT
        self.cache.set(key, {**obj, "n": obj["n"] + 1})

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def set(self, key: str, value: Any) -> None:
        self.cache.set(key, value)


class RawRedisClient(Client):
    """redis-py as a user would write it: INCR, and a WATCH/MULTI retry loop for read-modify-write."""

    def __init__(self, url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)
        self.prefix = f"rawbench{RUN}:"

    def incr(self, key: str) -> None:
        self.r.incr(self.prefix + key)

    def rmw(self, key: str) -> None:
        import redis

        full = self.prefix + key
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(full)
                    raw = pipe.get(full)
                    obj = json.loads(raw) if raw else OBJECT
                    pipe.multi()
                    pipe.set(full, json.dumps({**obj, "n": obj["n"] + 1}))
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def get(self, key: str) -> Any:
        return self.r.get(self.prefix + key)

    def set(self, key: str, value: Any) -> None:
        self.r.set(self.prefix + key, json.dumps(value))

    def object_n(self, key: str) -> int:
        raw = self.r.get(self.prefix + key)
        return int(json.loads(raw)["n"]) if raw else 0


class RawSQLiteClient(Client):
    """The floor: plain sqlite3, WAL, synchronous=NORMAL, SQLite's busy handler waiting for locks.

    - incr: ``BEGIN IMMEDIATE``, one upsert adding 1, ``COMMIT``: the least a read-then-write
      that cannot fail half way holds the write lock for.
    - rmw: ``BEGIN IMMEDIATE``, a select, the JSON change in Python, an update, ``COMMIT``.
    - set / get: one autocommit upsert / select. The row written carries a write counter, as every
      real store's rows carry a version or a timestamp.

    No namespace, codec, expiry, versions or retry handling: what any SQLite-backed store pays at
    least for one durable write or one read on this machine.
    """

    def __init__(self, path: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(path, isolation_level=None, timeout=60)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB, written INTEGER)")
        self.writes = 0

    def incr(self, key: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "INSERT INTO kv (key, value, written) VALUES (?, 1, 0)"
            " ON CONFLICT (key) DO UPDATE SET value = value + 1",
            (key,),
        )
        self.conn.execute("COMMIT")

    def rmw(self, key: str) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        obj = json.loads(row[0]) if row else OBJECT
        conn.execute(
            "INSERT INTO kv (key, value, written) VALUES (?, ?, 0)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps({**obj, "n": obj["n"] + 1}).encode()),
        )
        conn.execute("COMMIT")

    def count(self, key: str) -> int:
        row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def get(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        # Every real store writes something that changes (a version, a timestamp): rewriting an
        # identical row lets SQLite skip the page write altogether, which would not be a floor.
        self.writes += 1
        self.conn.execute(
            "INSERT INTO kv (key, value, written) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, written = excluded.written",
            (key, json.dumps(value).encode(), self.writes),
        )


class RawLMDBClient(Client):
    """The lmdb floor: the ``lmdb`` binding alone, one write transaction per write (``get`` then
    ``put``), ``sync=False`` like ``lmdb://``'s default. An incr stores an 8-byte integer; a set
    stores JSON. No namespace, codec, expiry, versions or map growth: what any LMDB-backed store
    pays at least on this machine.
    """

    def __init__(self, path: str) -> None:
        import lmdb

        self.env = lmdb.open(path, map_size=1 << 30, sync=False, metasync=False, max_dbs=1)

    def incr(self, key: str) -> None:
        k = key.encode()
        with self.env.begin(write=True) as txn:
            raw = txn.get(k)
            value = int.from_bytes(raw, "little", signed=True) + 1 if raw else 1
            txn.put(k, value.to_bytes(8, "little", signed=True))

    def rmw(self, key: str) -> None:
        k = key.encode()
        with self.env.begin(write=True) as txn:
            raw = txn.get(k)
            obj = json.loads(raw) if raw else OBJECT
            txn.put(k, json.dumps({**obj, "n": obj["n"] + 1}).encode())

    def get(self, key: str) -> Any:
        with self.env.begin() as txn:
            raw = txn.get(key.encode())
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: Any) -> None:
        k = key.encode()
        with self.env.begin(write=True) as txn:
            txn.get(k)  # as a store that keeps an expiry index must
            txn.put(k, json.dumps(value).encode())

    def count(self, key: str) -> int:
        with self.env.begin() as txn:
            raw = txn.get(key.encode())
        return int.from_bytes(raw, "little", signed=True) if raw else 0


class RawLMDBFlockClient(RawLMDBClient):
    """The lmdb floor with ``lmdb://``'s write lock: the same transactions, each write bracketed
    by an exclusive ``flock`` on a lock file in the directory, as ``lmdb://`` takes it (so that a
    writer killed with SIGKILL never leaves another asleep on LMDB's mutex; see
    ``sharedstate.backends.lmdb``). What any LMDB-backed store with that guarantee pays at least.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.lock_fd = os.open(os.path.join(path, "write.lock"), os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        import fcntl

        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def incr(self, key: str) -> None:
        with self._write_lock():
            super().incr(key)

    def rmw(self, key: str) -> None:
        with self._write_lock():
            super().rmw(key)

    def set(self, key: str, value: Any) -> None:
        with self._write_lock():
            super().set(key, value)


class FlockClient(Client):
    """The file floor: one file per key, ``flock`` around ``pread``/``pwrite`` (no fsync, like
    ``synchronous=NORMAL`` and lmdb's ``sync=False``). An incr reads and writes 8 bytes; the rest
    JSON. No index, expiry, versions or crash recovery: what any one-host store pays at least for a
    cross-process atomic read-modify-write here.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.fds: dict[str, int] = {}

    def _fd(self, key: str) -> int:
        fd = self.fds.get(key)
        if fd is None:
            fd = self.fds[key] = os.open(os.path.join(self.directory, key), os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def incr(self, key: str) -> None:
        import fcntl

        fd = self._fd(key)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(fd, 8, 0)
            value = int.from_bytes(raw, "little", signed=True) + 1 if raw else 1
            os.pwrite(fd, value.to_bytes(8, "little", signed=True), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def rmw(self, key: str) -> None:
        import fcntl

        fd = self._fd(key)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(fd, 65536, 0)
            obj = json.loads(raw) if raw else OBJECT
            data = json.dumps({**obj, "n": obj["n"] + 1}).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def get(self, key: str) -> Any:
        import fcntl

        fd = self._fd(key)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            raw = os.pread(fd, 65536, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return json.loads(raw) if raw else None

    def set(self, key: str, value: Any) -> None:
        import fcntl

        fd = self._fd(key)
        data = json.dumps(value).encode()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def count(self, key: str) -> int:
        raw = os.pread(self._fd(key), 8, 0)
        return int.from_bytes(raw, "little", signed=True) if raw else 0


# One round trip: read, n += 1 on the JSON object, write, all in the server.
_LUA_RMW = """
local raw = redis.call('GET', KEYS[1])
local obj = raw and cjson.decode(raw) or cjson.decode(ARGV[1])
obj['n'] = obj['n'] + 1
redis.call('SET', KEYS[1], cjson.encode(obj))
return 1
"""


class RedisLuaClient(RawRedisClient):
    """The redis RMW limit: one EVALSHA per read-modify-write (the change runs in the server)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.prefix = f"luabench{RUN}:"
        self.script = self.r.register_script(_LUA_RMW)
        self.default = json.dumps(OBJECT)

    def rmw(self, key: str) -> None:
        self.script(keys=[self.prefix + key], args=[self.default])


@dataclass
class Subject:
    name: str
    opener: Callable[[Any], Client]
    config: Any
    multiprocess: bool = True
    note: str = ""
    workloads: tuple[str, ...] = ("incr", "rmw")  # the multi-process ones it runs
    latency: bool = True  # whether it runs the get / set cell
    processes: int | None = None  # writer processes, if not --processes


def open_sharedstate(config: tuple[str, str]) -> Client:
    return SharedStateClient(*config)


# -- running the workloads --------------------------------------------------------------------------


def _worker(subject: Subject, workload: str, key: str, ops: int, ready: Any, start: Any, done: Any) -> None:
    client = subject.opener(subject.config)
    op = client.incr if workload == "incr" else client.rmw
    op(key + "-warmup")  # connect before the clock starts
    ready.put(os.getpid())
    start.wait()
    cpu = time.process_time()
    for _ in range(ops):
        op(key)
    done.put(time.process_time() - cpu)


def multiprocess_cell(subject: Subject, workload: str, ops: int, processes: int) -> tuple[float, int, float]:
    """(ops/s, lost updates, client CPU µs per op) for ``processes`` processes doing ``ops``
    operations each on one key. The CPU is the workers' own (user + system), the client side only:
    a server's work (redis, postgres, memcached) is not in it; an embedded store's is."""
    ctx = mp.get_context("spawn")
    key = f"{workload}-{uuid.uuid4().hex[:8]}"
    ready, start, done = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(subject, workload, key, ops, ready, start, done))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    # The clock starts once every worker has imported its library, connected and warmed up: a
    # fixed sleep (0.5 s before) let a slow import on the loaded machine fall inside the window
    # (sharedstate's import and open take 0.27 s alone, more with four processes on two cores).
    for _ in procs:
        ready.get(timeout=300)
    began = time.perf_counter()
    start.set()
    cpu_seconds = sum(done.get(timeout=300) for _ in procs)
    elapsed = time.perf_counter() - began
    for p in procs:
        p.join(30)
    client = subject.opener(subject.config)
    final = client.count(key) if workload == "incr" else client.object_n(key)
    return processes * ops / elapsed, processes * ops - final, cpu_seconds * 1e6 / (processes * ops)


def latency_cell(subject: Subject, ops: int) -> tuple[float, float]:
    """Median (get, set) latency in microseconds, one process."""
    client = subject.opener(subject.config)
    value = {"user": 42, "theme": "dark", "items": [1, 2, 3]}
    keys = [f"lat-{i}" for i in range(100)]
    for k in keys:
        client.set(k, value)
    sets, gets = [], []
    clock = time.perf_counter_ns
    for i in range(ops):
        k = keys[i % len(keys)]
        t0 = clock()
        client.set(k, value)
        t1 = clock()
        client.get(k)
        t2 = clock()
        sets.append(t1 - t0)
        gets.append(t2 - t1)
    return statistics.median(gets) / 1000, statistics.median(sets) / 1000


# -- servers ----------------------------------------------------------------------------------------


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 1):
            return True
    except OSError:
        return False


def start_memcached() -> tuple[subprocess.Popen[bytes] | None, str]:
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    if not os.path.exists(binary):
        return None, "memcached is not installed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-u", "root"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if reachable("127.0.0.1", port):
            return proc, f"memcached://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    return None, "memcached did not start"


def importable(module: str) -> str | None:
    try:
        __import__(module)
    except ImportError as exc:
        return str(exc)
    return None


# -- main -------------------------------------------------------------------------------------------


def build_subjects(tmp: str, manager: Any, redis_url: str, pg_url: str, mc_url: str | None) -> list[Subject]:
    subjects = [
        Subject("sharedstate sqlite://", open_sharedstate, (f"sqlite:///{tmp}/ss.sqlite3", "update")),
        Subject("sharedstate sqlite:// (edit)", open_sharedstate, (f"sqlite:///{tmp}/ss.sqlite3", "edit")),
        Subject("sharedstate memory://", open_sharedstate, ("memory://", "update"), multiprocess=False),
        Subject("raw sqlite3 (floor)", RawSQLiteClient, f"{tmp}/raw.sqlite3"),
        Subject("raw flock+pwrite (floor)", FlockClient, f"{tmp}/flock"),
        Subject("diskcache", DiskcacheClient, f"{tmp}/diskcache"),
        Subject("multiprocessing.Manager", ManagerClient, (manager.dict(), manager.Lock())),
        Subject("cachelib FileSystemCache", CachelibClient, f"{tmp}/cachelib"),
    ]
    if importable("lmdb") is None:
        subjects += [
            Subject("sharedstate lmdb://", open_sharedstate, (f"lmdb:///{tmp}/ss.lmdb", "update")),
            Subject("raw lmdb write txn (floor)", RawLMDBClient, f"{tmp}/raw.lmdb"),
            Subject("raw lmdb write txn + flock (floor)", RawLMDBFlockClient, f"{tmp}/rawflock.lmdb"),
        ]
    if importable("sharedstate.backends.redis") is None and reachable("127.0.0.1", 6379):
        subjects += [
            Subject("sharedstate redis://", open_sharedstate, (redis_url, "update")),
            Subject("redis-py (INCR, WATCH/MULTI)", RawRedisClient, redis_url),
            Subject(
                "redis Lua RMW (one round trip)", RedisLuaClient, redis_url, workloads=("rmw",), latency=False
            ),
        ]
    if importable("sharedstate.backends.postgres") is None and reachable("127.0.0.1", 5432):
        subjects.append(Subject("sharedstate postgresql://", open_sharedstate, (pg_url, "update")))
    if importable("sharedstate.backends.memcached") is None and mc_url:
        subjects.append(Subject("sharedstate memcached://", open_sharedstate, (mc_url, "update")))
    return subjects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny cells: a smoke test of the script")
    parser.add_argument("--only", default="", help="comma-separated substrings of subject names")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--processes", type=int, default=PROCESSES, help="writer processes in the incr and rmw cells"
    )
    parser.add_argument(
        "--ops",
        type=int,
        default=1000,
        help="operations per process in the incr and rmw cells (more: steadier, slower)",
    )
    args = parser.parse_args(argv)
    incr_ops, rmw_ops, lat_ops = (40, 20, 200) if args.quick else (args.ops, args.ops, 3000)
    repeat = 1 if args.quick else args.repeat

    tmp = tempfile.mkdtemp(prefix="ss-bench-")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    pg_url = os.environ.get(
        "BENCH_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/test?table=sharedstate_bench_{RUN}"
    )
    mc_proc, mc_url = start_memcached()
    manager = mp.get_context("spawn").Manager()
    results: dict[str, dict[str, Any]] = {}
    try:
        subjects = build_subjects(tmp, manager, redis_url, pg_url, mc_url if mc_proc else None)
        wanted = [s for s in args.only.split(",") if s]
        subjects = [s for s in subjects if not wanted or any(w in s.name for w in wanted)]
        # Rounds, each measuring every subject once: slow drifts of a shared machine then fall on
        # every subject alike instead of on whichever was measured during them.
        runs: dict[str, dict[str, list[float]]] = {s.name: defaultdict(list) for s in subjects}
        for round_no in range(1, repeat + 1):
            for subject in subjects:
                print(f"  round {round_no}/{repeat}: {subject.name} ...", file=sys.stderr, flush=True)
                cells = runs[subject.name]
                if subject.multiprocess:
                    for workload, ops in (("incr", incr_ops), ("rmw", rmw_ops)):
                        if workload not in subject.workloads:
                            continue
                        processes = subject.processes or args.processes
                        total = ops * args.processes  # the same work, however many processes
                        rate, lost, cpu_us = multiprocess_cell(
                            subject, workload, total // processes, processes
                        )
                        cells[f"{workload}_ops"].append(rate)
                        cells[f"{workload}_lost"].append(lost)
                        cells[f"{workload}_cpu_us"].append(cpu_us)
                if subject.latency:
                    get_us, set_us = latency_cell(subject, lat_ops)
                    cells["get_us"].append(get_us)
                    cells["set_us"].append(set_us)
        for name, cells in runs.items():
            # Medians of speeds; the worst round of losses (any loss at all is a bug).
            results[name] = {
                k: (max(v) if k.endswith("_lost") else statistics.median(v)) for k, v in cells.items()
            }
    finally:
        manager.shutdown()
        if mc_proc is not None:
            mc_proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
        _drop_pg_table(pg_url)

    print_table(results, incr_ops, rmw_ops, args.processes)
    print_ratios(results, runs)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def _drop_pg_table(pg_url: str) -> None:
    try:
        import psycopg
    except ImportError:
        return
    table = pg_url.rsplit("table=", 1)[-1] if "table=" in pg_url else ""
    if table.isidentifier() and reachable("127.0.0.1", 5432):
        with psycopg.connect(pg_url.split("?")[0], autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "ops":
        return f"{value:,.0f}"
    if kind == "lost":
        return f"{value:.0f}"
    return f"{value:,.1f}"


def print_table(results: dict[str, dict[str, Any]], incr_ops: int, rmw_ops: int, processes: int) -> None:
    header = (
        f"| subject | incr ops/s ({processes} proc) | incr lost (of {processes * incr_ops}) "
        f"| incr client CPU µs/op | rmw ops/s ({processes} proc) | rmw lost (of {processes * rmw_ops}) "
        "| rmw client CPU µs/op | get µs (median) | set µs (median) |"
    )
    print()
    print(header)
    print("|" + "---|" * 9)
    for name, row in results.items():
        print(
            f"| {name} | {fmt(row.get('incr_ops'), 'ops')} | {fmt(row.get('incr_lost'), 'lost')} "
            f"| {fmt(row.get('incr_cpu_us'), 'us')} "
            f"| {fmt(row.get('rmw_ops'), 'ops')} | {fmt(row.get('rmw_lost'), 'lost')} "
            f"| {fmt(row.get('rmw_cpu_us'), 'us')} "
            f"| {fmt(row.get('get_us'), 'us')} | {fmt(row.get('set_us'), 'us')} |"
        )


def paired_ratios(runs: dict[str, dict[str, list[float]]], ours: str, peer: str, metric: str) -> list[float]:
    """Ours / peer in each round: both were measured minutes apart at most, so drifts cancel."""
    return [a / b for a, b in zip(runs[ours][metric], runs[peer][metric], strict=True)]


def print_ratios(results: dict[str, dict[str, Any]], runs: dict[str, dict[str, list[float]]]) -> None:
    checks: list[tuple[str, str, str, str, float, str]] = [
        # (label, ours, peer, metric, target, direction)
        ("sqlite:// increments vs diskcache", "sharedstate sqlite://", "diskcache", "incr_ops", 1.5, ">="),
        (
            "sqlite:// increments vs raw BEGIN IMMEDIATE/upsert/COMMIT",
            "sharedstate sqlite://",
            "raw sqlite3 (floor)",
            "incr_ops",
            0.9,
            ">=",
        ),
        (
            "sqlite:// set latency vs raw upsert",
            "sharedstate sqlite://",
            "raw sqlite3 (floor)",
            "set_us",
            1.2,
            "<=",
        ),
        (
            "sqlite:// get latency vs raw select",
            "sharedstate sqlite://",
            "raw sqlite3 (floor)",
            "get_us",
            1.2,
            "<=",
        ),
        ("sqlite:// set latency vs diskcache", "sharedstate sqlite://", "diskcache", "set_us", 0.25, "<="),
        ("sqlite:// get latency vs diskcache", "sharedstate sqlite://", "diskcache", "get_us", 1.0, "<="),
        ("lmdb:// increments vs diskcache", "sharedstate lmdb://", "diskcache", "incr_ops", 5.0, ">="),
        (
            "lmdb:// increments vs raw lmdb write txn",
            "sharedstate lmdb://",
            "raw lmdb write txn (floor)",
            "incr_ops",
            0.7,
            ">=",
        ),
        ("lmdb:// get latency vs diskcache", "sharedstate lmdb://", "diskcache", "get_us", 0.5, "<="),
        ("lmdb:// set latency vs diskcache", "sharedstate lmdb://", "diskcache", "set_us", 0.2, "<="),
        (
            "lmdb:// increments vs raw lmdb write txn + flock",
            "sharedstate lmdb://",
            "raw lmdb write txn + flock (floor)",
            "incr_ops",
            0.7,
            ">=",
        ),
        (
            "redis:// increments vs redis-py INCR",
            "sharedstate redis://",
            "redis-py (INCR, WATCH/MULTI)",
            "incr_ops",
            0.9,
            ">=",
        ),
        (
            "redis:// update vs WATCH/MULTI loop",
            "sharedstate redis://",
            "redis-py (INCR, WATCH/MULTI)",
            "rmw_ops",
            4.0,
            ">=",
        ),
        (
            "redis:// update vs one-round-trip Lua RMW",
            "sharedstate redis://",
            "redis Lua RMW (one round trip)",
            "rmw_ops",
            0.8,
            ">=",
        ),
    ]
    floor = results.get("raw sqlite3 (floor)")
    if floor and "diskcache" in results:
        print()
        print(
            "Floor: one plain sqlite3 upsert costs "
            f"{floor['set_us'] / results['diskcache']['set_us']:.2f}x diskcache's set and one plain "
            f"select {floor['get_us'] / results['diskcache']['get_us']:.2f}x its get in this run; no "
            "SQLite-backed store can go below that."
        )
    flock_floor = results.get("raw lmdb write txn + flock (floor)")
    if flock_floor and "diskcache" in results:
        disk = results["diskcache"]
        print(
            "Floor: the lmdb binding with lmdb://'s write lock (an flock per write transaction, kept "
            f"for its kill -9 guarantee) makes {flock_floor['incr_ops'] / disk['incr_ops']:.2f}x "
            f"diskcache's increments and sets in {flock_floor['set_us'] / disk['set_us']:.2f}x its "
            "time in this run; no lmdb:// with that guarantee can do better."
        )
    print()
    print("Ratios measured in this run (ours / peer; median of the rounds' own ratios, range):")
    for label, ours, peer, metric, target, direction in checks:
        if metric not in results.get(ours, {}) or metric not in results.get(peer, {}):
            print(f"  {label}: not measured in this run")
            continue
        ratios = paired_ratios(runs, ours, peer, metric)
        ratio = statistics.median(ratios)
        ok = ratio >= target if direction == ">=" else ratio <= target
        cpu_metric = metric.replace("_ops", "_cpu_us")
        by_cpu = ""
        if metric.endswith("_ops") and cpu_metric in results[peer]:
            # Work per op, peer / ours: above 1 means ours spends less CPU per operation.
            cpu_ratio = statistics.median(paired_ratios(runs, peer, ours, cpu_metric))
            by_cpu = f"; client CPU per op, peer's / ours: {cpu_ratio:.2f}x"
        print(
            f"  {label}: {ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds) "
            f"(target {direction} {target}x) {'PASS' if ok else 'FAIL'}{by_cpu}"
        )
    for name, row in results.items():
        for metric in ("incr_lost", "rmw_lost"):
            if name.startswith("sharedstate") and row.get(metric):
                print(f"  CORRECTNESS: {name} lost {row[metric]:.0f} updates in {metric[:-5]}")


if __name__ == "__main__":
    sys.exit(main())
