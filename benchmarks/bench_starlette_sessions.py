"""Starlette sessions side by side: sharedstate's SessionMiddleware against Starlette's own.

    python benchmarks/bench_starlette_sessions.py
    python benchmarks/bench_starlette_sessions.py --rounds 5 --latency 300
    python benchmarks/bench_starlette_sessions.py --only starlette-cookie,sharedstate-sqlite

Each subject is the same small Starlette app with a different session middleware, called in
process through httpx's ASGI transport (no sockets: what is measured is the middleware and its
store). The client behaves like one browser: one cookie jar, updated from every ``Set-Cookie``.

- lost (of 50): 50 requests of one user, 10 at a time. ``rmw`` runs
  ``session["n"] = session.get("n", 0) + 1`` (with a 2 ms await in between, as a handler that
  does any I/O has); ``keys`` sets a different key per request (after the same await). Lost =
  50 minus what the session holds afterwards.
- read / write µs: median latency of a request that reads the session, and of one that writes a
  key, one at a time; each round measures every subject in turn (interleaved), the cell is the
  median over rounds, and "x cookie" is the ratio to Starlette's cookie middleware of that round.

Needs Redis on 127.0.0.1:6379 for the redis subject (``--redis``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as CookieSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sharedstate import AsyncStore
from sharedstate.starlette import SessionMiddleware

SUBJECTS = ["starlette-cookie", "sharedstate-sqlite", "sharedstate-redis", "sharedstate-sqlite+lock"]
N, AT_ONCE = 50, 10


async def rmw(request: Request) -> PlainTextResponse:
    n = request.session.get("n", 0)
    await asyncio.sleep(0.002)
    request.session["n"] = n + 1
    return PlainTextResponse("ok")


async def key(request: Request) -> PlainTextResponse:
    request.session.get("x")
    await asyncio.sleep(0.002)
    request.session[request.path_params["k"]] = 1
    return PlainTextResponse("ok")


async def read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.session.get("user")))


async def write(request: Request) -> PlainTextResponse:
    request.session["v"] = request.path_params["v"]
    return PlainTextResponse("ok")


async def dump(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


ROUTES = [
    Route("/rmw", rmw),
    Route("/key/{k}", key),
    Route("/read", read),
    Route("/write/{v}", write),
    Route("/dump", dump),
]


def make_app(subject: str, workdir: str, redis_url: str, stores: list[AsyncStore]) -> Starlette:
    if subject == "starlette-cookie":
        middleware = Middleware(CookieSessionMiddleware, secret_key="bench")
    else:
        url = f"sqlite:///{workdir}/{uuid.uuid4().hex}.db" if "sqlite" in subject else redis_url
        store = AsyncStore(url, namespace=f"bench{uuid.uuid4().hex[:8]}")
        stores.append(store)
        middleware = Middleware(SessionMiddleware, store=store, secret_key="bench", lock="+lock" in subject)
    return Starlette(routes=ROUTES, middleware=[middleware])


def browser(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def lost(app: Starlette, kind: str) -> int:
    async with browser(app) as c:
        await c.get("/write/x")  # a session exists
        gate = asyncio.Semaphore(AT_ONCE)

        async def one(i: int) -> None:
            async with gate:
                await c.get("/rmw" if kind == "rmw" else f"/key/k{i}")

        await asyncio.gather(*(one(i) for i in range(N)))
        data = (await c.get("/dump")).json()
    if kind == "rmw":
        return N - int(data.get("n", 0))
    return N - sum(1 for k in data if k.startswith("k"))


async def latency(app: Starlette, path: str, count: int) -> float:
    async with browser(app) as c:
        await c.get("/write/0")
        for _ in range(20):  # warm-up
            await c.get(path)
        times = []
        for i in range(count):
            start = time.perf_counter()
            await c.get(path.replace("{i}", str(i)))
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


async def main_async(args: argparse.Namespace) -> int:
    subjects = args.only.split(",") if args.only else SUBJECTS
    stores: list[AsyncStore] = []
    with tempfile.TemporaryDirectory() as workdir:
        apps = {s: make_app(s, workdir, args.redis, stores) for s in subjects}
        rows: dict[str, dict[str, Any]] = {s: {"read": [], "write": [], "rx": [], "wx": []} for s in subjects}
        for s in subjects:
            rows[s]["rmw"] = await lost(apps[s], "rmw")
            rows[s]["keys"] = await lost(apps[s], "keys")
        for _ in range(args.rounds):
            this: dict[str, tuple[float, float]] = {}
            for s in subjects:  # interleaved: every subject once per round
                this[s] = (
                    await latency(apps[s], "/read", args.latency),
                    await latency(apps[s], "/write/{i}", args.latency),
                )
            base = this.get("starlette-cookie")
            for s, (r, w) in this.items():
                rows[s]["read"].append(r)
                rows[s]["write"].append(w)
                if base:
                    rows[s]["rx"].append(r / base[0])
                    rows[s]["wx"].append(w / base[1])
        for store in stores:  # remove this run's entries (the Redis ones would outlive it)
            keys = [k async for k in store.backend.scan(store.namespace + "/")]
            for k in keys:
                await store.backend.delete(k)
            await store.aclose()
    print(f"| subject | rmw lost (of {N}) | keys lost (of {N}) | read µs | x cookie | write µs | x cookie |")
    print("|---|---|---|---|---|---|---|")
    for s in subjects:
        row = rows[s]

        def ratio(values: list[float]) -> str:
            return f"{statistics.median(values):.2f}" if values else "n/a"

        read_us, write_us = statistics.median(row["read"]), statistics.median(row["write"])
        print(
            f"| {s} | {row['rmw']} | {row['keys']} | {read_us:.0f} | {ratio(row['rx'])} "
            f"| {write_us:.0f} | {ratio(row['wx'])} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated subjects: " + ",".join(SUBJECTS))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (median)")
    parser.add_argument("--latency", type=int, default=200, help="requests per latency measurement")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    sys.exit(main())
