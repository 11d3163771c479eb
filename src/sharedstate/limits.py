"""Storages for limits (and so Flask-Limiter) on any sharedstate backend.

Importing this module registers, in limits' storage registry, the schemes
``sharedstate+sqlite``, ``sharedstate+memory``, ``sharedstate+lmdb``, ``sharedstate+redis``,
``sharedstate+rediss``, ``sharedstate+postgresql``, ``sharedstate+postgres`` and
``sharedstate+memcached`` (:class:`SharedStateStorage`), and the same schemes prefixed with
``async+`` for :mod:`limits.aio` (:class:`AsyncSharedStateStorage`)::

    import sharedstate.limits  # noqa: F401  (registers the schemes)
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    limiter = Limiter(get_remote_address, app=app,
                      storage_uri="sharedstate+sqlite:////var/lib/app/limits.db")

Everything after ``sharedstate+`` is a sharedstate store URL (its query options included).
Storage options (``storage_options`` in Flask-Limiter) go to :class:`~sharedstate.Store`:
``namespace`` (default ``"limits"``; :meth:`~SharedStateStorage.reset` deletes every key in it),
``serializer``, ``secret_key``, ``max_value_size``. ``store=`` hands over an open store instead
of a URL.

Concurrency contract, on every backend, across threads, processes and machines:

- fixed window: one atomic :meth:`Store.incr <sharedstate.Store.incr>` per hit; the window's
  expiry is set by the backend when the hit creates the counter, never by a second call.
- moving window and sliding window counter: one atomic read-modify-write per hit
  (:meth:`Store.update <sharedstate.Store.update>`: compare-and-set, retried on conflict). A
  hit is counted only if the check saw the state it replaced, so no two hits ever take the same
  last slot; a refused hit writes nothing.

The window arithmetic lives in plain functions (no IO), shared by the sync and async classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sharedstate._optional import require
from sharedstate.errors import SharedStateError
from sharedstate.store import Store

require("limits", "limits")

from limits.aio.storage import MovingWindowSupport as AsyncMovingWindowSupport  # noqa: E402
from limits.aio.storage import SlidingWindowCounterSupport as AsyncSlidingWindowCounterSupport  # noqa: E402
from limits.aio.storage import Storage as AsyncStorage  # noqa: E402
from limits.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage  # noqa: E402
from limits.storage.base import TimestampedSlidingWindow  # noqa: E402

from sharedstate._async.store import AsyncStore  # noqa: E402

__all__ = ["SCHEMES", "AsyncSharedStateStorage", "SharedStateStorage"]

#: The sharedstate URL schemes served (each registered as ``sharedstate+SCHEME`` and
#: ``async+sharedstate+SCHEME``).
SCHEMES = ("sqlite", "memory", "lmdb", "redis", "rediss", "postgresql", "postgres", "memcached")
PREFIX = "sharedstate+"
ASYNC_PREFIX = "async+sharedstate+"
DEFAULT_NAMESPACE = "limits"


class _Refused(Exception):
    """Raised from inside an update function: the hit is refused and nothing is written."""


_S = TypeVar("_S", Store, AsyncStore)


def _open_store(cls: type[_S], uri: str, prefix: str, store: _S | None, options: dict[str, Any]) -> _S:
    """``store`` if given (then no other option), else a ``cls`` opened from the URL after
    ``prefix`` with the storage ``options``."""
    if store is not None:
        if options:
            raise TypeError("store= excludes the other storage options")
        return store
    if not uri.startswith(prefix):
        raise ValueError(f"a sharedstate limits storage URI starts with {prefix!r}")
    return cls(uri[len(prefix) :], **_store_options(options))


def _store_options(options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"namespace", "serializer", "secret_key", "max_value_size"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"unknown storage option(s) {', '.join(unknown)}; a sharedstate limits storage takes "
            f"{', '.join(sorted(allowed))} and store"
        )
    return {"namespace": DEFAULT_NAMESPACE, **options}


# -- window arithmetic (no IO) -----------------------------------------------------------------
#
# Moving window: the key holds the acquired entries still in the window as ``[timestamp, count]``
# pairs, newest first, at most ``limit`` entries in all (a hit of cost 1000 is one pair, not 1000).
# Sliding window counter: the key holds {"w": window number, "c": its count, "p": the previous
# window's count}; window number = int(now / expiry), as limits' TimestampedSlidingWindow.


def _pairs(value: Any) -> list[list[float]]:
    return value if isinstance(value, list) else []


def moving_acquire(value: Any, limit: int, expiry: float, amount: int, now: float) -> list[list[float]]:
    """The new window if ``amount`` entries fit in the moving window ending at ``now``; else raise
    :class:`_Refused`."""
    if amount > limit:
        raise _Refused
    pairs = _pairs(value)
    # Newest first, even when another machine's clock is ahead: never insert below the newest.
    if pairs:
        now = max(now, pairs[0][0])
    live = [p for p in pairs if p[0] >= now - expiry]
    # Refused if the entry at position limit - amount (newest first) is still in the window, i.e.
    # if more than limit - amount entries are.
    if sum(int(p[1]) for p in live) > limit - amount:
        raise _Refused
    return [[now, amount], *live]


def moving_window(value: Any, expiry: float, now: float) -> tuple[float, int]:
    """(timestamp of the oldest entry still in the window, number of entries in it)."""
    live = [p for p in _pairs(value) if p[0] >= now - expiry]
    if not live:
        return now, 0
    return live[-1][0], sum(int(p[1]) for p in live)


def sliding_counts(state: Any, expiry: float, now: float) -> tuple[int, int, int]:
    """(window number at ``now``, previous window's count, current window's count)."""
    number = int(now / expiry)
    if not isinstance(state, dict):
        return number, 0, 0
    stored = int(state["w"])
    if stored >= number:  # this window (or a machine whose clock is ahead: count it as this one)
        return stored, int(state["p"]), int(state["c"])
    if stored == number - 1:
        return number, int(state["c"]), 0
    return number, 0, 0


def sliding_window(state: Any, expiry: float, now: float) -> tuple[int, float, int, float]:
    """limits' ``get_sliding_window`` answer: (previous count, its ttl, current count, its ttl)."""
    _, previous, current = sliding_counts(state, expiry, now)
    previous_ttl = 0.0 if previous == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
    current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
    return previous, previous_ttl, current, current_ttl


