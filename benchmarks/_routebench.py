"""What ``bench_asgi_routes.py`` and ``bench_wsgi_routes.py`` share: the load generator, the rounds,
the medians and ratios, the ``/proc`` CPU accounting and the table.

Load generator: ``--generators`` processes of this module run as a script (``--load``), each a small
asyncio client (raw ``asyncio.Protocol``, HTTP/1.1, one request in flight per connection) on
``--connections`` connections in total. A connection is kept alive while the server allows it; when
a response says ``Connection: close`` (gunicorn's sync workers say so on every response) the next
request goes on a new connection, as ``ab`` without ``-k`` does. It warms up for ``WARMUP_S``, then
counts the 200 responses completed in the ``--seconds`` window, and reports its own CPU time in it.

The driver (:func:`run_rounds`) measures every row once per round, the order rotating between
rounds, and the server's CPU time (every process of its process group, from ``/proc``) in each
cell's window. A cell is the median of its rounds; a ratio is the median of the per-round ratios
(each pairs two cells measured moments apart), given both by req/s and by the server's CPU time per
response (what the req/s ratio would be if the server's CPU were the only limit).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

WARMUP_S = 0.5

Samples = dict[str, list[dict[str, float]]]


# -- the load generator (``python _routebench.py --load ...``, in its own process) -----------------


class _Conn(asyncio.Protocol):
    """One connection: send the request, read one response, count it, send again (or reconnect)."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.reconnect = False
        gen.live += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = (
                int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
                if at >= 0
                else 0
            )
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            ok = head[9:12] == b"200"
            self.buffer = self.buffer[total:]
            self.gen.record(ok)
            assert self.transport is not None
            if not self.gen.running:
                self.transport.close()
                return
            if b"\r\nconnection: close" in head:
                self.reconnect = True
                self.transport.close()
                return
            self.transport.write(self.gen.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.live -= 1
        if self.gen.running:
            if self.reconnect:
                self.gen.connect()
            else:
                self.gen.errors += 1


class _Generator:
    def __init__(self, port: int, request: bytes, measure_from: float, measure_to: float) -> None:
        self.port, self.request = port, request
        self.measure_from, self.measure_to = measure_from, measure_to
        self.running = True
        self.done = 0
        self.errors = 0
        self.bad = 0
        self.live = 0
        self.connecting: set[asyncio.Task[Any]] = set()

    def record(self, ok: bool) -> None:
        now = time.time()
        if now >= self.measure_to:
            self.running = False
        elif now >= self.measure_from:
            if ok:
                self.done += 1
            else:
                self.bad += 1

    def connect(self) -> None:
        task = asyncio.get_running_loop().create_task(self._connect())
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        except OSError:
            self.errors += 1
            if self.running:
                await asyncio.sleep(0.01)
                self.connect()


async def _load(
    port: int, path: str, cookie: str, connections: int, start_at: float, seconds: float
) -> dict[str, Any]:
    measure_from = start_at + WARMUP_S
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie_line}\r\n".encode()
    gen = _Generator(port, request, measure_from, measure_from + seconds)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    for _ in range(connections):
        gen.connect()
    await asyncio.sleep(max(0.0, measure_from - time.time()))
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, gen.measure_to - time.time()))
    cpu1 = time.process_time()
    gen.running = False
    deadline = time.monotonic() + 5
    while (gen.live or gen.connecting) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for task in list(gen.connecting):
        task.cancel()
    return {"done": gen.done, "bad": gen.bad, "errors": gen.errors, "cpu_s": cpu1 - cpu0}


# -- the driver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    path: str
    cookie_from: str | None = None  # a login path whose Set-Cookie every request sends


