"""One conformance suite over every backend: each operation of ``Store`` and its objects.

The ``store`` fixture runs each test on every backend with a namespace of its own. Tests marked
``@both_apis`` run over both APIs from the same body: with ``api="async"`` the ``store`` is the
real ``AsyncStore`` driven through the sync spelling (``tests.api_driver``: every call runs on one
event loop kept for the test). Tests that need what only the sync API has (``MutableMapping``
dunders, ``close``, threads sharing the store, a wrapped backend) run on the sync API only; the
async API's own behaviour (tasks, ``async with``, awaiting bodies) is in test_async_api.py. Nothing here
assumes what a backend's version tokens look like (only that they compare equal to themselves).
Operations a backend documents as unsupported (``NotSupportedError``, e.g. listing keys on
memcached) make the test skip with the backend's reason; anything else it raises is a failure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from sharedstate import (
    AsyncCounter,
    AsyncDict,
    AsyncLock,
    AsyncStore,
    BackendUnavailableError,
    ConflictError,
    Counter,
    Lock,
    LockNotOwnedError,
    LockTimeout,
    NestedUpdateError,
    NotSupportedError,
    SerializationError,
    SharedDict,
    Store,
    ValueTooLargeError,
)
from sharedstate.backends import CasResult, Entry
from tests import api_driver, servers
from tests.conftest import _open

T = TypeVar("T")

TTL = 0.3
# Server backends may round expiry to whole seconds (memcached); sqlite and memory are exact.
EXPIRY_LIMIT = TTL + 2.5


APIS = {
    "sync": SimpleNamespace(name="sync", Counter=Counter, SharedDict=SharedDict, Lock=Lock),
    "async": SimpleNamespace(name="async", Counter=AsyncCounter, SharedDict=AsyncDict, Lock=AsyncLock),
}
# Runs a test over both APIs: the sync Store, and the AsyncStore driven on one event loop.
both_apis = pytest.mark.parametrize("api", ["sync", "async"], indirect=True)


@pytest.fixture
def api(request: pytest.FixtureRequest) -> SimpleNamespace:
    """The API a test runs on (its classes by their sync names): the sync one unless the test
    is marked ``@both_apis``."""
    return APIS[getattr(request, "param", "sync")]


@pytest.fixture
def store(store_url: str, namespace: str, api: SimpleNamespace) -> Iterator[Store]:
    if api.name == "sync":
        yield from _open(store_url, namespace)
    else:
        yield from api_driver.driven_async_store(store_url, namespace)


def supported(call: Callable[[], T]) -> T:
    """``call()``, or skip the test if this backend documents the operation as unsupported."""
    try:
        return call()
    except NotSupportedError as exc:
        pytest.skip(f"backend does not support this operation: {exc}")


def wait_until(condition: Callable[[], bool], limit: float = EXPIRY_LIMIT) -> float:
    """Poll ``condition`` until true; return how long it took. Fails after ``limit`` seconds."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < limit, f"condition still false after {limit}s"
        time.sleep(0.02)
    return time.monotonic() - start


def run_threads(n: int, fn: Callable[[int], T]) -> list[T]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return results


# -- key-value -------------------------------------------------------------------------------


@both_apis
def test_get_set_delete(store: Store) -> None:
    assert store.get("k") is None
    assert store.get("k", "fallback") == "fallback"
    store.set("k", {"a": [1, 2.5, "x", None, True]})
    assert store.get("k") == {"a": [1, 2.5, "x", None, True]}
    store.set("k", "replaced")
    assert store.get("k") == "replaced"
    assert store.delete("k") is True
    assert store.get("k") is None
    assert store.delete("k") is False


@both_apis
def test_falsy_values_are_not_missing(store: Store) -> None:
    for i, value in enumerate([0, "", [], {}, False, None, 0.0]):
        store.set(f"f{i}", value)
        got = store.get(f"f{i}", "MISSING")
        assert got == value and type(got) is type(value)


@both_apis
def test_add_only_if_absent(store: Store) -> None:
    assert store.add("k", "first") is True
    assert store.add("k", "second") is False
    assert store.get("k") == "first"
    store.delete("k")
    assert store.add("k", "third") is True
    assert store.get("k") == "third"


@both_apis
def test_incr(store: Store) -> None:
    assert store.incr("n") == 1
    assert store.incr("n") == 2
    assert store.incr("n", 10) == 12
    assert store.incr("n", -20) == -8
    assert store.get("n") == -8
    assert store.incr("other", 5) == 5  # a missing key starts at 0


@both_apis
def test_ints_are_stored_natively(store: Store) -> None:
    store.set("n", 5)
    assert store.incr("n") == 6
    assert store.get("n") == 6 and type(store.get("n")) is int
    store.set("neg", -(2**63))
    assert store.incr("neg") == -(2**63) + 1
    store.set("max", 2**63 - 2)
    assert store.incr("max") == 2**63 - 1
    # The raw value is an integer (or its decimal text), which is what server-side incr works on.
    entry = store.backend.get(store._keyspace.full_key("n"))
    assert entry is not None and int(entry.value) == 6


@both_apis
def test_touch(store: Store) -> None:
    assert store.touch("missing", 10) is False
    store.set("k", "v")
    start = time.monotonic()
    assert store.touch("k", TTL) is True
    assert present_or_late(store, "k", start)
    wait_until(lambda: store.get("k") is None)
    # touch(None) removes an expiry
    store.set("k2", "v", ttl=TTL)
    assert store.touch("k2", None) is True
    time.sleep(TTL + 0.2)
    assert store.get("k2") == "v"
    assert store.touch("k2", 100) is True
    assert store.get("k2") == "v"


@both_apis
def test_keys_and_prefixes(store: Store) -> None:
    for key in ["user:1", "user:2", "user:10", "item:1", "userx"]:
        store.set(key, 1)
    store.lock("user:lock").acquire()  # library-internal keys are not listed
    assert supported(lambda: store.keys()) == ["item:1", "user:1", "user:10", "user:2", "userx"]
    assert store.keys("user:") == ["user:1", "user:10", "user:2"]
    assert store.keys("user") == ["user:1", "user:10", "user:2", "userx"]
    assert store.keys("nothing") == []
    assert any(k.startswith("_ss:") for k in store.keys("_ss:"))
    store.delete("user:2")
    assert store.keys("user:") == ["user:1", "user:10"]


