"""The backend contract: what every storage engine must do natively and atomically.

Everything above this layer (``Store``, counters, dicts, locks, caches, sessions) is written only in
terms of these methods and never branches on the backend's type. Each method is abstract: there is
no default that fakes atomicity with a get-then-set. A backend that cannot do an operation natively
and atomically raises :class:`~sharedstate.errors.NotSupportedError` saying what to use instead.

Guarantees every implementation gives (the conformance suite in ``tests/`` checks them):

- Each operation is atomic and linearizable per key, across threads, processes and, for server
  backends, machines.
- An expired entry is never returned, and writes treat it as absent. Sweeping is lazy and bounded.
- Nothing is evicted silently, except where the backend's documentation says so (memcached, and
  ``memory://`` entries with a TTL when ``max_entries`` is set).
- A method that returns has been applied by the backend; a method that raises has not, except
  :class:`~sharedstate.errors.BackendUnavailableError` raised after the request was sent, when the
  outcome is unknown (the message says so).
- The batched methods (``get_many``, ``set_many``, ``delete_many``) are atomic per key, not across
  keys: another client may see some keys of a batch written and others not yet. Each is as few
  round trips as the server allows (one statement, ``MGET``, one pipelined write); a batch that
  fails part way raises ``BackendUnavailableError`` with ``applied=None`` (some keys may have been
  written) unless the backend knows better (a transaction that rolled back: ``False``).

Keys are full keys (namespace included), non-empty ``str``. Values are :data:`RawValue`: ``int`` for
native integers (what ``incr`` works on) and ``bytes`` for everything the codec encoded. A backend
may hand back an integer it stores as text as ``bytes`` (``b"42"``); the codec reads both. ``ttl`` is
in seconds, ``None`` means no expiry.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import NamedTuple

RawValue = bytes | int
"""A value as the backend stores it: codec output (``bytes``) or a native integer."""

Version = int | bytes | str
"""An opaque token that changes whenever an entry is written.