class Server:
    """A multi-process server (``name``) in its own session on a loopback socket bound here.

    The socket has ``TCP_NODELAY`` set before the server inherits it (Linux copies it to every
    accepted connection), as gunicorn sets it on its own listeners. ``command(fd)`` is the server's
    command line given the socket's file descriptor; the server is up once its log holds ``ready``
    ``workers`` times.
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        ready: str,
        workers: int,
        env: dict[str, str],
        tmp: str,
    ) -> None:
        self.name = name
        self.log_path = os.path.join(tmp, f"{name}.log")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        self.port = listener.getsockname()[1]
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    command(listener.fileno()),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,
                )
        finally:
            listener.close()
        self._wait(ready, workers)

    def _wait(self, ready: str, workers: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                text = f.read()
            if text.count(ready) >= workers:
                return
            if self.proc.poll() is not None or "Traceback" in text:
                break
            time.sleep(0.1)
        self.stop()
        with open(self.log_path, errors="replace") as f:
            raise SystemExit(f"{self.name} did not start:\n{f.read()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def proc_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is the 5th field of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def http_get(port: int, path: str, cookie: str = "") -> tuple[int, str, str]:
    """One ``GET``: the status, the body and the ``name=value`` of its ``Set-Cookie``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        set_cookie = response.getheader("Set-Cookie") or ""
        return response.status, body, set_cookie.split(";", 1)[0]
    finally:
        conn.close()


def add_load_arguments(parser: argparse.ArgumentParser, *, connections: int) -> None:
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--connections", type=int, default=connections, help="connections in total")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s cells")
    parser.add_argument(
        "--only", default="", help="comma-separated substrings of row names (hello is always measured)"
    )


def select_rows(rows: list[Row], only: str) -> list[Row]:
    """The rows whose names contain one of the comma-separated ``only`` (all if empty), and hello."""
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        return rows
    return [r for r in rows if r.name == "hello" or any(w in r.name for w in wanted)]


def _cell(port: int, pgid: int, row: Row, cookie: str, args: argparse.Namespace) -> dict[str, float]:
    start_at = time.time() + 0.4  # the generators' interpreters start meanwhile
    per_gen = [
        args.connections // args.generators + (i < args.connections % args.generators)
        for i in range(args.generators)
    ]
    gens = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--load",
                str(port),
                row.path,
                cookie,
                str(n),
                repr(start_at),
                repr(args.seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in per_gen
    ]
    time.sleep(max(0.0, start_at + WARMUP_S - time.time()))
    cpu0 = proc_cpu(pgid)
    time.sleep(max(0.0, start_at + WARMUP_S + args.seconds - time.time()))
    cpu1 = proc_cpu(pgid)
    results = []
    for gen in gens:
        out, _ = gen.communicate(timeout=60)
        if gen.returncode != 0:
            raise SystemExit(f"load generator failed on {row.path}")
        results.append(json.loads(out))
    done = sum(r["done"] for r in results)
    return {
        "rps": done / args.seconds,
        "failed": sum(r["bad"] + r["errors"] for r in results),
        "client_cpu": sum(r["cpu_s"] for r in results) / args.seconds,
        "server_cpu": (cpu1 - cpu0) / args.seconds,
        "server_us": (cpu1 - cpu0) / done * 1e6 if done else float("nan"),
    }


def check_rows(port: int, rows: list[Row], check: Callable[[Row, str], None] | None = None) -> dict[str, str]:
    """Log in where a row needs a cookie, ``GET`` each row once (200 expected); the cookies by row.

    ``check(row, body)`` may assert more about a row's first response.
    """
    cookies = {}
    for row in rows:
        cookie = ""
        if row.cookie_from:
            status, _, cookie = http_get(port, row.cookie_from)
            assert status == 200 and cookie, (row.cookie_from, status, cookie)
        status, body, _ = http_get(port, row.path, cookie)
        assert status == 200, (row.path, status, body)
        if check is not None:
            check(row, body)
        cookies[row.name] = cookie
    return cookies


def run_rounds(
    port: int, pgid: int, rows: list[Row], cookies: dict[str, str], args: argparse.Namespace
) -> Samples:
    """``args.rounds`` rounds of one cell per row, the order rotating; the cells by row name."""
    samples: Samples = {row.name: [] for row in rows}
    for r in range(args.rounds):
        shift = r % len(rows)
        for row in rows[shift:] + rows[:shift]:
            samples[row.name].append(_cell(port, pgid, row, cookies[row.name], args))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{n} {s[-1]['rps']:,.0f}" for n, s in samples.items()),
            flush=True,
        )
    return samples