@both_apis
def test_keys_with_prefixes_at_the_edges_of_unicode(store: Store) -> None:
    """A prefix ending just below the surrogates (U+D7FF) or at U+10FFFF is valid text: listed, not a
    UnicodeEncodeError (the next code point after U+D7FF is a surrogate, which no backend stores)."""
    for key in ["a\ud7ff", "a\ud7ffb", "a\ue000", "b\U0010ffff", "b\U0010ffffc", "c"]:
        store.set(key, 1)
    assert supported(lambda: store.keys("a\ud7ff")) == ["a\ud7ff", "a\ud7ffb"]
    assert store.keys("a") == ["a\ud7ff", "a\ud7ffb", "a\ue000"]
    assert store.keys("b\U0010ffff") == ["b\U0010ffff", "b\U0010ffffc"]


def test_keys_many(store: Store) -> None:
    """More keys than one scan batch of any backend: each listed once."""
    names = [f"k{i:05d}" for i in range(1200)]
    for name in names:
        store.set(name, 0)
    assert supported(lambda: store.keys("k")) == names


@both_apis
def test_keys_skip_expired(store: Store) -> None:
    store.set("short", 1, ttl=TTL)
    store.set("long", 1)
    assert supported(lambda: store.keys()) == ["long", "short"]
    wait_until(lambda: store.keys() == ["long"])


# -- TTL -------------------------------------------------------------------------------------


def present_or_late(store: Store, key: str, since: float) -> bool:
    """Whether ``key`` is still there, or may have expired because ``TTL`` has passed ``since``.

    Keeps "not gone too early" checks true to the contract on a machine that stalls.
    """
    return store.get(key) is not None or time.monotonic() - since >= TTL


@both_apis
def test_set_with_ttl_expires(store: Store) -> None:
    start = time.monotonic()
    store.set("k", "v", ttl=TTL)
    store.set("keep", "v")
    assert present_or_late(store, "k", start)
    wait_until(lambda: store.get("k") is None)
    assert time.monotonic() - start >= TTL - 0.05
    assert store.get("keep") == "v"
    assert isinstance(store.sweep(), int)
    assert store.get("k") is None


@both_apis
def test_set_replaces_expiry(store: Store) -> None:
    store.set("k", "v1", ttl=TTL)
    store.set("k", "v2")  # no ttl: never expires
    time.sleep(TTL + 0.2)
    assert store.get("k") == "v2"


def test_expired_key_is_absent_for_every_operation(store: Store) -> None:
    for key in ("a", "b", "c", "d", "e"):
        store.set(key, "old", ttl=TTL)
    entry = store.backend.get(store._keyspace.full_key("e"))
    assert entry is not None
    wait_until(lambda: all(store.get(k) is None for k in ("a", "b", "c", "d", "e")))
    assert store.add("a", "new") is True and store.get("a") == "new"
    assert store.incr("b") == 1
    assert store.delete("c") is False
    assert store.touch("d", 100) is False and store.get("d") is None
    full = store._keyspace.full_key("e")
    assert store.backend.compare_and_set(full, entry.version, b'"x"') == (False, None)
    assert store.backend.delete_if_version(full, entry.version) is False


@both_apis
def test_add_with_ttl(store: Store) -> None:
    start = time.monotonic()
    assert store.add("k", "v", ttl=TTL) is True
    assert store.add("k", "x", ttl=TTL) is False or time.monotonic() - start >= TTL
    wait_until(lambda: store.get("k") is None)
    assert store.add("k", "w") is True
    assert store.get("k") == "w"


@both_apis
def test_incr_ttl_applies_only_on_create(store: Store) -> None:
    assert store.incr("n", ttl=TTL) == 1
    assert store.incr("n", ttl=1000) == 2  # does not extend the existing expiry
    wait_until(lambda: store.get("n") is None)
    assert store.incr("n") == 1  # starts again from 0
    assert store.incr("forever") == 1
    assert store.incr("forever", ttl=TTL) == 2  # an existing key without expiry keeps none
    time.sleep(TTL + 0.2)
    assert store.get("forever") == 2


@both_apis
def test_incr_of_a_new_or_expired_key_returns_by(store: Store) -> None:
    assert store.incr("fresh", 7) == 7
    assert store.incr("gone", 3, ttl=TTL) == 3
    wait_until(lambda: store.get("gone") is None)
    assert store.incr("gone", -4) == -4  # expired counts as absent: starts again from 0
    assert store.incr("gone", 2) == -2


# -- ttl, batches, ping ------------------------------------------------------------------------
# The contract adapters build on (cachelib, Django, limits): reading a key's expiry, a health
# check, and get/set/delete of many keys in one round trip where the server allows it.

# memcached counts whole seconds and reads its clock once a second: a ttl it reports may be a
# second short of the exact one (never more than the ttl asked).
TTL_SLACK = 1.5


@both_apis
def test_ttl_of_absent_persistent_and_expiring_keys(store: Store) -> None:
    with pytest.raises(KeyError) as info:
        store.ttl("missing")
    assert info.value.args == ("missing",)  # the key as the caller wrote it, namespace stripped
    store.set("forever", "v")
    assert store.ttl("forever") is None
    store.set("later", "v", ttl=100)
    left = store.ttl("later")
    assert left is not None and 100 - TTL_SLACK - 5 <= left <= 100
    assert store.touch("later", 50) is True
    left = store.ttl("later")
    assert left is not None and 50 - TTL_SLACK - 5 <= left <= 50
    assert store.touch("later", None) is True
    assert store.ttl("later") is None
    assert store.incr("n", ttl=100) == 1
    left = store.ttl("n")
    assert left is not None and 0 < left <= 100
    assert store.get("later") == "v" and store.get("n") == 1  # reading the expiry changed nothing


