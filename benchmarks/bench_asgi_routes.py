"""FastAPI routes under ``uvicorn --workers 4``: what one AsyncStore call and a server-side session cost.

    python benchmarks/bench_asgi_routes.py                  # 5 rounds of 3 s cells (about 2 minutes)
    python benchmarks/bench_asgi_routes.py --quick          # 1 round of 1 s cells, a smoke test
    python benchmarks/bench_asgi_routes.py --connections 32 --rounds 7 --seconds 4

One uvicorn (``--workers 4``, loopback, a free port) serves one FastAPI app (``make_app`` below,
loaded with ``--factory``) with every row's route; each row is measured by the same load generator:

- ``hello``: ``GET /hello`` returns ``PlainTextResponse("hello")``; the ceiling.
- ``counter sqlite://``: the route does ``await store.counter("hits").incr()`` on an ``AsyncStore``
  on an SQLite file. Target (issue 11): at least 90 % of the hello route's requests per second.
- ``counter redis://`` and ``counter lmdb://``: the same on those backends, for information.
- ``session: Starlette cookie``: ``request.session.get("user")`` under Starlette's own
  ``SessionMiddleware`` (the data signed into the cookie, re-signed and re-sent on every response).
- ``session: sharedstate``: the same route under ``sharedstate.starlette.SessionMiddleware``
  (the cookie holds a signed id, the data lives in the sqlite ``AsyncStore``). Target: costs no more
  than 1.1x the cookie one, i.e. requests per second at least 1/1.1 of it. Shown as "not available"
  when ``sharedstate.starlette`` cannot be imported.
  Both session routes are mounted the same way (a Starlette sub-app under ``/cookie`` and ``/ours``)
  and every request carries a cookie from one earlier login request.

Load generator: ``--generators`` processes (default 1) of this script (``--load``), each a small
asyncio client (raw ``asyncio.Protocol``, HTTP/1.1 keep-alive, one request in flight per
connection) on ``--connections`` connections in total (default 64). It warms up for 0.5 s, then
counts the 200 responses completed in the ``--seconds`` window. Every cell also records the CPU
time the generator and the server's processes used in that window (``/proc``), so the table says
whether the server was the limit: on 2 cores the generator competes with the server for the CPU,
and a generator near 100 % of one core would be the bottleneck itself.

A round measures every row once, the order rotating between rounds, so a slow spell of the shared
machine falls on all rows alike; a cell is the median of its rounds, and the ratios are the medians
of the per-round ratios (each pairs two cells measured moments apart). Each ratio is also given by
the server's CPU time per response (hello's over the row's): what the req/s ratio would be if the
server's CPU were the only limit. On a machine busy with other work, where the server gets a varying
share of the cores, that one moves less; the targets are judged on req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TMP_ENV = "BENCH_ASGI_TMP"
NS_ENV = "BENCH_ASGI_NAMESPACE"
BACKENDS_ENV = "BENCH_ASGI_BACKENDS"
SESSIONS_ENV = "BENCH_ASGI_OUR_SESSIONS"
SECRET = "bench-asgi-routes-not-a-real-secret"
WARMUP_S = 0.5
HELLO_TARGET = 0.90  # counter sqlite:// rps >= 90 % of hello rps
SESSION_TARGET = 1 / 1.1  # ours rps >= cookie rps / 1.1


# -- the app (runs in each uvicorn worker) ---------------------------------------------------------


def make_app() -> Any:
    """uvicorn ``--factory``: one FastAPI app with every row's route (see the module docstring)."""
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.middleware.sessions import SessionMiddleware as CookieSessionMiddleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sharedstate import AsyncStore

    tmp, namespace = os.environ[TMP_ENV], os.environ[NS_ENV]
    urls = {
        "sqlite": f"sqlite:///{tmp}/bench.sqlite3",
        "redis": REDIS_URL,
        "lmdb": f"lmdb:///{tmp}/bench.lmdb",
    }
    stores = {
        name: AsyncStore(urls[name], namespace=namespace) for name in os.environ[BACKENDS_ENV].split(",")
    }

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        for store in stores.values():
            await store.counter("hits").get()  # connect before the first request
        yield
        for store in stores.values():
            await store.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def hello() -> PlainTextResponse:
        return PlainTextResponse("hello")

    app.add_api_route("/hello", hello, methods=["GET"])

    def counter_route(store: AsyncStore) -> Callable[[], Any]:
        counter = store.counter("hits")

        async def incr() -> PlainTextResponse:
            return PlainTextResponse(str(await counter.incr()))

        return incr

    for name, store in stores.items():
        app.add_api_route(f"/counter/{name}", counter_route(store), methods=["GET"])

    async def login(request: Request) -> PlainTextResponse:
        request.session["user"] = "alice"
        return PlainTextResponse("ok")

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("user", "")))

    def session_app() -> Starlette:
        return Starlette(routes=[Route("/login", login), Route("/read", read)])

    app.mount("/cookie", CookieSessionMiddleware(session_app(), secret_key=SECRET))
    if os.environ.get(SESSIONS_ENV) == "1":
        from sharedstate.starlette import SessionMiddleware  # type: ignore[import-not-found,unused-ignore]

        app.mount("/ours", SessionMiddleware(session_app(), store=stores["sqlite"], secret_key=SECRET))
    return app


