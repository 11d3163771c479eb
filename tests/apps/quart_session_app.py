"""A Quart app with sharedstate sessions, served by tests/test_quart.py under hypercorn.

The Quart twin of tests/apps/session_app.py (same routes, same answers), so the Flask acceptance
checks run unchanged against it; tests/test_quart.py serves it, with the state app of
tests/apps/quart_app.py alongside, from one ``hypercorn --workers 4``. ``create_app()`` returns
one ASGI app that serves two Quart apps sharing one store: ``/...`` with plain sessions and
``/locked/...`` with ``SHAREDSTATE_SESSION_LOCK = True`` (cookie ``locked_session``). Settings
come from the environment:
``SHAREDSTATE_URL`` (required), ``SHAREDSTATE_NAMESPACE``, ``SHAREDSTATE_SESSION_IDLE_TIMEOUT``.
Handlers take ``?delay=`` (seconds slept after the session is read) to widen race windows.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from quart import Blueprint, Quart, abort, request, session

from sharedstate.quart import QuartSession, SharedState

SECRET_KEY = "test-secret-key-for-sessions"


async def _pause() -> None:
    delay = float(request.args.get("delay", 0))
    if delay:
        await asyncio.sleep(min(delay, 5.0))


def _session() -> QuartSession:
    current = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(current, QuartSession)
    return current


def routes() -> Blueprint:
    bp = Blueprint("routes", __name__)

    @bp.get("/noop")
    async def noop() -> str:
        return "ok"

    @bp.get("/get")
    async def get() -> dict[str, Any]:
        data = dict(session)
        await _pause()
        return data

    @bp.get("/set/<key>/<value>")
    async def set_(key: str, value: str) -> str:
        session.get(key)
        await _pause()
        session[key] = value
        return "ok"

    @bp.get("/incr/<key>")
    async def incr(key: str) -> str:
        await _pause()
        return str(await _session().incr(key))

    @bp.get("/rmw/<key>")
    async def rmw(key: str) -> str:
        n = session.get(key, 0)
        await _pause()
        session[key] = n + 1
        return str(n + 1)

    @bp.get("/append/<key>/<value>")
    async def append(key: str, value: str) -> str:
        session.setdefault(key, {"items": []})
        session[key]["items"].append(value)  # a nested change, detected without session.modified
        return "ok"

    @bp.get("/login/<user>")
    async def login(user: str) -> str:
        _session().regenerate()
        session["user"] = user
        await _pause()
        return "ok"

    @bp.get("/logout")
    async def logout() -> str:
        await _session().destroy()
        return "ok"

    @bp.get("/clear")
    async def clear() -> str:
        session.clear()
        return "ok"

    @bp.get("/fail")
    async def fail() -> str:
        session["failed"] = "yes"
        abort(500)

    return bp


def make_quart_app(url: str, namespace: str, *, lock: bool = False, **config: Any) -> Quart:
    """One Quart app with sharedstate sessions on ``url``; the locked one serves under /locked."""
    app = Quart(__name__)
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SHAREDSTATE_URL=url,
        SHAREDSTATE_NAMESPACE=namespace,
        SHAREDSTATE_SESSIONS=True,
        SHAREDSTATE_SESSION_LOCK=lock,
        SESSION_COOKIE_NAME="locked_session" if lock else "session",
    )
    idle = os.environ.get("SHAREDSTATE_SESSION_IDLE_TIMEOUT")
    if idle:
        app.config["SHAREDSTATE_SESSION_IDLE_TIMEOUT"] = float(idle)
    app.config.update(config)
    SharedState(app)
    app.register_blueprint(routes(), url_prefix="/locked" if lock else None)
    return app


#: The routes of tests/apps/quart_app.py (the state app), when it is served alongside.
STATE_PATHS = ("/incr", "/edit", "/module-locked", "/report")


class Dispatcher:
    """ASGI: ``/locked/...`` to the locked app, the state app's routes to it (if any), everything
    else (lifespan too) to the plain one."""

    def __init__(self, plain: Quart, locked: Quart, state: Quart | None = None) -> None:
        self.plain, self.locked, self.state = plain, locked, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        app = self.plain
        if path == "/locked" or path.startswith("/locked/"):
            app = self.locked
        elif self.state is not None and (path in STATE_PATHS or path.startswith("/get/")):
            app = self.state
        await app(scope, receive, send)


def create_app(url: str | None = None, namespace: str | None = None, **config: Any) -> Dispatcher:
    """The plain session app at ``/``, the locked one at ``/locked``; with ``$QUART_APP_URL`` set,
    also the state app of tests/apps/quart_app.py (one hypercorn serves every Quart test)."""
    url = url or os.environ["SHAREDSTATE_URL"]
    namespace = namespace if namespace is not None else os.environ.get("SHAREDSTATE_NAMESPACE", "sessions")
    state = None
    if os.environ.get("QUART_APP_URL"):
        from tests.apps import quart_app

        state = quart_app.create_app()
    return Dispatcher(
        make_quart_app(url, namespace, **config), make_quart_app(url, namespace, lock=True, **config), state
    )
