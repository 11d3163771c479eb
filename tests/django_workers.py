"""Worker for the Django cache's multi-process test (importable, so ``spawn`` children can run it)."""

from __future__ import annotations

import os
import traceback

from tests.workers import write_result


def django_incr(url: str, namespace: str, key: str, count: int, out: str) -> None:
    """``cache.incr(key)`` ``count`` times through a fresh ``SharedStateCache``, as one web worker
    process would; writes every value returned to ``out``."""
    values: list[int] = []
    errors: list[str] = []
    try:
        from sharedstate.django import SharedStateCache

        cache = SharedStateCache(url, {"OPTIONS": {"namespace": namespace, "secret_key": "worker-key"}})
        for _ in range(count):
            values.append(cache.incr(key))
    except BaseException:
        errors.append(traceback.format_exc())
    write_result(out, {"values": values, "errors": errors, "pid": os.getpid()})
