"""A Flask-Limiter app on a ``sharedstate+`` storage, run under gunicorn by tests/test_limits.py.

Configured from the environment, the way a deployed app would be: ``LIMITER_APP_STORAGE`` (the
storage URI) and ``LIMITER_APP_NAMESPACE`` (the store namespace, so test runs never share
counters). One limiter per strategy, each limiting its own route ``/<strategy>`` to 10 a minute.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

import sharedstate.limits  # noqa: F401  (registers the sharedstate+ schemes)

STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


def create_app() -> Flask:
    app = Flask(__name__)

    def limited() -> ResponseReturnValue:
        time.sleep(0.02)  # requests overlap, and spread over the workers
        return jsonify(pid=os.getpid())

    for strategy in STRATEGIES:
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage_uri=os.environ["LIMITER_APP_STORAGE"],
            storage_options={"namespace": os.environ.get("LIMITER_APP_NAMESPACE", "limits")},
            strategy=strategy,
        )
        view = limiter.limit("10 per minute")(limited)
        app.add_url_rule(f"/{strategy}", endpoint=strategy, view_func=view)

    @app.after_request
    def tag(response: Response) -> Response:  # also on the 429s: which worker answered
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
