"""A Flask app using the ``SharedState`` extension, run by tests/test_flask_ext.py.

In-process: ``create_app({...config...})`` under werkzeug's threaded server. Under gunicorn with
several worker processes: ``gunicorn 'tests.apps.ext_app:create_app()'``, configured from the
environment (``EXT_APP_URL``, ``EXT_APP_NAMESPACE``), the way a deployed app would be.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sharedstate.flask import SharedState

state = SharedState()

# Made at import time, before any app exists, and shared by every request and thread: each use acts
# on the store of the app in use.
module_hits = state.counter("module_hits")
settings = state.dict("settings")
module_lock = state.lock("module_guard", ttl=30, timeout=30)


@state.cached(ttl=60)
def slow_report(name: str) -> dict[str, Any]:
    """Decorated at import time, before any app exists; counts its real runs in the store."""
    runs = state.incr("report_runs")
    time.sleep(0.3)
    return {"name": name, "run": runs, "pid": os.getpid()}


def _pause() -> None:
    # Handlers pause a little when asked, so concurrent requests overlap and spread over workers.
    pause = float(request.args.get("sleep", "0"))
    if pause:
        time.sleep(min(pause, 0.5))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("EXT_APP_INSTANCE") or None)
    if os.environ.get("EXT_APP_URL"):
        app.config["SHAREDSTATE_URL"] = os.environ["EXT_APP_URL"]
    if os.environ.get("EXT_APP_NAMESPACE"):
        app.config["SHAREDSTATE_NAMESPACE"] = os.environ["EXT_APP_NAMESPACE"]
    app.config.update(config or {})
    state.init_app(app)

    @app.get("/incr")
    def incr() -> ResponseReturnValue:
        _pause()
        return jsonify(n=state.counter("hits").incr(), pid=os.getpid())

    @app.get("/edit")
    def edit() -> ResponseReturnValue:
        with state.edit("global_obj", default={"param": 0}, timeout=30) as obj:
            obj["param"] += 1
            seen = obj["param"]
        return jsonify(param=seen, pid=os.getpid())

    @app.get("/locked")
    def locked() -> ResponseReturnValue:
        # A plain read-then-write, made safe only by the lock around it.
        with state.lock("guarded", ttl=30, timeout=30):
            value = state.get("guarded_value", 0)
            _pause()
            state.set("guarded_value", value + 1)
        return jsonify(value=value + 1, pid=os.getpid())

    @app.get("/module-locked")
    def module_locked() -> ResponseReturnValue:
        # The module-level objects: a read-then-write made safe by one lock object that every
        # request thread shares, and a counter and a dict made before the app.
        with module_lock:
            value = settings.get("guarded", 0)
            _pause()
            settings["guarded"] = value + 1
        return jsonify(value=value + 1, n=module_hits.incr(), pid=os.getpid())

    @app.get("/votes/<item>")
    def vote(item: str) -> ResponseReturnValue:
        return jsonify(votes=state.dict("votes").incr(item), pid=os.getpid())

    @app.get("/report")
    def report() -> ResponseReturnValue:
        return jsonify(slow_report("daily"))

    @app.get("/get/<key>")
    def get(key: str) -> ResponseReturnValue:
        return jsonify(value=state.get(key))

    return app
