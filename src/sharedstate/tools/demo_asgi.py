"""The FastAPI apps of ``sharedstate demo --server uvicorn``: the classic global counter, and a safe one.

``uvicorn --workers 4 --factory sharedstate.tools.demo_asgi:naive_app`` serves the counter from the
question as a FastAPI app: a module-level ``SomeObj`` (the one in :mod:`sharedstate.tools.demo_apps`)
whose method does ``self.param += 1; return self.param``, called from an ``async def`` route.
``--factory sharedstate.tools.demo_asgi:shared_app`` serves ``await store.counter("hits").incr()`` on
an :class:`~sharedstate.AsyncStore` (URL and namespace from ``SHAREDSTATE_DEMO_URL`` /
``SHAREDSTATE_DEMO_NAMESPACE``, else ``$SHAREDSTATE_URL`` or ``sharedstate.sqlite3``).

``GET /`` answers the new value as a plain-text body and the serving worker's pid in ``X-Worker-Pid``,
like the WSGI apps. uvicorn starts its ``--workers`` with multiprocessing's *spawn*, so they inherit
no file descriptor from the master: they find the demo's ready and lifeline pipes as named FIFOs
(``SHAREDSTATE_DEMO_READY_PATH`` / ``SHAREDSTATE_DEMO_LIFELINE_PATH``). Each worker announces itself
once its lifespan startup is done (the store connected), and when the lifeline closes it asks its
uvicorn master (or itself, with one worker) to shut down.

Needs ``fastapi`` and ``uvicorn``: ``pip install 'sharedstate[fastapi]'``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sharedstate._optional import require
from sharedstate.tools.demo_apps import (
    COUNTER_NAME,
    NAMESPACE_ENV,
    PID_HEADER,
    URL_ENV,
    SomeObj,
    _announce_ready,
    _watch_lifeline,
)

#: The extra that installs what these apps need.
EXTRA = "fastapi"

# The classic "global SomeObj": one per worker process, each starting at 0.
global_obj = SomeObj(0)


def _server_master() -> int:
    """The pid to stop when the demo is gone: the uvicorn master, or this process if it is the server."""
    return os.getppid() if multiprocessing.parent_process() is not None else os.getpid()


def _make(count: Any, startup: Any = None, shutdown: Any = None) -> Any:
    fastapi = require("fastapi", EXTRA)
    responses = require("fastapi.responses", EXTRA)
    pid = str(os.getpid())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if startup is not None:
            await startup()  # connect now: a bad store fails the boot, not a request
        _watch_lifeline(_server_master())
        _announce_ready()
        try:
            yield
        finally:
            if shutdown is not None:
                await shutdown()

    app = fastapi.FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def root() -> Any:
        try:
            value = await count()
        except Exception as exc:  # report it to the client; the demo counts it as an error
            return responses.PlainTextResponse(type(exc).__name__, status_code=500, headers={PID_HEADER: pid})
        return responses.PlainTextResponse(str(value), headers={PID_HEADER: pid})

    app.add_api_route("/", root, methods=["GET"])  # @app.get("/"), spelled without a decorator for mypy
    return app


def naive_app() -> Any:
    """uvicorn ``--factory``: ``GET /`` returns ``global_obj.query()``. NOT safe: what the demo shows.

    In this ``async def`` route the read, add and write of ``self.param += 1`` run with no ``await``
    between them, so one event loop never interleaves them; but every worker process has its own
    ``global_obj``, and a plain ``def`` route (run in a thread pool) or an ``await`` between the read
    and the write would lose updates inside one process too.
    """

    async def count() -> int:
        return global_obj.query()

    return _make(count)


def shared_app() -> Any:
    """uvicorn ``--factory``: ``GET /`` returns ``await store.counter("hits").incr()``: unique values.

    The store is opened in the worker process (after the spawn) and connected in the lifespan
    startup, so the demo measures increments, not connects.
    """
    from sharedstate import AsyncStore

    store = AsyncStore(os.environ.get(URL_ENV) or None, namespace=os.environ.get(NAMESPACE_ENV, ""))
    counter = store.counter(COUNTER_NAME)
    return _make(counter.incr, startup=counter.get, shutdown=store.aclose)
