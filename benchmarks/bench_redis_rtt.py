"""What one loopback round trip to redis costs here: the link of a client-side update's chain.

    python benchmarks/bench_redis_rtt.py              # 5 rounds, 20,000 round trips per process
    python benchmarks/bench_redis_rtt.py --rounds 9

A client-side read-modify-write of one key (``redis://`` ``update``, a WATCH loop) is a chain of
round trips: each compare-and-set must start from the value the one before wrote, which only its
writer knows without asking again, so one key's updates go one round trip after another however
many processes send them. A Lua script runs the change in the server instead, and its processes
overlap their round trips. So on one key the client-side update's rate is at most one per round
trip (plus the change in Python), while the Lua RMW's grows with its processes.

Each row: processes sending ``PING`` back to back on a bare socket (hiredis packs and parses; no
pool, no timeout), the median over rounds of the round trip each process sees, and the rate a
chain of such round trips would make. With one process the CPUs idle between the reply and the
next request, and waking costs; with four they stay busy and each round trip is shorter (but a
chain has only one link in flight at a time, so its rate lies between the two).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import statistics
import sys
import time
from typing import Any


def _ping_loop(host: str, port: int, count: int, results: Any) -> None:
    import hiredis

    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    command, reader = hiredis.pack_command(("PING",)), hiredis.Reader()

    def round_trip() -> None:
        sock.sendall(command)
        while reader.gets() is False:
            reader.feed(sock.recv(4096))

    for _ in range(500):  # warm up
        round_trip()
    began = time.perf_counter()
    for _ in range(count):
        round_trip()
    results.put((time.perf_counter() - began) / count * 1e6)


def round_trip_us(host: str, port: int, processes: int, count: int) -> float:
    """The mean round trip (µs) of ``processes`` processes each pinging ``count`` times at once."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_ping_loop, args=(host, port, count, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    seen = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return statistics.mean(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20000, help="round trips per process per round")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    args = parser.parse_args(argv)
    rows: dict[int, list[float]] = {1: [], 4: []}
    for _ in range(args.rounds):  # interleaved: a drift of the machine falls on both rows
        for processes, seen in rows.items():
            seen.append(round_trip_us(args.host, args.port, processes, args.count))
    print("| processes pinging | round trip µs (median) | range | a chain of these: ops/s |")
    print("|---|---|---|---|")
    for processes, seen in rows.items():
        median = statistics.median(seen)
        print(f"| {processes} | {median:.1f} | {min(seen):.1f}-{max(seen):.1f} | {1e6 / median:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