# -- the report ------------------------------------------------------------------------------------


def med(samples: Samples, name: str, key: str) -> float:
    return statistics.median(s[key] for s in samples[name])


def ratio(samples: Samples, a: str, b: str) -> float:
    """Median over rounds of ``a``'s req/s over ``b``'s."""
    return statistics.median(
        x["rps"] / y["rps"] for x, y in zip(samples[a], samples[b], strict=True) if y["rps"]
    )


def cpu_ratio(samples: Samples, a: str, b: str) -> float:
    """req/s ``a`` would reach relative to ``b`` if both were limited by the server's CPU alone."""
    return statistics.median(
        y["server_us"] / x["server_us"] for x, y in zip(samples[a], samples[b], strict=True) if x["server_us"]
    )


def print_table(rows: list[Row], samples: Samples, unavailable: list[str]) -> None:
    """The table of medians; ``unavailable``: ``"row name | why"`` lines for rows not measured."""
    print()
    print(
        "| route | req/s (median) | min..max | vs hello | failed | generator CPU | server CPU "
        "| server CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        rps = [s["rps"] for s in samples[row.name]]
        print(
            f"| {row.name} | {med(samples, row.name, 'rps'):,.0f} | {min(rps):,.0f}..{max(rps):,.0f} "
            f"| {ratio(samples, row.name, 'hello'):.2f}x "
            f"| {sum(s['failed'] for s in samples[row.name]):.0f} "
            f"| {med(samples, row.name, 'client_cpu') * 100:.0f} % "
            f"| {med(samples, row.name, 'server_cpu') * 100:.0f} % "
            f"| {med(samples, row.name, 'server_us'):.0f} |"
        )
    for line in unavailable:
        name, why = line.split(" | ", 1)
        print(f"| {name} | not available ({why}) | | | | | | |")
    print()
    print(
        "CPU columns: CPU seconds per second of the window (100 % = one core fully busy); server CPU "
        "µs/req: the server's CPU time per response, which other load on the machine disturbs least."
    )


def print_generator_share(samples: Samples, args: argparse.Namespace) -> None:
    gen_cpu = med(samples, "hello", "client_cpu") / args.generators
    print(
        f"  hello: the generator used {gen_cpu * 100:.0f} % of a core per process, the server "
        f"{med(samples, 'hello', 'server_cpu') * 100:.0f} % (of {os.cpu_count()} cores, shared with "
        "other work)."
    )
    rps = [s["rps"] for s in samples["hello"]]
    if len(rps) > 1 and min(rps):
        print(
            f"  noise: hello's req/s ranged {min(rps):,.0f}..{max(rps):,.0f} between rounds "
            f"({max(rps) / min(rps):.1f}x), its server CPU µs/req "
            f"{min(s['server_us'] for s in samples['hello']):.0f}.."
            f"{max(s['server_us'] for s in samples['hello']):.0f}."
        )
    with suppress(OSError), open("/proc/loadavg") as f:
        print(f"  load average now (1, 5, 15 min): {' '.join(f.read().split()[:3])}")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--load":
    _port, _path, _cookie, _conns, _start_at, _seconds = sys.argv[2:8]
    print(
        json.dumps(
            asyncio.run(_load(int(_port), _path, _cookie, int(_conns), float(_start_at), float(_seconds)))
        )
    )


#: The counter routes' floor (``floor: raw sqlite3 upsert``): one autocommit upsert adding 1.
FLOOR_UPSERT = (
    "INSERT INTO kv (key, value) VALUES ('hits', 1) ON CONFLICT (key) DO UPDATE SET value = value + 1"
    " RETURNING value"
)


def open_floor_sqlite(path: str) -> Any:
    """A plain ``sqlite3`` connection for the floor rows (WAL, ``synchronous=NORMAL``, autocommit,
    SQLite's default busy handler) on a file with table ``kv``."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    return conn