@both_apis
def test_get_many_returns_present_keys_in_the_order_asked(store: Store) -> None:
    assert store.get_many([]) == {}
    assert store.get_many(["nothing", "here"]) == {}
    store.set_many({"a": 1, "b": "two", "zero": 0, "none": None, "empty": ""})
    got = store.get_many(["b", "missing", "zero", "a", "b", "none", "empty"])
    assert got == {"b": "two", "zero": 0, "a": 1, "none": None, "empty": ""}
    assert list(got) == ["b", "zero", "a", "none", "empty"]  # the order asked; a repeat once
    assert store.get_many(k for k in ("a", "b")) == {"a": 1, "b": "two"}  # any iterable
    with pytest.raises(TypeError, match="get_many"):
        store.get_many("ab")  # one str would be read per character


@both_apis
def test_set_many_replaces_values_and_expiry(store: Store) -> None:
    store.set_many({})  # nothing to do
    store.set("old", "before", ttl=TTL)
    store.set_many({"old": "after", "new": [1, {"x": 2}]})
    assert store.get_many(["old", "new"]) == {"old": "after", "new": [1, {"x": 2}]}
    assert store.ttl("old") is None  # as set(): the previous expiry is gone
    assert store.incr("old2") == 1
    store.set_many({"old2": 41})  # an int stays a native integer
    assert store.incr("old2") == 42


@both_apis
def test_a_bad_item_in_set_many_stores_nothing(store: Store) -> None:
    store.set("a", "old")
    bad_batches: list[tuple[dict[str, Any], dict[str, Any], type[Exception]]] = [
        ({"a": "new", "b": object()}, {}, SerializationError),  # not encodable
        ({"a": "new", "b": "x" * (2 * 1024 * 1024)}, {}, ValueTooLargeError),  # over max_value_size
        ({"a": "new", "_ss:b": 1}, {}, ValueError),  # a reserved key
        ({"a": "new", "": 1}, {}, ValueError),  # an empty key
        ({"a": "new", 3: 1}, {}, TypeError),  # not a str key
        ({"a": "new", "b": 1}, {"ttl": -1}, ValueError),  # a bad ttl
    ]
    for mapping, kwargs, error in bad_batches:
        with pytest.raises(error):
            store.set_many(mapping, **kwargs)
        assert store.get_many(["a", "b"]) == {"a": "old"}, (mapping.keys(), error)


def test_set_many_and_delete_many_refuse_a_key_being_updated(store: Store) -> None:
    def fn(value: Any) -> Any:
        store.set_many({"other": 1, "k": 2})
        return value

    with pytest.raises(NestedUpdateError):
        store.update("k", fn, 0)
    with pytest.raises(NestedUpdateError):
        store.update("k", lambda v: store.delete_many(["k"]), 0)
    assert store.get_many(["k", "other"]) == {}


@both_apis
def test_expired_keys_in_ttl_and_batches(store: Store) -> None:
    """One wait for expiry, shared by every check: ``set_many`` with a ttl expires; an expired key
    has no ttl (``KeyError``), is left out of ``get_many`` and not counted by ``delete_many``."""
    start = time.monotonic()
    store.set_many({"a": 1, "b": 2}, ttl=TTL)
    store.set("keep", 3)
    assert store.get_many(["a", "b"]) == {"a": 1, "b": 2} or time.monotonic() - start >= TTL
    try:
        left = store.ttl("a")
        assert left is not None and 0 <= left <= TTL + 2  # memcached: whole seconds, up to 2 late
    except KeyError:
        assert time.monotonic() - start >= TTL  # expired already (a stalled machine)
    wait_until(lambda: store.get_many(["a", "b", "keep"]) == {"keep": 3})
    with pytest.raises(KeyError):
        store.ttl("a")
    assert store.delete_many(["a", "b", "keep"]) == 1


@both_apis
def test_delete_many_counts_the_keys_that_existed(store: Store) -> None:
    assert store.delete_many([]) == 0
    store.set_many({"a": 1, "b": 2, "c": 3})
    assert store.delete_many(["a", "missing", "a", "c"]) == 2  # a twice counts once
    assert store.get_many(["a", "b", "c"]) == {"b": 2}
    assert store.delete_many(iter(["b"])) == 1
    with pytest.raises(TypeError, match="delete_many"):
        store.delete_many("b")


def test_batches_larger_than_one_statement_or_command(store: Store) -> None:
    """More keys than any backend puts in one statement or command (SQLite's bound variables,
    memcached's key lines), long and non-ASCII keys among them."""
    keys = [f"k{i}" for i in range(1100)] + ["ключ", "🔑", "x" * 600, "y" * 600 + "é"]
    values = {key: i for i, key in enumerate(keys)}
    store.set_many(values)
    got = store.get_many([*reversed(keys), "absent"])
    assert list(got) == list(reversed(keys)) and got == values
    assert store.delete_many(keys[::2]) == len(keys[::2])
    assert list(store.get_many(keys)) == keys[1::2]
    assert store.delete_many(keys) == len(keys[1::2])


def test_concurrent_batches_sharing_keys_in_any_order(store: Store) -> None:
    """Threads writing and deleting the same keys in different orders: no deadlock, no error (row
    locks are taken in key order where the server locks rows), and every key ends up holding
    one writer's whole value."""
    keys = [f"k{i}" for i in range(40)]

    def writer(n: int) -> None:
        order = keys if n % 2 else list(reversed(keys))
        for round_ in range(8):
            store.set_many({key: [n, round_] for key in order})
            if round_ % 3 == 2:
                store.delete_many(order[::3])

    run_threads(4, writer)
    for value in store.get_many(keys).values():
        assert isinstance(value, list) and value[0] in range(4) and value[1] in range(8)


def test_batched_entries_are_the_backends_entries(store: Store) -> None:
    """At the backend level, ``get_many`` hands out the same entries (versions) as ``get``."""
    backend, full = store.backend, store._keyspace.full_key
    backend.set_many({full("a"): b'"x"', full("n"): 5})
    entries = backend.get_many([full("n"), full("missing"), full("a")])
    assert list(entries) == [full("n"), full("a")]
    assert entries[full("a")] == backend.get(full("a"))
    assert int(entries[full("n")].value) == 5
    result = backend.compare_and_set(full("a"), entries[full("a")].version, b'"y"')
    assert result.stored and store.get("a") == "y"


