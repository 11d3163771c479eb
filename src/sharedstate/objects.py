"""The objects users hold: :class:`Counter`, :class:`SharedDict` and :class:`Lock`.

They are thin views over a :class:`~sharedstate.store.Store`: they hold no state of their own beyond
their name, are cheap to create per request, and use only the backend contract.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sharedstate import validation
from sharedstate.backends.base import Version
from sharedstate.errors import LockNotOwnedError, LockTimeout
from sharedstate.store import backoff_delays
from sharedstate.validation import key_text, seconds

if TYPE_CHECKING:
    from sharedstate.store import Store

T = TypeVar("T")
_MISSING: Any = object()
# Lock.acquire gives up (LockTimeout) when the lease it took ran out before it could confirm it
# this many times in a row: the lease is shorter than a few round trips and would never hold.
_MAX_LAPSED_LEASES = 3


class Counter:
    """An integer at key ``name``. ``incr`` is atomic: concurrent callers get distinct values.

    The value is a native integer on every backend, so ``store.get(name)`` reads it too.
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name
        self._key = store.full_key(name)

    def incr(self, by: int = 1) -> int:
        """Add ``by`` and return the new value (the counter starts at 0)."""
        return self._store.incr(self.name, by)

    def decr(self, by: int = 1) -> int:
        """Subtract ``by`` and return the new value."""
        return self._store.incr(self.name, -by)

    def get(self) -> int:
        """The current value (0 if never incremented)."""
        value = self._store.get(self.name, 0)
        if type(value) is not int:
            raise TypeError(f"key {self.name!r} holds a {type(value).__name__}, not a counter")
        return value

    def reset(self, to: int = 0) -> None:
        """Set the counter to ``to``."""
        if type(to) is not int:
            raise TypeError(f"to must be an int, got {type(to).__name__}")
        self._store.set(self.name, to)

    def __repr__(self) -> str:
        return f"<Counter {self.name!r}>"


