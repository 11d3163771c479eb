"""Bad input is refused with a clear error before anything is written.

Unsupported values, bad keys, oversized values, bad TTLs and malformed URLs raise, naming what is
wrong; the value already stored is left exactly as it was.
"""

from __future__ import annotations

import enum
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sharedstate import (
    BackendUnavailableError,
    LockTimeout,
    NotSupportedError,
    SerializationError,
    Store,
    ValueTooLargeError,
    validation,
)
from sharedstate.store import DEFAULT_MAX_VALUE_SIZE


class Color(enum.Enum):
    RED = 1


# -- unsupported values ----------------------------------------------------------------------


def test_unsupported_value_names_key_and_type_and_writes_nothing(store: Store) -> None:
    store.set("k", "original")
    with pytest.raises(SerializationError) as info:
        store.set("k", object())
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "k'" in message and "object" in message
    assert store.get("k") == "original"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"ok": 1, "bad": object()}, "object"),
        ([1, 2, {3j}], "complex"),
        ({1: "int key"}, "dict keys must be str"),
        (Color.RED, "enum"),
        ({"nested": [Path("/x")]}, "PosixPath"),
        (lambda: 1, "function"),
        (range(3), "range"),
    ],
    ids=["object-in-dict", "complex-in-set", "int-key", "enum", "path", "function", "range"],
)
def test_unsupported_values_everywhere(store: Store, value: Any, named: str) -> None:
    store.set("k", "original")
    store.dict("d")["item"] = "original"
    calls = {
        "set": lambda: store.set("k", value),
        "add": lambda: store.add("new", value),
        "update": lambda: store.update("k", lambda _old: value),
        "dict_set": lambda: store.dict("d").__setitem__("item", value),
        "setdefault": lambda: store.dict("d").setdefault("other", value),
    }
    for what, call in calls.items():
        with pytest.raises(SerializationError, match=named):
            call()
        assert store.get("k") == "original", what
    assert store.get("new") is None
    assert store.dict("d")["item"] == "original"
    assert "other" not in store.dict("d")


def test_cycle_is_refused(store: Store) -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(SerializationError, match="cycle"):
        store.set("k", value)
    assert store.get("k") is None


def test_edit_body_storing_unsupported_value(store: Store) -> None:
    store.set("obj", {"n": 1})
    with pytest.raises(SerializationError), store.edit("obj") as obj:
        obj["bad"] = object()
    assert store.get("obj") == {"n": 1}
    with store.edit("obj", timeout=0) as obj:  # the lock was released
        obj["n"] = 2
    assert store.get("obj") == {"n": 2}


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, None, b"k", ("k",)])
def test_non_string_keys(store: Store, key: Any) -> None:
    for call in (
        lambda: store.get(key),
        lambda: store.set(key, 1),
        lambda: store.add(key, 1),
        lambda: store.delete(key),
        lambda: store.incr(key),
        lambda: store.touch(key, 1),
        lambda: store.counter(key),
        lambda: store.dict(key),
        lambda: store.lock(key),
        lambda: store.update(key, lambda v: v),
    ):
        with pytest.raises(TypeError, match="str"):
            call()
    with pytest.raises(TypeError):
        store.dict("d")[key] = 1  # type: ignore[index]


def test_empty_key(store: Store) -> None:
    for call in (
        lambda: store.get(""),
        lambda: store.set("", 1),
        lambda: store.incr(""),
        lambda: store.lock(""),
    ):
        with pytest.raises(ValueError, match="empty"):
            call()


def test_reserved_keys(store: Store) -> None:
    lock = store.lock("job")
    lock.acquire()
    for call in (
        lambda: store.get("_ss:lock:job"),
        lambda: store.set("_ss:lock:job", 1),
        lambda: store.delete("_ss:lock:job"),
        lambda: store.incr("_ss:x"),
        lambda: store.add("_ss:x", 1),
        lambda: store.counter("_ss:x"),
        lambda: store.dict("_ss:x"),
        lambda: store.lock("_ss:x"),
        lambda: store.update("_ss:x", lambda v: v),
    ):
        with pytest.raises(ValueError, match="reserved"):
            call()
    assert lock.owned  # nobody could delete or overwrite the library's own key
    lock.release()