@both_apis
def test_ping(store: Store) -> None:
    assert store.ping() is None


DOWN_URLS = {
    "redis": "redis://:hunter2@127.0.0.1:{port}/0?timeout=2",
    "postgresql": "postgresql://postgres:hunter2@127.0.0.1:{port}/test?timeout=2",
    "memcached": "memcached://127.0.0.1:{port}?timeout=2",
}


@pytest.mark.timeout(60)
@both_apis
@pytest.mark.parametrize("backend", sorted(DOWN_URLS))
def test_ping_and_batches_against_a_server_that_is_down(
    backend: str, api: SimpleNamespace, namespace: str, tmp_path: Any
) -> None:
    servers.backend_url(backend, tmp_path)  # skips (fails under CI) if the driver is missing
    url = DOWN_URLS[backend].format(port=servers.free_port())  # nothing listens there
    # Opened directly, not through the fixtures: their clean-up would talk to the server.
    runner = api_driver.Runner()
    if api.name == "sync":
        store = Store(url, namespace=namespace)
    else:
        store = api_driver.Driven(AsyncStore(url, namespace=namespace), runner)  # type: ignore[assignment]
    try:
        for call in (
            store.ping,
            lambda: store.ttl("k"),
            lambda: store.get_many(["a", "b"]),
            lambda: store.set_many({"a": 1, "b": 2}),
            lambda: store.delete_many(["a", "b"]),
        ):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                call()
            assert time.monotonic() - started < 2 + 1.5
            assert info.value.applied is False  # nothing could be sent
            assert "hunter2" not in str(info.value)
            assert "127.0.0.1" in str(info.value)
    finally:
        if api.name == "sync":
            store.close()
        else:
            store.aclose()  # type: ignore[attr-defined]
        runner.close()


def test_ping_of_an_sqlite_file_that_cannot_be_opened(tmp_path: Any) -> None:
    with Store(f"sqlite:///{tmp_path}/no/such/dir/state.db") as store:
        with pytest.raises(BackendUnavailableError, match="does not exist") as info:
            store.ping()
        assert info.value.applied is False


# -- compare-and-set at the backend level ----------------------------------------------------


def test_versions_compare_and_set(store: Store) -> None:
    b = store.backend
    key = store._keyspace.full_key("cas")
    assert b.get(key) is None
    b.set(store._keyspace.full_key("other"), b'"v"')
    foreign = b.get(store._keyspace.full_key("other"))
    assert foreign is not None
    # Absent: nothing to replace, and the refusal says so.
    assert b.compare_and_set(key, foreign.version, b'"v"') == CasResult(False, None)
    assert b.get(key) is None
    b.set(key, b'"one"')
    first = b.get(key)
    assert isinstance(first, Entry)
    assert first.value == b'"one"'
    assert b.get(key) == first  # reading does not change the version

    stored, written = b.compare_and_set(key, first.version, b'"two"')
    second = b.get(key)
    assert stored is True
    assert second is not None and second.value == b'"two"' and second.version != first.version
    assert written in (second, None)  # the entry as written, if the backend can tell
    # A refusal carries the entry that refused it, ready for the next try.
    assert b.compare_and_set(key, first.version, b'"stale"') == CasResult(False, second)
    assert b.get(key) == second
    assert b.delete_if_version(key, first.version) is False
    assert b.get(key) == second

    # Every kind of write gives a new version; touch keeps it.
    b.set(key, b'"three"')
    third = b.get(key)
    assert third is not None and third.version != second.version
    assert b.touch(key, 100) is True
    assert b.get(key) == third
    assert b.delete_if_version(key, third.version) is True
    assert b.get(key) is None
    assert b.delete_if_version(key, third.version) is False


def test_compare_and_set_expecting_absent(store: Store) -> None:
    b = store.backend
    key = store._keyspace.full_key("k")
    stored, written = b.compare_and_set(key, None, b'"first"')
    assert stored is True
    assert written in (b.get(key), None)
    current = b.get(key)
    assert current is not None and current.value == b'"first"'
    assert b.compare_and_set(key, None, b'"second"') == CasResult(False, current)
    assert b.get(key) == current
    # An expired entry counts as absent.
    b.set(key, b'"old"', TTL)
    wait_until(lambda: b.get(key) is None)
    assert b.compare_and_set(key, None, b'"new"').stored is True
    assert store.get("k") == "new"


def test_written_entry_is_good_for_the_next_compare_and_set(store: Store) -> None:
    b = store.backend
    key = store._keyspace.full_key("chain")
    entry: Entry | None = None
    for i in range(5):
        stored, written = b.compare_and_set(key, None if entry is None else entry.version, f'"{i}"'.encode())
        assert stored is True
        entry = written if written is not None else b.get(key)
    assert store.get("chain") == "4"


def test_version_changes_on_incr(store: Store) -> None:
    b = store.backend
    key = store._keyspace.full_key("n")
    b.incr(key, 1)
    before = b.get(key)
    assert before is not None
    assert b.incr(key, 1) == 2
    after = b.get(key)
    assert after is not None and after.version != before.version
    assert b.compare_and_set(key, before.version, 100) == CasResult(False, after)
    stored, written = b.compare_and_set(key, after.version, 100)
    assert stored is True
    assert written in (b.get(key), None)
    assert store.get("n") == 100
    assert b.incr(key, 1) == 101  # still a native integer


def test_compare_and_set_sets_ttl(store: Store) -> None:
    b = store.backend
    key = store._keyspace.full_key("k")
    b.set(key, b'"v"')
    entry = b.get(key)
    assert entry is not None
    assert b.compare_and_set(key, entry.version, b'"w"', TTL).stored is True
    assert store.get("k") == "w"
    wait_until(lambda: store.get("k") is None)


