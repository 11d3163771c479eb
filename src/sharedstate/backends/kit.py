"""The backend kit: the small pieces every backend needs, written once.

A backend module is its operations plus tests; what it shares with the others comes from here:

- **Keys**: :func:`successor`, the end of a prefix scan over an ordered key column.
- **Batches**: :func:`chunks`, a batch cut to what one statement or command may hold.
- **Integers**: :data:`INT64_MIN`/:data:`INT64_MAX`, :func:`fits_int64` and the two ``incr``
  errors every backend raises the same way (:func:`not_an_integer`, :func:`overflows`); for a
  group of increments applied as one (:mod:`sharedstate.backends.coalesce`),
  :func:`partial_sum_bounds` and :func:`results_as_alone`.
- **Versions**: :func:`random_version`, the token of a backend that stores one per row.
- **Fork safety**: :class:`PerProcess` (a value made on first use in each process) and
  :func:`inherit` (where the parent's connections go in a forked child: referenced, unused, never
  closed, since closing a socket that the parent's event loop watches would make it deaf).
- **Idle connections**: :func:`has_pending_input`, the free check that a pooled connection's
  server has not closed it.
- Re-exported for one import: :func:`~sharedstate.backends._failures.unavailable` (the error
  of a server that could not do an operation) and
  :func:`~sharedstate.backends.sweeping.proportional_sweep_limit`.

Everything here is IO-free except :func:`has_pending_input` (one ``poll`` with a zero timeout).
"""

from __future__ import annotations

import os
import random
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sharedstate.backends._failures import unavailable
from sharedstate.backends.sweeping import proportional_sweep_limit

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "PerProcess",
    "chunks",
    "fits_int64",
    "has_pending_input",
    "inherit",
    "not_an_integer",
    "overflows",
    "partial_sum_bounds",
    "proportional_sweep_limit",
    "random_version",
    "results_as_alone",
    "successor",
    "unavailable",
]

T = TypeVar("T")

# -- keys ------------------------------------------------------------------------------------


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: none).

    A prefix scan is ``prefix <= key < successor(prefix)``. The surrogates (U+D800..U+DFFF) are
    skipped: they cannot be encoded in UTF-8, so no key holds one and no database can be handed
    one (the successor of U+D7FF is U+E000, as in UTF-8's byte order).
    """
    while prefix:
        following = ord(prefix[-1]) + 1
        if 0xD800 <= following <= 0xDFFF:
            following = 0xE000
        if following <= 0x10FFFF:
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


# -- batches ---------------------------------------------------------------------------------


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (none for no items), in order.

    For batches larger than one statement or command should hold (SQLite's bound variables,
    memcached's key lines, one Redis command that would hold the server for long).
    """
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- integers --------------------------------------------------------------------------------

#: The signed 64-bit range every backend's counters live in (``incr`` past it raises OverflowError).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def fits_int64(value: object) -> bool:
    """Whether ``value`` is an ``int`` (not a bool) within the signed 64-bit range."""
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def not_an_integer(key: str) -> TypeError:
    """The error of ``incr`` on a key whose value is not an integer (the caller raises it)."""
    return TypeError(f"cannot incr key {key!r}: it holds a value that is not an integer")


def overflows(key: str) -> OverflowError:
    """The error of ``incr`` whose result would leave the signed 64-bit range (the caller raises it)."""
    return OverflowError(f"incr of key {key!r} overflows a signed 64-bit integer")


def partial_sum_bounds(bys: list[int]) -> tuple[int, int]:
    """The integers to which every partial sum of ``bys`` (the values of increments by ``bys``
    run one after another) can be added within the signed 64-bit range: ``low <= v <= high``;
    none if ``low > high``."""
    total = smallest = largest = 0
    for by in bys:
        total += by
        smallest, largest = min(smallest, total), max(largest, total)
    return INT64_MIN - smallest, INT64_MAX - largest


def results_as_alone(result: int, bys: list[int]) -> list[int]:
    """Each increment's value when increments by ``bys`` were applied as one, ``result`` being the
    value after all: ``result`` minus the ``by`` of every later one (its value had they run one
    after another in this order)."""
    results = [0] * len(bys)
    for i in range(len(bys) - 1, -1, -1):
        results[i] = result
        result -= bys[i]
    return results


# -- versions --------------------------------------------------------------------------------

# A generator of our own, not random's global one: application code that seeds the global one
# (random.seed(0) in every worker) must not make two processes hand out the same versions.
_VERSIONS = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_VERSIONS.seed)  # a child never repeats its parent's sequence


