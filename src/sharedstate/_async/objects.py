"""The objects users hold: :class:`AsyncCounter`, :class:`AsyncDict` and :class:`AsyncLock`.

They are thin views over a store's keyspace: they hold no state of their own beyond their name,
are cheap to create per request, and use only the backend contract.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

from sharedstate import engine, validation
from sharedstate._async import _io
from sharedstate._async.keyspace import AsyncKeyspace
from sharedstate.backends.base import Version
from sharedstate.errors import LockNotOwnedError, LockTimeout
from sharedstate.validation import key_text, seconds

T = TypeVar("T")
_MISSING: Any = object()


class AsyncCounter:
    """An integer at key ``name``. ``await incr()`` is atomic: concurrent callers get distinct values.

    The value is a native integer on every backend, so ``await store.get(name)`` reads it too.
    """

    def __init__(self, keyspace: AsyncKeyspace, name: str) -> None:
        self._keyspace = keyspace
        self.name = name
        self._key = keyspace.full_key(name)

    async def incr(self, by: int = 1) -> int:
        """Add ``by`` and return the new value (the counter starts at 0)."""
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        self._keyspace.guard_write(self._key, "incr()")
        return await self._keyspace.backend.incr(self._key, by, None)

    async def decr(self, by: int = 1) -> int:
        """Subtract ``by`` and return the new value."""
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        self._keyspace.guard_write(self._key, "incr()")
        return await self._keyspace.backend.incr(self._key, -by, None)

    async def get(self) -> int:
        """The current value (0 if never incremented)."""
        entry = await self._keyspace.backend.get(self._key)
        value = 0 if entry is None else self._keyspace.decode(self._key, entry.value)
        if type(value) is not int:
            raise TypeError(f"key {self.name!r} holds a {type(value).__name__}, not a counter")
        return value

    async def reset(self, to: int = 0) -> None:
        """Set the counter to ``to``."""
        if type(to) is not int:
            raise TypeError(f"to must be an int, got {type(to).__name__}")
        self._keyspace.guard_write(self._key, "set()")
        await self._keyspace.backend.set(self._key, self._keyspace.encode(self._key, to), None)

    def __repr__(self) -> str:
        return f"<AsyncCounter {self.name!r}>"


class AsyncDict:
    """A dict whose items live one per key, at ``"{name}:{item}"``.

    ``%`` and ``:`` in ``name`` are stored percent-encoded (``%25``, ``%3A``), so the items of
    dict ``"a"`` and of dict ``"a:b"`` never share a key or show up in each other's iteration.

    Each item operation is atomic on its own; ``setdefault``, ``pop``, ``incr`` and ``update_item``
    are atomic read-modify-writes. ``keys``, ``items`` and ``len`` scan the prefix and see a live,
    not a frozen, view. Writers of different items never contend.
    """

    def __init__(self, keyspace: AsyncKeyspace, name: str) -> None:
        self._keyspace = keyspace
        self.name = name
        # validates the name as a key (type, empty, reserved prefix, NUL, lone surrogates)
        keyspace.full_key(name, what="dict name")
        self._stored_name = name.replace("%", "%25").replace(":", "%3A")
        self._item_prefix = keyspace.full_key(self._stored_name) + ":"

    def _full(self, item: str) -> str:
        key_text(item, "dict item name")
        return self._item_prefix + item

    def _full_for_write(self, item: str, what: str) -> str:
        full = self._full(item)
        self._keyspace.guard_write(full, what)
        return full

    async def get(self, item: str, default: Any = None) -> Any:
        """The value of ``item``, or ``default`` if absent."""
        full = self._full(item)
        entry = await self._keyspace.backend.get(full)
        return default if entry is None else self._keyspace.decode(full, entry.value)

    async def set(self, item: str, value: Any) -> None:
        """Store ``value`` at ``item`` (replacing it)."""
        full = self._full_for_write(item, "dict item write")
        await self._keyspace.backend.set(full, self._keyspace.encode(full, value))

    async def delete(self, item: str) -> bool:
        """Remove ``item``; return whether it existed."""
        return await self._keyspace.backend.delete(self._full_for_write(item, "dict item delete"))

    async def contains(self, item: object) -> bool:
        """Whether ``item`` is in the dict now."""
        return isinstance(item, str) and await self._keyspace.backend.get(self._full(item)) is not None

    async def _names(self) -> AsyncIterator[str]:
        """The item names, in no particular order, as the backend's scan finds them."""
        cut = len(self._item_prefix)
        async for full in self._keyspace.backend.scan(self._item_prefix):
            yield full[cut:]

    async def keys(self) -> list[str]:
        """The item names, sorted."""
        return sorted([name async for name in self._names()])

    async def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, sorted by name; items deleted during the call are left out."""
        found = []
        for name in await self.keys():
            value = await self.get(name, _MISSING)
            if value is not _MISSING:
                found.append((name, value))
        return found

    async def len(self) -> int:
        """How many items the dict holds now."""
        return len([name async for name in self._names()])

    async def setdefault(self, item: str, default: Any = None) -> Any:
        """Store ``default`` if ``item`` is absent, atomically; return the stored value."""
        full = self._full_for_write(item, "dict setdefault()")
        raw = self._keyspace.encode(full, default)
        backend = self._keyspace.backend
        while True:
            if await backend.add(full, raw):
                return default
            entry = await backend.get(full)
            if entry is not None:  # else deleted between add and get: try again
                return self._keyspace.decode(full, entry.value)

    async def pop(self, item: str, default: Any = _MISSING) -> Any:
        """Remove ``item`` and return its value, atomically (exactly one popper gets it)."""
        full = self._full_for_write(item, "dict pop()")
        backend = self._keyspace.backend
        while True:
            entry = await backend.get(full)
            if entry is None:
                if default is _MISSING:
                    raise KeyError(item)
                return default
            if await backend.delete_if_version(full, entry.version):
                return self._keyspace.decode(full, entry.value)

    async def clear(self) -> None:
        """Remove every item (not atomic across items)."""
        backend = self._keyspace.backend
        for full in [full async for full in backend.scan(self._item_prefix)]:
            await backend.delete(full)

    async def incr(self, item: str, by: int = 1) -> int:
        """Atomically add ``by`` to the integer item (missing: 0); return the new value."""
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        return await self._keyspace.backend.incr(self._full_for_write(item, "dict incr()"), by)

    async def update_item(self, item: str, fn: Callable[[Any], T], default: Any = None) -> T:
        """Replace ``item`` with ``fn(current)`` by compare-and-set; ``fn`` may run again on conflict."""
        return await self._keyspace.update(self._full(item), fn, default, ttl=None)

    def __repr__(self) -> str:
        return f"<AsyncDict {self.name!r}>"


class AsyncLock:
    """A lease lock with an owner token, usable across tasks, threads, processes and machines.

    Only the holder's token can release or extend it. The lease always expires after ``ttl``
    seconds, so a holder that crashes frees the lock by itself; a holder that needs longer calls
    :meth:`extend`. ``acquire`` returns a fencing token that increases with every acquisition, to
    pass to a resource that should reject writes from a holder whose lease already ran out.

    A lock object is one owner: do not share one object between tasks or threads that should
    exclude each other; give each its own ``store.lock(name)``.

    The fencing counter is one small key per lock name that never expires (a counter that restarted
    would hand out lower tokens), so use a bounded set of lock names, not one per user or request.

    ``ttl`` (and every ``extend``) is at least ``validation.MIN_LEASE`` seconds and finite, so no
    lease can be eternal. ``timeout``: ``None`` waits as long as it takes, ``0`` tries once.
    ``blocking=False`` (as in :mod:`threading`): ``async with`` tries once and raises ``LockTimeout``,
    ``await acquire()`` returns ``False`` when the lock is taken.
    """

    def __init__(
        self,
        keyspace: AsyncKeyspace,
        key: str,
        *,
        ttl: float,
        timeout: float | None,
        fence_key: str | None = None,
        blocking: bool = True,
    ) -> None:
        self.ttl = seconds("ttl", ttl, minimum=validation.MIN_LEASE)
        self.timeout = seconds("timeout", timeout, optional=True, allow_zero=True)
        if not isinstance(blocking, bool):
            raise TypeError(f"blocking must be True or False, got {type(blocking).__name__}: {blocking!r}")
        if not blocking and timeout is not None:
            raise ValueError("a lock with blocking=False tries once: it takes no timeout")
        self.blocking = blocking
        self._keyspace = keyspace
        self._key = key
        # The fencing counter (full key) must outlive every holder (a counter that restarted would
        # hand out lower tokens), so it is one permanent key per lock name. Internal locks whose
        # writes are guarded by compare-and-set anyway (edit, sessions) have none and leave nothing.
        self._fence_key = fence_key
        self._token: str | None = None
        self._version: Version | None = None
        self.fencing_token: int | None = None

    @property
    async def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return await self._keyspace.backend.get(self._key) is not None

    @property
    async def owned(self) -> bool:
        """Whether this object holds the lock now (its lease has not run out)."""
        entry = await self._keyspace.backend.get(self._key)
        return entry is not None and entry.version == self._version

    async def acquire(self, timeout: float | None = _MISSING, *, blocking: bool | None = None) -> int:
        """Wait for the lock (at most ``timeout`` seconds; default: the lock's) and take it.

        Returns the fencing token (0 for a lock without a fencing counter). Raises
        ``LockTimeout`` if the wait runs out; ``timeout=0`` tries once. With ``blocking=False``
        (default: the lock's), tries once and returns ``False`` if the lock is taken (``True``, not
        0, for a lock without a fencing counter, so success is always truthy). Raises
        ``RuntimeError`` if this object already holds it (locks are not reentrant).
        """
        if self._token is not None and await self.owned:
            raise RuntimeError(f"lock {self._key!r} is already held by this object")
        if blocking is None:
            blocking = self.blocking
        if not blocking:
            if timeout is not _MISSING:
                raise ValueError("acquire(blocking=False) tries once: it takes no timeout")
            fence = await self._take(0.0)
            return False if fence is None else (fence or True)
        wait = (
            self.timeout
            if timeout is _MISSING
            else seconds("timeout", timeout, optional=True, allow_zero=True)
        )
        fence = await self._take(wait)
        if fence is None:
            raise LockTimeout(f"could not acquire lock {self._key!r} within {wait}s")
        return fence

    async def _take(self, wait: float | None) -> int | None:
        """Try to take the lock for ``wait`` seconds (``None``: as long as it takes; ``0``: once).

        Returns the fencing token, or ``None`` when the wait ran out.
        """
        step = engine.AcquireStep(wait, _io.monotonic())
        backend = self._keyspace.backend
        while True:
            token = os.urandom(16).hex()  # secrets.token_hex(16), without importing secrets
            free = await backend.get(self._key) is None
            if free and await backend.add(self._key, token.encode(), self.ttl):
                # Draw the fencing token while holding the lock, then check the lease still holds:
                # a token drawn by the owner is higher than every earlier owner's, so tokens
                # increase in the order holders got the lock. (Drawn before taking the lock, a
                # stalled attempt could take the lock after a later one with a lower token.)
                fence = 0 if self._fence_key is None else await backend.incr(self._fence_key, 1)
                entry = await backend.get(self._key)
                if entry is not None and entry.value == token.encode():
                    self._token = token
                    self._version = entry.version
                    self.fencing_token = fence
                    return fence
                # Nobody else can take a lock that is held, so the lease ran out before these few
                # round trips returned: a lease too short for this backend. Retrying would spin.
                if step.lease_lapsed():
                    raise LockTimeout(
                        f"lock {self._key!r}: its lease of {self.ttl}s ran out before the calls that "
                        f"took it returned, {step.lapsed} times in a row; use a longer ttl (or lease)"
                    )
            else:
                step.taken_by_another()
            delay = step.next_delay(_io.monotonic())
            if delay is None:
                return None
            await _io.sleep(delay)

    async def release(self) -> None:
        """Release the lock. Raises ``LockNotOwnedError`` if the lease ran out and was lost."""
        version, self._version, self._token = self._version, None, None
        if version is None or not await self._keyspace.backend.delete_if_version(self._key, version):
            raise LockNotOwnedError(
                f"lock {self._key!r} was not held by this owner any more (its lease expired)"
            )

    async def extend(self, ttl: float | None = None) -> None:
        """Renew the lease to ``ttl`` (default: the lock's ttl) seconds from now.

        ``ttl`` is checked like the lock's (finite, at least ``validation.MIN_LEASE``) before
        anything is sent: a bad one raises and leaves the lease as it was.
        """
        token, version = self._token, self._version
        if token is None or version is None:
            raise LockNotOwnedError(f"lock {self._key!r} is not held by this owner")
        # An unchecked ttl could make the lease eternal (nan, inf) or drop it silently (0, -1).
        new_ttl = self.ttl if ttl is None else seconds("ttl", ttl, minimum=validation.MIN_LEASE)
        backend = self._keyspace.backend
        stored, entry = await backend.compare_and_set(self._key, version, token.encode(), new_ttl)
        if not stored:
            self._token = self._version = None
            raise LockNotOwnedError(
                f"lock {self._key!r} was not held by this owner any more (its lease expired)"
            )
        if entry is None:  # the backend could not say the new version: read it
            entry = await backend.get(self._key)
        self._version = entry.version if entry is not None else None

    async def __aenter__(self) -> AsyncLock:
        if await self.acquire() is False:  # only with blocking=False: it tried once
            raise LockTimeout(f"lock {self._key!r} is taken (blocking=False tries once)")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<AsyncLock {self._key!r} ttl={self.ttl}>"


def internal_lock(
    keyspace: AsyncKeyspace,
    key: str,
    ttl: float,
    timeout: float | None,
    *,
    fence_key: str | None = None,
    blocking: bool = True,
) -> AsyncLock:
    """An :class:`AsyncLock` on an internal key (``_ss:...``, namespace not included), counting
    fencing tokens at the full key ``fence_key`` if given (edit and sessions lock without one)."""
    full = keyspace.full_key(key, internal=True)
    return AsyncLock(keyspace, full, ttl=ttl, timeout=timeout, fence_key=fence_key, blocking=blocking)
