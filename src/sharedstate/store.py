"""``Store``: a URL-chosen backend plus a namespace and a codec, and the objects users hold."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sharedstate.backends import Backend, Entry, backend_from_url
from sharedstate.codecs import Codec, make_codec
from sharedstate.errors import ConflictError, LockNotOwnedError, NestedUpdateError, ValueTooLargeError
from sharedstate.validation import MIN_LEASE, key_text, seconds

if TYPE_CHECKING:
    from sharedstate.cache import CachedFunction
    from sharedstate.objects import Counter, Lock, SharedDict

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_FILENAME = "sharedstate.sqlite3"
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024
#: Keys the library keeps for itself (locks, fencing counters, caches, sessions) start with this.
RESERVED_PREFIX = "_ss:"


# update() backs off after each collision (a refused compare-and-set of a value it had just read):
# from about one round trip (0.1 ms) up to 10 ms. Losers step aside, and the writer that got in
# keeps writing at one round trip per update instead of every writer failing in turn (see
# benchmarks/README.md).
_UPDATE_FIRST_DELAY = 0.0001
_UPDATE_MAX_DELAY = 0.01

# The keys this thread or asyncio task is updating or editing right now, as (id of the backend,
# full key). Inside ``update("k", fn)``'s fn or ``edit("k")``'s body, another update, edit or write
# of "k" by the same context would be refused the outer compare-and-set every time (the outer one
# retries forever, or stalls for its lease and conflicts): it raises ``NestedUpdateError`` at once.
# A frozenset, replaced (never mutated), so tasks that copied the context do not share changes.
_BUSY_KEYS: contextvars.ContextVar[frozenset[tuple[int, str]]] = contextvars.ContextVar(
    "sharedstate_busy_keys", default=frozenset()
)


def default_url() -> str:
    """``$SHAREDSTATE_URL``, else an SQLite file ``sharedstate.sqlite3`` in the working directory."""
    return os.environ.get("SHAREDSTATE_URL") or f"sqlite:///{DEFAULT_FILENAME}"


def backoff_delays(first: float = 0.001, cap: float = 0.05) -> Iterator[float]:
    """Jittered exponential delays for retry loops (compare-and-set conflicts, lock waits)."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


