"""Django's own ``CacheSessionTests`` (the ``cache`` session engine) on ``SharedStateCache``.

Imported by run.py with Django's ``tests/`` directory on ``sys.path``; nothing is copied. Proves
that ``SESSION_ENGINE = "django.contrib.sessions.backends.cache"`` works on this backend, with
Django's own session semantics (sharedstate has no Django session engine of its own yet).
"""

from __future__ import annotations

from django.core.cache import caches
from django.test import override_settings
from peer_cache import NAMESPACE, SERIALIZER, URL
from sessions_tests.tests import CacheSessionTests  # type: ignore[import-not-found]

CACHES = {
    "default": {
        "BACKEND": "sharedstate.django.SharedStateCache",
        "LOCATION": URL,
        "OPTIONS": {"namespace": f"{NAMESPACE}s", "serializer": SERIALIZER},
    }
}


@override_settings(CACHES=CACHES)
class SharedStateCacheSessionTests(CacheSessionTests):  # type: ignore[misc]
    def tearDown(self) -> None:
        super().tearDown()
        caches["default"].clear()


del CacheSessionTests  # imported only to derive from: not run again on Django's LocMemCache
