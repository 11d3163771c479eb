"""Property-based bad-input tests: arbitrary keys, values, ttls and URLs on every backend.

Every call either succeeds and round-trips exactly (``get`` returns an equal value of the same
type, ``keys()`` lists the key) or raises a clear error: a ``SharedStateError``, ``TypeError`` or
``ValueError`` with a message. Never another exception type, never a hang (each example has a
deadline), never a secret in a message, and never damage to what is already stored: a sentinel
written first is checked after every example.

Bounded (the hypothesis profile in conftest.py: a few dozen examples per backend, a fixed seed
under CI); the ``slow``-marked variants run many more (``pytest -m slow tests/test_properties.py``).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sharedstate import (
    BackendUnavailableError,
    NotSupportedError,
    SharedStateError,
    Store,
    ValueTooLargeError,
)
from sharedstate.errors import LockNotOwnedError
from sharedstate.store import RESERVED_PREFIX
from sharedstate.validation import MIN_LEASE
from tests import servers

SENTINEL_KEY = "~sentinel~"
SENTINEL_VALUE = {"n": 1, "when": dt.date(2020, 2, 29), "ids": (1, 2), "raw": b"\x00\xff"}

#: ``slow`` runs this many times the examples of the bounded run.
SLOW_FACTOR = 16


@pytest.fixture(params=[1, pytest.param(SLOW_FACTOR, marks=pytest.mark.slow)], ids=["bounded", "thorough"])
def budget(request: pytest.FixtureRequest) -> settings:
    """The hypothesis settings for one property: the loaded profile, or many more examples."""
    current = settings()
    return settings(current, max_examples=current.max_examples * request.param)


# -- what counts as a clear error ------------------------------------------------------------


def assert_clear_error(exc: BaseException, *secrets: str) -> None:
    """``exc`` is one of the errors bad input may raise, says something, and hides ``secrets``.

    Refused as well although they subclass ``ValueError``: a ``UnicodeError`` leaking from an
    encoder (it names no key or argument). And ``BackendUnavailableError``: every server is up
    here, so blaming the backend for bad input would send the user to the wrong place.
    """
    assert isinstance(exc, (SharedStateError, TypeError, ValueError)), repr(exc)
    assert not isinstance(exc, UnicodeError), f"a raw encoding error escaped: {exc!r}"
    assert not isinstance(exc, BackendUnavailableError), f"bad input blamed on the backend: {exc!r}"
    assert str(exc).strip(), f"{type(exc).__name__} without a message"
    shown = "".join(traceback.format_exception(exc))  # the whole chain, as a log would show it
    for secret in secrets:
        assert secret not in shown, f"secret {secret!r} shown in {shown}"


@contextmanager
def clear_error_or_success(*secrets: str) -> Iterator[list[BaseException]]:
    """Run the body; an exception it raises must be a clear error (recorded, not raised)."""
    raised: list[BaseException] = []
    try:
        yield raised
    except Exception as exc:
        assert_clear_error(exc, *secrets)
        raised.append(exc)


class _Hung(BaseException):
    """Raised by the alarm inside a call that hangs. Not an ``Exception``: no ``except Exception``
    in the library can swallow it; :func:`returns_within` turns it into the test's failure."""


@contextmanager
def returns_within(seconds: float, what: str) -> Iterator[None]:
    """Fail (instead of waiting forever) if the body takes longer than ``seconds``.

    A hypothesis deadline is only checked once an example returns, so it cannot stop a call that
    never does. SIGALRM interrupts the waits and sleeps inside; pytest-timeout's own alarm (the
    whole test's) is put back afterwards with the time it had left.
    """

    def alarm(signum: int, frame: object) -> None:
        raise _Hung

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Hung:
        raise AssertionError(f"{what} did not return within {seconds:g} s: a hang") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


#: The longest any single call may take (a lock wait in these tests is bounded at 5 s).
HANG = 10.0


# -- exact round trips -----------------------------------------------------------------------


