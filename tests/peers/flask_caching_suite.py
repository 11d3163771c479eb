"""Flask-Caching's generic backend tests (``GenericCacheTests``), run against ``SharedStateCache``.

Collected only by tests/test_cachelib_peers.py's subprocess, with Flask-Caching's test directory
on the path and tests/peers/flask_caching_plugin.py loaded. ``make_cache`` builds the cache the
way Flask-Caching builds it from ``CACHE_TYPE`` (in an app context, store from the app's config).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import flask
import flask_caching
import pytest
from test_backend_cache import GenericCacheTests  # type: ignore[import-not-found]


class TestSharedStateCache(GenericCacheTests):  # type: ignore[misc]
    @pytest.fixture
    def make_cache(self, app: flask.Flask) -> Iterator[Callable[..., Any]]:
        cache = flask_caching.Cache(app)
        with app.app_context():
            yield lambda: cache.cache
            cache.clear()
