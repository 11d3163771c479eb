"""Batched operations against a loop of single ones, and against the bare driver, side by side.

    python benchmarks/bench_batches.py                  # every backend that is reachable
    python benchmarks/bench_batches.py --only redis,memcached --keys 100 --repeat 7

For each backend: the time to read, write and delete ``--keys`` keys (default 100) with
``get_many`` / ``set_many`` / ``delete_many`` and with a loop of ``get`` / ``set`` / ``delete``;
for Redis and memcached also the bare driver's own batch (redis-py ``MGET`` / pipelined ``SET``,
pymemcache ``get_many`` / ``set_many``) on the same server, the floor a batch can reach. Each
cell is the median of ``--repeat`` rounds, every subject measured once per round (interleaved).
Both delete cells include writing the keys back with one ``set_many`` (so their ratio understates
the gain), and ours encode values with the JSON codec while the driver cells send fixed bytes.
The machine is shared and noisy: read the ratios, measured in the same run, not the absolute
milliseconds. Servers: Redis at 127.0.0.1:6379, PostgreSQL at 127.0.0.1:5432 (db ``test``), and a
memcached of our own on a free port when the binary is installed.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from sharedstate import Store

REDIS = "redis://127.0.0.1:6379/0"
CLEANUPS: list[Callable[[], Any]] = []  # run at the end: the shared Redis outlives the run
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1):
            return True
    except OSError:
        return False


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def subjects(store: Store, keys: list[str], raw: Any) -> dict[str, Callable[[], Any]]:
    """What one round measures on one backend: name -> a call doing the whole batch."""
    values = {k: {"i": i, "name": k} for i, k in enumerate(keys)}
    out: dict[str, Callable[[], Any]] = {
        "set_many": lambda: store.set_many(values, ttl=600),
        "set loop": lambda: [store.set(k, v, ttl=600) for k, v in values.items()],
        "get_many": lambda: store.get_many(keys),
        "get loop": lambda: [store.get(k) for k in keys],
        "delete_many": lambda: (store.delete_many(keys), store.set_many(values)),
        "delete loop": lambda: ([store.delete(k) for k in keys], store.set_many(values)),
    }
    if raw is not None:
        out.update(raw)
    return out


def raw_redis(keys: list[str]) -> dict[str, Callable[[], Any]]:
    import redis

    client = redis.Redis.from_url(REDIS)
    data = {f"rawbench{uuid.uuid4().hex[:8]}:{k}": b'{"i": 1}' for k in keys}
    CLEANUPS.append(lambda: client.delete(*data))

    def pipeline_set() -> None:
        pipe = client.pipeline(transaction=False)
        for k, v in data.items():
            pipe.set(k, v, px=600_000)
        pipe.execute()

    return {"driver set": pipeline_set, "driver get": lambda: client.mget(list(data))}


def raw_memcached(url: str, keys: list[str]) -> dict[str, Callable[[], Any]]:
    from pymemcache.client.base import Client

    host, port = url.removeprefix("memcached://").split(":")
    client = Client((host, int(port)), default_noreply=False)
    data = {f"rawbench:{k}": b'{"i": 1}' for k in keys}
    return {
        "driver set": lambda: client.set_many(data, expire=600),
        "driver get": lambda: client.gets_many(list(data)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", default="", help="comma-separated backend names")
    args = parser.parse_args()
    keys = [f"k{i}" for i in range(args.keys)]
    tmp = tempfile.mkdtemp(prefix="bench-batches-")
    memcached: subprocess.Popen[bytes] | None = None
    urls = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp}/state.db",
        "lmdb": f"lmdb:///{tmp}/state.lmdb",
    }
    if _reachable(6379):
        urls["redis"] = REDIS
    if _reachable(5432):
        urls["postgresql"] = f"{POSTGRES}?table=bench_batches_{uuid.uuid4().hex[:8]}"
    binary = shutil.which("memcached")
    if binary:
        port = _free_port()
        memcached = subprocess.Popen([binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root"])
        while not _reachable(port):
            time.sleep(0.05)
        urls["memcached"] = f"memcached://127.0.0.1:{port}"
    if args.only:
        urls = {name: url for name, url in urls.items() if name in args.only.split(",")}
    print(f"{args.keys} keys per batch; median ms of {args.repeat} interleaved rounds")
    print(f"{'backend':<11} {'subject':<12} {'ms':>8}   ratio")
    try:
        for name, url in urls.items():
            raw = None
            if name == "redis":
                raw = raw_redis(keys)
            elif name == "memcached":
                raw = raw_memcached(url, keys)
            with Store(url, namespace=f"bench{uuid.uuid4().hex[:8]}") as store:
                cells = subjects(store, keys, raw)
                for fn in cells.values():  # warm up: connections, the table, the first item
                    fn()
                times: dict[str, list[float]] = {label: [] for label in cells}
                for _ in range(args.repeat):
                    for label, fn in cells.items():
                        times[label].append(_timed(fn))
                median = {label: statistics.median(t) for label, t in times.items()}
                for label, ms in median.items():
                    op = label.split()[0].removesuffix("_many")
                    if label.endswith("_many"):
                        ratio = f"{median[f'{op} loop'] / ms:5.1f}x faster than the loop"
                    elif label.startswith("driver"):
                        ours = median[f"{label.split()[1]}_many"]
                        ratio = f"ours is {ours / ms:4.2f}x the driver's time"
                    else:
                        ratio = ""
                    print(f"{name:<11} {label:<12} {ms:8.2f}   {ratio}")
                store.delete_many(keys)
                if name == "postgresql":
                    backend: Any = store.backend
                    drop = f'DROP TABLE "{backend.table}"'
                    backend._run(lambda c, drop=drop: c.execute(drop), write=True)
    finally:
        for cleanup in CLEANUPS:
            cleanup()
        if memcached is not None:
            memcached.terminate()
            memcached.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
