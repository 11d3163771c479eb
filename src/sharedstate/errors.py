"""Exceptions raised by sharedstate.

Every exception derives from :class:`SharedStateError`, so ``except SharedStateError`` catches all of
them. Some also derive from the builtin that fits (``TypeError``, ``ValueError``, ``TimeoutError``)
so code written against the builtins keeps working.
"""

from __future__ import annotations


class SharedStateError(Exception):
    """Base class of every error raised by sharedstate."""


class NotSupportedError(SharedStateError):
    """The backend cannot do this operation natively and atomically.

    The message says what to use instead. sharedstate never emulates an atomic operation with a
    get-then-set that could lose updates.
    """


class BackendUnavailableError(SharedStateError):
    """The backend could not be reached, answered wrongly, or did not answer in bounded time.

    ``applied`` says what became of the operation: ``False`` when it certainly was not applied
    (nothing was sent: no connection, refused at connect), ``None`` when it is unknown (the request
    was sent and the answer never came: a timeout, a connection dropped mid-call), ``True`` when it
    was applied but something after it failed. The driver's exception is chained as
    ``__cause__``. The message names the URL with its password masked; the same store works again
    once the backend is back.
    """

    def __init__(self, message: str, *, applied: bool | None = False) -> None:
        super().__init__(message)
        self.applied = applied

    def __reduce__(self) -> tuple[object, ...]:
        # Keep ``applied`` across pickling (multiprocessing hands exceptions between processes).
        return (_rebuild_unavailable, (type(self), str(self), self.applied))


class LockTimeout(SharedStateError, TimeoutError):
    """A lock (or an ``edit``) could not be acquired within its ``timeout``."""


class LockNotOwnedError(SharedStateError):
    """Released or extended a lock whose lease expired or that another owner now holds."""


class ConflictError(SharedStateError):
    """A write was refused because the stored value changed underneath it.

    Raised by ``Store.edit`` when its lease expired while the body ran and another writer changed
    the value: the body's changes are not saved rather than silently overwriting the other write.
    """


class NestedUpdateError(SharedStateError, RuntimeError):
    """An ``update`` or ``edit`` of a key, or a write to it, inside an ``update`` or ``edit`` of the
    same key by the same thread or asyncio task.

    The outer one could never save: the inner write changes the key under it, so its
    compare-and-set is refused on every try (``update`` would retry forever, ``edit`` would wait
    out its own lease and raise ``ConflictError``). Raised at once, before anything is written;
    make the change in the outer update's function or the outer edit's body instead. Nesting
    updates or edits of *different* keys is fine.
    """


class SerializationError(SharedStateError, TypeError):
    """A value cannot be stored or read back.

    Raised before anything is written, naming the key and the unsupported type; or on read, when a
    stored value fails its signature check or cannot be decoded.
    """


class ValueTooLargeError(SharedStateError, ValueError):
    """An encoded value is larger than the store's ``max_value_size`` (or the backend's limit)."""


def _rebuild_unavailable(
    cls: type[BackendUnavailableError], message: str, applied: bool | None
) -> BackendUnavailableError:
    return cls(message, applied=applied)


__all__ = [
    "BackendUnavailableError",
    "ConflictError",
    "LockNotOwnedError",
    "LockTimeout",
    "NestedUpdateError",
    "NotSupportedError",
    "SerializationError",
    "SharedStateError",
    "ValueTooLargeError",
]