def test_compare_and_set_race_has_one_winner(store: Store) -> None:
    b = store.backend
    key = store._keyspace.full_key("cas")
    b.set(key, b'"start"')
    entry = b.get(key)
    assert entry is not None
    wins = run_threads(8, lambda i: b.compare_and_set(key, entry.version, f'"t{i}"'.encode()).stored)
    assert wins.count(True) == 1
    assert store.get("cas") == f"t{wins.index(True)}"


# -- namespaces ------------------------------------------------------------------------------


def test_namespace_isolation(store_url: str, namespace: str) -> None:
    with (
        Store(store_url, namespace=namespace + "a") as a,
        Store(store_url, namespace=namespace + "b") as b,
    ):
        a.set("k", "in a")
        b.set("k", "in b")
        assert a.incr("n") == 1
        assert b.incr("n") == 1
        assert a.get("k") == "in a" and b.get("k") == "in b"
        a.delete("k")
        assert a.get("k") is None and b.get("k") == "in b"
        with a.lock("L", ttl=5), b.lock("L", ttl=5, timeout=0):  # same name, other namespace
            pass
        assert supported(lambda: a.keys()) == ["n"]
        assert b.keys() == ["k", "n"]


def test_same_namespace_is_shared(shared_url: str, namespace: str) -> None:
    with Store(shared_url, namespace=namespace) as a, Store(shared_url, namespace=namespace) as b:
        a.set("k", "from a")
        assert b.get("k") == "from a"
        assert a.incr("n") == 1 and b.incr("n") == 2
        a.dict("d")["x"] = 1
        assert b.dict("d")["x"] == 1


# -- counter ---------------------------------------------------------------------------------


@both_apis
def test_counter(store: Store, api: SimpleNamespace) -> None:
    c = store.counter("hits")
    assert isinstance(c, api.Counter)
    assert c.get() == 0
    assert c.incr() == 1
    assert c.incr(5) == 6
    assert c.decr() == 5
    assert c.decr(10) == -5
    assert c.get() == -5
    assert store.get("hits") == -5  # a plain integer at key "hits"
    c.reset()
    assert c.get() == 0
    c.reset(41)
    assert c.incr() == 42
    assert store.counter("hits").get() == 42  # a new view of the same counter


# -- dict ------------------------------------------------------------------------------------


def test_dict_mapping(store: Store) -> None:
    d = store.dict("prefs")
    assert isinstance(d, SharedDict)
    d["theme"] = "dark"
    d["size"] = 12
    assert d["theme"] == "dark" and d["size"] == 12
    assert d.get("missing") is None and d.get("missing", 1) == 1
    with pytest.raises(KeyError):
        d["missing"]
    assert "theme" in d and "missing" not in d and 3 not in d
    assert supported(lambda: sorted(d)) == ["size", "theme"]
    assert len(d) == 2
    assert dict(d.items()) == {"theme": "dark", "size": 12}
    assert sorted(d.values(), key=str) == [12, "dark"]
    assert d == {"theme": "dark", "size": 12}
    del d["size"]
    with pytest.raises(KeyError):
        del d["size"]
    d.update({"a": 1}, b=2)
    assert dict(d) == {"theme": "dark", "a": 1, "b": 2}
    # items live one per key, at "name:item", and other dicts do not see them
    assert store.get("prefs:theme") == "dark"
    assert len(store.dict("other")) == 0
    d.clear()
    assert len(d) == 0 and dict(d) == {}


def test_dicts_whose_names_share_a_prefix_never_share_items(store: Store) -> None:
    a, ab, pct = store.dict("a"), store.dict("a:b"), store.dict("a%3Ab")
    a["b:x"] = "item b:x of a"
    ab["x"] = "item x of a:b"
    pct["x"] = "item x of a%3Ab"
    assert (a["b:x"], ab["x"], pct["x"]) == ("item b:x of a", "item x of a:b", "item x of a%3Ab")
    assert supported(lambda: sorted(a)) == ["b:x"]
    assert sorted(ab) == ["x"] and sorted(pct) == ["x"]
    del ab["x"]
    assert a["b:x"] == "item b:x of a" and pct["x"] == "item x of a%3Ab"


def test_dict_setdefault_pop(store: Store) -> None:
    d = store.dict("d")
    assert d.setdefault("k", [1]) == [1]
    assert d.setdefault("k", [2]) == [1]
    assert d["k"] == [1]
    assert d.setdefault("none") is None
    assert "none" in d
    assert d.pop("k") == [1]
    assert "k" not in d
    assert d.pop("k", "dflt") == "dflt"
    with pytest.raises(KeyError):
        d.pop("k")


def test_dict_incr_update_item(store: Store) -> None:
    d = store.dict("d")
    assert d.incr("n") == 1
    assert d.incr("n", 4) == 5
    assert d["n"] == 5
    assert d.update_item("lst", lambda v: [*v, "x"], default=[]) == ["x"]
    assert d.update_item("lst", lambda v: [*v, "y"], default=[]) == ["x", "y"]
    assert d["lst"] == ["x", "y"]


@both_apis
def test_dict_methods(store: Store, api: SimpleNamespace) -> None:
    """The dict's methods, which both APIs share (the sync dict adds the mapping dunders)."""
    d = store.dict("prefs")
    assert isinstance(d, api.SharedDict)
    d.set("theme", "dark")
    assert d.get("theme") == "dark"
    assert d.get("missing") is None and d.get("missing", 1) == 1
    assert d.contains("theme") is True
    assert d.contains("missing") is False and d.contains(3) is False
    assert d.incr("n") == 1 and d.incr("n", 2) == 3
    assert d.setdefault("theme", "light") == "dark"
    assert d.setdefault("lang", "en") == "en"
    assert d.update_item("n", lambda v: v * 10) == 30
    assert store.get("prefs:theme") == "dark"  # one key per item, at "name:item"
    assert d.pop("lang") == "en"
    assert d.pop("lang", None) is None
    with pytest.raises(KeyError):
        d.pop("lang")
    assert d.delete("n") is True
    assert d.delete("n") is False
    store.dict("a").set("b:x", 1)
    assert store.dict("a:b").get("x") is None  # dicts whose names share a prefix never mix
    d.set("size", 12)
    # Listing last (memcached cannot list). The sync dict's keys()/items() are MutableMapping
    # views in the backend's order, the async ones sorted lists: compared sorted.
    assert supported(lambda: sorted(d.keys())) == ["size", "theme"]
    assert sorted(d.items()) == [("size", 12), ("theme", "dark")]
    assert d.len() == 2
    d.clear()
    assert d.len() == 0 and list(d.items()) == []


