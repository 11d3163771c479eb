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
- ``floor: raw sqlite3 upsert``: what SQLite alone costs, for information: a route doing one
  autocommit ``INSERT ... ON CONFLICT DO UPDATE SET value = value + 1 RETURNING value`` on a plain
  ``sqlite3`` connection (WAL, ``synchronous=NORMAL``, its own file, no namespace, codec, expiry or
  version), synchronously on the event loop with SQLite's default busy handler (which, unlike
  ``sqlite://``, sleeps on the loop while another worker holds the write lock). The least any
  SQLite-backed increment can cost: the ceiling of ``counter sqlite://`` on this machine (the twin of
  ``bench_wsgi_routes.py``'s floor row).
- ``session: Starlette cookie``: ``request.session.get("user")`` under Starlette's own
  ``SessionMiddleware`` (the data signed into the cookie, re-signed and re-sent on every response).
- ``session: sharedstate``: the same route under ``sharedstate.starlette.SessionMiddleware``
  (the cookie holds a signed id, the data lives in the sqlite ``AsyncStore``). Target: costs no more
  than 1.1x the cookie one, i.e. requests per second at least 1/1.1 of it. Shown as "not available"
  when ``sharedstate.starlette`` cannot be imported.
  Both session routes are mounted the same way (a Starlette sub-app under ``/cookie`` and ``/ours``)
  and every request carries a cookie from one earlier login request.
- ``session: cookie + raw SELECT``: the cookie route plus one ``SELECT`` of a small row by primary
  key on the floor's plain ``sqlite3`` connection, for information: what one SQLite read adds to a
  request here, the least a session kept in SQLite can cost over one kept in the cookie (ours also
  skips the cookie's re-signing and JSON on every response, but decodes the entry it read).

Load generator, rounds, medians, ratios and the server's CPU (from ``/proc``): ``_routebench.py``
(shared with ``bench_wsgi_routes.py``). ``--generators`` processes (default 1), each a small asyncio
client on ``--connections`` keep-alive connections in total (default 64), one request in flight per
connection; every cell also records the CPU time the generator and the server's processes used in
its window, so the table says whether the server was the limit: on 2 cores the generator competes
with the server for the CPU, and a generator near 100 % of one core would be the bottleneck itself.

A round measures every row once, the order rotating between rounds, so a slow spell of the shared
machine falls on all rows alike; a cell is the median of its rounds, and the ratios are the medians
of the per-round ratios (each pairs two cells measured moments apart). Each ratio is also given by
the server's CPU time per response (hello's over the row's): what the req/s ratio would be if the
server's CPU were the only limit. On a machine busy with other work, where the server gets a varying
share of the cores, that one moves less; the targets are judged on req/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from _routebench import (
    FLOOR_UPSERT,
    WARMUP_S,
    Row,
    Samples,
    Server,
    add_load_arguments,
    check_rows,
    cpu_ratio,
    open_floor_sqlite,
    print_generator_share,
    print_table,
    ratio,
    run_rounds,
    select_rows,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TMP_ENV = "BENCH_ASGI_TMP"
NS_ENV = "BENCH_ASGI_NAMESPACE"
BACKENDS_ENV = "BENCH_ASGI_BACKENDS"
SESSIONS_ENV = "BENCH_ASGI_OUR_SESSIONS"
SECRET = "bench-asgi-routes-not-a-real-secret"
HELLO_TARGET = 0.90  # counter sqlite:// rps >= 90 % of hello rps
SESSION_TARGET = 1 / 1.1  # ours rps >= cookie rps / 1.1
FLOOR = "floor: raw sqlite3 upsert"
COOKIE_SELECT = "session: cookie + raw SELECT"


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

    # The floor (see the module docstring): SQLite alone, inline on the loop.
    raw_sqlite = open_floor_sqlite(f"{tmp}/floor.sqlite3")

    async def floor_sqlite() -> PlainTextResponse:
        row = raw_sqlite.execute(FLOOR_UPSERT).fetchone()
        return PlainTextResponse(str(row[0]))

    app.add_api_route("/floor/sqlite", floor_sqlite, methods=["GET"])

    async def login(request: Request) -> PlainTextResponse:
        request.session["user"] = "alice"
        return PlainTextResponse("ok")

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("user", "")))

    raw_sqlite.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('session', 1)")

    async def read_and_select(request: Request) -> PlainTextResponse:
        raw_sqlite.execute("SELECT value FROM kv WHERE key = 'session'").fetchone()
        return PlainTextResponse(str(request.session.get("user", "")))

    def session_app() -> Starlette:
        return Starlette(
            routes=[Route("/login", login), Route("/read", read), Route("/read-select", read_and_select)]
        )

    app.mount("/cookie", CookieSessionMiddleware(session_app(), secret_key=SECRET))
    if os.environ.get(SESSIONS_ENV) == "1":
        from sharedstate.starlette import SessionMiddleware  # type: ignore[import-not-found,unused-ignore]

        app.mount("/ours", SessionMiddleware(session_app(), store=stores["sqlite"], secret_key=SECRET))
    return app


# -- the driver ------------------------------------------------------------------------------------


