"""``cached``: memoize a function's results in a store, computed once across processes.

Keys are ``_ss:cache:{module}.{qualname}:{digest}``, where the digest is a SHA-256 of a canonical
encoding of the call's arguments (bound to the signature, so ``f(1)``, ``f(x=1)`` and ``f(1, y=2)``
with ``y=2`` as default are one entry). Only values with a stable meaning in every process can be
encoded: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``tuple``, ``list``, ``dict``,
``set``, ``frozenset``, ``datetime``, ``date``, ``UUID``, ``Decimal``, ``Enum`` members and
``markupsafe.Markup`` (anything with ``__html__``, keyed apart from the plain ``str``). Anything else
(an object whose ``repr`` holds a memory address, a method's ``self``, a subclass of ``str``,
``int`` or ``float``, which could mean something else than its base value) raises ``TypeError``
instead of silently producing a key that differs from process to process, or that two different
arguments share.

The sync store's ``cached`` serves plain functions and the async store's coroutine functions; each
refuses the other kind, and a method defined in a class body (its ``self`` has no stable encoding,
and the call would miss it), when decorated.

Each entry is stored as ``{"v": value}`` (``{"v": value, "f": fresh_until}`` with ``stale_ttl``), so a
cached ``None`` is told apart from a miss.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

from sharedstate import engine
from sharedstate._async import _io
from sharedstate._async.keyspace import AsyncKeyspace
from sharedstate._cachekeys import (
    CACHE_PREFIX,
    FLIGHT_SUFFIX,
    cache_key,
    check_name,
    function_name,
    refuse_uncacheable_function,
    signature_of,
)
from sharedstate.validation import MIN_LEASE, seconds

if TYPE_CHECKING:  # for the annotations only: the store imports this module, not the reverse
    from sharedstate._async.store import AsyncStore

P = ParamSpec("P")
R = TypeVar("R")

_MISS: Any = object()

__all__ = ["CACHE_PREFIX", "AsyncCachedFunction", "cached"]


def cached(
    store: AsyncStore | Callable[[], AsyncStore],
    ttl: float,
    *,
    stale_ttl: float | None = None,
    lease: float = 30.0,
    name: str | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], AsyncCachedFunction[P, R]]:
    """Decorator caching a function's results in ``store`` for ``ttl`` seconds.

    ``store`` is an :class:`~sharedstate.AsyncStore`, or a callable returning one at call time (the
    Flask extension passes one that resolves the current app's store, so functions can be decorated
    at import time, before any app exists).

    Concurrency contract, across tasks, threads, processes and machines sharing the store:

    - **Single flight.** When a key is missing, exactly one caller computes it; the others poll for
      the value with jittered backoff and return it once stored. The computing caller holds a
      ``"…:flight"`` key with a lease of ``lease`` seconds, so a caller that crashes (or is killed)
      while computing blocks the others for at most ``lease``: then one of them computes instead.
      A computation that outlives its lease may run a second time, concurrently; size ``lease`` above
      the function's slowest run. If the computing caller raises, nothing is cached, the exception
      goes to that caller only, and one waiter takes over the computation.
    - **Stale while revalidate.** With ``stale_ttl``, an entry stays ``stale_ttl`` seconds past its
      ``ttl``. A caller that finds it stale returns the stale value at once, except exactly one
      (whichever takes the flight key), which recomputes, stores and returns the fresh value (or
      raises, leaving the stale value in place). Freshness is judged by the callers' wall clocks;
      machines should keep them in sync (NTP), as skew shifts when an entry counts as stale.
    - Results must be storable by the store's codec (``SerializationError`` otherwise, raised to the
      computing caller; nothing is stored). ``None`` is cached like any other result.
    - :meth:`AsyncCachedFunction.invalidate` deletes one entry; the next call recomputes it. A call
      already computing when you invalidate may still store its (older) result.

    Entries are keyed by ``name`` (default: the function's ``module.qualname``) and the arguments.
    Functions that would share a qualified name (closures made by one factory) share entries
    unless each gets its own ``name``; a lambda must be given one. ``lease`` is at least
    ``validation.MIN_LEASE`` seconds.

    Functions of the other world (sync or async) and methods are refused when decorated
    (``TypeError``): cache a module-level function of plain arguments and call it from the method. A
    bound method (``cached(ttl=60)(obj.method)``) is accepted; like closures, the entries of every
    instance are shared unless each gets its own ``name``.
    """
    ttl = seconds("ttl", ttl)
    stale = seconds("stale_ttl", stale_ttl, optional=True)
    lease = seconds("lease", lease, minimum=MIN_LEASE)
    check_name(name)

    def decorate(fn: Callable[P, Awaitable[R]]) -> AsyncCachedFunction[P, R]:
        return AsyncCachedFunction(store, fn, ttl=ttl, stale_ttl=stale, lease=lease, name=name)

    return decorate


class AsyncCachedFunction(Generic[P, R]):
    """A function whose results are cached in a store; see :func:`sharedstate.cache.cached` for the contract.

    Call it like the function. ``invalidate(*args, **kwargs)`` drops the entry for those
    arguments, ``invalidate_all()`` every entry of this function, and ``cache_key(*args, **kwargs)``
    tells which key (without the namespace) holds the entry. The object holds no state besides
    its configuration, so it is safe to share between tasks and threads.
    """

    def __init__(
        self,
        store: AsyncStore | Callable[[], AsyncStore],
        fn: Callable[P, Awaitable[R]],
        *,
        ttl: float,
        stale_ttl: float | None,
        lease: float,
        name: str | None = None,
    ) -> None:
        refuse_uncacheable_function(fn, want_coroutine=_io.IS_ASYNC)
        self._store = store
        self.fn = fn
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.lease = lease
        self.name = function_name(fn, name)
        self._signature = signature_of(fn)
        functools.update_wrapper(self, fn)

    # -- keys ---------------------------------------------------------------------------------

    def _keyspace(self) -> AsyncKeyspace:
        keyspace = getattr(self._store, "_keyspace", None)
        if keyspace is None:  # a callable that returns the store at call time
            keyspace = cast("Callable[[], AsyncStore]", self._store)()._keyspace
        return cast(AsyncKeyspace, keyspace)

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key (namespace not included) that holds the result for these arguments."""
        return cache_key(self.name, self._signature, args, kwargs)

    # -- calls --------------------------------------------------------------------------------

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        keyspace = self._keyspace()
        full = keyspace.full_key(self.cache_key(*args, **kwargs), internal=True)
        flight = full + FLIGHT_SUFFIX
        backend = keyspace.backend

        value, fresh = await self._read(keyspace, full)
        if value is not _MISS:
            if fresh:
                return value  # type: ignore[no-any-return]
            # Stale: exactly one caller (whoever takes the flight key) refreshes, the rest serve
            # stale. Looking before add() keeps readers of a stale entry from all writing.
            token = None
            if await backend.get(flight) is None:
                token = await self._take_flight(keyspace, flight)
            if token is None:
                return value  # type: ignore[no-any-return]
            return await self._compute(keyspace, full, flight, token, args, kwargs)

        while True:
            token = await self._take_flight(keyspace, flight)
            if token is not None:
                return await self._compute(keyspace, full, flight, token, args, kwargs)
            # Someone else computes: poll (reads only) until the value appears, or until their
            # flight key is gone without one (they raised, or crashed and the lease ran out); then
            # try to take the computation over.
            delays = engine.poll_delays()
            while True:
                await _io.sleep(next(delays))
                value, _ = await self._read(keyspace, full)
                if value is not _MISS:
                    return value  # type: ignore[no-any-return]
                if await backend.get(flight) is None:
                    break

    async def _compute(
        self,
        keyspace: AsyncKeyspace,
        full: str,
        flight: str,
        token: bytes,
        args: Any,
        kwargs: Any,
    ) -> R:
        """Run the function holding the flight key, store the result, release the key."""
        try:
            # Another caller may have stored a fresh value between our read and taking the key
            # (it stores before it releases), so look again before computing.
            value, fresh = await self._read(keyspace, full)
            if value is not _MISS and fresh:
                return value  # type: ignore[no-any-return]
            result = await self.fn(*args, **kwargs)
            if self.stale_ttl is None:
                wrapper: dict[str, Any] = {"v": result}
                keep = self.ttl
            else:
                wrapper = {"v": result, "f": time.time() + self.ttl}
                keep = self.ttl + self.stale_ttl
            # Errors name the path inside the result, not inside this wrapper.
            raw = keyspace.encode(full, wrapper, shown_as="result", inside=("v",))
            await keyspace.backend.set(full, raw, keep)
            return result
        finally:
            entry = await keyspace.backend.get(flight)
            if entry is not None and entry.value == token:
                await keyspace.backend.delete_if_version(flight, entry.version)

    async def _take_flight(self, keyspace: AsyncKeyspace, flight: str) -> bytes | None:
        token = b"flight:" + os.urandom(16).hex().encode()  # secrets.token_hex(16)
        return token if await keyspace.backend.add(flight, token, self.lease) else None

    async def _read(self, keyspace: AsyncKeyspace, full: str) -> tuple[Any, bool]:
        """``(value, fresh)``, or ``(_MISS, False)`` if there is no usable entry."""
        entry = await keyspace.backend.get(full)
        if entry is None:
            return _MISS, False
        wrapper = keyspace.decode(full, entry.value)
        if not isinstance(wrapper, dict) or "v" not in wrapper:
            return _MISS, False  # not written by us: recompute and overwrite
        fresh_until = wrapper.get("f")
        fresh = not isinstance(fresh_until, (int, float)) or time.time() < fresh_until
        return wrapper["v"], fresh

    # -- invalidation -------------------------------------------------------------------------

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the entry for these arguments; return whether there was one."""
        keyspace = self._keyspace()
        full = keyspace.full_key(self.cache_key(*args, **kwargs), internal=True)
        return await keyspace.backend.delete(full)

    async def invalidate_all(self) -> int:
        """Delete every entry of this function; return how many. Not atomic across entries."""
        keyspace = self._keyspace()
        prefix = keyspace.full_key(f"{CACHE_PREFIX}{self.name}:", internal=True)
        removed = 0
        for full in [full async for full in keyspace.backend.scan(prefix)]:
            if not full.endswith(FLIGHT_SUFFIX) and await keyspace.backend.delete(full):
                removed += 1
        return removed

    def __repr__(self) -> str:
        return f"<AsyncCachedFunction {self.name} ttl={self.ttl} stale_ttl={self.stale_ttl}>"