def assert_same(expected: Any, got: Any) -> None:
    """``got`` equals ``expected`` with the same type at every level (1 is not True, -0.0 not 0.0).

    Iterative, so the deeply nested values the strategies draw cannot exhaust the stack here.
    """
    stack = [(expected, got, "value")]
    while stack:
        a, b, path = stack.pop()
        assert type(a) is type(b), f"{path}: {type(b).__name__} {b!r}, stored {type(a).__name__} {a!r}"
        if isinstance(a, float):
            assert repr(a) == repr(b), f"{path}: {b!r}, stored {a!r}"  # nan, -0.0 and inf exactly
        elif isinstance(a, Decimal):
            assert str(a) == str(b), f"{path}: {b!r}, stored {a!r}"  # NaN, sNaN and 1.10 exactly
        elif isinstance(a, dict):
            assert list(a) == list(b), f"{path}: keys {list(b)!r}, stored {list(a)!r}"
            stack.extend((a[k], b[k], f"{path}[{k!r}]") for k in a)
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), f"{path}: length {len(b)}, stored {len(a)}"
            stack.extend((x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
        elif isinstance(a, (set, frozenset)):
            assert a == b, f"{path}: {b!r}, stored {a!r}"
            by_value = {x: x for x in b}
            stack.extend((x, by_value[x], f"{path}{{{x!r}}}") for x in a)
        elif isinstance(a, dt.datetime):
            assert (a, a.tzinfo is None, a.utcoffset()) == (b, b.tzinfo is None, b.utcoffset()), path
        else:
            assert a == b, f"{path}: {b!r}, stored {a!r}"


@contextmanager
def sentinel_kept(store: Store) -> Iterator[None]:
    """The sentinel written before the body is intact after it (and the body failed nothing)."""
    store.set(SENTINEL_KEY, SENTINEL_VALUE)
    yield
    assert_same(SENTINEL_VALUE, store.get(SENTINEL_KEY))


def is_memcached(store: Store) -> bool:
    return store.url.startswith("memcached")


def assert_listed(store: Store, key: str) -> None:
    """``keys()`` lists ``key``; memcached cannot list keys and says so."""
    if is_memcached(store):
        with pytest.raises(NotSupportedError):
            store.keys()
        return
    listed, under_key = store.keys(), store.keys(key)
    assert key in listed, f"{key!r} not listed by keys()"
    assert key in under_key, f"{key!r} not listed by keys({key!r})"


# -- keys ------------------------------------------------------------------------------------

_ANY_CHAR = st.characters(exclude_categories=())  # surrogates and NUL included
_ODD_KEYS = [
    "\0",
    "a\0b",
    "\ud800",
    "a\udfffb",
    RESERVED_PREFIX,
    f"{RESERVED_PREFIX}lock:x",
    "_ss",
    "_SS:x",
    " ",
    "\n",
    "%",
    "%2F",
    ":",
    "a:b",
    "/",
    "a/b",
    "~",
    "*",
    "?",
    "[",
    "\\",
    "'",
    '"',
    "\u200b",
    "\ufeff",
    "\U0010ffff",
    "é" * 126,  # 252 bytes: just over memcached's key limit
    "k" * 250,
    "k" * 251,
]


def _long(piece: str, times: int) -> str:
    return piece * times


KEYS = st.one_of(
    st.text(_ANY_CHAR, max_size=30),
    st.sampled_from(_ODD_KEYS),
    st.builds(lambda tail: RESERVED_PREFIX + tail, st.text(_ANY_CHAR, max_size=10)),
    st.builds(_long, st.text(_ANY_CHAR, min_size=1, max_size=4), st.integers(64, 3000)),  # very long
    st.text(_ANY_CHAR, min_size=200, max_size=3000),  # very long, not compressible
)


def text_is_storable(text: str) -> bool:
    """No NUL and no lone surrogate: text every backend stores exactly."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


def key_is_valid(key: str) -> bool:
    """The documented key rules: non-empty storable text, not reserved (``_ss:``)."""
    return bool(key) and text_is_storable(key) and not key.startswith(RESERVED_PREFIX)


def exercise_key(store: Store, key: str) -> None:
    """Every operation that takes a key, on ``key``: round trips, listing, and cleaning up."""
    value = {"key": "x", "n": [1, 2.5, None]}
    store.set(key, value)
    assert_same(value, store.get(key))
    assert_listed(store, key)
    assert store.add(key, "other") is False
    assert_same(value, store.get(key))
    assert store.touch(key, 3600) is True
    assert store.delete(key) is True
    assert store.get(key, "absent") == "absent"
    assert store.add(key, "added") is True and store.get(key) == "added"
    assert store.delete(key) is True
    assert store.incr(key) == 1 and store.incr(key, 41) == 42
    assert store.counter(key).get() == 42
    assert store.delete(key) is True
    assert store.update(key, lambda v: (v or 0) + 1) == 1
    assert store.delete(key) is True
    assert store.get(key) is None


def exercise_name(store: Store, name: str) -> None:
    """``name`` as the name of a dict and of a lock."""
    named = store.dict(name)
    named["item"] = 1
    assert named["item"] == 1
    del named["item"]
    lock = store.lock(name, ttl=30)
    lock.acquire(timeout=5)
    lock.release()


def refuse_key(store: Store, key: str) -> None:
    """Every operation that takes a key refuses ``key`` with a TypeError or ValueError."""
    calls: list[Callable[[], object]] = [
        lambda: store.get(key),
        lambda: store.set(key, 1),
        lambda: store.add(key, 1),
        lambda: store.delete(key),
        lambda: store.incr(key),
        lambda: store.touch(key, 10),
        lambda: store.counter(key).incr(),
        lambda: store.update(key, lambda v: 1),
    ]
    for call in calls:
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert_clear_error(info.value)


def refuse_name(store: Store, name: str) -> None:
    """A dict or lock name that is not a valid key is refused with a TypeError or ValueError."""
    calls: list[Callable[[], object]] = [
        lambda: store.dict(name).__setitem__("item", 1),
        lambda: store.lock(name).acquire(timeout=5),
    ]
    for call in calls:
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert_clear_error(info.value)


def exercise_item(store: Store, item: str) -> None:
    """``item`` as a dict item name: empty and ``_ss:`` names are fine there, unstorable text is not."""
    items = store.dict("d")
    if not text_is_storable(item):
        with pytest.raises((TypeError, ValueError)) as info:
            items[item] = 1
        assert_clear_error(info.value)
        return
    items[item] = {"item": item}
    assert_same({"item": item}, items[item])
    if not is_memcached(store):
        assert item in list(items)
    del items[item]
    assert item not in items


def test_arbitrary_keys(store: Store, budget: settings) -> None:
    @budget
    @given(key=KEYS)
    def check(key: str) -> None:
        assume(key != SENTINEL_KEY)
        with sentinel_kept(store), returns_within(HANG, f"operations on key {key!r}"):
            if key_is_valid(key):
                exercise_key(store, key)
            else:
                refuse_key(store, key)

    check()


def test_arbitrary_names(store: Store, budget: settings) -> None:
    """The same texts as names of dicts and locks, and as dict item names."""

    @budget
    @given(name=KEYS)
    def check(name: str) -> None:
        with sentinel_kept(store), returns_within(HANG, f"dict and lock named {name!r}"):
            if key_is_valid(name):
                exercise_name(store, name)
            else:
                refuse_name(store, name)
            exercise_item(store, name)

    check()


# -- values ----------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1


_DAY = dt.timedelta(hours=23, minutes=59)
_OFFSETS = st.timedeltas(min_value=-_DAY, max_value=_DAY)
_TZ = st.one_of(st.none(), st.just(dt.timezone.utc), st.builds(dt.timezone, _OFFSETS))
_TEXT = st.text(_ANY_CHAR, max_size=20)
_TAGGED = st.one_of(
    st.datetimes(timezones=_TZ),
    st.dates(),
    st.uuids(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.binary(max_size=40),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**40]),
    st.floats(),
    _TEXT,
    _TAGGED,
)
# Set items must hash: no Decimal (sNaN does not), no nan (never equal to itself, so no exact check).
_HASHABLE = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    _TEXT,
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
    st.uuids(),
    st.dates(),
    st.tuples(st.integers(), _TEXT),
)
_DICT_KEYS = st.one_of(_TEXT, st.sampled_from(["$dict", "$tuple", "$uuid", "$bytes", "$", "$x"]))


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(_DICT_KEYS, children, max_size=5),
        st.sets(_HASHABLE, max_size=5),
        st.frozensets(_HASHABLE, max_size=5),
    )


def holds_lone_surrogate(value: Any) -> bool:
    """Whether any str inside ``value`` (keys and items included) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= char <= "\udfff" for char in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return False


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


SUPPORTED_VALUES = st.one_of(
    st.recursive(_SCALARS, _containers, max_leaves=20),
    st.integers(1, 3000).map(_nested),  # deep: stored and read back, or refused up front
)

_UNSUPPORTED = st.sampled_from(
    [object(), 1j, Path("/x"), Color.RED, range(3), bytearray(b"x"), memoryview(b"x"), Ellipsis, print]
)
UNSUPPORTED_VALUES = st.one_of(
    _UNSUPPORTED,
    st.builds(lambda good, bad: [good, bad], SUPPORTED_VALUES, _UNSUPPORTED),
    st.builds(lambda good, bad: {"good": good, "bad": (bad,)}, SUPPORTED_VALUES, _UNSUPPORTED),
    st.builds(lambda k: {k: "value"}, st.one_of(st.integers(), st.none(), st.tuples(_TEXT), st.floats())),
)


def value_writes(store: Store) -> dict[str, Callable[[Any], object]]:
    """Every way to write a value, each to its own key (``k`` holds ``"original"`` before)."""
    return {
        "set": lambda v: store.set("k", v),
        "add": lambda v: store.add("new", v),
        "update": lambda v: store.update("k", lambda _old: v),
        "dict": lambda v: store.dict("d").__setitem__("item", v),
        "edit": lambda v: _edit_to(store, v),
    }


def _edit_to(store: Store, value: Any) -> None:
    with store.edit("e", default=[]) as current:
        current[:] = [value]


def read_back(store: Store, how: str) -> Any:
    if how == "dict":
        return store.dict("d")["item"]
    if how == "edit":
        return store.get("e")[0]
    return store.get("new" if how == "add" else "k")


def reset_value_keys(store: Store) -> None:
    store.set("k", "original")
    store.delete("new")
    store.dict("d")["item"] = "original"
    store.set("e", ["original"])


def test_arbitrary_values(store: Store, budget: settings) -> None:
    @budget
    @given(value=SUPPORTED_VALUES)
    def check(value: Any) -> None:
        with sentinel_kept(store):
            for how, write in value_writes(store).items():
                reset_value_keys(store)
                with returns_within(HANG, how), clear_error_or_success() as raised:
                    write(value)
                if raised:
                    # Refused (a value nested past what can be read back, or text that is not
                    # UTF-8): nothing was written.
                    message = str(raised[0])
                    assert "nested" in message or (
                        "lone surrogate" in message and holds_lone_surrogate(value)
                    ), f"{how}: {raised[0]!r}"
                    assert read_back(store, how) in ("original", None), how
                else:
                    assert_same(value, read_back(store, how))

    check()


def test_unsupported_values(store: Store, budget: settings) -> None:
    @budget
    @given(value=UNSUPPORTED_VALUES)
    def check(value: Any) -> None:
        with sentinel_kept(store):
            for how, write in value_writes(store).items():
                reset_value_keys(store)
                with returns_within(HANG, how), pytest.raises(TypeError) as info:
                    write(value)
                assert_clear_error(info.value)
                assert read_back(store, how) in ("original", None), how

    check()


def test_arbitrary_max_value_size(store_url: str, namespace: str, budget: settings) -> None:
    """``max_value_size`` is a positive, finite number (not a bool) or refused; an accepted one is
    enforced exactly. ``nan`` would disable the limit silently: every comparison with it is false."""

    @budget
    @given(
        size=st.one_of(
            st.integers(),
            st.floats(),
            st.booleans(),
            st.none(),
            st.sampled_from([math.nan, math.inf, 1e300, 2**63, Decimal(100), "100"]),
        )
    )
    def check(size: Any) -> None:
        try:
            store = Store(store_url, namespace=namespace, max_value_size=size)
        except Exception as exc:
            assert_clear_error(exc)
            return
        with store:
            number = isinstance(size, (int, float)) and not isinstance(size, bool)
            assert number and 0 < size < math.inf, f"max_value_size={size!r} was accepted"
            limit = math.floor(size)
            if limit < 1000:
                with pytest.raises(ValueTooLargeError):
                    store.set("big", "x" * limit)  # limit + 2 bytes encoded, with the quotes
                if limit >= 2:
                    store.set("fits", "x" * (limit - 2))
                    assert store.get("fits") == "x" * (limit - 2)

    check()


# -- ttls ------------------------------------------------------------------------------------

TTLS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),  # nan, inf, -inf, negative, 0, subnormal, huge
    st.integers(),  # negative, 0, and beyond any float
    st.sampled_from(
        [
            *(0, 0.0, -0.0, 5e-324, 1e-300, 0.001, 0.01, 1, 30, 3600, 30 * 86400, 30 * 86400 + 1),
            *(2**31, 2**32, 2**63, 1e18, 1e300, 10**400, math.inf, -math.inf, math.nan),
        ]
    ),
    st.timedeltas(),
    st.sampled_from(["10", b"10", [1], Decimal("10"), Fraction(1, 2), dt.datetime(2030, 1, 1)]),
)
TEN_YEARS = 10 * 365 * 86400
#: A ttl at least this long cannot lapse between a write and the read right after it.
LONG_ENOUGH = 5.0