def sliding_acquire(state: Any, limit: int, expiry: float, amount: int, now: float) -> dict[str, int]:
    """The new state if ``amount`` hits fit under ``limit``; else raise :class:`_Refused`."""
    if amount > limit:
        raise _Refused
    number, previous, current = sliding_counts(state, expiry, now)
    _, previous_ttl, _, _ = sliding_window(state, expiry, now)
    if math.floor(previous * previous_ttl / expiry) + current + amount > limit:
        raise _Refused
    return {"w": number, "p": previous, "c": current + amount}


def sliding_ttl(expiry: float) -> float:
    """How long a sliding-window state is kept: it matters to the end of the next window (at most
    two windows after it is written); a third covers a write retried into the next window."""
    return 3 * expiry


def _integer(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _schemes(prefix: str) -> list[str]:
    return [f"{prefix}{scheme}" for scheme in SCHEMES]


# -- sync ----------------------------------------------------------------------------------------


class SharedStateStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """A limits storage on a :class:`~sharedstate.Store`: fixed window, moving window and sliding
    window counter, exact across threads, processes and machines on every backend.

    ``uri`` is ``sharedstate+`` followed by a store URL. Options: ``namespace`` (default
    ``"limits"``), ``serializer``, ``secret_key``, ``max_value_size`` (see
    :class:`~sharedstate.Store`), or ``store=`` an open store (then the URL after the prefix is
    not opened). Errors are :class:`~sharedstate.SharedStateError` (``base_exceptions``); with
    ``wrap_exceptions=True`` limits wraps them in ``limits.errors.StorageError``.
    """

    STORAGE_SCHEME = _schemes(PREFIX)

    def __init__(
        self,
        uri: str,
        wrap_exceptions: bool = False,
        *,
        store: Store | None = None,
        **options: Any,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.store = _open_store(Store, uri, PREFIX, store, options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SharedStateError

    # fixed window
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to the counter at ``key`` and return it; a counter this call creates
        expires after ``expiry`` seconds (atomic, in the same operation)."""
        return self.store.incr(key, amount, ttl=expiry)

    def get(self, key: str) -> int:
        """The counter at ``key`` (0 if absent or expired)."""
        return _integer(self.store.get(key, 0))

    def get_expiry(self, key: str) -> float:
        """When ``key`` expires, as a ``time.time()`` timestamp (now if it is absent)."""
        now = time.time()
        try:
            ttl = self.store.ttl(key)
        except KeyError:
            return now
        return now if ttl is None else now + ttl

    def clear(self, key: str) -> None:
        """Forget ``key`` (any strategy's state at it)."""
        self.store.delete(key)

    def check(self) -> bool:
        """Whether the backend answers."""
        try:
            self.store.ping()
        except SharedStateError:
            return False
        return True

    def reset(self) -> int | None:
        """Delete every key in this storage's namespace; return how many there were. Not atomic
        with respect to concurrent hits (as limits' own storages)."""
        keys = self.store.keys()
        if keys:
            self.store.delete_many(keys)
        return len(keys)

    def _update(self, key: str, fn: Callable[[Any], Any], ttl: float) -> bool:
        try:
            self.store.update(key, fn, None, ttl=ttl)
        except _Refused:
            return False
        return True

    # moving window
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Take ``amount`` entries in the moving window at ``key`` if they fit; atomic."""
        return self._update(key, lambda v: moving_acquire(v, limit, expiry, amount, time.time()), expiry)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(start of the window, entries in it)."""
        return moving_window(self.store.get(key), expiry, time.time())

    # sliding window counter
    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count ``amount`` hits if the weighted count stays within ``limit``; atomic."""
        return self._update(
            key, lambda v: sliding_acquire(v, limit, expiry, amount, time.time()), sliding_ttl(expiry)
        )

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """(previous window count, its ttl, current window count, its ttl)."""
        return sliding_window(self.store.get(key), expiry, time.time())

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        self.store.delete(key)


# -- async ---------------------------------------------------------------------------------------


class AsyncSharedStateStorage(
    AsyncStorage, AsyncMovingWindowSupport, AsyncSlidingWindowCounterSupport, TimestampedSlidingWindow
):
    """The :mod:`limits.aio` twin of :class:`SharedStateStorage`, on an
    :class:`~sharedstate.AsyncStore`; schemes ``async+sharedstate+SCHEME``. Same contract; no
    call blocks the event loop."""

    STORAGE_SCHEME = _schemes(ASYNC_PREFIX)

    def __init__(
        self,
        uri: str,
        wrap_exceptions: bool = False,
        *,
        store: AsyncStore | None = None,
        **options: Any,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.store = _open_store(AsyncStore, uri, ASYNC_PREFIX, store, options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SharedStateError

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """See :meth:`SharedStateStorage.incr`."""
        return await self.store.incr(key, amount, ttl=expiry)

    async def get(self, key: str) -> int:
        return _integer(await self.store.get(key, 0))

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        try:
            ttl = await self.store.ttl(key)
        except KeyError:
            return now
        return now if ttl is None else now + ttl

    async def clear(self, key: str) -> None:
        await self.store.delete(key)

    async def check(self) -> bool:
        try:
            await self.store.ping()
        except SharedStateError:
            return False
        return True

    async def reset(self) -> int | None:
        keys = await self.store.keys()
        if keys:
            await self.store.delete_many(keys)
        return len(keys)

    async def _update(self, key: str, fn: Callable[[Any], Any], ttl: float) -> bool:
        try:
            await self.store.update(key, fn, None, ttl=ttl)
        except _Refused:
            return False
        return True

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return await self._update(
            key, lambda v: moving_acquire(v, limit, expiry, amount, time.time()), expiry
        )

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return moving_window(await self.store.get(key), expiry, time.time())

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return await self._update(
            key, lambda v: sliding_acquire(v, limit, expiry, amount, time.time()), sliding_ttl(expiry)
        )

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return sliding_window(await self.store.get(key), expiry, time.time())

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        await self.store.delete(key)
