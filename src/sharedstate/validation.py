"""Checks of the arguments every layer takes: seconds and keys, each validated in this one place.

A bad argument raises before anything is sent or written, with a message that names the argument
and the value, so no layer can store a ``nan`` expiry, an eternal lease or a key that a backend
would mangle.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    import datetime

#: The shortest lease a lock (or ``edit``, or a session lock) may have. A shorter one would expire
#: before the round trip that takes it returns, so the holder could never know it held the lock.
MIN_LEASE = 0.01

#: The longest duration any seconds argument may have: 100 years. Longer ones are mistakes (or
#: attempts at "forever", which is ``None``), and past it PostgreSQL's timestamps, Redis's
#: millisecond expiries and float arithmetic on the clock stop being exact. memcached holds less
#: (its clock ends in 2038) and refuses more itself.
MAX_SECONDS = 100 * 365.25 * 24 * 3600


@overload
def seconds(
    name: str,
    value: float | datetime.timedelta,
    *,
    minimum: float = ...,
    optional: bool = ...,
    allow_zero: bool = ...,
) -> float: ...


@overload
def seconds(
    name: str,
    value: float | datetime.timedelta | None,
    *,
    minimum: float = ...,
    optional: bool = ...,
    allow_zero: bool = ...,
) -> float | None: ...


def seconds(
    name: str,
    value: float | datetime.timedelta | None,
    *,
    minimum: float = 0.0,
    optional: bool = False,
    allow_zero: bool = False,
) -> float | None:
    """``value`` as a float number of seconds: positive, finite and at least ``minimum``.

    ``name`` is the argument's name, for the message. ``None`` is accepted (and returned) only when
    ``optional`` is true (``ttl=None``: never expires; ``timeout=None``: wait as long as it takes).
    ``0`` is accepted only when ``allow_zero`` is true (a lock's ``timeout=0``: try once, do not
    wait). A :class:`datetime.timedelta` counts as its total seconds. ``bool`` is refused although
    it is an ``int``: ``ttl=True`` is a mistake, not one second.
    """
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name} must be a number of seconds, got None")
    kind = type(value)
    if kind is not int and kind is not float:
        from datetime import timedelta  # imported on first use: `import sharedstate` stays quick

        if isinstance(value, timedelta):
            value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}")
    if allow_zero and value == 0:
        return 0.0
    # ``not value > 0`` is also true for nan, which every comparison fails. The upper bound is
    # compared before any float conversion: a huge int would raise OverflowError there.
    if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    if value > MAX_SECONDS:
        raise ValueError(
            f"{name} must be at most {MAX_SECONDS:.0f} seconds (100 years; None means no limit), "
            f"got {_short(value)}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g} seconds, got {value!r}")
    return float(value)


def _short(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def key_text(key: object, what: str = "key") -> str:
    """``key`` if it is text every backend stores exactly; else a ``TypeError``/``ValueError`` naming it.

    Refused: non-``str``, NUL (C drivers and SQL text end a string there, and a
    signature over ``key + NUL + payload`` would be ambiguous), and lone surrogates (not encodable
    as UTF-8, so no backend can store them). ``what`` names the argument in the message (``"key"``,
    ``"prefix"``, ``"dict name"``). Emptiness is the caller's to check: an empty prefix is fine.
    """
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}: {key!r}")
    if "\0" in key:
        raise ValueError(f"{what} {key!r} contains a NUL character, which no backend stores")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{what} {key!r} contains a lone surrogate and is not valid UTF-8 text"
            ) from None
    return key
