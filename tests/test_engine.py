"""The IO-free steps both worlds' retry loops are made of (``sharedstate.engine``)."""

from __future__ import annotations

import itertools

from sharedstate import engine


def test_backoff_delays_are_jittered_and_capped() -> None:
    delays = list(itertools.islice(engine.backoff_delays(first=0.001, cap=0.008), 12))
    assert 0.0005 <= delays[0] <= 0.001
    assert all(0.004 <= d <= 0.008 for d in delays[4:])  # capped: half the cap to the cap


def test_update_step_retries_a_guess_at_once_and_backs_off_after_a_read() -> None:
    step = engine.UpdateStep(guessed=True)
    assert step.refused() == 0.0  # a refused guess: another writer came by, retry at once
    first = step.refused()  # a refused read-modify-write: a collision, back off
    assert engine.UPDATE_FIRST_DELAY / 2 <= first <= engine.UPDATE_FIRST_DELAY
    assert all(0 < step.refused() <= engine.UPDATE_MAX_DELAY for _ in range(20))


def test_update_step_raises_only_errors_computed_from_the_stored_value() -> None:
    step = engine.UpdateStep(guessed=True)
    assert step.compute_failed() is True  # from a guess: read and run again
    assert step.compute_failed() is False  # from the stored value: raise
    assert engine.UpdateStep(guessed=False).compute_failed() is False


def test_acquire_step_deadline() -> None:
    once = engine.AcquireStep(0.0, now=100.0)
    assert once.next_delay(now=100.0) is None  # timeout=0: one attempt
    step = engine.AcquireStep(1.0, now=100.0)
    delay = step.next_delay(now=100.0)
    assert delay is not None and 0 < delay <= engine.LOCK_FIRST_DELAY
    left = step.next_delay(now=100.9999)
    assert left is not None and left <= 0.0001 + 1e-9
    assert step.next_delay(now=101.0) is None
    forever = engine.AcquireStep(None, now=0.0)
    assert all(forever.next_delay(now=1e9) is not None for _ in range(50))


def test_acquire_step_gives_up_after_lapsed_leases_in_a_row() -> None:
    step = engine.AcquireStep(None, now=0.0)
    assert [step.lease_lapsed() for _ in range(engine.MAX_LAPSED_LEASES - 1)] == [False] * 2
    step.taken_by_another()  # not in a row any more
    assert step.lease_lapsed() is False
    step.lease_lapsed()
    assert step.lease_lapsed() is True


def test_update_step_follows_the_backends_backoff() -> None:
    from sharedstate.backends.base import Backend
    from sharedstate.backends.redis import RedisBackend

    assert Backend.update_backoff == (engine.UPDATE_FIRST_DELAY, engine.UPDATE_MAX_DELAY)
    first, cap = RedisBackend.update_backoff  # a round trip per attempt: losers step aside longer
    step = engine.UpdateStep(guessed=False, backoff=(first, cap))
    assert first / 2 <= step.refused() <= first
    assert all(0 < step.refused() <= cap for _ in range(20))