def ttl_seconds(ttl: Any) -> float | None:
    """``ttl`` as seconds if it is a number (or timedelta) sharedstate could take, else None."""
    if isinstance(ttl, dt.timedelta):
        return ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        return None
    try:
        return float(ttl)
    except OverflowError:
        return math.inf  # an int beyond any float: as good as infinite


def ttl_must_fail(ttl: Any) -> bool:
    """Not a number of seconds, or not positive and finite (``None`` is handled by the caller)."""
    seconds = ttl_seconds(ttl)
    if seconds is None:
        return not isinstance(ttl, dt.timedelta)
    return not (seconds > 0 and math.isfinite(seconds)) and not isinstance(ttl, dt.timedelta)


def ttl_must_work(ttl: Any, minimum: float) -> bool:
    """An ordinary ttl: a plain number between ``minimum`` and ten years (timedelta may be refused)."""
    if isinstance(ttl, (bool, dt.timedelta)) or not isinstance(ttl, (int, float)):
        return False
    return minimum <= ttl <= TEN_YEARS


Write = Callable[[], Any]
Read = Callable[[], Any]


def ttl_writes(store: Store, ttl: Any) -> dict[str, tuple[Write, Read]]:
    """Every call taking a ttl (or a lease): a write returning what to expect, and its read."""

    def locked() -> str:
        lock = store.lock("L", ttl=ttl)
        lock.acquire(timeout=5)
        try:
            lock.release()
        except LockNotOwnedError:
            assert (ttl_seconds(ttl) or 0) < LONG_ENOUGH  # only a short lease may lapse first
        return "released"

    def edited() -> dict[str, str]:
        with store.edit("e", default={}, lease=ttl) as obj:
            obj["x"] = "edited"
        return {"x": "edited"}

    def cached_call() -> int:
        doubled = store.cached(ttl=ttl, name="double")(lambda x: x * 2)
        return doubled(21)

    return {
        "set": (lambda: (store.set("k", "new", ttl=ttl), "new")[1], lambda: store.get("k")),
        "add": (lambda: (store.add("new", "added", ttl=ttl), "added")[1], lambda: store.get("new")),
        "incr": (lambda: store.incr("n", ttl=ttl), lambda: store.get("n")),
        "touch": (lambda: (store.touch("k", ttl), "original")[1], lambda: store.get("k")),
        "update": (lambda: store.update("k", lambda _v: "updated", ttl=ttl), lambda: store.get("k")),
        "edit": (edited, lambda: store.get("e")),
        "lock": (locked, lambda: "released"),
        "cached": (cached_call, lambda: 42),
    }


