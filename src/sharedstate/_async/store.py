"""``AsyncStore``: a URL-chosen backend plus a namespace and a codec, and the objects users hold."""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sharedstate._async.keyspace import (
    DEFAULT_MAX_VALUE_SIZE,
    RESERVED_PREFIX,
    AsyncKeyspace,
    check_store_options,
)
from sharedstate._async.mapping import AsyncDict
from sharedstate._async.objects import AsyncCounter, AsyncLock, internal_lock
from sharedstate.backends.base import AsyncBackend
from sharedstate.codecs import make_codec
from sharedstate.errors import ConflictError, LockNotOwnedError
from sharedstate.validation import MIN_LEASE, key_text, seconds

if TYPE_CHECKING:
    from sharedstate._async.cache import AsyncCachedFunction

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_FILENAME = "sharedstate.sqlite3"

__all__ = ["DEFAULT_FILENAME", "DEFAULT_MAX_VALUE_SIZE", "RESERVED_PREFIX", "AsyncStore", "default_url"]


def default_url() -> str:
    """``$SHAREDSTATE_URL``, else an SQLite file ``sharedstate.sqlite3`` in the working directory."""
    return os.environ.get("SHAREDSTATE_URL") or f"sqlite:///{DEFAULT_FILENAME}"


def _open_backend(url: str) -> AsyncBackend:
    # Looked up when a store is opened, not when this module is imported: the registry's async
    # half may land later than this module (it is typed by the annotation here either way).
    backends = importlib.import_module("sharedstate.backends")
    open_url: Callable[[str], AsyncBackend] = backends.async_backend_from_url
    return open_url(url)