# -- the load generator (``--load``, in its own process) -------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection: send the request, read one response, count it, send again."""

    def __init__(self, request: bytes, gen: _Generator) -> None:
        self.request = request
        self.gen = gen
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

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
            if self.gen.running:
                self.transport.write(self.request)
            else:
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.gen.running:
            self.gen.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _Generator:
    def __init__(self, measure_from: float, measure_to: float) -> None:
        self.measure_from, self.measure_to = measure_from, measure_to
        self.running = True
        self.done = 0
        self.errors = 0
        self.bad = 0

    def record(self, ok: bool) -> None:
        now = time.time()
        if now >= self.measure_to:
            self.running = False
        elif now >= self.measure_from:
            if ok:
                self.done += 1
            else:
                self.bad += 1


async def _load(
    port: int, path: str, cookie: str, connections: int, start_at: float, seconds: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    measure_from = start_at + WARMUP_S
    gen = _Generator(measure_from, measure_from + seconds)
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie_line}\r\n".encode()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    conns = []
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Conn(request, gen), "127.0.0.1", port)
        conns.append(conn)
    await asyncio.sleep(max(0.0, measure_from - time.time()))
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, gen.measure_to - time.time()))
    cpu1 = time.process_time()
    gen.running = False
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), 5)
    return {"done": gen.done, "bad": gen.bad, "errors": gen.errors, "cpu_s": cpu1 - cpu0}


# -- the driver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    path: str
    cookie_from: str | None = None  # a login path whose Set-Cookie every request sends


def _proc_cpu(pgid: int) -> float:
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


