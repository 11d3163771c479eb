"""A Flask app exercising sharedstate sessions, served by the tests under real servers.

``create_app()`` returns one WSGI app that serves two Flask apps sharing one store:
``/...`` with plain sessions and ``/locked/...`` with ``SHAREDSTATE_SESSION_LOCK = True`` (its own
cookie name). Gunicorn runs it as ``'tests.apps.session_app:create_app()'``; settings come from the
environment: ``SHAREDSTATE_URL`` (required), ``SHAREDSTATE_NAMESPACE``,
``SHAREDSTATE_SESSION_IDLE_TIMEOUT`` (seconds). Handlers take ``?delay=`` (seconds slept after the
session is read) to widen race windows.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, abort, flash, get_flashed_messages, jsonify, render_template_string, request, session
from markupsafe import Markup
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from sharedstate.flask import SharedState

SECRET_KEY = "test-secret-key-for-sessions"


def _pause() -> None:
    delay = float(request.args.get("delay", 0))
    if delay:
        time.sleep(min(delay, 5.0))


def make_flask_app(url: str, namespace: str, *, lock: bool = False, **config: Any) -> Flask:
    """One Flask app with sharedstate sessions on ``url``."""
    app = Flask(__name__)
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
    add_routes(app)
    return app


def add_routes(app: Flask) -> None:
    """The test endpoints, on any app with a session interface."""

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/get")
    def get() -> Any:
        data = dict(session)
        _pause()
        return jsonify(data)

    @app.get("/set/<key>/<value>")
    def set_(key: str, value: str) -> str:
        session.get(key)  # read first, so concurrent requests all start from the same version
        _pause()
        session[key] = value
        return "ok"

    @app.get("/incr/<key>")
    def incr(key: str) -> str:
        _pause()
        return str(session.incr(key))

    @app.get("/rmw/<key>")
    def rmw(key: str) -> str:
        n = session.get(key, 0)
        _pause()
        session[key] = n + 1
        return str(n + 1)

    @app.get("/append/<key>/<value>")
    def append(key: str, value: str) -> str:
        session.setdefault(key, {"items": []})
        session[key]["items"].append(value)  # a nested change, detected without session.modified
        return "ok"

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        return "ok"

    @app.get("/login/<user>")
    def login(user: str) -> str:
        session.regenerate()
        session["user"] = user
        _pause()
        return "ok"

    @app.get("/logout")
    def logout() -> str:
        session.destroy()
        return "ok"

    @app.get("/logout-flash")
    def logout_flash() -> str:
        session.destroy()
        session["flash"] = "bye"
        return "ok"

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.get("/fail")
    def fail() -> str:
        session["failed"] = "yes"
        abort(500)

    @app.get("/flash")
    def flash_messages() -> str:
        flash(Markup("<b>hi</b>"))  # safe HTML: shown as is
        flash("<i>plain</i>", "info")  # text: escaped when shown
        return "ok"

    @app.get("/flashes")
    def flashes() -> str:
        messages = get_flashed_messages(with_categories=True)
        return render_template_string(
            "{{ kinds }}|{% for category, message in messages %}{{ category }}:{{ message }};{% endfor %}",
            kinds=",".join(type(message).__name__ for _, message in messages),
            messages=messages,
        )

    @app.get("/crash")
    def crash() -> str:
        session["crashed"] = "yes"
        raise RuntimeError("boom")


def create_app(url: str | None = None, namespace: str | None = None, **config: Any) -> DispatcherMiddleware:
    """The plain app at ``/`` and the locked one at ``/locked``."""
    url = url or os.environ["SHAREDSTATE_URL"]
    namespace = namespace if namespace is not None else os.environ.get("SHAREDSTATE_NAMESPACE", "sessions")
    plain = make_flask_app(url, namespace, **config)
    locked = make_flask_app(url, namespace, lock=True, **config)
    return DispatcherMiddleware(plain, {"/locked": locked})
