"""Django's own ``BaseCacheTests`` (from its released sdist) run against ``SharedStateCache``.

Imported by run.py with Django's ``tests/`` directory on ``sys.path``; nothing of Django's suite
is copied here. ``$SHAREDSTATE_DJANGO_URL`` is the store URL, ``$SHAREDSTATE_DJANGO_NS`` a
namespace of this run's own (server backends are shared), ``$SHAREDSTATE_DJANGO_SERIALIZER``
``pickle`` (default) or ``json``.
"""

from __future__ import annotations

import os
import unittest
from typing import Any

from cache.tests import BaseCacheTests, caches_setting_for_tests  # type: ignore[import-not-found]
from django.core.cache import caches
from django.test import TestCase, override_settings

URL = os.environ["SHAREDSTATE_DJANGO_URL"]
NAMESPACE = os.environ["SHAREDSTATE_DJANGO_NS"]
SERIALIZER = os.environ.get("SHAREDSTATE_DJANGO_SERIALIZER", "pickle")

# Django's tests that store objects JSON cannot hold (functions, classes, model instances,
# querysets, responses, objects whose pickling fails on purpose): run only with pickle.
NEEDS_PICKLE = {
    "test_data_types",
    "test_cache_read_for_model_instance",
    "test_cache_write_for_model_instance_with_deferred",
    "test_cache_read_for_model_instance_with_deferred",
    "test_cache_write_unpicklable_object",
    "test_add_fail_on_pickleerror",
    "test_set_fail_on_pickleerror",
}


def _caches() -> dict[str, Any]:
    setting: dict[str, Any] = caches_setting_for_tests(
        BACKEND="sharedstate.django.SharedStateCache", LOCATION=URL
    )
    for params in setting.values():
        # Every alias in one namespace of this run's own (their KEY_PREFIX/VERSION/KEY_FUNCTION
        # keep their keys apart, as the tests expect); the "cull" aliases keep their MAX_ENTRIES,
        # which SharedStateCache refuses with InvalidCacheBackendError, so Django skips them.
        params["OPTIONS"] = {**params.get("OPTIONS", {}), "namespace": NAMESPACE, "serializer": SERIALIZER}
    return setting


@override_settings(CACHES=_caches())
class SharedStateCacheTests(BaseCacheTests, TestCase):  # type: ignore[misc]
    def setUp(self) -> None:
        super().setUp()
        if SERIALIZER != "pickle" and self._testMethodName in NEEDS_PICKLE:
            raise unittest.SkipTest("stores objects JSON cannot hold; runs with serializer 'pickle'")

    def tearDown(self) -> None:
        super().tearDown()
        caches["default"].clear()  # the whole namespace: every alias's keys
