"""Test plumbing: drive the real ``AsyncStore`` through the sync API's spelling, so one test body
checks both APIs.

``Driven(obj, runner)`` shows an async object (``AsyncStore``, ``AsyncCounter``, ``AsyncDict``,
``AsyncLock``, an async backend) as a sync one: every call whose result is awaitable is run to
completion on the runner's event loop (one loop kept for the whole test, the way one app's loop
serves all its requests), an async context manager becomes a sync one (``with store.edit(...)``,
``with store.lock(...)``), and the async objects a call returns are driven in turn. Every call
runs in one ``contextvars.Context`` kept for the test, as the steps of one task do, so what
``__aenter__`` sets (the keys being edited) is still set for the body's calls and ``__aexit__``. Nothing is
faked: every call is the real coroutine of the async API against the real backend. What the sync
API has and the async one does not (``MutableMapping`` dunders, ``close``) raises
``AttributeError``/``TypeError``, so a test that needs it stays sync-only.

Only for one thread: ``loop.run_until_complete`` cannot be entered from two threads at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Iterator
from functools import cache
from types import TracebackType
from typing import Any, cast

from sharedstate import AsyncStore, Store


@cache
def _is_async_api(cls: type) -> bool:
    """Whether instances of ``cls`` have coroutine methods or are async context managers."""
    if hasattr(cls, "__aenter__"):
        return True
    return any(inspect.iscoroutinefunction(getattr(cls, name, None)) for name in dir(cls))


class Runner:
    """One event loop and one context, in which every driven call of a test runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.context = contextvars.copy_context()

    def run(self, awaitable: Any) -> Any:
        task = self.loop.create_task(_awaited(awaitable), context=self.context)
        return self.loop.run_until_complete(task)

    def close(self) -> None:
        self.loop.close()


class Driven:
    """The sync view of one async object; see the module docstring."""

    def __init__(self, target: Any, runner: Runner) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(driven, AsyncCounter) holds, as for the target
        return type(self._target)

    def _result(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            value = self._runner.run(value)
        if _is_async_api(type(value)):
            return Driven(value, self._runner)
        return value

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)  # an awaitable property (AsyncLock.owned) is run here
        if callable(value) and not isinstance(value, type):
            return lambda *args, **kwargs: self._result(value(*args, **kwargs))
        return self._result(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __enter__(self) -> Any:
        return self._result(self._target.__aenter__())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return cast("bool | None", self._runner.run(self._target.__aexit__(exc_type, exc, tb)))

    def __repr__(self) -> str:
        return f"Driven({self._target!r})"


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def driven_async_store(url: str, namespace: str) -> Iterator[Store]:
    """An ``AsyncStore`` on its own event loop, driven through the sync API's spelling (typed as
    ``Store`` for the test bodies); closed, with its redis keys removed, at the end."""
    if sys.version_info < (3, 11):
        import pytest

        pytest.skip("driving the async API needs asyncio tasks with a given context (Python 3.11)")
    runner = Runner()
    try:
        store = AsyncStore(url, namespace=namespace)
        runner.run(store.__aenter__())
        try:
            yield cast(Store, Driven(store, runner))
        finally:
            runner.run(_clean_and_close(store, url, namespace))
    finally:
        runner.close()


async def _clean_and_close(store: AsyncStore, url: str, namespace: str) -> None:
    try:
        if url.startswith("redis"):  # the shared server outlives the run: leave nothing behind
            for key in [k async for k in store.backend.scan(f"{namespace}/")]:
                await store.backend.delete(key)
    finally:
        await store.aclose()