def start_server(workers: int, env: dict[str, str], tmp: str) -> Server:
    """``uvicorn --workers N --fd FD``, the socket bound by :class:`_routebench.Server`.

    Why not ``--port``: uvicorn's master binds that socket with protocol 0 and hands it to the
    workers, and asyncio sets ``TCP_NODELAY`` only on sockets whose protocol is ``IPPROTO_TCP``. So
    with ``--workers`` > 1 the accepted connections keep Nagle's algorithm, h11 sends the headers and
    the body in two writes, and the body waits for the client's delayed ACK: about 40 ms per request
    on keep-alive connections (measured here: 22 requests/s on one connection, whatever the route).
    Linux copies ``TCP_NODELAY`` from a listening socket to the connections it accepts, which is what
    gunicorn does too (``-k uvicorn.workers.UvicornWorker``).
    """
    here = os.path.dirname(os.path.abspath(__file__))

    def command(fd: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "--fd", str(fd),
            "--workers", str(workers), "--backlog", "2048", "--no-access-log", "--no-use-colors",
            "--log-level", "info", "--timeout-graceful-shutdown", "2",
            "--app-dir", here, "--factory", "bench_asgi_routes:make_app",
        ]  # fmt: skip

    return Server("uvicorn", command, "Application startup complete", workers, env, tmp)


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_arguments(parser, connections=64)
    parser.add_argument("--workers", type=int, default=4, help="uvicorn --workers")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0

    backends, missing = _available_backends()
    ours = _our_sessions_available()
    rows = [Row("hello", "/hello")]
    rows += [Row(f"counter {b}://", f"/counter/{b}") for b in backends]
    rows.append(Row(FLOOR, "/floor/sqlite"))
    rows.append(Row("session: Starlette cookie", "/cookie/read", "/cookie/login"))
    rows.append(Row(COOKIE_SELECT, "/cookie/read-select", "/cookie/login"))
    if ours:
        rows.append(Row("session: sharedstate", "/ours/read", "/ours/login"))
    rows = select_rows(rows, args.only)

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
    server = start_server(args.workers, env, tmp)
    try:

        def check(row: Row, body: str) -> None:
            if row.cookie_from:
                assert body == "alice", (row.path, body)

        cookies = check_rows(server.port, rows, check)
        samples = run_rounds(server.port, server.proc.pid, rows, cookies, args)
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
    samples: Samples,
    ours: bool,
    missing: list[str],
    args: argparse.Namespace,
) -> None:
    unavailable = [f"counter {m.split(' ', 1)[0]} | {m.split(' ', 1)[1].strip('()')}" for m in missing]
    if not ours:
        unavailable.insert(0, "session: sharedstate | sharedstate.starlette cannot be imported")
    print_table(rows, samples, unavailable)
    print("Ratios (median of per-round ratios) vs targets:")
    if "counter sqlite://" in samples:
        sqlite = ratio(samples, "counter sqlite://", "hello")
        verdict = "PASS" if sqlite >= HELLO_TARGET else "FAIL"
        print(
            f"  counter sqlite:// / hello: {sqlite:.2f}x (target >= {HELLO_TARGET:.2f}x) {verdict}; "
            f"by server CPU per request: {cpu_ratio(samples, 'counter sqlite://', 'hello'):.2f}x"
        )
    if FLOOR in samples:
        print(
            f"  {FLOOR} / hello: {ratio(samples, FLOOR, 'hello'):.2f}x (for information: SQLite alone, "
            "the ceiling of counter sqlite://); by server CPU per request: "
            f"{cpu_ratio(samples, FLOOR, 'hello'):.2f}x"
        )
        if "counter sqlite://" in samples:
            print(
                f"  counter sqlite:// / {FLOOR}: {ratio(samples, 'counter sqlite://', FLOOR):.2f}x; "
                f"by server CPU per request: {cpu_ratio(samples, 'counter sqlite://', FLOOR):.2f}x"
            )
    for b in ("redis", "lmdb"):
        if f"counter {b}://" in samples:
            print(
                f"  counter {b}:// / hello: {ratio(samples, f'counter {b}://', 'hello'):.2f}x "
                "(for information); by server CPU per request: "
                f"{cpu_ratio(samples, f'counter {b}://', 'hello'):.2f}x"
            )
    if {COOKIE_SELECT, "session: Starlette cookie"} <= samples.keys():
        cookie = "session: Starlette cookie"
        print(
            f"  {COOKIE_SELECT} / Starlette cookie: {ratio(samples, COOKIE_SELECT, cookie):.2f}x "
            "(for information: one SQLite read); by server CPU per request: "
            f"{cpu_ratio(samples, COOKIE_SELECT, cookie):.2f}x"
        )
    if {"session: sharedstate", "session: Starlette cookie"} <= samples.keys():
        session = ratio(samples, "session: sharedstate", "session: Starlette cookie")
        verdict = "PASS" if session >= SESSION_TARGET else "FAIL"
        print(
            f"  session sharedstate / Starlette cookie: {session:.2f}x, i.e. costs {1 / session:.2f}x "
            f"(target: costs <= 1.10x, req/s >= {SESSION_TARGET:.2f}x) {verdict}; by server CPU per "
            "request: "
            f"{cpu_ratio(samples, 'session: sharedstate', 'session: Starlette cookie'):.2f}x"
        )
    elif not ours:
        print(
            "  session sharedstate / Starlette cookie: not available "
            "(sharedstate.starlette cannot be imported)"
        )
    print_generator_share(samples, args)


if __name__ == "__main__":
    main()