def test_dict_atomic_setdefault_and_pop_under_threads(store: Store) -> None:
    d = store.dict("d")
    got = run_threads(8, lambda i: d.setdefault("k", f"t{i}"))
    assert len(set(got)) == 1 and d["k"] == got[0]
    d["prize"] = "yes"
    popped = run_threads(8, lambda i: d.pop("prize", None))
    assert popped.count("yes") == 1 and popped.count(None) == 7


# -- edit and update -------------------------------------------------------------------------


@both_apis
def test_edit(store: Store) -> None:
    default = {"param": 0}
    with store.edit("obj", default=default) as obj:
        obj["param"] += 1
    assert default == {"param": 0}  # the default is copied, not mutated
    with store.edit("obj", default=default) as obj:
        obj["param"] += 1
        obj["more"] = [1]
    assert store.get("obj") == {"param": 2, "more": [1]}
    with store.edit("lst", default=[]) as lst:
        lst.append("x")
    assert store.get("lst") == ["x"]


@both_apis
def test_edit_body_raises_nothing_saved(store: Store) -> None:
    store.set("obj", {"n": 1})
    with pytest.raises(RuntimeError), store.edit("obj") as obj:
        obj["n"] = 99
        raise RuntimeError("boom")
    assert store.get("obj") == {"n": 1}
    with store.edit("obj", timeout=0) as obj:  # the lock was released
        obj["n"] = 2
    assert store.get("obj") == {"n": 2}


@both_apis
def test_edit_needs_dict_or_list(store: Store) -> None:
    store.set("s", "text")
    with pytest.raises(TypeError, match="update"), store.edit("s"):
        pass
    with pytest.raises(TypeError), store.edit("absent"):  # default None
        pass
    assert store.get("s") == "text" and store.get("absent") is None


def test_edit_excludes_same_name_only(store: Store) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.edit("a", default={}) as obj:
            obj["held"] = True
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        with pytest.raises(LockTimeout), store.edit("a", default={}, timeout=0.2):
            pass
        with store.edit("b", default={}, timeout=0.5) as other:  # another name is not blocked
            other["ok"] = True
    finally:
        release.set()
        holder.join()
    assert store.get("a") == {"held": True}
    assert store.get("b") == {"ok": True}


@both_apis
def test_edit_with_ttl(store: Store) -> None:
    with store.edit("obj", default={}, ttl=TTL) as obj:
        obj["x"] = 1
    assert store.get("obj") == {"x": 1}
    wait_until(lambda: store.get("obj") is None)


def test_edit_lease_expired_and_value_changed_raises_conflict(store: Store) -> None:
    store.set("obj", {"n": 0})
    with pytest.raises(ConflictError), store.edit("obj", lease=TTL) as obj:
        obj["n"] = 100
        time.sleep(TTL + 0.2)
        # the lease ran out: another writer (another thread; this one may not nest) changes it
        run_threads(1, lambda _i: _edit_n(store, "obj", 1))
    assert store.get("obj") == {"n": 1}  # the other write is kept, the stale one is not saved


def _edit_n(store: Store, name: str, n: int) -> None:
    with store.edit(name, timeout=EXPIRY_LIMIT) as other:
        other["n"] = n


@both_apis
def test_edit_lease_expired_but_unchanged_is_saved(store: Store) -> None:
    """Outliving the lease is harmless when nobody wrote meanwhile: saved, and no exception."""
    store.set("obj", {"n": 0})
    with store.edit("obj", lease=TTL) as obj:
        obj["n"] = 1
        time.sleep(TTL + 0.3)
    assert store.get("obj") == {"n": 1}


@both_apis
def test_update(store: Store) -> None:
    default = {"n": 0}
    assert store.update("stats", lambda s: {**s, "n": s["n"] + 1}, default=default) == {"n": 1}
    assert store.update("stats", lambda s: {**s, "n": s["n"] + 1}, default=default) == {"n": 2}
    assert default == {"n": 0}
    assert store.get("stats") == {"n": 2}
    assert store.update("x", lambda v: (v or 0) + 1) == 1  # default None
    assert store.update("t", lambda v: [*v, 1], default=[], ttl=TTL) == [1]
    wait_until(lambda: store.get("t") is None)


def test_update_retries_on_conflict(store: Store) -> None:
    """A concurrent write between read and compare-and-set makes ``fn`` run again on the new value."""
    store.set("v", 0)
    calls: list[int] = []

    def fn(current: int) -> int:
        calls.append(current)
        if len(calls) == 1:  # someone else (another thread) writes after our read
            run_threads(1, lambda _i: store.set("v", 10))
        return current + 1

    assert store.update("v", fn) == 11
    assert calls == [0, 10]
    assert store.get("v") == 11