# Leases are at least MIN_LEASE; they and a cache's ttl are never None (nothing would ever expire).
_LEASES = {"lock", "edit"}
_REQUIRED = {*_LEASES, "cached"}


def reset_ttl_keys(store: Store) -> None:
    store.set("k", "original")
    for key in ("new", "n", "e"):
        store.delete(key)


def assert_nothing_written(store: Store, how: str) -> None:
    assert store.get("k") == "original" and store.get("new") is None, how
    assert store.get("n") is None and store.get("e") is None, how


def test_arbitrary_ttls(store: Store, budget: settings) -> None:
    @budget
    @given(ttl=TTLS)
    def check(ttl: Any) -> None:
        with sentinel_kept(store):
            for how, (write, read) in ttl_writes(store, ttl).items():
                reset_ttl_keys(store)
                lease = how in _LEASES
                with returns_within(HANG, f"{how}(ttl={ttl!r})"), clear_error_or_success() as raised:
                    expected = write()
                if raised:
                    if ttl is None:
                        assert how in _REQUIRED, f"{how}(ttl=None) refused: {raised[0]!r}"
                    else:
                        ordinary = ttl_must_work(ttl, MIN_LEASE if lease else 0.001)
                        assert not ordinary, f"{how}(ttl={ttl!r}) refused: {raised[0]!r}"
                    assert_nothing_written(store, how)
                    continue
                if ttl is not None:
                    assert not ttl_must_fail(ttl), f"{how}(ttl={ttl!r}) was accepted"
                seconds = ttl_seconds(ttl)
                got = read()
                if ttl is None or (seconds is not None and seconds >= LONG_ENOUGH):
                    assert_same(expected, got)  # a long ttl has not lapsed yet
                else:
                    assert got is None or got == expected, f"{how}(ttl={ttl!r}) left {got!r}"

    check()