class Store:
    """Shared state for every thread, process and machine that opens the same URL.

    ``Store(url=None, *, namespace="")``. With no URL it reads ``$SHAREDSTATE_URL``, else uses the
    SQLite file ``sharedstate.sqlite3`` in the working directory. Schemes: ``sqlite:///rel.db``,
    ``sqlite:////abs/path.db``, ``memory://`` (one process only), ``redis://``, ``rediss://``,
    ``postgresql://``, ``memcached://``.

    Concurrency contract: every method is atomic per key on every backend, across threads,
    processes and machines; a method that returns has been applied. A ``Store`` is safe to share
    between threads and survives ``fork`` (the child opens its own connections).

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
        key_text(namespace, "namespace")
        if "/" in namespace:
            raise ValueError(f"namespace must be a str without '/', got {namespace!r}")
        if isinstance(max_value_size, bool) or not isinstance(max_value_size, int):
            raise TypeError(
                f"max_value_size must be a positive int (bytes), got {type(max_value_size).__name__}: "
                f"{max_value_size!r}"
            )
        if max_value_size <= 0:
            raise ValueError(f"max_value_size must be a positive int (bytes), got {max_value_size!r}")
        self.url = url if url is not None else default_url()
        self.namespace = namespace
        self.max_value_size = max_value_size
        self._prefix = f"{namespace}/" if namespace else ""
        self._codec: Codec = make_codec(serializer, secret_key)
        self.backend: Backend = backend_from_url(self.url)
        self.backend.attach(namespace)
        self._warned_eviction = False
        self._last_written = _LastWritten()

    # -- plumbing shared by the objects ------------------------------------------------------

    def full_key(self, key: str, *, internal: bool = False, what: str = "key") -> str:
        """Validate ``key`` and return it with the namespace prefix.

        Refused: non-``str``, empty, NUL or lone surrogates (:func:`~sharedstate.validation.key_text`)
        and, unless ``internal``, the reserved prefix. ``what`` names it in messages (``"lock name"``).
        """
        key_text(key, what)
        if not key:
            raise ValueError(f"{what} must not be empty")
        if not internal and key.startswith(RESERVED_PREFIX):
            raise ValueError(f"{what} {key!r}: keys starting with {RESERVED_PREFIX!r} are reserved")
        return self._prefix + key

    def encode(
        self, full_key: str, value: Any, *, shown_as: str = "value", inside: tuple[str, ...] = ()
    ) -> bytes | int:
        """Encode ``value`` for ``full_key``; raises before anything is written.

        A caller that wraps the user's value (the cache's ``{"v": result}``) passes the path of the
        wrapper's keys as ``inside`` and what the user calls the value as ``shown_as``, so an error
        names the user's own path (``result['items'][3]``), not the wrapper's.
        """
        raw = self._codec.dumps(full_key, value, shown_as=shown_as, inside=inside)
        if isinstance(raw, bytes) and len(raw) > self.max_value_size:
            raise ValueTooLargeError(
                f"value for key {full_key!r} is {len(raw)} bytes encoded, over this store's "
                f"max_value_size of {self.max_value_size} bytes"
            )
        return raw

    def decode(self, full_key: str, raw: bytes | int) -> Any:
        return self._codec.loads(full_key, raw)

    def guard_write(self, full: str, what: str) -> None:
        """Refuse a write (``what``: ``"set"``, ``"dict item write"``) to a key that this thread or
        task is updating or editing: the outer update could never save (see :class:`NestedUpdateError`)."""
        busy = _BUSY_KEYS.get()
        if busy and (id(self.backend), full) in busy:
            raise self._nested(full, what)

    def _nested(self, full: str, what: str) -> NestedUpdateError:
        name = full[len(self._prefix) :]
        return NestedUpdateError(
            f"{what} of {name!r} inside an update() or edit() of {name!r} by the same thread or "
            f"task: the outer one could never save (the inner write changes {name!r} under it, so "
            "its compare-and-set is refused every time). Make the change in the outer update's "
            "function (return the new value) or the outer edit's body instead"
        )

    def _mark_busy(self, full: str, what: str) -> contextvars.Token[frozenset[tuple[int, str]]]:
        """Mark ``full`` as updated or edited by this context; ``_BUSY_KEYS.reset`` the token after."""
        busy = _BUSY_KEYS.get()
        mark = (id(self.backend), full)
        if mark in busy:
            raise self._nested(full, what)
        return _BUSY_KEYS.set(busy | {mark})

    def warn_if_evictable(self, what: str) -> None:
        """Warn once when state that must not vanish is kept on a backend that may evict it."""
        if self.backend.may_evict and not self._warned_eviction:
            self._warned_eviction = True
            warnings.warn(
                f"{what} is kept on {self.backend.describe()}, which may evict any entry when "
                "memory runs short: use it for caches, and sqlite://, redis:// or postgresql:// "
                "for state that must not be lost",
                RuntimeWarning,
                stacklevel=_user_stacklevel(),
            )

    # -- key-value ---------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` if absent or expired."""
        full = self.full_key(key)
        entry = self.backend.get(full)
        return default if entry is None else self.decode(full, entry.value)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` at ``key`` (replacing it); it expires after ``ttl`` seconds if given."""
        full = self.full_key(key)
        self.guard_write(full, "set()")
        self.backend.set(full, self.encode(full, value), seconds("ttl", ttl, optional=True))

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored. Atomic."""
        full = self.full_key(key)
        self.guard_write(full, "add()")
        return self.backend.add(full, self.encode(full, value), seconds("ttl", ttl, optional=True))

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        full = self.full_key(key)
        self.guard_write(full, "delete()")
        return self.backend.delete(full)

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0) and return the new value.

        ``ttl`` applies only when this call creates the key. Raises ``TypeError`` if the key holds
        something other than an integer.
        """
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        full = self.full_key(key)
        self.guard_write(full, "incr()")
        return self.backend.incr(full, by, seconds("ttl", ttl, optional=True))

    def touch(self, key: str, ttl: float | None) -> bool:
        """Give ``key`` a new expiry (``None``: never) without rewriting it; whether it existed."""
        full = self.full_key(key)
        self.guard_write(full, "touch()")
        return self.backend.touch(full, seconds("ttl", ttl, optional=True))

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix`` (namespace stripped), sorted.

        Keys the library keeps for itself (``_ss:...``) are listed only when ``prefix`` asks for
        them. Not a snapshot: keys written during the call may or may not appear.
        """
        key_text(prefix, "prefix")
        cut = len(self._prefix)
        found = (k[cut:] for k in self.backend.scan(self._prefix + prefix))
        if not prefix.startswith(RESERVED_PREFIX):
            found = (k for k in found if not k.startswith(RESERVED_PREFIX))
        return sorted(found)

    # -- read-modify-write -------------------------------------------------------------------

    def update(
        self,
        name: str,
        fn: Callable[[Any], T],
        default: Any = None,
        *,
        ttl: float | None = None,
    ) -> T:
        """Atomically replace the value at ``name`` with ``fn(current)`` and return the new value.

        Optimistic: ``fn`` gets a private copy of the current value (``default`` if absent) and the
        result is written by compare-and-set. If another writer got in first, ``fn`` runs again on
        the newer value, so ``fn`` may run more than once and must have no side effects. No update
        is ever lost. Use :meth:`edit` when the body must run exactly once.

        ``fn`` is first called on the value this process last wrote to ``name``, if it remembers
        it, to save a read: a process that is the only writer of a key pays one round trip. If
        that value is out of date, the write is refused and ``fn`` runs again on the stored value;
        an exception ``fn`` raises on the out-of-date value is not raised.

        ``fn`` must not update, edit or write ``name`` itself: that raises ``NestedUpdateError``
        (the outer update could never save). Updating other keys inside ``fn`` works.
        """
        full = self.full_key(name)
        ttl = seconds("ttl", ttl, optional=True)
        self.warn_if_evictable("an updated value")
        return self.update_raw(full, fn, default, ttl=ttl)

    def update_raw(self, full: str, fn: Callable[[Any], T], default: Any, *, ttl: float | None) -> T:
        """:meth:`update` on an already validated full key (used by the objects)."""
        token = self._mark_busy(full, "update()")
        try:
            return self._update_loop(full, fn, default, ttl)
        finally:
            _BUSY_KEYS.reset(token)

    def _update_loop(self, full: str, fn: Callable[[Any], T], default: Any, ttl: float | None) -> T:
        backend = self.backend
        entry = self._last_written.get(full)
        guessed = entry is not None  # what this process last wrote: saves a read when still current
        if not guessed:
            entry = backend.get(full)
        delays = backoff_delays(first=_UPDATE_FIRST_DELAY, cap=_UPDATE_MAX_DELAY)
        while True:
            try:
                current = copy.deepcopy(default) if entry is None else self.decode(full, entry.value)
                new = fn(current)
                raw = self.encode(full, new)
            except Exception:
                if not guessed:
                    raise
                # Computed from a guess that may be out of date: only the stored value may fail.
                entry, guessed = backend.get(full), False
                continue
            expected = None if entry is None else entry.version
            stored, entry = backend.compare_and_set(full, expected, raw, ttl)
            if stored:
                self._last_written.remember(full, entry)
                return new
            # Refused, and ``entry`` is what is stored now: retry on it without reading again.
            # A refused guess only means another writer came by since this process last wrote:
            # retry at once. A refused read-modify-write is a collision: back off, so one writer
            # gets a run of successful writes instead of all of them failing in turn.
            if not guessed:
                time.sleep(next(delays))
            guessed = False

    @contextmanager
    def edit(
        self,
        name: str,
        default: Any = None,
        *,
        ttl: float | None = None,
        lease: float = 30.0,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Edit the dict or list at ``name`` in place; changes are saved atomically on exit.

        ``with store.edit("global_obj", default={"param": 0}) as obj: obj["param"] += 1``

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
        full = self.full_key(name)
        # All checked before the body runs, not after it.
        ttl = seconds("ttl", ttl, optional=True)
        lease = seconds("lease", lease, minimum=MIN_LEASE)
        timeout = seconds("timeout", timeout, optional=True, allow_zero=True)
        self.warn_if_evictable("an edited value")
        busy = self._mark_busy(full, "edit()")
        try:
            yield from self._edit_locked(full, name, default, ttl, lease, timeout)
        finally:
            _BUSY_KEYS.reset(busy)

    def _edit_locked(
        self, full: str, name: str, default: Any, ttl: float | None, lease: float, timeout: float | None
    ) -> Iterator[Any]:
        # No fencing token: the compare-and-set below already refuses a write from a lapsed lease.
        lock = self.lock_for(f"{RESERVED_PREFIX}edit:{name}", lease, timeout)
        lock.acquire()
        try:
            entry = self.backend.get(full)
            value = copy.deepcopy(default) if entry is None else self.decode(full, entry.value)
            if not isinstance(value, (dict, list)):
                raise TypeError(
                    f"edit({name!r}) needs a dict or list value, got {type(value).__name__}; "
                    "use update() for other values"
                )
            yield value
            expected = None if entry is None else entry.version
            if not self.backend.compare_and_set(full, expected, self.encode(full, value), ttl).stored:
                raise ConflictError(
                    f"edit({name!r}) outlived its {lease}s lease and {name!r} was changed by "
                    "another writer meanwhile; this edit was not saved (raise lease=)"
                )
        finally:
            # The compare-and-set above decides the outcome. A lease that ran out meanwhile must not
            # turn a saved edit into an exception (the caller would retry and apply it twice), nor
            # hide the body's own exception.
            with suppress(LockNotOwnedError):
                lock.release()

    # -- objects -----------------------------------------------------------------------------

    def counter(self, name: str) -> Counter:
        """An integer counter stored at key ``name``; ``incr()`` returns unique values."""
        from sharedstate.objects import Counter

        self.warn_if_evictable("a counter")
        return Counter(self, name)

    def dict(self, name: str) -> SharedDict:
        """A shared ``MutableMapping`` whose items are stored one per key, at ``name:item``."""
        from sharedstate.objects import SharedDict

        self.warn_if_evictable("a shared dict")
        return SharedDict(self, name)

    def lock(
        self, name: str, ttl: float = 30.0, timeout: float | None = None, *, blocking: bool = True
    ) -> Lock:
        """A lock named ``name`` with an owner token and a lease of ``ttl`` seconds.

        ``with store.lock(name):`` waits at most ``timeout`` seconds (``None``: as long as it takes;
        ``0``: tries once) and raises ``LockTimeout``. ``blocking=False``, as in :mod:`threading`:
        ``with`` tries once and raises ``LockTimeout`` if the lock is taken, and ``acquire()``
        returns ``False``. ``ttl`` is at least ``validation.MIN_LEASE`` seconds.
        """
        self.full_key(name, what="lock name")  # validates the name
        self.warn_if_evictable("a lock")
        # The fencing counters live apart from the lock keys, so no lock name can collide with
        # another lock's counter (lock "x:fence" and the counter of lock "x").
        fence_key = self.full_key(f"{RESERVED_PREFIX}fence:{name}", internal=True)
        return self.lock_for(
            f"{RESERVED_PREFIX}lock:{name}", ttl, timeout, fence_key=fence_key, blocking=blocking
        )

    def lock_for(
        self,
        key: str,
        ttl: float,
        timeout: float | None,
        *,
        fence_key: str | None = None,
        blocking: bool = True,
    ) -> Lock:
        """A :class:`Lock` on an internal key (``_ss:...``), counting fencing tokens at
        ``fence_key`` if given (edit and sessions lock without one)."""
        from sharedstate.objects import Lock

        full = self.full_key(key, internal=True)
        return Lock(self, full, ttl=ttl, timeout=timeout, fence_key=fence_key, blocking=blocking)

    def cached(
        self, ttl: float, stale_ttl: float | None = None, *, lease: float = 30.0, name: str | None = None
    ) -> Callable[[Callable[P, T]], CachedFunction[P, T]]:
        """Decorator caching a function's results in this store for ``ttl`` seconds.

        ``@store.cached(ttl=60)``; the function's arguments must be plain data (they are encoded
        into the key). Across every process, one caller computes a missing entry while the others
        wait for it; with ``stale_ttl``, callers get the stale value for ``stale_ttl`` more seconds
        while exactly one recomputes. See :func:`sharedstate.cache.cached` for the full contract.
        """
        from sharedstate.cache import cached

        return cached(self, ttl, stale_ttl=stale_ttl, lease=lease, name=name)

    # -- lifecycle ---------------------------------------------------------------------------

    def sweep(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired entries now (backends also do this lazily)."""
        return self.backend.sweep(limit)

    def close(self) -> None:
        """Close this process's connections. The store reconnects if used again."""
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        ns = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"<Store {self.backend.describe()}{ns}>"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the nearest caller outside sharedstate.

    Counted from the function that calls ``warnings.warn`` (level 1), past this package's frames
    and ``contextlib``'s (``store.edit`` is entered through it), however the call came in: a store
    method, an object, the Flask extension.
    """
    internal = (_PACKAGE_DIR, contextlib.__file__)
    frame: FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    return level


class _LastWritten:
    """The entries this process last wrote with ``update``, as a guess that saves a read.

    ``update`` starts from the guess instead of reading; compare-and-set checks it, and a stale
    guess costs the round trip the read would have cost (the refusal carries the current entry).
    Bounded: at most ``max_entries`` keys, values of at most ``max_value_bytes``. Plain dict
    operations, each atomic under the GIL: no lock that a ``fork`` could inherit held.
    """

    def __init__(self, max_entries: int = 1024, max_value_bytes: int = 4096) -> None:
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        self._entries: dict[str, Entry] = {}

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def remember(self, key: str, entry: Entry | None) -> None:
        """Keep ``entry`` for ``key``; ``None`` (new version unknown) or a large value forgets it."""
        entries = self._entries
        if entry is None or (isinstance(entry.value, bytes) and len(entry.value) > self.max_value_bytes):
            entries.pop(key, None)
            return
        if key not in entries and len(entries) >= self.max_entries:
            # Drop the oldest. Another thread may be changing the dict at the same moment:
            # then skip it this time, the bound is only overshot by a few entries.
            with suppress(RuntimeError, StopIteration, KeyError):
                del entries[next(iter(entries))]
        entries[key] = entry
