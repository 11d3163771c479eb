"""A pytest plugin that runs Flask-Caching's own tests against ``SharedStateCache``.

Loaded with ``-p flask_caching_plugin --noconftest`` by tests/test_cachelib_peers.py, over the test
modules of the installed Flask-Caching's sdist (scripts/peer_suite.py). It provides the fixtures
Flask-Caching's conftest provides, pointed at our backend instead of ``SimpleCache``:

- ``app``: a Flask app with ``CACHE_TYPE = "sharedstate.cachelib.SharedStateCache"`` and
  ``CACHE_SHAREDSTATE_URL`` a fresh SQLite file, once with the default JSON codec and once with
  ``CACHE_SHAREDSTATE_SERIALIZER = "pickle"`` (signed with the app's ``SECRET_KEY``), which
  caches views that return ``Response`` objects.
- ``clock``: a fake clock for the store's expiry, as Flask-Caching's own moves cachelib's:
  the SQLite backend reads ``time.time()`` for every expiry it writes and checks, so
  ``clock.advance(2)`` makes a 1 s entry expire without sleeping.
- ``cache``, ``hash_method``: as Flask-Caching's.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import flask_caching
import pytest

from sharedstate.backends import sqlite as sqlite_backend

SERIALIZERS = os.environ.get("PEER_SERIALIZERS", "json,pickle").split(",")


@pytest.fixture(params=SERIALIZERS)
def serializer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path, serializer: str) -> flask.Flask:
    module_file = request.module.__file__
    app = flask.Flask(request.module.__name__, template_folder=os.path.dirname(module_file))
    app.testing = True
    app.config["SECRET_KEY"] = "peer-suite-secret"
    app.config["CACHE_TYPE"] = "sharedstate.cachelib.SharedStateCache"
    app.config["CACHE_SHAREDSTATE_URL"] = f"sqlite:///{tmp_path / 'cache.sqlite3'}"
    app.config["CACHE_SHAREDSTATE_SERIALIZER"] = serializer
    return app


@pytest.fixture
def cache(app: flask.Flask) -> Iterator[flask_caching.Cache]:
    cache = flask_caching.Cache(app)
    yield cache
    backend = app.extensions["cache"][cache]
    close = getattr(backend, "close", None)
    if close is not None:
        close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(time.time())
    # Only the wall clock the SQLite backend stamps and checks expiries with; its monotonic
    # deadlines and sleeps stay real.
    public = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    shim = types.SimpleNamespace(**public)
    shim.time = fake
    monkeypatch.setattr(sqlite_backend, "time", shim)
    return fake


@pytest.fixture(params=list(flask_caching.SUPPORTED_HASH_FUNCTIONS), ids=lambda m: m.__name__)
def hash_method(request: pytest.FixtureRequest) -> Callable[..., Any]:
    method: Callable[..., Any] = request.param
    return method


__all__ = ["app", "cache", "clock", "hash_method", "serializer"]