def test_key_that_is_not_utf8(store: Store) -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        store.set("\ud800", 1)


BAD_TEXT_KEYS = ["a\0b", "user:alice\0cos\nsystem", "\0", "\ud800", "a\udfffz"]


@pytest.mark.parametrize(
    "key", BAD_TEXT_KEYS, ids=["nul", "nul-opcodes", "only-nul", "surrogate", "low-surrogate"]
)
def test_keys_with_nul_or_lone_surrogate_are_refused_everywhere(store: Store, key: str) -> None:
    """Every call that builds a key refuses NUL and lone surrogates with a ValueError naming the key
    (a lone surrogate used to raise a bare UnicodeEncodeError, NUL was stored)."""
    store.set("k", "original")
    d = store.dict("d")
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: store.get(key),
        "set": lambda: store.set(key, 1),
        "add": lambda: store.add(key, 1),
        "delete": lambda: store.delete(key),
        "incr": lambda: store.incr(key),
        "touch": lambda: store.touch(key, 1),
        "keys": lambda: store.keys(key),
        "keys_suffix": lambda: store.keys("k" + key),
        "counter": lambda: store.counter(key),
        "dict": lambda: store.dict(key),
        "dict_item_get": lambda: d[key],
        "dict_item_set": lambda: d.__setitem__(key, 1),
        "dict_item_in": lambda: key in d,
        "dict_item_incr": lambda: d.incr(key),
        "lock": lambda: store.lock(key),
        "update": lambda: store.update(key, lambda v: 1, default=0),
        "edit": lambda: store.edit(key, default={}).__enter__(),
        "cached_name": lambda: store.cached(ttl=1, name=key),
        "namespace": lambda: Store("memory://", namespace=key),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, UnicodeError), what
        message = str(info.value)
        assert repr(key)[1:-1] in message, (what, message)  # names the key as written
        assert "NUL" in message or "surrogate" in message, (what, message)
    assert store.get("k") == "original"
    assert not can_scan(store) or store.keys() == ["k"]


def can_scan(store: Store) -> bool:
    try:
        store.keys()
    except NotSupportedError:
        return False
    return True


def test_odd_but_valid_keys(store: Store) -> None:
    for key in ["with space", "ünïcödé ✓", "a/b", "x:y:z", "%2F", "k" * 200]:
        store.set(key, key)
        assert store.get(key) == key


# -- value size ------------------------------------------------------------------------------


