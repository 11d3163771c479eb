"""A Flask-Limiter app on a ``sharedstate+`` storage, run under gunicorn by tests/test_limits.py.

Configured from the environment, the way a deployed app would be: ``LIMITER_APP_STORAGE`` (the
storage URI), ``LIMITER_APP_STRATEGY`` (Flask-Limiter's strategy name) and
``LIMITER_APP_NAMESPACE`` (the store namespace, so test runs never share counters).
"""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

import sharedstate.limits  # noqa: F401  (registers the sharedstate+ schemes)


def create_app() -> Flask:
    app = Flask(__name__)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=os.environ["LIMITER_APP_STORAGE"],
        storage_options={"namespace": os.environ.get("LIMITER_APP_NAMESPACE", "limits")},
        strategy=os.environ.get("LIMITER_APP_STRATEGY", "fixed-window"),
    )

    @app.route("/limited")
    @limiter.limit("10 per minute")
    def limited() -> ResponseReturnValue:
        time.sleep(0.02)  # requests overlap, and spread over the workers
        return jsonify(pid=os.getpid())

    @app.route("/pid")
    @limiter.exempt
    def pid() -> ResponseReturnValue:
        return jsonify(pid=os.getpid())

    return app