# -- URLs ------------------------------------------------------------------------------------

#: Starts every generated password: if it shows in a message, the password leaked.
SECRET_MARK = "Zq9sekret"
_URL_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_RAW_PASSWORD_CHARS = st.sampled_from(list("abcXYZ019!$&'()*+,;=:@%~-._"))


def _password() -> st.SearchStrategy[str]:
    """A password starting with SECRET_MARK: percent-encoded arbitrary text, or raw specials."""
    encoded = _URL_TEXT.map(lambda tail: quote(SECRET_MARK + tail, safe=""))
    raw = st.text(_RAW_PASSWORD_CHARS, max_size=12).map(lambda tail: SECRET_MARK + tail)
    return st.one_of(encoded, raw)


#: Path and query text: no surrogates (a URL is text that can be sent), no "/", "." or "\\", so a
#: relative sqlite path stays a file name in the working directory (tmp_path).
_URL_PART = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/.\\"), max_size=12).map(
    lambda text: quote(text, safe="")
)


def _ports(backend: str, real_url: str) -> st.SearchStrategy[str | None]:
    """The server's real port, a closed one, and ports that are not ports at all."""
    real = real_url.rsplit(":", 1)[1].split("/")[0] if backend in ("redis", "memcached") else "5432"
    closed = str(servers.free_port())
    return st.one_of(st.none(), st.sampled_from([real, closed, "0", "65536", "99999", "-1", "abc", ""]))


