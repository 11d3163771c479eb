"""Lazy sweeping of expired rows, paced by writes: the part every table-backed backend shares.

Backends whose server does not expire entries itself (SQLite, PostgreSQL) delete expired rows in
the writing thread, after its write has committed. A fixed batch every so many writes falls behind
a load where most writes create new keys with a TTL (cache entries, visitor sessions): the expired
rows then pile up without bound. Sweeping in proportion to the writes keeps them bounded: each sweep
may remove twice as many rows as the process wrote since its last sweep, so it also catches up on a
backlog (rows of processes that exited, sweeps skipped while the database was busy), yet one call
never deletes more than ``max_batch`` rows, so no write waits on a long delete.
"""

from __future__ import annotations


def proportional_sweep_limit(writes_since_sweep: int, every_writes: int, max_batch: int) -> int:
    """How many expired rows a sweep may delete after ``writes_since_sweep`` writes.

    Twice the writes (at least ``every_writes``, so a sweep triggered by time after few writes
    still clears a batch), at most ``max_batch``.
    """
    return min(max_batch, max(every_writes, 2 * writes_since_sweep))
