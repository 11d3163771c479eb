"""CPU per request of a session route, called directly: ours against each framework's cookie session.

    python benchmarks/bench_session_cpu.py                    # Starlette and Flask, ~30 s
    python benchmarks/bench_session_cpu.py --only starlette --rounds 9 --calls 3000
    python benchmarks/bench_session_cpu.py --profile starlette-sqlite-read   # cProfile of one cell

No server and no client: a tight loop of in-process calls of the app (``await app(scope, receive,
send)`` for Starlette, ``app.wsgi_app(environ, start_response)`` for Flask), every request carrying
the cookie of one earlier login (``session["user"] = "bench"``). What is measured is the process's
CPU time (``time.process_time``) per call, which a busy machine disturbs far less than wall time.

- read: the route returns ``session.get("user")`` (Starlette: ``request.session``).
- write: the route sets ``session["w"]`` to the call's number.

Subjects: ``cookie`` (Starlette's ``SessionMiddleware`` / Flask's own cookie session), ``sqlite``
and ``memory`` (sharedstate's server-side sessions on a ``sqlite://`` file and on ``memory://``).
Each round measures every cell once (interleaved); a cell is the median over rounds and "x cookie"
the median of the per-round ratios to the cookie session of the same framework and route. Targets:
issue 11 (Starlette: a read costs at most 1.1x the cookie one), issue 14 (Flask: a read at least as
fast as Flask's cookie session).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

FRAMEWORKS = ["starlette", "flask"]
SUBJECTS = ["cookie", "sqlite", "memory"]
ROUTES = ["read", "write"]
SECRET = "bench-secret"


def _url(subject: str, workdir: str) -> str:
    return f"sqlite:///{workdir}/{uuid.uuid4().hex}.db" if subject == "sqlite" else "memory://"


# -- Starlette ----------------------------------------------------------------------------------


def starlette_caller(subject: str, workdir: str) -> tuple[Callable[[str], Any], Callable[[], None]]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware as CookieSessionMiddleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def login(request: Request) -> PlainTextResponse:
        request.session["user"] = "bench"
        return PlainTextResponse("ok")

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("user")))

    counter = iter(range(10**9))

    async def write(request: Request) -> PlainTextResponse:
        request.session["w"] = next(counter)
        return PlainTextResponse("ok")

    routes = [Route("/login", login), Route("/read", read), Route("/write", write)]
    close: Callable[[], None] = lambda: None  # noqa: E731
    if subject == "cookie":
        middleware = Middleware(CookieSessionMiddleware, secret_key=SECRET)
    else:
        from sharedstate import AsyncStore
        from sharedstate.starlette import SessionMiddleware

        store = AsyncStore(_url(subject, workdir), namespace=f"bench{uuid.uuid4().hex[:8]}")
        middleware = Middleware(SessionMiddleware, store=store, secret_key=SECRET)

        def close() -> None:
            asyncio.get_event_loop().run_until_complete(store.aclose())

    app = Starlette(routes=routes, middleware=[middleware])

    async def call(path: str, cookie: bytes | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"host", b"testserver")]
        if cookie:
            headers.append((b"cookie", cookie))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": headers, "server": ("testserver", 80),
            "client": ("127.0.0.1", 1234),
        }  # fmt: skip
        out: list[tuple[bytes, bytes]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 200, message
                out.extend(message["headers"])

        await app(scope, receive, send)
        return out

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    headers = loop.run_until_complete(call("/login", None))
    cookie = next(v for k, v in headers if k == b"set-cookie").split(b";")[0]

    def run(route: str, n: int) -> None:
        async def many() -> None:
            for _ in range(n):
                await call("/" + route, cookie)

        loop.run_until_complete(many())

    return run, close


# -- Flask --------------------------------------------------------------------------------------


def flask_caller(subject: str, workdir: str) -> tuple[Callable[[str], Any], Callable[[], None]]:
    from flask import Flask, session
    from werkzeug.test import EnvironBuilder

    app = Flask("bench")
    app.config["SECRET_KEY"] = SECRET
    if subject != "cookie":
        from sharedstate.flask import SharedState

        app.config.update(
            SHAREDSTATE_URL=_url(subject, workdir),
            SHAREDSTATE_NAMESPACE=f"bench{uuid.uuid4().hex[:8]}",
            SHAREDSTATE_SESSIONS=True,
        )
        SharedState(app)

    @app.get("/login")
    def login() -> str:
        session["user"] = "bench"
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(session.get("user"))

    counter = iter(range(10**9))

    @app.get("/write")
    def write() -> str:
        session["w"] = next(counter)
        return "ok"

    out: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
        assert status.startswith("200"), status
        out[:] = headers

    def call(path: str, cookie: str | None) -> None:
        environ = EnvironBuilder(path=path, headers={"Cookie": cookie} if cookie else {}).get_environ()
        b"".join(app.wsgi_app(environ, start_response))

    call("/login", None)
    cookie = next(v for k, v in out if k == "Set-Cookie").split(";")[0]
    environs = {r: EnvironBuilder(path="/" + r, headers={"Cookie": cookie}).get_environ() for r in ROUTES}
    wsgi = app.wsgi_app

    def run(route: str, n: int) -> None:
        base = environs[route]
        for _ in range(n):
            for chunk in wsgi(dict(base), start_response):  # noqa: B007
                pass

    return run, lambda: None


# -- the table ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated frameworks: " + ",".join(FRAMEWORKS))
    parser.add_argument(
        "--subjects", default=",".join(SUBJECTS), help="comma-separated: cookie,sqlite,memory"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per cell per round")
    parser.add_argument("--profile", help="cProfile one cell, e.g. starlette-sqlite-read, and stop")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        makers = {"starlette": starlette_caller, "flask": flask_caller}
        if args.profile:
            fw, subject, route = args.profile.split("-")
            run, close = makers[fw](subject, workdir)
            run(route, 200)
            prof = cProfile.Profile()
            prof.enable()
            run(route, args.calls)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(35)
            print(s.getvalue())
            close()
            return 0
        frameworks = args.only.split(",") if args.only else FRAMEWORKS
        subjects = args.subjects.split(",")
        runs = {(fw, s): makers[fw](s, workdir) for fw in frameworks for s in subjects}
        cells = [(fw, s, r) for fw in frameworks for s in subjects for r in ROUTES]
        for fw, s, r in cells:
            runs[fw, s][0](r, 200)  # warm-up
        us: dict[tuple[str, str, str], list[float]] = {c: [] for c in cells}
        ratios: dict[tuple[str, str, str], list[float]] = {c: [] for c in cells}
        for _ in range(args.rounds):
            this = {}
            for cell in cells:
                fw, s, r = cell
                started = time.process_time()
                runs[fw, s][0](r, args.calls)
                this[cell] = (time.process_time() - started) / args.calls * 1e6
                us[cell].append(this[cell])
            for (fw, s, r), value in this.items():
                base = this.get((fw, "cookie", r))
                if base:
                    ratios[fw, s, r].append(value / base)
        for _, close in runs.values():
            close()
    print(f"CPU µs per call, median of {args.rounds} interleaved rounds of {args.calls} calls")
    print()
    print("| framework | session | read µs | x cookie | write µs | x cookie |")
    print("|---|---|---|---|---|---|")
    for fw in frameworks:
        for s in subjects:
            cols = []
            for r in ROUTES:
                cols.append(f"{statistics.median(us[fw, s, r]):.1f}")
                cols.append(f"{statistics.median(ratios[fw, s, r]):.2f}" if ratios[fw, s, r] else "n/a")
            print(f"| {fw} | {s} | " + " | ".join(cols) + " |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    sys.exit(main())
