"""The algorithms above the backend contract, without IO: no sleeping, no backend calls.

The retry loops of ``update``, ``Lock.acquire`` and ``cached`` are written once (async, in
``sharedstate._async``; the sync ones are generated from them). What each loop decides between two
backend calls lives here, as plain objects both worlds share: how long to back off, whether a
refused compare-and-set is a collision, when a lock wait runs out, how often a cache waiter polls.
The caller does the IO and the waiting (``await _io.sleep(delay)`` or ``time.sleep(delay)``).

Also here, because both worlds share them: the keys this context is updating (the nested-update
guard) and the entries this process last wrote (the guess that saves ``update`` a read).
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Iterator
from contextlib import suppress

from sharedstate.backends.base import Entry

#: Keys the library keeps for itself (locks, fencing counters, caches, sessions) start with this.
RESERVED_PREFIX = "_ss:"

# update() backs off after each collision (a refused compare-and-set of a value it had just read):
# by default from about one round trip (0.1 ms) up to 10 ms. Losers step aside, and the writer that
# got in keeps writing at one round trip per update instead of every writer failing in turn (see
# benchmarks/README.md). A backend may ask for another schedule (``Backend.update_backoff``).
UPDATE_FIRST_DELAY = 0.0001
UPDATE_MAX_DELAY = 0.01
# Lock waits: from 1 ms up to 50 ms between attempts.
LOCK_FIRST_DELAY = 0.001
LOCK_MAX_DELAY = 0.05
# cached(): a caller waiting for another's computation polls from 2 ms up to 100 ms.
POLL_FIRST_DELAY = 0.002
POLL_MAX_DELAY = 0.1
# Lock.acquire gives up (LockTimeout) when the lease it took ran out before it could confirm it
# this many times in a row: the lease is shorter than a few round trips and would never hold.
MAX_LAPSED_LEASES = 3


def backoff_delays(first: float = 0.001, cap: float = 0.05) -> Iterator[float]:
    """Jittered exponential delays for retry loops (compare-and-set conflicts, lock waits)."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


def poll_delays() -> Iterator[float]:
    """The waits of a ``cached`` caller polling for a value another caller computes."""
    return backoff_delays(first=POLL_FIRST_DELAY, cap=POLL_MAX_DELAY)


class UpdateStep:
    """What ``update`` does next, after computing or after a refused compare-and-set.

    ``update`` may start from a guess (the entry this process last wrote) instead of reading.
    A value computed from a guess may be out of date: an error computing it means "read and try
    again", not "raise". A refused guess only means another writer came by since: retry at once.
    A refused read-modify-write is a collision: back off, so one writer gets a run of successful
    writes instead of all of them failing in turn.
    """

    __slots__ = ("_backoff", "_delays", "guessed")

    def __init__(
        self, guessed: bool, backoff: tuple[float, float] = (UPDATE_FIRST_DELAY, UPDATE_MAX_DELAY)
    ) -> None:
        self.guessed = guessed
        self._backoff = backoff  # (first, cap) of the waits after collisions, in seconds
        self._delays: Iterator[float] | None = None

    def compute_failed(self) -> bool:
        """The function (or the codec) raised: whether to read the stored value and run it again
        (``True``: it ran on a guess) instead of raising."""
        if not self.guessed:
            return False
        self.guessed = False
        return True

    def refused(self) -> float:
        """The compare-and-set was refused: seconds to wait (0: none) before running again on the
        entry the refusal returned."""
        if self.guessed:
            self.guessed = False
            return 0.0
        if self._delays is None:
            self._delays = backoff_delays(*self._backoff)
        return next(self._delays)


class AcquireStep:
    """The schedule of one lock wait: attempts, backoff, deadline and lapsed leases.

    ``wait``: seconds (``None``: as long as it takes; ``0``: one attempt). ``now`` is a monotonic
    clock reading at the start.
    """

    __slots__ = ("_deadline", "_delays", "lapsed")

    def __init__(self, wait: float | None, now: float) -> None:
        self._deadline = None if wait is None else now + wait
        self._delays = backoff_delays(first=LOCK_FIRST_DELAY, cap=LOCK_MAX_DELAY)
        self.lapsed = 0  # leases that ran out before the calls that took them returned, in a row

    def lease_lapsed(self) -> bool:
        """The lock was taken but the lease ran out before it could be confirmed: whether that
        happened too often in a row to go on (a lease too short for this backend)."""
        self.lapsed += 1
        return self.lapsed >= MAX_LAPSED_LEASES

    def taken_by_another(self) -> None:
        """The lock was held by someone else: a lapsed lease is no longer "in a row"."""
        self.lapsed = 0

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when the wait has run out."""
        delay = next(self._delays)
        if self._deadline is not None:
            left = self._deadline - now
            if left <= 0:
                return None
            delay = min(delay, left)
        return delay


# The keys this thread or asyncio task is updating or editing right now, as (id of the backend,
# full key). Inside ``update("k", fn)``'s fn or ``edit("k")``'s body, another update, edit or write
# of "k" by the same context would be refused the outer compare-and-set every time (the outer one
# retries forever, or stalls for its lease and conflicts): it raises ``NestedUpdateError`` at once.
# A frozenset, replaced (never mutated), so tasks that copied the context do not share changes.
BUSY_KEYS: contextvars.ContextVar[frozenset[tuple[int, str]]] = contextvars.ContextVar(
    "sharedstate_busy_keys", default=frozenset()
)


class LastWritten:
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