class SharedDict(MutableMapping[str, Any]):
    """A ``MutableMapping`` whose items live one per key, at ``"{name}:{item}"``.

    ``%`` and ``:`` in ``name`` are stored percent-encoded (``%25``, ``%3A``), so the items of
    dict ``"a"`` and of dict ``"a:b"`` never share a key or show up in each other's iteration.

    Each item operation is atomic on its own; ``setdefault``, ``pop``, ``incr`` and ``update_item``
    are atomic read-modify-writes. Iteration and ``len`` scan the prefix and see a live, not a
    frozen, view. Writers of different items never contend.
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name
        # validates the name as a key (type, empty, reserved prefix, NUL, lone surrogates)
        store.full_key(name, what="dict name")
        self._stored_name = name.replace("%", "%25").replace(":", "%3A")
        self._item_prefix = store.full_key(self._stored_name) + ":"

    def _full(self, item: str) -> str:
        key_text(item, "dict item name")
        return self._item_prefix + item

    def _full_for_write(self, item: str, what: str) -> str:
        full = self._full(item)
        self._store.guard_write(full, what)
        return full

    def __getitem__(self, item: str) -> Any:
        full = self._full(item)
        entry = self._store.backend.get(full)
        if entry is None:
            raise KeyError(item)
        return self._store.decode(full, entry.value)

    def get(self, item: str, default: Any = None) -> Any:
        try:
            return self[item]
        except KeyError:
            return default

    def __setitem__(self, item: str, value: Any) -> None:
        full = self._full_for_write(item, "dict item write")
        self._store.backend.set(full, self._store.encode(full, value))

    def __delitem__(self, item: str) -> None:
        if not self._store.backend.delete(self._full_for_write(item, "dict item delete")):
            raise KeyError(item)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self._store.backend.get(self._full(item)) is not None

    def __iter__(self) -> Iterator[str]:
        cut = len(self._item_prefix)
        return (k[cut:] for k in self._store.backend.scan(self._item_prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self._store.backend.scan(self._item_prefix))

    def setdefault(self, item: str, default: Any = None) -> Any:
        """Store ``default`` if ``item`` is absent, atomically; return the stored value."""
        full = self._full_for_write(item, "dict setdefault()")
        raw = self._store.encode(full, default)
        while True:
            if self._store.backend.add(full, raw):
                return default
            entry = self._store.backend.get(full)
            if entry is not None:  # else deleted between add and get: try again
                return self._store.decode(full, entry.value)

    def pop(self, item: str, default: Any = _MISSING) -> Any:
        """Remove ``item`` and return its value, atomically (exactly one popper gets it)."""
        full = self._full_for_write(item, "dict pop()")
        while True:
            entry = self._store.backend.get(full)
            if entry is None:
                if default is _MISSING:
                    raise KeyError(item)
                return default
            if self._store.backend.delete_if_version(full, entry.version):
                return self._store.decode(full, entry.value)

    def clear(self) -> None:
        for full in list(self._store.backend.scan(self._item_prefix)):
            self._store.backend.delete(full)

    def incr(self, item: str, by: int = 1) -> int:
        """Atomically add ``by`` to the integer item (missing: 0); return the new value."""
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        return self._store.backend.incr(self._full_for_write(item, "dict incr()"), by)

    def update_item(self, item: str, fn: Callable[[Any], T], default: Any = None) -> T:
        """Replace ``item`` with ``fn(current)`` by compare-and-set; ``fn`` may run again on conflict."""
        return self._store.update_raw(self._full(item), fn, default, ttl=None)

    def __repr__(self) -> str:
        return f"<SharedDict {self.name!r}>"


class Lock:
    """A lease lock with an owner token, usable across threads, processes and machines.

    Only the holder's token can release or extend it. The lease always expires after ``ttl``
    seconds, so a holder that crashes frees the lock by itself; a holder that needs longer calls
    :meth:`extend`. ``acquire`` returns a fencing token that increases with every acquisition, to
    pass to a resource that should reject writes from a holder whose lease already ran out.

    A ``Lock`` object is one owner: do not share one object between threads that should exclude
    each other; give each its own ``store.lock(name)``.

    The fencing counter is one small key per lock name that never expires (a counter that restarted
    would hand out lower tokens), so use a bounded set of lock names, not one per user or request.

    ``ttl`` (and every ``extend``) is at least ``validation.MIN_LEASE`` seconds and finite, so no
    lease can be eternal. ``timeout``: ``None`` waits as long as it takes, ``0`` tries once.
    ``blocking=False`` (as in :mod:`threading`): ``with`` tries once and raises ``LockTimeout``,
    ``acquire()`` returns ``False`` when the lock is taken.
    """

    def __init__(
        self,
        store: Store,
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
        self._store = store
        self._key = key
        # The fencing counter (full key) must outlive every holder (a counter that restarted would
        # hand out lower tokens), so it is one permanent key per lock name. Internal locks whose
        # writes are guarded by compare-and-set anyway (edit, sessions) have none and leave nothing.
        self._fence_key = fence_key
        self._token: str | None = None
        self._version: Version | None = None
        self.fencing_token: int | None = None

    @property
    def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return self._store.backend.get(self._key) is not None

    @property
    def owned(self) -> bool:
        """Whether this object holds the lock now (its lease has not run out)."""
        entry = self._store.backend.get(self._key)
        return entry is not None and entry.version == self._version

    def acquire(self, timeout: float | None = _MISSING, *, blocking: bool | None = None) -> int:
        """Wait for the lock (at most ``timeout`` seconds; default: the lock's) and take it.

        Returns the fencing token (0 for a lock without a fencing counter). Raises
        ``LockTimeout`` if the wait runs out; ``timeout=0`` tries once. With ``blocking=False``
        (default: the lock's), tries once and returns ``False`` if the lock is taken (``True``, not
        0, for a lock without a fencing counter, so success is always truthy). Raises
        ``RuntimeError`` if this object already holds it (locks are not reentrant).
        """
        if self._token is not None and self.owned:
            raise RuntimeError(f"lock {self._key!r} is already held by this object")
        if blocking is None:
            blocking = self.blocking
        if not blocking:
            if timeout is not _MISSING:
                raise ValueError("acquire(blocking=False) tries once: it takes no timeout")
            fence = self._take(0.0)
            return False if fence is None else (fence or True)
        wait = (
            self.timeout
            if timeout is _MISSING
            else seconds("timeout", timeout, optional=True, allow_zero=True)
        )
        fence = self._take(wait)
        if fence is None:
            raise LockTimeout(f"could not acquire lock {self._key!r} within {wait}s")
        return fence

    def _take(self, wait: float | None) -> int | None:
        """Try to take the lock for ``wait`` seconds (``None``: as long as it takes; ``0``: once).

        Returns the fencing token, or ``None`` when the wait ran out.
        """
        deadline = None if wait is None else time.monotonic() + wait
        backend = self._store.backend
        delays = backoff_delays(first=0.001, cap=0.05)
        lapsed = 0  # leases that ran out before the call that took them returned, in a row
        while True:
            token = secrets.token_hex(16)
            if backend.get(self._key) is None and backend.add(self._key, token.encode(), self.ttl):
                # Draw the fencing token while holding the lock, then check the lease still holds:
                # a token drawn by the owner is higher than every earlier owner's, so tokens
                # increase in the order holders got the lock. (Drawn before taking the lock, a
                # stalled attempt could take the lock after a later one with a lower token.)
                fence = 0 if self._fence_key is None else backend.incr(self._fence_key, 1)
                entry = backend.get(self._key)
                if entry is not None and entry.value == token.encode():
                    self._token = token
                    self._version = entry.version
                    self.fencing_token = fence
                    return fence
                # Nobody else can take a lock that is held, so the lease ran out before these few
                # round trips returned: a lease too short for this backend. Retrying would spin.
                lapsed += 1
                if lapsed >= _MAX_LAPSED_LEASES:
                    raise LockTimeout(
                        f"lock {self._key!r}: its lease of {self.ttl}s ran out before the calls that "
                        f"took it returned, {lapsed} times in a row; use a longer ttl (or lease)"
                    )
            else:
                lapsed = 0
            delay = next(delays)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                delay = min(delay, left)
            time.sleep(delay)

    def release(self) -> None:
        """Release the lock. Raises ``LockNotOwnedError`` if the lease ran out and was lost."""
        version, self._version, self._token = self._version, None, None
        if version is None or not self._store.backend.delete_if_version(self._key, version):
            raise LockNotOwnedError(
                f"lock {self._key!r} was not held by this owner any more (its lease expired)"
            )

    def extend(self, ttl: float | None = None) -> None:
        """Renew the lease to ``ttl`` (default: the lock's ttl) seconds from now.

        ``ttl`` is checked like the lock's (finite, at least ``validation.MIN_LEASE``) before
        anything is sent: a bad one raises and leaves the lease as it was.
        """
        token, version = self._token, self._version
        if token is None or version is None:
            raise LockNotOwnedError(f"lock {self._key!r} is not held by this owner")
        # An unchecked ttl could make the lease eternal (nan, inf) or drop it silently (0, -1).
        new_ttl = self.ttl if ttl is None else seconds("ttl", ttl, minimum=validation.MIN_LEASE)
        backend = self._store.backend
        stored, entry = backend.compare_and_set(self._key, version, token.encode(), new_ttl)
        if not stored:
            self._token = self._version = None
            raise LockNotOwnedError(
                f"lock {self._key!r} was not held by this owner any more (its lease expired)"
            )
        if entry is None:  # the backend could not say the new version: read it
            entry = backend.get(self._key)
        self._version = entry.version if entry is not None else None

    def __enter__(self) -> Lock:
        if self.acquire() is False:  # only with blocking=False: it tried once
            raise LockTimeout(f"lock {self._key!r} is taken (blocking=False tries once)")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lock {self._key!r} ttl={self.ttl}>"