_QUERIES = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            *("timeout=1", "timeout=nan", "timeout=-1", "timeout=1e300", "max_entries=0", "max_entries=x"),
            *("db=99999", "db=-1", "max_connections=0", "table=bad-name", "bogus=1", "connect_timeout=1"),
            *(f"password={SECRET_MARK}", f"sslpassword={SECRET_MARK}x", "ssl_cert_reqs=maybe"),
            *("map_size=0", "map_size=65536", "max_readers=0", "sync=maybe", "sync_interval=nan"),
        ]
    ),
    st.builds(lambda k, v: f"{k}={v}", _URL_PART, _URL_PART),
)


_SCHEMES = {
    "memory": ["memory", "MEMORY"],
    "sqlite": ["sqlite", "SQLite"],
    "redis": ["redis", "rediss", "REDIS"],
    "postgresql": ["postgresql", "postgres", "PostgreSQL"],
    "memcached": ["memcached", "Memcached"],
    "lmdb": ["lmdb", "LMDB"],
}


@st.composite
def store_urls(draw: st.DrawFn, backend: str, real_url: str) -> str:
    """A URL for ``backend``: one of its schemes; random user, password, host, port, path, query.

    Hosts are loopback only, so no example waits on a DNS lookup; a PostgreSQL URL always names
    this run's table (dropped at the end), so no example leaves a table behind.
    """
    scheme = draw(st.sampled_from(_SCHEMES[backend]))
    user = draw(st.sampled_from(["", "postgres", "default", "nobody"]))
    password = draw(st.one_of(st.none(), _password()))
    userinfo = f"{user}:{password}@" if password is not None else (f"{user}@" if user else "")
    host = draw(st.sampled_from(["127.0.0.1", "localhost", "[::1]", "", "[::1"]))
    port = draw(_ports(backend, real_url))
    netloc = f"{userinfo}{host}" if port is None else f"{userinfo}{host}:{port}"
    path = draw(st.one_of(st.sampled_from(["", "/", "/0", "/15", "/test"]), _URL_PART.map(lambda t: "/" + t)))
    query = draw(_QUERIES)
    if scheme.lower().startswith("postgres"):
        # This run's table (dropped at the end), and a 1 s bound on the pool's connection retries
        # (4 s by default), so a URL the server refuses costs 1 s.
        extra = [] if "table=" in query else [f"table=sharedstate_test_{servers.RUN_ID}"]
        extra += [] if "timeout=" in query else ["timeout=1"]
        query = "&".join(q for q in (query, *extra) if q)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def exercise_url(url: str, namespace: str) -> None:
    """Open ``url`` and use it once: success, or a clear error that never shows the password."""
    try:
        store = Store(url, namespace=namespace)
    except Exception as exc:
        assert_url_error(exc)
        return
    try:
        assert SECRET_MARK not in repr(store) and SECRET_MARK not in store.backend.describe()
        try:
            store.set("k", "v", ttl=60)
            assert store.get("k") == "v"
            store.delete("k")
        except Exception as exc:
            assert_url_error(exc)
    finally:
        store.close()