class _CountingBackend:
    """Counts the backend calls a store makes, passing every call through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return counted


def test_repeated_update_is_one_round_trip(store: Store) -> None:
    """``update`` starts from what this process last wrote, so it need not read first."""
    store.update("n", lambda v: v + 1, default=0)
    counting = _CountingBackend(store.backend)
    store.backend = counting  # type: ignore[assignment]
    for _ in range(3):
        store.update("n", lambda v: v + 1, default=0)
    assert store.get("n") == 4
    # A backend that cannot report the version it wrote (memcached) reads first instead.
    assert counting.calls[:-1] in (["compare_and_set"] * 3, ["get", "compare_and_set"] * 3)


@both_apis
def test_update_after_another_write_runs_again_on_the_stored_value(store: Store) -> None:
    store.update("v", lambda v: v + 1, default=0)
    store.set("v", 100)  # another writer: what this process wrote is out of date
    calls: list[int] = []

    def fn(current: int) -> int:
        calls.append(current)
        return current + 1

    assert store.update("v", fn) == 101
    assert calls[-1] == 100 and calls in ([1, 100], [100])  # [1, ...]: the stale guess was refused
    assert store.get("v") == 101


@both_apis
def test_update_error_from_an_out_of_date_guess_is_not_raised(store: Store) -> None:
    """``fn`` may fail on the value this process last wrote; only the stored value may fail the call."""

    def withdraw(account: dict[str, int]) -> dict[str, int]:
        if account["balance"] < 50:
            raise ValueError("insufficient funds")
        return {"balance": account["balance"] - 50}

    store.update("acct", lambda a: {"balance": 10}, default={})
    store.set("acct", {"balance": 100})  # a deposit by another writer
    assert store.update("acct", withdraw) == {"balance": 50}
    with pytest.raises(ValueError, match="insufficient funds"):
        store.update("acct", lambda a: withdraw({"balance": a["balance"] - 10}))
    assert store.get("acct") == {"balance": 50}


@both_apis
def test_update_of_an_expired_or_deleted_key_starts_from_default(store: Store) -> None:
    store.update("gone", lambda v: v + 1, default=0)
    store.delete("gone")
    assert store.update("gone", lambda v: v + 1, default=10) == 11
    store.update("short", lambda v: v + 1, default=0, ttl=TTL)
    wait_until(lambda: store.get("short") is None)
    assert store.update("short", lambda v: v + 1, default=0) == 1


# -- nested read-modify-write of one key -------------------------------------------------------


def test_nested_update_of_the_same_key_raises_at_once(store: Store) -> None:
    """The inner update used to commit on every retry of the outer one (applied 50 times in 51
    tries): now it raises before writing anything, and the outer update writes nothing either."""
    store.set("n", 0)
    inner_runs = []

    def outer(v: int) -> int:
        inner_runs.append(1)
        store.update("n", lambda w: w + 1)
        return v + 10

    with pytest.raises(NestedUpdateError, match="'n'") as info:
        store.update("n", outer)
    assert isinstance(info.value, RuntimeError)
    assert store.get("n") == 0 and len(inner_runs) == 1
    store.update("n", lambda v: v + 1)  # the key is usable again afterwards
    assert store.get("n") == 1


@both_apis
def test_nested_edit_of_the_same_key_raises_at_once(store: Store) -> None:
    """The inner edit used to wait out the outer edit's whole lease, then ConflictError."""
    store.set("obj", {"n": 0})
    start = time.monotonic()
    with pytest.raises(NestedUpdateError, match="'obj'"), store.edit("obj", lease=5) as obj:
        obj["n"] = 1
        with store.edit("obj", lease=5) as again:
            again["n"] = 2
    assert time.monotonic() - start < 2  # at once, not after the 5 s lease
    assert store.get("obj") == {"n": 0}  # the outer body raised: nothing saved
    with store.edit("obj", timeout=0) as obj:  # and its lock was released
        obj["n"] = 3
    assert store.get("obj") == {"n": 3}


@pytest.mark.parametrize(
    "inner",
    ["update", "edit", "set", "add", "delete", "incr", "touch", "dict_item"],
)
def test_writes_of_the_key_being_updated_or_edited_raise(store: Store, inner: str) -> None:
    d = store.dict("d")
    writes: dict[str, Callable[[str], Any]] = {
        "update": lambda key: store.update(key, lambda v: v),
        "set": lambda key: store.set(key, {"x": 1}),
        "add": lambda key: store.add(key, {"x": 1}),
        "delete": lambda key: store.delete(key),
        "incr": lambda key: store.incr(key),
        "touch": lambda key: store.touch(key, 60),
    }

    def write(key: str) -> None:
        if inner == "edit":
            with store.edit(key, default={}):
                pass
        elif inner == "dict_item":
            d["item"] = {"x": 2}
        else:
            writes[inner](key)

    key = "d:item" if inner == "dict_item" else "k"
    d["item"] = {"n": 1}
    store.set("k", {"n": 1})
    outers: list[Callable[[Callable[[], None]], object]] = [
        lambda body: store.update(key, lambda v: (body(), v)[1]),
        lambda body: _in_edit(store, key, body),
    ]
    if inner == "dict_item":
        outers.append(lambda body: d.update_item("item", lambda v: (body(), v)[1]))
    for run_outer in outers:
        with pytest.raises(NestedUpdateError):
            run_outer(lambda: write(key))
    assert store.get("k") == {"n": 1} and d["item"] == {"n": 1}


def _in_edit(store: Store, key: str, body: Callable[[], None]) -> None:
    with store.edit(key, default={}):
        body()


def test_nested_read_modify_writes_of_different_keys_work(store: Store) -> None:
    store.set("a", 0)

    def outer(v: int) -> int:
        store.update("b", lambda w: w + 1, default=0)
        with store.edit("c", default=[]) as c:
            c.append(v)
            store.set("d", "inside")
            store.update("e", lambda w: w + 1, default=0)
        store.get("a")  # reading the key being updated is fine
        return v + 1

    assert store.update("a", outer) == 1
    with store.edit("x", default={}) as x:
        x["b"] = store.update("b", lambda w: w + 1)
        store.dict("d2")["item"] = 1
    assert (store.get("a"), store.get("b"), store.get("c"), store.get("d"), store.get("e")) == (
        1,
        2,
        [0],
        "inside",
        1,
    )
    assert store.get("x") == {"b": 2}


def test_same_key_updated_by_other_threads_and_tasks_is_not_refused(store: Store) -> None:
    """Re-entry is per thread or asyncio task: concurrent updates of one key all apply."""
    store.set("n", 0)
    entered = threading.Event()

    def outer(v: int) -> int:
        if not entered.is_set():
            entered.set()
            # Another thread updates the same key while this fn runs: allowed (it just wins).
            thread = threading.Thread(target=lambda: store.update("n", lambda w: w + 100))
            thread.start()
            thread.join()
        return v + 1

    assert store.update("n", outer) == 101  # retried on the other thread's value
    assert store.get("n") == 101

    async def bump() -> None:
        await asyncio.sleep(0)
        store.update("n", lambda w: w + 1)

    async def main() -> None:
        await asyncio.gather(*(bump() for _ in range(5)))

    asyncio.run(main())
    assert store.get("n") == 106