def test_default_size_limit(store: Store) -> None:
    store.set("k", "small")
    with pytest.raises(ValueTooLargeError) as info:
        store.set("k", "x" * DEFAULT_MAX_VALUE_SIZE)
    assert isinstance(info.value, ValueError)
    assert "'k'" in str(info.value) or "/k'" in str(info.value)
    assert store.get("k") == "small"
    store.set("k", "y" * (DEFAULT_MAX_VALUE_SIZE // 4))  # well under the limit works
    assert store.get("k") == "y" * (DEFAULT_MAX_VALUE_SIZE // 4)


def test_custom_size_limit(store_url: str, namespace: str) -> None:
    with Store(store_url, namespace=namespace, max_value_size=100) as store:
        store.set("k", "x" * 98)  # 100 bytes encoded, with its quotes
        assert store.get("k") == "x" * 98
        for call in (
            lambda: store.set("k", "x" * 99),
            lambda: store.add("new", "x" * 99),
            lambda: store.update("k", lambda v: v + "x"),
            lambda: store.dict("d").__setitem__("item", "x" * 99),
        ):
            with pytest.raises(ValueTooLargeError, match="100"):
                call()
        with pytest.raises(ValueTooLargeError), store.edit("lst", default=[]) as lst:
            lst.extend(range(100))
        assert store.get("k") == "x" * 98
        assert store.get("new") is None and store.get("lst") is None
        assert "item" not in store.dict("d")


@pytest.mark.parametrize(
    ("size", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, TypeError),  # used to be accepted, and then every size check passed
        (math.inf, TypeError),
        (1.5, TypeError),
        (True, TypeError),
        ("100", TypeError),
        (None, TypeError),
    ],
)
def test_bad_max_value_size(size: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_value_size must be a positive int"):
        Store("memory://", max_value_size=size)


# -- incr on what is not an integer ----------------------------------------------------------


@pytest.mark.parametrize("value", ["12", 1.5, [1], {"n": 1}, True, None])
def test_incr_on_non_integer(store: Store, value: Any) -> None:
    store.set("k", value)
    with pytest.raises(TypeError):
        store.incr("k")
    with pytest.raises(TypeError):
        store.counter("k").incr()
    got = store.get("k")
    assert got == value and type(got) is type(value)
    store.dict("d")["item"] = value
    with pytest.raises(TypeError):
        store.dict("d").incr("item")
    assert store.dict("d")["item"] == value


@pytest.mark.parametrize("by", [1.5, "1", True, None])
def test_incr_by_non_integer(store: Store, by: Any) -> None:
    store.set("n", 1)
    with pytest.raises(TypeError):
        store.incr("n", by)
    with pytest.raises(TypeError):
        store.dict("d").incr("n", by)
    assert store.get("n") == 1


def test_incr_overflow(store: Store) -> None:
    store.set("n", 2**63 - 1)
    with pytest.raises(OverflowError):
        store.incr("n")
    assert store.get("n") == 2**63 - 1
    store.set("m", -(2**63))
    with pytest.raises(OverflowError):
        store.incr("m", -1)
    assert store.get("m") == -(2**63)


def test_counter_on_non_integer(store: Store) -> None:
    store.set("c", "text")
    with pytest.raises(TypeError):
        store.counter("c").get()
    with pytest.raises(TypeError):
        store.counter("c").reset("0")  # type: ignore[arg-type]
    assert store.get("c") == "text"


# -- TTLs ------------------------------------------------------------------------------------

BAD_TTLS: list[tuple[Any, type[Exception]]] = [
    (0, ValueError),
    (-1, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    ("10", TypeError),
    (True, TypeError),
    ([1], TypeError),
]


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS, ids=[repr(t) for t, _ in BAD_TTLS])
def test_bad_ttl(store: Store, ttl: Any, error: type[Exception]) -> None:
    store.set("k", "original")
    store.set("n", 1)
    body_ran = []
    for call in (
        lambda: store.set("k", "new", ttl=ttl),
        lambda: store.add("other", "new", ttl=ttl),
        lambda: store.incr("n", ttl=ttl),
        lambda: store.touch("k", ttl),
        lambda: store.update("k", lambda _v: "new", ttl=ttl),
    ):
        with pytest.raises(error):
            call()
    with pytest.raises(error), store.edit("obj", default={}, ttl=ttl) as obj:
        body_ran.append(True)  # a bad ttl is refused before the body runs
        obj["x"] = 1
    assert not body_ran
    assert store.get("k") == "original" and store.get("n") == 1
    assert store.get("other") is None and store.get("obj") is None


@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (True, TypeError),
        (1e-6, ValueError),  # below validation.MIN_LEASE: used to loop forever
        (validation.MIN_LEASE / 2, ValueError),
    ],
)
def test_bad_lock_ttl_and_lease(store: Store, ttl: Any, error: type[Exception]) -> None:
    start = time.monotonic()
    with pytest.raises(error, match="ttl"):
        store.lock("L", ttl=ttl)
    body_ran = []
    with pytest.raises(error, match="lease"), store.edit("obj", default={}, lease=ttl):
        body_ran.append(True)
    with pytest.raises(error, match="lease"):
        store.cached(ttl=10, lease=ttl)
    assert time.monotonic() - start < 1 and not body_ran
    assert store.get("obj") is None


@pytest.mark.parametrize("timeout", [-1, math.nan, math.inf, "1", True])
def test_bad_lock_timeout(store: Store, timeout: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="timeout"):
        store.lock("L", timeout=timeout)
    with (
        pytest.raises((ValueError, TypeError), match="timeout"),
        store.edit("obj", default={}, timeout=timeout),
    ):
        pass
    lock = store.lock("L")
    with pytest.raises((ValueError, TypeError), match="timeout"):
        lock.acquire(timeout=timeout)
    assert not lock.locked


@pytest.mark.parametrize("url_kind", ["memory", "sqlite"])
def test_lease_that_runs_out_before_it_is_confirmed_does_not_spin(
    url_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below MIN_LEASE (lowered here to reach it), a lease runs out before the round trip that takes
    it returns: acquire() used to retry forever, even without contention. Now it gives up."""
    monkeypatch.setattr(validation, "MIN_LEASE", 1e-12)
    url = "memory://" if url_kind == "memory" else f"sqlite:///{tmp_path}/x.db"
    with Store(url) as store:
        lock = store.lock("L", ttl=1e-9)
        start = time.monotonic()
        with pytest.raises(LockTimeout, match="ran out before"):
            lock.acquire()  # no timeout: would wait as long as it takes
        assert time.monotonic() - start < 5


# -- URLs ------------------------------------------------------------------------------------


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown") as info:
        Store("mysql://localhost/db")
    for scheme in ("memory://", "sqlite://", "redis://", "postgresql://", "memcached://"):
        assert scheme in str(info.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://host/x.db", "three slashes"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///dir/", "names no database file"),
        ("sqlite:///:memory:", "memory://"),
        ("notaurl", "scheme://"),
        ("", "scheme://"),
        ("sqlite:///x.db?bogus=1", "unknown option 'bogus'.*timeout"),
        ("sqlite:///x.db?timeout=abc", "timeout"),
        ("sqlite:///x.db?timeout=-1", "timeout"),
        ("sqlite:///x.db?timeout=nan", "timeout"),
        ("sqlite:///x.db?table=bad-name", "identifier"),
        ("memory://?max_entries=0", "max_entries"),
        ("memory://?max_entries=x", "max_entries"),
        ("memory://host", "memory://"),
        ("redis://127.0.0.1:notaport/0", "port"),
    ],
)
def test_malformed_urls(url: str, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative sqlite paths land here, never in the repository
    with pytest.raises(ValueError, match=match):
        Store(url)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        Store(123)  # type: ignore[arg-type]


def test_bad_namespace() -> None:
    with pytest.raises(ValueError):
        Store("memory://", namespace="a/b")


def test_password_never_in_url_errors() -> None:
    with pytest.raises(ValueError) as info:
        Store("nosuch://user:hunter2@host/x")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError) as info:
        Store("redis://user:hunter2@127.0.0.1:6379/0?bogus=1")
    assert "hunter2" not in str(info.value)


# -- SQLite files that cannot be opened ------------------------------------------------------


def test_sqlite_in_directory_root_cannot_write() -> None:
    """/proc refuses new files even to root."""
    store = Store("sqlite:////proc/sharedstate-test.sqlite3")
    with pytest.raises(BackendUnavailableError, match=r"/proc/sharedstate-test\.sqlite3"):
        store.set("k", 1)
    with pytest.raises(BackendUnavailableError):
        store.get("k")


def test_sqlite_in_missing_directory(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/no/such/dir/state.db")
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        store.get("k")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a chmod 0o555 directory")
def test_sqlite_in_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        store = Store(f"sqlite:///{ro}/state.db")
        with pytest.raises(BackendUnavailableError, match="not writable"):
            store.set("k", 1)
    finally:
        ro.chmod(0o755)