def assert_url_error(exc: BaseException) -> None:
    """A clear error, naming the URL without its password. Here the backend may be unreachable."""
    assert isinstance(exc, (SharedStateError, TypeError, ValueError)), repr(exc)
    assert not isinstance(exc, UnicodeError), f"a raw encoding error escaped: {exc!r}"
    assert str(exc).strip(), f"{type(exc).__name__} without a message"
    shown = "".join(traceback.format_exception(exc))
    assert SECRET_MARK not in shown, f"the password is shown in {shown}"


def test_arbitrary_urls(
    store_url: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: settings
) -> None:
    monkeypatch.chdir(tmp_path)  # relative sqlite paths land here, never in the repository
    backend = store_url.split("://", 1)[0]

    @budget
    @given(url=store_urls(backend, store_url))
    def check(url: str) -> None:
        with returns_within(HANG, f"Store({url!r})"):
            exercise_url(url, namespace)

    check()


def test_arbitrary_url_schemes(namespace: str, budget: settings) -> None:
    """Any scheme at all: a known one opens (or refuses clearly), an unknown one is named."""

    @budget
    @given(
        scheme=st.from_regex(r"\A[a-zA-Z][a-zA-Z0-9+.-]{0,12}\Z"),
        password=_password(),
        rest=_URL_PART,
    )
    def check(scheme: str, password: str, rest: str) -> None:
        assume(not scheme.lower().startswith(("sqlite", "memory")))  # no files, no host rules here
        url = f"{scheme}://user:{password}@127.0.0.1:{servers.free_port()}/{rest}"
        with returns_within(HANG, f"Store({url!r})"):
            exercise_url(url, namespace)

    check()


# -- the sentinel: other keys' operations never touch it -------------------------------------


def test_sentinel_survives_a_whole_property_run(store: Store) -> None:
    """The helpers themselves: the sentinel round-trips, and a changed one is noticed."""
    with sentinel_kept(store):
        pass
    with pytest.raises(AssertionError), sentinel_kept(store):
        store.set(SENTINEL_KEY, {**SENTINEL_VALUE, "n": True})  # 1 -> True: equal, not the same