Compare it only with tokens of the same backend, by passing it back to ``compare_and_set`` or
``delete_if_version``. A deleted and re-created entry never gets its old token back by design, except
where a backend documents that versions are value digests (then compare-and-set means "if the value
is still the one I read").
"""


class Entry(NamedTuple):
    """One stored entry: its raw value and its version token."""

    value: RawValue
    version: Version


class CasResult(NamedTuple):
    """What :meth:`Backend.compare_and_set` did.

    ``stored``: whether the value was written. ``entry``: if stored, the entry as written (or
    ``None`` where the backend cannot learn the new version in the same round trip); if refused,
    the live entry now at the key (``None``: absent).
    """

    stored: bool
    entry: Entry | None


class Backend(abc.ABC):
    """Storage engine contract. One instance serves every thread of a process.

    Implementations are safe to share between threads. Across ``fork`` they must never share a
    connection with the parent: the child opens its own on first use.
    """

    #: URL scheme(s) this backend is registered under; set by subclasses.
    schemes: tuple[str, ...] = ()

    #: Whether the backend may drop entries without a TTL on its own (memcached may). The store
    #: warns once when state that is not a cache is kept on such a backend.
    may_evict: bool = False

    #: How ``update`` backs off after a collision (its compare-and-set of a value it had just read
    #: was refused): (first, cap) in seconds of jittered, doubling waits. The default suits a
    #: compare-and-set that costs microseconds; a server backend may wait longer, so the writer that
    #: got in keeps the server to itself (measured: ``benchmarks/README.md``).
    update_backoff: tuple[float, float] = (0.0001, 0.01)

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str) -> Backend:
        """Open a backend from its URL; options come from the query string."""

    def attach(self, namespace: str) -> None:  # noqa: B027 - a hook, not an operation
        """Called once by the ``Store`` that opened this backend, with the store's namespace.

        Nothing to do for most backends. ``memory://`` uses it to refuse a second process of the
        same server on the same namespace (each process would have its own copy of the data).
        """

    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """Return the live entry at ``key``, or ``None`` if absent or expired."""

    @abc.abstractmethod
    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        """Store ``value`` at ``key`` unconditionally, replacing any entry and its expiry."""

    @abc.abstractmethod
    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent (or expired). Return whether it was stored."""

    @abc.abstractmethod
    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        """Store ``value`` only if the entry is still as the caller last saw it.

        ``expected`` is the version the caller read, or ``None`` for "only if absent" (an expired
        entry counts as absent). Either way the answer comes in the same round trip: on success
        the entry as written (its new version included), on refusal the live entry that refused it,
        so a read-modify-write loop retries without reading again.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``. Return whether a live entry was removed."""

    @abc.abstractmethod
    def delete_if_version(self, key: str, version: Version) -> bool:
        """Remove ``key`` only if its version is still ``version``. Return whether it was removed."""

    @abc.abstractmethod
    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Add ``by`` to the integer at ``key`` and return the new value.

        A missing or expired key starts at 0; ``ttl`` applies only when this call creates the entry
        (an existing entry keeps its expiry). Raises ``TypeError`` if the stored value is not an
        integer, leaving it unchanged.
        """

    @abc.abstractmethod
    def touch(self, key: str, ttl: float | None) -> bool:
        """Give a live entry a new expiry (``None``: never expires) without rewriting its value.

        Returns whether the entry existed. The version does not change.
        """

    @abc.abstractmethod
    def expiry(self, key: str) -> float | None:
        """Seconds until the live entry at ``key`` expires (``None``: it never does).

        Raises ``KeyError(key)`` if the key is absent or expired. The answer is the backend's own
        bookkeeping: a backend that rounds expiry (memcached: whole seconds, plus one tick) says
        so in its documentation. Never negative.
        """

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """The live entries at ``keys`` (distinct keys), in the order given; absent keys are left out.

        Atomic per key, not across keys (see the module docstring).
        """

    @abc.abstractmethod
    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        """Store every value of ``items`` as :meth:`set` would, all with the same ``ttl``.

        Atomic per key, not across keys. Values are already encoded and checked by the caller; a
        backend that refuses one for its own limits (memcached's item size) does so before
        sending anything.
        """

    @abc.abstractmethod
    def delete_many(self, keys: Sequence[str]) -> int:
        """Remove ``keys`` (distinct keys); return how many live entries were removed.

        Atomic per key, not across keys.
        """

    @abc.abstractmethod
    def ping(self) -> None:
        """Return if the backend answers (one round trip, nothing written); raise
        :class:`~sharedstate.errors.BackendUnavailableError` otherwise, ``applied`` False when
        the ping could not be sent and None when it was sent and no answer came (a ping changes
        nothing either way)."""

    @abc.abstractmethod
    def scan(self, prefix: str = "") -> Iterator[str]:
        """Yield the live keys that start with ``prefix``, in no particular order.

        Keys written or deleted during the scan may or may not be seen; no key is seen twice.
        """

    @abc.abstractmethod
    def sweep(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired entries now; return how many were removed.

        Backends whose server expires entries itself (Redis, memcached) return 0.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections held by this process. The backend may be used again afterwards."""

    def describe(self) -> str:
        """A one-line description for logs and errors, with any password masked."""
        return type(self).__name__


class AsyncBackend(abc.ABC):
    """The same contract as :class:`Backend`, for ``asyncio``: every operation is a coroutine.

    Method for method, arguments, results, atomicity and errors are those of :class:`Backend`;
    only the waiting differs. No method ever blocks the event loop: a backend whose driver has an
    asyncio API awaits it; one whose driver blocks (sqlite3, pymemcache) runs each blocking call
    off the loop, and every wait of its own (a busy database, a full pool, a retry) is awaited.

    One instance serves every task of one event loop, in one process. Across ``fork`` it never
    shares a connection with the parent, as for :class:`Backend`.
    """

    schemes: tuple[str, ...] = ()
    may_evict: bool = False
    update_backoff: tuple[float, float] = (0.0001, 0.01)  # see Backend.update_backoff

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str) -> AsyncBackend:
        """Open a backend from its URL (the same URLs as the sync backend); connects lazily."""

    def attach(self, namespace: str) -> None:  # noqa: B027 - a hook, not an operation
        """Called once by the ``AsyncStore`` that opened this backend (see :meth:`Backend.attach`)."""

    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None:
        """See :meth:`Backend.get`."""

    @abc.abstractmethod
    async def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        """See :meth:`Backend.set`."""

    @abc.abstractmethod
    async def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        """See :meth:`Backend.add`."""

    @abc.abstractmethod
    async def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        """See :meth:`Backend.compare_and_set`."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """See :meth:`Backend.delete`."""

    @abc.abstractmethod
    async def delete_if_version(self, key: str, version: Version) -> bool:
        """See :meth:`Backend.delete_if_version`."""

    @abc.abstractmethod
    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """See :meth:`Backend.incr`."""

    @abc.abstractmethod
    async def touch(self, key: str, ttl: float | None) -> bool:
        """See :meth:`Backend.touch`."""

    @abc.abstractmethod
    async def expiry(self, key: str) -> float | None:
        """See :meth:`Backend.expiry`."""

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """See :meth:`Backend.get_many`."""

    @abc.abstractmethod
    async def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        """See :meth:`Backend.set_many`."""

    @abc.abstractmethod
    async def delete_many(self, keys: Sequence[str]) -> int:
        """See :meth:`Backend.delete_many`."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """See :meth:`Backend.ping`."""

    @abc.abstractmethod
    def scan(self, prefix: str = "") -> AsyncIterator[str]:
        """See :meth:`Backend.scan`; iterate with ``async for``."""

    @abc.abstractmethod
    async def sweep(self, limit: int = 1000) -> int:
        """See :meth:`Backend.sweep`."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release this process's connections; the backend may be used again afterwards."""

    def describe(self) -> str:
        """A one-line description for logs and errors, with any password masked."""
        return type(self).__name__