# -- lock ------------------------------------------------------------------------------------


@both_apis
def test_lock_acquire_release(store: Store, api: SimpleNamespace) -> None:
    lock = store.lock("job", ttl=5)
    assert isinstance(lock, api.Lock)
    assert not lock.locked
    token = lock.acquire()
    assert isinstance(token, int) and lock.fencing_token == token
    assert lock.locked and lock.owned
    other = store.lock("job", ttl=5)
    assert other.locked and not other.owned
    with pytest.raises(LockTimeout):
        other.acquire(timeout=0)
    with pytest.raises(LockTimeout) as info:
        other.acquire(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(RuntimeError):
        lock.acquire(timeout=0)  # not reentrant
    lock.release()
    assert not lock.locked
    assert other.acquire(timeout=0) > token
    other.release()


@both_apis
def test_lock_context_manager_and_fencing_tokens_increase(store: Store) -> None:
    tokens = []
    for _ in range(3):
        with store.lock("job", ttl=5) as lock:
            tokens.append(lock.fencing_token)
    tokens.append(store.lock("job").acquire())
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == sorted(set(tokens)), tokens


@both_apis
def test_lock_names_never_collide_with_fencing_counters(store: Store) -> None:
    x = store.lock("x", ttl=5)
    first = x.acquire()
    with store.lock("x:fence", ttl=5, timeout=1) as other:  # not where lock "x" counts
        assert other.fencing_token == 1
    x.release()
    assert store.lock("x", ttl=5, timeout=1).acquire() == first + 1


@both_apis
def test_lock_release_by_owner_only(store: Store) -> None:
    owner = store.lock("job", ttl=5)
    owner.acquire()
    intruder = store.lock("job", ttl=5)
    with pytest.raises(LockNotOwnedError):
        intruder.release()  # never acquired
    with pytest.raises(LockNotOwnedError):
        intruder.extend()
    assert owner.owned  # still held by its owner
    owner.release()
    with pytest.raises(LockNotOwnedError):
        owner.release()  # twice


@both_apis
def test_lock_lease_expires(store: Store) -> None:
    first = store.lock("job", ttl=TTL)
    second = store.lock("job", ttl=5)
    start = time.monotonic()
    t1 = first.acquire()
    t2 = second.acquire(timeout=EXPIRY_LIMIT)
    assert time.monotonic() - start >= TTL - 0.05  # not before the lease ran out
    assert t2 > t1
    assert not first.owned
    with pytest.raises(LockNotOwnedError):
        first.release()  # its lease expired: it cannot release the new holder's lock
    assert second.owned
    with pytest.raises(LockNotOwnedError):
        first.extend()
    second.release()


@both_apis
def test_lock_extend(store: Store) -> None:
    lock = store.lock("job", ttl=0.6)
    lock.acquire()
    for _ in range(3):
        time.sleep(0.25)
        lock.extend()
    assert lock.owned  # held for longer than one lease
    lock.extend(5)
    time.sleep(0.8)
    assert lock.owned
    with pytest.raises(LockTimeout):
        store.lock("job").acquire(timeout=0)
    lock.release()


@both_apis
def test_lock_blocking_false_tries_once(store: Store) -> None:
    """The standard library's spelling: ``blocking=False``."""
    holder = store.lock("job", ttl=5)
    holder.acquire()
    start = time.monotonic()
    with pytest.raises(LockTimeout, match="blocking=False"), store.lock("job", blocking=False):
        pass
    other = store.lock("job", ttl=5)
    assert other.acquire(blocking=False) is False
    assert store.lock("job", blocking=False).acquire() is False
    assert time.monotonic() - start < 1  # no waiting
    holder.release()
    token = other.acquire(blocking=False)
    assert token is not False and token > 0 and other.owned
    other.release()
    with store.lock("job", blocking=False) as lock:
        assert lock.owned
    with pytest.raises(ValueError, match="timeout"):
        store.lock("job", timeout=1, blocking=False)
    with pytest.raises(ValueError, match="timeout"):
        store.lock("job").acquire(timeout=1, blocking=False)


@both_apis
def test_extend_with_a_bad_ttl_leaves_the_lease_as_it_was(store: Store) -> None:
    """``extend(nan)`` used to store the lease as NULL (held forever), ``extend(inf)`` as inf,
    ``extend(0)`` and ``extend(-1)`` to drop the lock silently."""
    lock = store.lock("job", ttl=TTL)
    lock.acquire()
    for bad in (float("nan"), float("inf"), 0, -1, 1e-6, "5", True):
        with pytest.raises((ValueError, TypeError)):
            lock.extend(bad)  # type: ignore[arg-type]
    assert lock.owned  # not dropped
    # ...and not made eternal: the lease still runs out after its ttl.
    other = store.lock("job", ttl=5)
    other.acquire(timeout=EXPIRY_LIMIT)
    assert not lock.owned
    other.release()


@both_apis
def test_lock_timeout_default_from_constructor(store: Store) -> None:
    holder = store.lock("job", ttl=5)
    holder.acquire()
    start = time.monotonic()
    with pytest.raises(LockTimeout), store.lock("job", timeout=0.3):
        pass
    assert time.monotonic() - start >= 0.25
    holder.release()


# -- lifecycle -------------------------------------------------------------------------------


def test_close_then_use_again(store: Store) -> None:
    store.set("k", 1)
    store.close()
    assert store.get("k") == 1
    store.set("k", 2)
    store.close()
    store.close()
    assert store.get("k") == 2


def test_store_is_usable_from_many_threads(store: Store) -> None:
    def work(i: int) -> int:
        store.set(f"k{i}", i)
        return int(store.get(f"k{i}"))

    assert run_threads(16, work) == list(range(16))