class Server:
    """``uvicorn --workers N --fd FD`` on a loopback socket bound here with ``TCP_NODELAY`` set.

    Why not ``--port``: uvicorn's master binds that socket with protocol 0 and hands it to the
    workers, and asyncio sets ``TCP_NODELAY`` only on sockets whose protocol is ``IPPROTO_TCP``. So
    with ``--workers`` > 1 the accepted connections keep Nagle's algorithm, h11 sends the headers and
    the body in two writes, and the body waits for the client's delayed ACK: about 40 ms per request
    on keep-alive connections (measured here: 22 requests/s on one connection, whatever the route).
    Linux copies ``TCP_NODELAY`` from a listening socket to the connections it accepts, which is what
    gunicorn does too (``-k uvicorn.workers.UvicornWorker``).
    """

    def __init__(self, workers: int, env: dict[str, str], tmp: str) -> None:
        self.log_path = os.path.join(tmp, "uvicorn.log")
        here = os.path.dirname(os.path.abspath(__file__))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        self.port = listener.getsockname()[1]
        cmd = [
            sys.executable, "-m", "uvicorn", "--fd", str(listener.fileno()),
            "--workers", str(workers), "--backlog", "2048", "--no-access-log", "--no-use-colors",
            "--log-level", "info", "--timeout-graceful-shutdown", "2",
            "--app-dir", here, "--factory", "bench_asgi_routes:make_app",
        ]  # fmt: skip
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,
                )
        finally:
            listener.close()
        self._wait(workers)

    def _wait(self, workers: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                text = f.read()
            if text.count("Application startup complete") >= workers:
                return
            if self.proc.poll() is not None or "Traceback" in text:
                break
            time.sleep(0.1)
        self.stop()
        with open(self.log_path, errors="replace") as f:
            raise SystemExit(f"uvicorn did not start:\n{f.read()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def get(self, path: str, cookie: str = "") -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            body = response.read().decode("utf-8", "replace")
            set_cookie = response.getheader("Set-Cookie") or ""
            return response.status, body, set_cookie.split(";", 1)[0]
        finally:
            conn.close()


def _cell(server: Server, row: Row, cookie: str, args: argparse.Namespace) -> dict[str, float]:
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
                str(server.port),
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
    cpu0 = _proc_cpu(server.proc.pid)
    time.sleep(max(0.0, start_at + WARMUP_S + args.seconds - time.time()))
    cpu1 = _proc_cpu(server.proc.pid)
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


def _available_backends() -> tuple[list[str], list[str]]:
    from sharedstate import Store

    ok, missing = ["sqlite"], []
    try:
        with Store(REDIS_URL, namespace=f"bench-asgi-probe-{secrets.token_hex(4)}") as probe:
            probe.counter("probe").get()
        ok.append("redis")
    except Exception as exc:
        missing.append(f"redis:// ({type(exc).__name__})")
    if importlib.util.find_spec("lmdb") is not None:
        ok.append("lmdb")
    else:
        missing.append("lmdb:// (the lmdb package is not installed)")
    return ok, missing


def _our_sessions_available() -> bool:
    try:
        from sharedstate.starlette import SessionMiddleware  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, path, cookie, conns, start_at, seconds = sys.argv[2:8]
        result = asyncio.run(_load(int(port), path, cookie, int(conns), float(start_at), float(seconds)))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--workers", type=int, default=4, help="uvicorn --workers")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in total")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s cells")
    parser.add_argument(
        "--only", default="", help="comma-separated substrings of row names (hello is always measured)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0

    backends, missing = _available_backends()
    ours = _our_sessions_available()
    rows = [Row("hello", "/hello")]
    rows += [Row(f"counter {b}://", f"/counter/{b}") for b in backends]
    rows.append(Row("session: Starlette cookie", "/cookie/read", "/cookie/login"))
    if ours:
        rows.append(Row("session: sharedstate", "/ours/read", "/ours/login"))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        rows = [r for r in rows if r.name == "hello" or any(w in r.name for w in wanted)]

    tmp = tempfile.mkdtemp(prefix="bench-asgi-")
    namespace = f"bench-asgi-{secrets.token_hex(6)}"
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(
        {
            TMP_ENV: tmp,
            NS_ENV: namespace,
            BACKENDS_ENV: ",".join(backends),
            SESSIONS_ENV: "1" if ours else "0",
        }
    )
    for name in [n for n in env if n.startswith("UVICORN_")]:
        del env[name]
    print(
        f"uvicorn --workers {args.workers} on 127.0.0.1; load: {args.generators} generator process(es), "
        f"{args.connections} keep-alive connections; {args.rounds} rounds of {args.seconds:g} s cells "
        f"(+{WARMUP_S:g} s warm-up); {os.cpu_count()} CPUs",
        flush=True,
    )
    server = Server(args.workers, env, tmp)
    samples: dict[str, list[dict[str, float]]] = {row.name: [] for row in rows}
    try:
        cookies = {}
        for row in rows:
            cookie = ""
            if row.cookie_from:
                status, _, cookie = server.get(row.cookie_from)
                assert status == 200 and cookie, (row.cookie_from, status, cookie)
            status, body, _ = server.get(row.path, cookie)
            assert status == 200, (row.path, status, body)
            if row.cookie_from:
                assert body == "alice", (row.path, body)
            cookies[row.name] = cookie
        for r in range(args.rounds):
            shift = r % len(rows)
            for row in rows[shift:] + rows[:shift]:
                samples[row.name].append(_cell(server, row, cookies[row.name], args))
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {s[-1]['rps']:,.0f}" for n, s in samples.items()),
                flush=True,
            )
    finally:
        server.stop()
        if "redis" in backends:
            from sharedstate import Store

            with suppress(Exception), Store(REDIS_URL, namespace=namespace) as store:
                store.delete("hits")
        shutil.rmtree(tmp, ignore_errors=True)
    _report(rows, samples, ours, missing, args)


def _report(
    rows: list[Row],
    samples: dict[str, list[dict[str, float]]],
    ours: bool,
    missing: list[str],
    args: argparse.Namespace,
) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    def ratio(a: str, b: str) -> float:
        return statistics.median(
            x["rps"] / y["rps"] for x, y in zip(samples[a], samples[b], strict=True) if y["rps"]
        )

    def cpu_ratio(a: str, b: str) -> float:
        """req/s ``a`` would reach relative to ``b`` if both were limited by the server's CPU alone."""
        return statistics.median(
            y["server_us"] / x["server_us"]
            for x, y in zip(samples[a], samples[b], strict=True)
            if x["server_us"]
        )

    print()
    print(
        "| route | req/s (median) | min..max | vs hello | failed | generator CPU | server CPU "
        "| server CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        rps = [s["rps"] for s in samples[row.name]]
        print(
            f"| {row.name} | {med(row.name, 'rps'):,.0f} | {min(rps):,.0f}..{max(rps):,.0f} "
            f"| {ratio(row.name, 'hello'):.2f}x | {sum(s['failed'] for s in samples[row.name]):.0f} "
            f"| {med(row.name, 'client_cpu') * 100:.0f} % | {med(row.name, 'server_cpu') * 100:.0f} % "
            f"| {med(row.name, 'server_us'):.0f} |"
        )
    if not ours:
        print(
            "| session: sharedstate | not available (sharedstate.starlette cannot be imported) | | | | | | |"
        )
    for name in missing:
        print(f"| counter {name.split(' ', 1)[0]} | not available {name.split(' ', 1)[1]} | | | | | | |")
    print()
    print(
        "CPU columns: CPU seconds per second of the window (100 % = one core fully busy); server CPU "
        "µs/req: the server's CPU time per response, which other load on the machine disturbs least."
    )
    print("Ratios (median of per-round ratios) vs targets:")
    if "counter sqlite://" in samples:
        sqlite = ratio("counter sqlite://", "hello")
        verdict = "PASS" if sqlite >= HELLO_TARGET else "FAIL"
        print(
            f"  counter sqlite:// / hello: {sqlite:.2f}x (target >= {HELLO_TARGET:.2f}x) {verdict}; "
            f"by server CPU per request: {cpu_ratio('counter sqlite://', 'hello'):.2f}x"
        )
    for b in ("redis", "lmdb"):
        if f"counter {b}://" in samples:
            print(
                f"  counter {b}:// / hello: {ratio(f'counter {b}://', 'hello'):.2f}x (for information); "
                f"by server CPU per request: {cpu_ratio(f'counter {b}://', 'hello'):.2f}x"
            )
    if {"session: sharedstate", "session: Starlette cookie"} <= samples.keys():
        session = ratio("session: sharedstate", "session: Starlette cookie")
        verdict = "PASS" if session >= SESSION_TARGET else "FAIL"
        print(
            f"  session sharedstate / Starlette cookie: {session:.2f}x, i.e. costs {1 / session:.2f}x "
            f"(target: costs <= 1.10x, req/s >= {SESSION_TARGET:.2f}x) {verdict}; by server CPU per "
            f"request: {cpu_ratio('session: sharedstate', 'session: Starlette cookie'):.2f}x"
        )
    elif not ours:
        print(
            "  session sharedstate / Starlette cookie: not available "
            "(sharedstate.starlette cannot be imported)"
        )
    gen_cpu = med("hello", "client_cpu") / args.generators
    print(
        f"  hello: the generator used {gen_cpu * 100:.0f} % of a core per process, the server "
        f"{med('hello', 'server_cpu') * 100:.0f} % (of {os.cpu_count()} cores, shared with other work)."
    )


if __name__ == "__main__":
    main()
