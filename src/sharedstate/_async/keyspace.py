"""``AsyncKeyspace``: a backend seen through one store's namespace and codec.

What the objects, the cache and the sessions build on instead of the store's user API: key
validation and the namespace prefix, encode/decode (with the size bound), the nested-update
guard, the eviction warning, and ``update`` on an already validated full key. Imports only
downward (backends, codecs, validation, engine), so nothing above it imports in a circle.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from sharedstate import engine
from sharedstate._async import _io
from sharedstate.backends.base import AsyncBackend
from sharedstate.codecs import Codec
from sharedstate.errors import NestedUpdateError, ValueTooLargeError
from sharedstate.validation import key_text

T = TypeVar("T")

RESERVED_PREFIX = engine.RESERVED_PREFIX
_BUSY_KEYS = engine.BUSY_KEYS  # bound once: the guard runs on every write
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024


def check_store_options(namespace: str, max_value_size: int) -> None:
    """Refuse a bad ``namespace`` or ``max_value_size`` before a backend is opened."""
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


class AsyncKeyspace:
    """One store's view of its backend: namespace, codec, key checks, and ``update``.

    Holds no connection of its own (the backend does) and no lock: safe to share between the
    tasks (and, in the sync world, threads) that share the store.
    """

    def __init__(self, backend: AsyncBackend, namespace: str, codec: Codec, max_value_size: int) -> None:
        self.backend = backend
        self.namespace = namespace
        self.prefix = f"{namespace}/" if namespace else ""
        self.codec = codec
        self.max_value_size = max_value_size
        self._warned_eviction = False
        self.last_written = engine.LastWritten()

    # -- keys and values -----------------------------------------------------------------------

    def full_key(self, key: str, *, internal: bool = False, what: str = "key") -> str:
        """Validate ``key`` and return it with the namespace prefix.

        Refused: non-``str``, empty, NUL or lone surrogates (:func:`~sharedstate.validation.key_text`)
        and, unless ``internal``, the reserved prefix. ``what`` names it in messages (``"lock name"``).
        """
        # The common key, checked inline (the same checks as key_text's, and the ones below).
        plain = type(key) is str and key.isascii() and "\0" not in key
        if plain and key and not key.startswith(RESERVED_PREFIX):
            return self.prefix + key
        key_text(key, what)
        if not key:
            raise ValueError(f"{what} must not be empty")
        if not internal and key.startswith(RESERVED_PREFIX):
            raise ValueError(f"{what} {key!r}: keys starting with {RESERVED_PREFIX!r} are reserved")
        return self.prefix + key

    def encode(
        self, full_key: str, value: Any, *, shown_as: str = "value", inside: tuple[str, ...] = ()
    ) -> bytes | int:
        """Encode ``value`` for ``full_key``; raises before anything is written.

        A caller that wraps the user's value (the cache's ``{"v": result}``) passes the path of the
        wrapper's keys as ``inside`` and what the user calls the value as ``shown_as``, so an error
        names the user's own path (``result['items'][3]``), not the wrapper's.
        """
        raw = self.codec.dumps(full_key, value, shown_as=shown_as, inside=inside)
        if isinstance(raw, bytes) and len(raw) > self.max_value_size:
            raise ValueTooLargeError(
                f"value for key {full_key!r} is {len(raw)} bytes encoded, over this store's "
                f"max_value_size of {self.max_value_size} bytes"
            )
        return raw

    def decode(self, full_key: str, raw: bytes | int) -> Any:
        return self.codec.loads(full_key, raw)

    # -- the nested-update guard ---------------------------------------------------------------

    def write_key(self, key: str, what: str) -> str:
        """``full_key(key)`` for a write, refused by ``guard_write`` too: the two in one call, for
        the hot paths (``Store.incr``, ``set``...), where every Python frame shows."""
        # full_key's common case, inline; anything else goes through full_key itself.
        plain = type(key) is str and key.isascii() and "\0" not in key
        if plain and key and not key.startswith(RESERVED_PREFIX):
            full = self.prefix + key
        else:
            full = self.full_key(key)
        busy = _BUSY_KEYS.get()
        if busy and (id(self.backend), full) in busy:
            raise self._nested(full, what)
        return full

    def guard_write(self, full: str, what: str) -> None:
        """Refuse a write (``what``: ``"set"``, ``"dict item write"``) to a key that this thread or
        task is updating or editing: the outer update could never save (see :class:`NestedUpdateError`)."""
        busy = _BUSY_KEYS.get()
        if busy and (id(self.backend), full) in busy:
            raise self._nested(full, what)

    def mark_busy(self, full: str, what: str) -> contextvars.Token[frozenset[tuple[int, str]]]:
        """Mark ``full`` as updated or edited by this context; ``unmark(token)`` after."""
        busy = _BUSY_KEYS.get()
        mark = (id(self.backend), full)
        if mark in busy:
            raise self._nested(full, what)
        return _BUSY_KEYS.set(busy | {mark})

    @staticmethod
    def unmark(token: contextvars.Token[frozenset[tuple[int, str]]]) -> None:
        _BUSY_KEYS.reset(token)

    def _nested(self, full: str, what: str) -> NestedUpdateError:
        name = full[len(self.prefix) :]
        return NestedUpdateError(
            f"{what} of {name!r} inside an update() or edit() of {name!r} by the same thread or "
            f"task: the outer one could never save (the inner write changes {name!r} under it, so "
            "its compare-and-set is refused every time). Make the change in the outer update's "
            "function (return the new value) or the outer edit's body instead"
        )

    # -- eviction ------------------------------------------------------------------------------

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

    # -- read-modify-write ---------------------------------------------------------------------

    async def update(self, full: str, fn: Callable[[Any], T], default: Any, *, ttl: float | None) -> T:
        """Replace the value at the validated ``full`` key with ``fn(current)`` by compare-and-set.

        The contract is ``update``'s (see the store): ``fn`` may run more than once, no update is
        lost, a nested update of ``full`` by this context raises ``NestedUpdateError``.
        """
        token = self.mark_busy(full, "update()")
        try:
            return await self._update_loop(full, fn, default, ttl)
        finally:
            _BUSY_KEYS.reset(token)

    async def _update_loop(self, full: str, fn: Callable[[Any], T], default: Any, ttl: float | None) -> T:
        backend = self.backend
        entry = self.last_written.get(full)
        step = engine.UpdateStep(guessed=entry is not None, backoff=backend.update_backoff)
        if entry is None:
            entry = await backend.get(full)
        while True:
            try:
                current = copy.deepcopy(default) if entry is None else self.decode(full, entry.value)
                new = fn(current)
                raw = self.encode(full, new)
            except Exception:
                if not step.compute_failed():
                    raise
                # Computed from a guess that may be out of date: only the stored value may fail.
                entry = await backend.get(full)
                continue
            expected = None if entry is None else entry.version
            stored, entry = await backend.compare_and_set(full, expected, raw, ttl)
            if stored:
                self.last_written.remember(full, entry)
                return new
            # Refused, and ``entry`` is what is stored now: run again on it without reading.
            delay = step.refused()
            if delay:
                await _io.sleep(delay)


# The package directory (``sharedstate/``), one level above this module's (``_async/`` or ``_sync/``).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


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