class AsyncStore:
    """Shared state for every task, thread, process and machine that opens the same URL.

    ``AsyncStore(url=None, *, namespace="")``. With no URL it reads ``$SHAREDSTATE_URL``, else uses the
    SQLite file ``sharedstate.sqlite3`` in the working directory. Schemes: ``sqlite:///rel.db``,
    ``sqlite:////abs/path.db``, ``memory://`` (one process only), ``redis://``, ``rediss://``,
    ``postgresql://``, ``memcached://``.

    Concurrency contract: every method is atomic per key on every backend, across tasks, threads,
    processes and machines; a method that returns has been applied. This store is safe to
    share and survives ``fork`` (the child opens its own connections); it connects on first use, so
    it is safe to create at import time.

    Values are JSON data plus datetime, date, UUID, Decimal, bytes, tuple, set, frozenset and
    ``markupsafe.Markup`` (see :mod:`sharedstate.codecs`); anything else raises
    ``SerializationError`` before any write. Keys are non-empty text without NUL or lone surrogates
    (``ValueError`` naming the key). ``serializer="pickle"`` is allowed only with a ``secret_key``,
    and every pickle is then signed together with its key.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "",
        serializer: str = "json",
        secret_key: str | bytes | None = None,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    ) -> None:
        check_store_options(namespace, max_value_size)
        self.url = url if url is not None else default_url()
        self.namespace = namespace
        self.max_value_size = max_value_size
        codec = make_codec(serializer, secret_key)
        backend = _open_backend(self.url)
        backend.attach(namespace)
        self._keyspace = AsyncKeyspace(backend, namespace, codec, max_value_size)

    @property
    def backend(self) -> AsyncBackend:
        """The backend this store opened from its URL."""
        return self._keyspace.backend

    @backend.setter
    def backend(self, backend: AsyncBackend) -> None:
        self._keyspace.backend = backend

    # -- key-value ---------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` if absent or expired."""
        ks = self._keyspace
        full = ks.full_key(key)
        entry = await ks.backend.get(full)
        return default if entry is None else ks.codec.loads(full, entry.value)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` at ``key`` (replacing it); it expires after ``ttl`` seconds if given."""
        ks = self._keyspace
        full = ks.write_key(key, "set()")
        await ks.backend.set(full, ks.encode(full, value), None if ttl is None else seconds("ttl", ttl))

    async def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored. Atomic."""
        ks = self._keyspace
        full = ks.write_key(key, "add()")
        return await ks.backend.add(full, ks.encode(full, value), seconds("ttl", ttl, optional=True))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        ks = self._keyspace
        full = ks.write_key(key, "delete()")
        return await ks.backend.delete(full)

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0) and return the new value.

        ``ttl`` applies only when this call creates the key. Raises ``TypeError`` if the key holds
        something other than an integer.
        """
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        ks = self._keyspace
        full = ks.write_key(key, "incr()")
        return await ks.backend.incr(full, by, None if ttl is None else seconds("ttl", ttl))

    async def touch(self, key: str, ttl: float | None) -> bool:
        """Give ``key`` a new expiry (``None``: never) without rewriting it; whether it existed."""
        ks = self._keyspace
        full = ks.write_key(key, "touch()")
        return await ks.backend.touch(full, seconds("ttl", ttl, optional=True))

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires, or ``None`` if it never does.

        Raises ``KeyError(key)`` if ``key`` is absent or expired. As precise as the backend keeps
        expiry: exact on ``memory://``, ``sqlite://``, ``lmdb://`` and ``postgresql://`` (its
        server's clock), milliseconds on ``redis://``, whole seconds on ``memcached://`` (which
        lets an entry live up to two seconds past its ttl, and says so).
        """
        ks = self._keyspace
        full = ks.full_key(key)
        try:
            return await ks.backend.expiry(full)
        except KeyError:
            raise KeyError(key) from None

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values at ``keys`` that are present, as ``{key: value}`` in the order asked.

        Absent and expired keys are left out; a key asked twice appears once. One round trip
        where the backend allows it (see its page). Atomic per key, not across keys: a writer may
        change some of the keys between the reads of others.
        """
        ks = self._keyspace
        _not_one_key(keys, "get_many")
        fulls = {ks.full_key(key): key for key in keys}  # validates every key first; dedups
        if not fulls:
            return {}
        entries = await ks.backend.get_many(list(fulls))
        return {fulls[full]: ks.codec.loads(full, entries[full].value) for full in fulls if full in entries}

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item of ``mapping``, each expiring after ``ttl`` seconds if given.

        Every key and value is checked and encoded before anything is written: one bad key or
        value (``ValueError``, ``SerializationError``, ``ValueTooLargeError``) refuses the whole
        batch with nothing stored. One round trip where the backend allows it. Atomic per key, not
        across keys: another client may see some items written before the others. A batch that
        fails part way raises ``BackendUnavailableError`` with ``applied=None`` (some items may
        have been stored) unless the backend knows that nothing was: on ``sqlite://``,
        ``lmdb://`` and ``postgresql://`` a batch is one transaction, all or nothing.
        """
        ks = self._keyspace
        ttl = seconds("ttl", ttl, optional=True)
        items: dict[str, bytes | int] = {}
        for key, value in mapping.items():
            full = ks.full_key(key)
            ks.guard_write(full, "set_many()")
            items[full] = ks.encode(full, value)
        if items:
            await ks.backend.set_many(items, ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many of them existed (a key given twice counts once).

        One round trip where the backend allows it. Atomic per key, not across keys. A batch that
        fails part way raises ``BackendUnavailableError`` with ``applied=None`` unless the backend
        knows that nothing was removed (one transaction on ``sqlite://``, ``lmdb://`` and
        ``postgresql://``: all or nothing).
        """
        ks = self._keyspace
        _not_one_key(keys, "delete_many")
        fulls: dict[str, None] = {}
        for key in keys:
            full = ks.full_key(key)
            ks.guard_write(full, "delete_many()")
            fulls[full] = None
        if not fulls:
            return 0
        return await ks.backend.delete_many(list(fulls))

    async def ping(self) -> None:
        """Check that the backend answers: returns if it does, raises ``BackendUnavailableError``
        if it does not (within the backend's timeout, as every call). Nothing is written, so
        nothing can be half done: the error's ``applied`` is False when the ping could not be sent
        (no connection) and None when it was sent and no answer came. One round trip on server
        backends; ``sqlite://`` and ``lmdb://`` open the file (creating it if needed) and read it.
        For health checks, readiness probes and a clear error at startup."""
        await self._keyspace.backend.ping()

    async def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix`` (namespace stripped), sorted.

        Keys the library keeps for itself (``_ss:...``) are listed only when ``prefix`` asks for
        them. Not a snapshot: keys written during the call may or may not appear.
        """
        key_text(prefix, "prefix")
        ks = self._keyspace
        cut = len(ks.prefix)
        found = [k[cut:] async for k in ks.backend.scan(ks.prefix + prefix)]
        if not prefix.startswith(RESERVED_PREFIX):
            found = [k for k in found if not k.startswith(RESERVED_PREFIX)]
        return sorted(found)

    # -- read-modify-write -------------------------------------------------------------------

    async def update(
        self,
        name: str,
        fn: Callable[[Any], T],
        default: Any = None,
        *,
        ttl: float | None = None,
    ) -> T:
        """Atomically replace the value at ``name`` with ``fn(current)`` and return the new value.

        Optimistic: ``fn`` (a plain function) gets a private copy of the current value (``default``
        if absent) and the result is written by compare-and-set. If another writer got in first,
        ``fn`` runs again on the newer value, so ``fn`` may run more than once and must have no side
        effects. No update is ever lost. Use :meth:`edit` when the body must run exactly once.

        ``fn`` is first called on the value this process last wrote to ``name``, if it remembers
        it, to save a read: a process that is the only writer of a key pays one round trip. If
        that value is out of date, the write is refused and ``fn`` runs again on the stored value;
        an exception ``fn`` raises on the out-of-date value is not raised.

        ``fn`` must not update, edit or write ``name`` itself: that raises ``NestedUpdateError``
        (the outer update could never save). Updating other keys inside ``fn`` works.
        """
        ks = self._keyspace
        full = ks.full_key(name)
        ttl = seconds("ttl", ttl, optional=True)
        ks.warn_if_evictable("an updated value")
        return await ks.update(full, fn, default, ttl=ttl)

    @asynccontextmanager
    async def edit(
        self,
        name: str,
        default: Any = None,
        *,
        ttl: float | None = None,
        lease: float = 30.0,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """Edit the dict or list at ``name`` in place; changes are saved atomically on exit.

        ``async with store.edit("global_obj", default={"param": 0}) as obj: obj["param"] += 1``

        The body runs exactly once, holding a lock on ``name`` alone (edits of other names are not
        blocked). Nothing is saved if the body raises. The lock is a lease of ``lease`` seconds, so a
        process that dies inside the body frees the name when the lease runs out. If the body
        outlives its lease and another writer changes the value meanwhile, ``ConflictError`` is
        raised and this body's changes are not saved: no write is ever silently lost. ``timeout``
        bounds the wait for the lock (``LockTimeout``; ``0``: try once). ``lease`` is at least
        ``validation.MIN_LEASE`` seconds.

        The body must not update, edit or write ``name`` itself: that raises ``NestedUpdateError``
        at once (this edit could never save). Editing other names inside the body works.
        """
        ks = self._keyspace
        full = ks.full_key(name)
        # All checked before the body runs, not after it.
        ttl = seconds("ttl", ttl, optional=True)
        lease = seconds("lease", lease, minimum=MIN_LEASE)
        timeout = seconds("timeout", timeout, optional=True, allow_zero=True)
        ks.warn_if_evictable("an edited value")
        busy = ks.mark_busy(full, "edit()")
        try:
            # No fencing token: the compare-and-set below already refuses a write from a lapsed lease.
            lock = internal_lock(ks, f"{RESERVED_PREFIX}edit:{name}", lease, timeout)
            await lock.acquire()
            try:
                entry = await ks.backend.get(full)
                value = copy.deepcopy(default) if entry is None else ks.decode(full, entry.value)
                if not isinstance(value, (dict, list)):
                    raise TypeError(
                        f"edit({name!r}) needs a dict or list value, got {type(value).__name__}; "
                        "use update() for other values"
                    )
                yield value
                expected = None if entry is None else entry.version
                if not (await ks.backend.compare_and_set(full, expected, ks.encode(full, value), ttl)).stored:
                    raise ConflictError(
                        f"edit({name!r}) outlived its {lease}s lease and {name!r} was changed by "
                        "another writer meanwhile; this edit was not saved (raise lease=)"
                    )
            finally:
                # The compare-and-set above decides the outcome. A lease that ran out meanwhile must
                # not turn a saved edit into an exception (the caller would retry and apply it
                # twice), nor hide the body's own exception.
                with suppress(LockNotOwnedError):
                    await lock.release()
        finally:
            ks.unmark(busy)

    # -- objects -----------------------------------------------------------------------------

    def counter(self, name: str) -> AsyncCounter:
        """An integer counter stored at key ``name``; ``incr()`` returns unique values."""
        self._keyspace.warn_if_evictable("a counter")
        return AsyncCounter(self._keyspace, name)

    def dict(self, name: str) -> AsyncDict:
        """A shared dict whose items are stored one per key, at ``name:item``."""
        self._keyspace.warn_if_evictable("a shared dict")
        return AsyncDict(self._keyspace, name)

    def lock(
        self, name: str, ttl: float = 30.0, timeout: float | None = None, *, blocking: bool = True
    ) -> AsyncLock:
        """A lock named ``name`` with an owner token and a lease of ``ttl`` seconds.

        ``async with store.lock(name):`` waits at most ``timeout`` seconds (``None``: as long as it
        takes; ``0``: tries once) and raises ``LockTimeout``. ``blocking=False``, as in
        :mod:`threading`: ``async with`` tries once and raises ``LockTimeout`` if the lock is taken,
        and ``acquire()`` returns ``False``. ``ttl`` is at least ``validation.MIN_LEASE`` seconds.
        """
        ks = self._keyspace
        ks.full_key(name, what="lock name")  # validates the name
        ks.warn_if_evictable("a lock")
        # The fencing counters live apart from the lock keys, so no lock name can collide with
        # another lock's counter (lock "x:fence" and the counter of lock "x").
        fence_key = ks.full_key(f"{RESERVED_PREFIX}fence:{name}", internal=True)
        return internal_lock(
            ks, f"{RESERVED_PREFIX}lock:{name}", ttl, timeout, fence_key=fence_key, blocking=blocking
        )

    def cached(
        self, ttl: float, stale_ttl: float | None = None, *, lease: float = 30.0, name: str | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], AsyncCachedFunction[P, T]]:
        """Decorator caching a function's results in this store for ``ttl`` seconds.

        ``@store.cached(ttl=60)``; the function's arguments must be plain data (they are encoded
        into the key). Across every process, one caller computes a missing entry while the others
        wait for it; with ``stale_ttl``, callers get the stale value for ``stale_ttl`` more seconds
        while exactly one recomputes. See :func:`sharedstate.cache.cached` for the full contract.
        """
        # Imported on first use: the cache's key encoding pulls in inspect, hashlib, json.
        from sharedstate._async.cache import cached

        return cached(self, ttl, stale_ttl=stale_ttl, lease=lease, name=name)

    # -- lifecycle ---------------------------------------------------------------------------

    async def sweep(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired entries now (backends also do this lazily)."""
        return await self._keyspace.backend.sweep(limit)

    async def aclose(self) -> None:
        """Close this process's connections. The store reconnects if used again."""
        await self._keyspace.backend.aclose()

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        ns = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"<AsyncStore {self._keyspace.backend.describe()}{ns}>"


def _not_one_key(keys: object, what: str) -> None:
    """Refuse a single ``str`` where an iterable of keys is expected (it would be read per character)."""
    if isinstance(keys, str):
        raise TypeError(f"{what}() takes an iterable of keys, not one key: {what}([{keys!r}])")