def random_version() -> int:
    """A new row version: random (a deleted and re-created key never gets an old version back),
    positive, below 2**62 (fits any signed 64-bit column), without a system call.

    Seeded from ``os.urandom`` at import and again in every forked child, so processes never
    share a sequence.
    """
    return _VERSIONS.getrandbits(62) + 1


#: ``random_version`` without the call, for hot paths: ``version_bits(62) + 1``. The same
#: generator (reseeded in place in a forked child, so this bound method stays valid).
version_bits = _VERSIONS.getrandbits


# -- fork safety -----------------------------------------------------------------------------

_INHERITED: list[object] = []


def inherit(resource: object) -> None:
    """Set aside, in a forked child, a resource the parent made (a connection, a pool of them).

    It stays referenced, so no finalizer closes it, and is never used: the parent's sockets stay
    the parent's (closing one that the parent's event loop watches would unregister it from the
    epoll instance the child shares, leaving the parent's connection deaf).
    """
    _INHERITED.append(resource)


class PerProcess(Generic[T]):
    """A value made on first use in each process: a forked child makes its own.

    The parent's value is never touched in a child (it goes to :func:`inherit`). Thread-safe:
    at most one value is made per process, under a lock the child replaces (the parent's may
    have been held at fork). :meth:`get` costs one ``os.getpid()`` and a comparison.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._slot: tuple[int, T] | None = None  # (pid, value): read and replaced as one
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    def get(self) -> T:
        """This process's value, made now if it has none."""
        slot = self._slot
        if slot is not None and slot[0] == os.getpid():
            return slot[1]
        with self._guard():
            slot = self._slot
            pid = os.getpid()
            if slot is not None and slot[0] == pid:
                return slot[1]
            if slot is not None:
                inherit(slot[1])
            value = self._make()
            self._slot = (pid, value)
            return value

    def current(self) -> T | None:
        """This process's value if it has made one, else None (never makes one)."""
        slot = self._slot
        return slot[1] if slot is not None and slot[0] == os.getpid() else None

    def take(self) -> T | None:
        """Remove and return this process's value (None if it has none), e.g. to close it.

        A value inherited from the parent is set aside (:func:`inherit`), not returned.
        """
        with self._guard():
            slot, self._slot = self._slot, None
        if slot is None:
            return None
        if slot[0] != os.getpid():
            inherit(slot[1])
            return None
        return slot[1]

    def _guard(self) -> threading.Lock:
        if self._lock_pid != os.getpid():  # a forked child: the parent's lock may be held forever
            self._lock, self._lock_pid = threading.Lock(), os.getpid()
        return self._lock


# -- idle connections ------------------------------------------------------------------------


if hasattr(select, "poll"):
    _poll, _POLLIN = select.poll, select.POLLIN  # looked up once: this runs on every lend

    def has_pending_input(fileobj: Any) -> bool:
        """Whether anything (data or end of stream) is waiting to be read on an idle connection.

        ``fileobj``: a socket or a file descriptor. On a connection lent from a pool this means
        the server closed it (restart, idle timeout) or is out of step with us: reconnect before
        use. A free check (no round trip); OS errors propagate to the caller.
        """
        poller = _poll()
        poller.register(fileobj, _POLLIN)
        return bool(poller.poll(0))

else:  # pragma: no cover - platforms without poll() (Windows)

    def has_pending_input(fileobj: Any) -> bool:
        """Whether anything is waiting to be read on an idle connection (``select`` version)."""
        readable, _, _ = select.select([fileobj], [], [], 0)
        return bool(readable)
