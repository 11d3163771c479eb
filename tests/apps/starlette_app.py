"""A FastAPI app with sharedstate's Starlette sessions, served by the tests under real uvicorn.

``uvicorn tests.apps.starlette_app:app --workers 4``; settings come from the environment:
``SHAREDSTATE_URL`` (required), ``SHAREDSTATE_NAMESPACE``. ``/...`` has plain sessions,
``/locked/...`` a second middleware with ``lock=True`` (cookie ``locked_session``); ``/count`` is
a plain store counter. Handlers take ``?delay=`` (seconds slept after the session is read) to
widen race windows. The same routes as the Flask session app (tests/apps/session_app.py), so the
same acceptance checks run against both.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from sharedstate import AsyncStore
from sharedstate.starlette import SessionMiddleware

SECRET_KEY = "test-secret-key-for-starlette-sessions"


async def _pause(request: Request) -> None:
    delay = float(request.query_params.get("delay", 0))
    if delay:
        await asyncio.sleep(min(delay, 5.0))


def add_routes(app: FastAPI, store: AsyncStore) -> None:
    """The session test endpoints (and a counter) on ``app``."""

    @app.get("/noop", response_class=PlainTextResponse)
    async def noop() -> str:
        return "ok"

    @app.get("/count")
    async def count() -> PlainTextResponse:
        n = await store.incr("hits")
        return PlainTextResponse(str(n), headers={"x-worker": str(os.getpid())})

    @app.get("/get")
    async def get(request: Request) -> JSONResponse:
        data = dict(request.session)
        await _pause(request)
        return JSONResponse(data)

    @app.get("/set/{key}/{value}", response_class=PlainTextResponse)
    async def set_(request: Request, key: str, value: str) -> str:
        request.session.get(key)
        await _pause(request)
        request.session[key] = value
        return "ok"

    @app.get("/incr/{key}", response_class=PlainTextResponse)
    async def incr(request: Request, key: str) -> str:
        await _pause(request)
        return str(await request.session.incr(key))

    @app.get("/rmw/{key}", response_class=PlainTextResponse)
    async def rmw(request: Request, key: str) -> str:
        n = request.session.get(key, 0)
        await _pause(request)
        request.session[key] = n + 1
        return str(n + 1)

    @app.get("/append/{key}/{value}", response_class=PlainTextResponse)
    async def append(request: Request, key: str, value: str) -> str:
        request.session.setdefault(key, {"items": []})
        request.session[key]["items"].append(value)  # nested: detected at save
        return "ok"

    @app.get("/login/{user}", response_class=PlainTextResponse)
    async def login(request: Request, user: str) -> str:
        await request.session.regenerate()
        request.session["user"] = user
        await _pause(request)
        return "ok"

    @app.get("/logout", response_class=PlainTextResponse)
    async def logout(request: Request) -> str:
        await request.session.destroy()
        return "ok"

    @app.get("/clear", response_class=PlainTextResponse)
    async def clear(request: Request) -> str:
        request.session.clear()
        return "ok"

    @app.get("/fail")
    async def fail(request: Request) -> PlainTextResponse:
        request.session["failed"] = "yes"
        return PlainTextResponse("failed", status_code=500)

    @app.get("/crash")
    async def crash(request: Request) -> str:
        request.session["crashed"] = "yes"
        raise RuntimeError("boom")


def create_app(url: str | None = None, namespace: str | None = None, **options: Any) -> FastAPI:
    """The plain app at ``/`` and the locked one at ``/locked``, on one store."""
    url = url or os.environ["SHAREDSTATE_URL"]
    namespace = namespace if namespace is not None else os.environ.get("SHAREDSTATE_NAMESPACE", "sessions")
    store = AsyncStore(url, namespace=namespace)
    locked = FastAPI()
    locked.add_middleware(
        SessionMiddleware,
        store=store,
        secret_key=SECRET_KEY,
        session_cookie="locked_session",
        lock=True,
        **options,
    )
    add_routes(locked, store)
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET_KEY, **options)
    add_routes(app, store)
    app.mount("/locked", locked)
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn tests.apps.starlette_app:app``: built on first access, from the environment, so
    # importing this module (the in-process tests do) needs no SHAREDSTATE_URL.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
