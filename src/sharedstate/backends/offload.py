"""Async backends built on a sync one: the operation logic lives once, in the sync class.

:class:`WrappedBackend` implements :class:`~sharedstate.backends.base.AsyncBackend` by calling the
wrapped :class:`~sharedstate.backends.base.Backend`'s methods; subclasses say only *where* each
call runs:

- :class:`InlineBackend` runs it on the event loop. Only for a backend whose every call returns in
  microseconds and never waits (``memory://``: a dict under a lock held inside one call).
- :class:`ThreadedBackend` runs it in a thread pool of the backend's own, so a blocking driver
  (pymemcache) never blocks the loop. Each call is bounded by the sync backend's own timeouts,
  which is what bounds the thread; results, errors (``BackendUnavailableError.applied`` included)
  and atomicity are the sync backend's. A call whose awaiting task is cancelled still runs to its
  end in its thread, so it may have been applied, like a request sent and not answered.

Fork safety: the sync backend handles its own connections. The pool's threads do not exist in a
forked child, so a child never submits to the parent's pool: it makes its own on first use.
Nothing here is bound to an event loop, so one instance may serve several loops in turn.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, ParamSpec, TypeVar

from sharedstate.backends.base import AsyncBackend, Backend, CasResult, Entry, RawValue, Version
from sharedstate.backends.kit import PerProcess

P = ParamSpec("P")
T = TypeVar("T")

_DONE = object()


class WrappedBackend(AsyncBackend):
    """An :class:`AsyncBackend` that runs each operation of a sync :class:`Backend` via :meth:`_call`."""

    #: The sync backend class this one wraps (``from_url`` opens one of these).
    sync_class: ClassVar[type[Backend]]

    def __init__(self, backend: Backend) -> None:
        self.sync = backend
        self.may_evict = backend.may_evict
        self.update_backoff = backend.update_backoff

    @classmethod
    def from_url(cls, url: str) -> WrappedBackend:
        return cls(cls.sync_class.from_url(url))

    @abc.abstractmethod
    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` where this backend runs its blocking calls."""

    def attach(self, namespace: str) -> None:
        self.sync.attach(namespace)

    async def get(self, key: str) -> Entry | None:
        return await self._call(self.sync.get, key)

    async def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        await self._call(self.sync.set, key, value, ttl)

    async def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return await self._call(self.sync.add, key, value, ttl)

    async def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        return await self._call(self.sync.compare_and_set, key, expected, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self._call(self.sync.delete, key)

    async def delete_if_version(self, key: str, version: Version) -> bool:
        return await self._call(self.sync.delete_if_version, key, version)

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        return await self._call(self.sync.incr, key, by, ttl)

    async def touch(self, key: str, ttl: float | None) -> bool:
        return await self._call(self.sync.touch, key, ttl)

    async def expiry(self, key: str) -> float | None:
        return await self._call(self.sync.expiry, key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        return await self._call(self.sync.get_many, keys)

    async def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        await self._call(self.sync.set_many, items, ttl)

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._call(self.sync.delete_many, keys)

    async def ping(self) -> None:
        await self._call(self.sync.ping)

    def scan(self, prefix: str = "") -> AsyncIterator[str]:
        return self._scan(prefix)

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        keys = await self._call(self.sync.scan, prefix)
        while True:  # each step of the sync iterator may query: each runs via _call
            key = await self._call(next, keys, _DONE)
            if key is _DONE:
                return
            assert isinstance(key, str)
            yield key

    async def sweep(self, limit: int = 1000) -> int:
        return await self._call(self.sync.sweep, limit)

    async def aclose(self) -> None:
        await self._call(self.sync.close)

    def describe(self) -> str:
        return self.sync.describe()


class InlineBackend(WrappedBackend):
    """Runs each call on the event loop: only for calls that never wait (see the module doc)."""

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return fn(*args, **kwargs)


class ThreadedBackend(WrappedBackend):
    """Runs each call in a thread pool of this backend's own (at most ``max_threads`` threads)."""

    #: Threads per backend: calls beyond it queue (each call is bounded by the backend's timeouts).
    max_threads: ClassVar[int] = 16

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        # After fork the parent's pool has no threads in the child: never submit to it.
        self._pool = PerProcess(self._new_pool)

    def _new_pool(self) -> ThreadPoolExecutor:
        prefix = f"sharedstate-{type(self.sync).__name__}"
        return ThreadPoolExecutor(self.max_threads, thread_name_prefix=prefix)

    def _executor(self) -> ThreadPoolExecutor:
        return self._pool.get()

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        import asyncio  # here, not at the top: sync users of these modules do not import asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Close the sync backend's connections and end this backend's threads; usable again after."""
        await super().aclose()
        pool = self._pool.take()  # None in a forked child: the parent's pool is not its own
        if pool is not None:
            pool.shutdown(wait=False)  # idle threads exit; nothing is queued (we awaited our calls)
