"""``cached``: keys, None results, invalidation, single flight across threads and processes, stale values."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from sharedstate import NotSupportedError, SerializationError, Store
from sharedstate.cache import CACHE_PREFIX, CachedFunction, cached

FORK = multiprocessing.get_context("fork")


class Color(enum.Enum):
    RED = 1


def can_scan(store: Store) -> bool:
    try:
        next(iter(store.backend.scan("probe:")), None)
    except NotSupportedError:
        return False  # memcached cannot list keys
    return True


def stored(store: Store, fn: CachedFunction[..., Any], *args: Any) -> bool:
    """Whether ``fn``'s entry for ``args`` is in the store."""
    return store.backend.get(store._keyspace.full_key(fn.cache_key(*args), internal=True)) is not None


def _counting(calls: list[Any]) -> Callable[..., Any]:
    def fn(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return len(calls)

    return fn


def test_caches_result_and_counts_runs(store: Store) -> None:
    calls: list[Any] = []

    @store.cached(ttl=60)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9
    assert square(3) == 9
    assert square(4) == 16
    assert calls == [3, 4]
    assert square.__name__ == "square"
    assert isinstance(square, CachedFunction)


def test_none_is_cached(store: Store) -> None:
    calls: list[int] = []

    @store.cached(ttl=60)
    def nothing(x: int) -> None:
        calls.append(x)

    assert nothing(1) is None
    assert nothing(1) is None
    assert calls == [1]


def test_arguments_bound_to_signature(store: Store) -> None:
    calls: list[Any] = []

    @store.cached(ttl=60)
    def f(a: int, b: int = 2, *rest: int, **extra: int) -> int:
        calls.append((a, b, rest, extra))
        return a + b + sum(rest) + sum(extra.values())

    assert f(1) == 3
    assert f(a=1) == 3
    assert f(1, 2) == 3
    assert f(1, b=2) == 3
    assert len(calls) == 1
    assert f(1, 2, 3) == 6
    assert f(1, z=1) == 4
    assert f(1, y=1) == 4  # a different keyword is a different call
    assert len(calls) == 4
    assert f(1, y=1, z=1) == f(1, z=1, y=1) == 5
    assert len(calls) == 5
    with pytest.raises(TypeError):
        f()  # type: ignore[call-arg]


def test_argument_types_are_part_of_the_key(store: Store) -> None:
    calls: list[Any] = []
    f = store.cached(ttl=60)(_counting(calls))
    distinct = [1, 1.5, True, "1", b"1", (1,), [1], {1}, frozenset({1}), None, Color.RED]
    distinct += [dt.date(2024, 1, 1), dt.datetime(2024, 1, 1), uuid.UUID(int=1), Decimal("1.0")]
    distinct += [{"a": 1}, {"$a": [1]}]
    keys = {f.cache_key(v) for v in distinct}
    assert len(keys) == len(distinct)
    assert f.cache_key(1) != f.cache_key(1.0)
    assert f.cache_key((1, 2)) != f.cache_key([1, 2])
    for v in distinct:
        f(v)
    for v in distinct:
        f(v)
    assert len(calls) == len(distinct)


class Text(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


class Level(enum.IntEnum):
    HIGH = 2


def test_markup_and_str_arguments_are_different_entries(store: Store) -> None:
    """Markup("<b>") is safe HTML, "<b>" is text that a function escapes: they used to share an
    entry, so one caller could get the other's (unescaped) result."""

    @store.cached(ttl=60)
    def render(text: str) -> Markup:
        return Markup("<p>{}</p>").format(text)

    assert render("<b>") == "<p>&lt;b&gt;</p>"
    assert render(Markup("<b>")) == "<p><b></p>"
    assert type(render(Markup("<b>"))) is Markup  # the result round-trips as Markup too
    assert render("<b>") == "<p>&lt;b&gt;</p>"
    assert render.cache_key("<b>") != render.cache_key(Markup("<b>"))


@pytest.mark.parametrize(
    "bad", [Text("x"), Count(1), Ratio(0.5), [Text("x")]], ids=["str", "int", "float", "nested"]
)
def test_subclass_arguments_are_refused(store: Store, bad: Any) -> None:
    f = store.cached(ttl=60)(_counting([]))
    with pytest.raises(TypeError, match=r"(Text|Count|Ratio) in argument"):
        f(bad)
    assert f.cache_key(Level.HIGH) != f.cache_key(2)  # IntEnum members stay keyed as enums
    assert f.cache_key(True) != f.cache_key(1)  # bool stays bool


def test_unstorable_result_names_the_path_inside_the_result(store: Store) -> None:
    @store.cached(ttl=60, stale_ttl=30)
    def listing() -> dict[str, Any]:
        return {"items": [1, 2, 3, object()]}

    with pytest.raises(SerializationError) as info:
        listing()
    message = str(info.value)
    assert "object at result['items'][3] is not supported" in message
    assert "['v']" not in message  # not the cache's own wrapper


def test_coroutine_functions_are_refused_when_decorated(store: Store) -> None:
    async def fetch(x: int) -> int:
        return x

    async def stream(x: int) -> Any:
        yield x

    for fn in (fetch, stream):
        with pytest.raises(TypeError, match=r"async.*synchronous function"):
            store.cached(ttl=60)(fn)


def test_methods_are_refused_when_decorated(store: Store) -> None:
    with pytest.raises(TypeError, match=r"method .*Repo\.get.*module-level function"):

        class Repo:
            @store.cached(ttl=60)
            def get(self, x: int) -> int:
                return x

    with pytest.raises(TypeError, match=r"method .*Repo2\.make"):

        class Repo2:
            @classmethod
            @store.cached(ttl=60, name="make")
            def make(cls, x: int) -> int:
                return x

    class Fine:
        @staticmethod
        @store.cached(ttl=60)
        def double(x: int) -> int:
            return 2 * x

    assert Fine.double(2) == 4 and Fine().double(2) == 4

    class Bound:
        def triple(self, x: int) -> int:
            return 3 * x

    bound = store.cached(ttl=60, name="triple")(Bound().triple)  # self already bound: accepted
    assert bound(2) == 6 and bound(2) == 6

    def outer() -> Callable[[int], int]:
        @store.cached(ttl=60)
        def inner(self: int) -> int:  # nested in a function, not a method, whatever its names
            return self + 1

        return inner

    assert outer()(1) == 2


def test_equal_containers_share_an_entry(store: Store) -> None:
    calls: list[Any] = []
    f = store.cached(ttl=60)(_counting(calls))
    f({"a": 1, "b": [1, 2]}, {3, 1, 2})
    f({"b": [1, 2], "a": 1}, {2, 3, 1})
    assert len(calls) == 1
    assert f.cache_key({"x": {1, 2}}) == f.cache_key({"x": {2, 1}})


def test_key_layout(store: Store) -> None:
    @store.cached(ttl=60)
    def keyed(x: int) -> int:
        return x

    key = keyed.cache_key(1)
    assert key.startswith(f"{CACHE_PREFIX}{__name__}.test_key_layout.<locals>.keyed:")
    assert not stored(store, keyed, 1)
    keyed(1)
    assert stored(store, keyed, 1)
    if can_scan(store):
        assert store.keys(CACHE_PREFIX) == [key]
        assert store.keys() == []  # internal keys are not listed with user keys


def test_name_overrides_the_qualified_name(store: Store) -> None:
    def make(factor: int) -> Callable[[int], int]:
        def scaled(x: int) -> int:
            return factor * x

        return scaled

    # Same qualified name: without a name of their own they would share entries.
    double = store.cached(ttl=60, name="double")(make(2))
    triple = store.cached(ttl=60, name="triple")(make(3))
    assert (double(5), triple(5)) == (10, 15)
    assert double.cache_key(5).startswith(f"{CACHE_PREFIX}double:")
    with pytest.raises(TypeError, match="name="):
        store.cached(ttl=60)(lambda x: x)
    with pytest.raises(TypeError, match="name="):
        store.cached(ttl=60)(functools.partial(max, 0))
    assert store.cached(ttl=60, name="clamp")(functools.partial(max, 0))(-3) == 0
    with pytest.raises(ValueError):
        store.cached(ttl=60, name="")


@pytest.mark.parametrize("bad", [object(), threading.Lock(), [1, object()], {"k": object()}, {object()}])
def test_uncacheable_arguments_raise_type_error(store: Store, bad: Any) -> None:
    calls: list[Any] = []

    @store.cached(ttl=60)
    def f(thing: Any) -> int:
        calls.append(thing)
        return 1

    with pytest.raises(TypeError, match=r"cannot cache .*f\(\).*argument 'thing'.*stable encoding"):
        f(bad)
    assert calls == []


def test_cyclic_argument_raises_type_error(store: Store) -> None:
    f = store.cached(ttl=60)(_counting([]))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="cycle"):
        f(loop)


def test_unstorable_result_raises_and_stores_nothing(store: Store) -> None:
    calls: list[int] = []

    @store.cached(ttl=60)
    def bad(x: int) -> object:
        calls.append(x)
        return object()

    with pytest.raises(SerializationError):
        bad(1)
    with pytest.raises(SerializationError):
        bad(1)  # the flight key was released: no wait, computed again
    assert calls == [1, 1]
    assert not stored(store, bad, 1)


def test_exception_is_not_cached(store: Store) -> None:
    calls: list[int] = []

    @store.cached(ttl=60)
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return x

    with pytest.raises(RuntimeError):
        flaky(5)
    assert flaky(5) == 5
    assert flaky(5) == 5
    assert calls == [5, 5]


def test_invalidate(store: Store) -> None:
    calls: list[Any] = []
    f = store.cached(ttl=60)(_counting(calls))
    f(1)
    f(2)
    assert f.invalidate(1) is True
    assert f.invalidate(1) is False
    assert not stored(store, f, 1)
    assert stored(store, f, 2)
    f(1)
    f(2)
    assert len(calls) == 3


def test_invalidate_all_is_per_function(store: Store) -> None:
    calls: list[Any] = []

    def one(x: int) -> int:
        calls.append(x)
        return 1

    def two(x: int) -> int:
        return 2

    c1, c2 = store.cached(ttl=60)(one), store.cached(ttl=60)(two)
    assert (c1(0), c1(1), c2(0)) == (1, 1, 2)
    if not can_scan(store):
        with pytest.raises(NotSupportedError):
            c1.invalidate_all()
        return
    assert c1.invalidate_all() == 2
    assert not stored(store, c1, 0) and not stored(store, c1, 1)
    assert stored(store, c2, 0)
    c1(0)
    assert calls == [0, 1, 0]


def test_entry_expires_after_ttl(store: Store) -> None:
    calls: list[Any] = []
    f = store.cached(ttl=0.5)(_counting(calls))
    f(1)
    deadline = time.monotonic() + 10
    while len(calls) == 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        f(1)
    assert len(calls) == 2


def test_validates_ttls(store: Store) -> None:
    with pytest.raises(ValueError):
        store.cached(ttl=0)
    with pytest.raises(ValueError):
        store.cached(ttl=10, stale_ttl=-1)
    with pytest.raises(TypeError):
        store.cached(ttl="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.cached(ttl=10, lease=float("inf"))


def test_store_may_be_resolved_at_call_time(store: Store) -> None:
    resolved: list[Store] = []

    def current() -> Store:
        resolved.append(store)
        return store

    f = cached(current, 60)(_counting([]))
    assert resolved == []
    f(1)
    assert resolved == [store]


@pytest.mark.timeout(60)
def test_single_flight_across_threads(store: Store) -> None:
    runs: list[int] = []
    gate = threading.Barrier(8)

    @store.cached(ttl=60)
    def slow(x: int) -> int:
        runs.append(x)
        time.sleep(0.3)
        return x * 10

    results: list[int] = []

    def call() -> None:
        gate.wait(10)
        results.append(slow(7))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [70] * 8
    assert runs == [7]


@pytest.mark.timeout(60)
def test_waiter_takes_over_when_the_computing_caller_raises(store: Store) -> None:
    runs: list[int] = []
    gate = threading.Barrier(4)

    @store.cached(ttl=60)
    def first_run_fails(x: int) -> int:
        runs.append(x)
        time.sleep(0.2)
        if len(runs) == 1:
            raise RuntimeError("boom")
        return x

    outcomes: list[object] = []

    def call() -> None:
        gate.wait(10)
        try:
            outcomes.append(first_run_fails(3))
        except RuntimeError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 4
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1
    assert outcomes.count(3) == 3
    assert len(runs) == 2


@pytest.mark.timeout(60)
def test_stale_value_served_while_exactly_one_recomputes(store: Store) -> None:
    runs: list[int] = []
    others_done = threading.Event()
    waited_for_others: list[bool] = []

    @store.cached(ttl=0.3, stale_ttl=60)
    def versioned(x: int) -> str:
        runs.append(x)
        if len(runs) > 1:
            # The refresh is held until every other caller has returned: if they waited for it
            # instead of taking the stale value, this times out and the test fails.
            waited_for_others.append(others_done.wait(20))
        return f"v{len(runs)}"

    assert versioned(1) == "v1"
    time.sleep(0.4)  # past ttl: the entry is stale now (and stays for stale_ttl)

    gate = threading.Barrier(8)
    results: list[str] = []
    lock = threading.Lock()
    returned = 0

    def call() -> None:
        nonlocal returned
        gate.wait(10)
        value = versioned(1)
        with lock:
            results.append(value)
            if value == "v1":
                returned += 1
                if returned == 7:
                    others_done.set()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert sorted(results) == ["v1"] * 7 + ["v2"]
    assert runs == [1, 1]
    assert waited_for_others == [True]
    assert versioned(1) == "v2"  # fresh again: no third run
    assert runs == [1, 1]


# -- across processes --------------------------------------------------------------------------


def slow_append(path: str) -> str:
    """Appends a line each time it really runs, then takes half a second."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    return "computed"


def _child_call(url: str, namespace: str, path: str, barrier: Any) -> None:
    store = Store(url, namespace=namespace)
    fn = store.cached(ttl=60)(slow_append)
    barrier.wait(30)
    result = fn(path)
    store.close()
    os._exit(0 if result == "computed" else 5)


@pytest.mark.timeout(120)
def test_single_flight_across_8_processes(shared_url: str, namespace: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    barrier = FORK.Barrier(8)
    procs = [
        FORK.Process(target=_child_call, args=(shared_url, namespace, str(log), barrier)) for _ in range(8)
    ]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 60
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    assert [p.exitcode for p in procs] == [0] * 8  # each got "computed"
    assert len(log.read_text().splitlines()) == 1


def crash_while_computing(x: int) -> int:
    if os.environ.get("SS_TEST_CRASH") == "1":
        os._exit(3)  # a worker killed mid-computation: no finally, the flight key stays
    return x + 1


def _child_crash(url: str, namespace: str) -> None:
    os.environ["SS_TEST_CRASH"] = "1"
    store = Store(url, namespace=namespace)
    store.cached(ttl=60, lease=2.0)(crash_while_computing)(41)


@pytest.mark.timeout(60)
def test_crashed_computer_blocks_others_only_for_its_lease(shared_url: str, namespace: str) -> None:
    child = FORK.Process(target=_child_crash, args=(shared_url, namespace))
    child.start()
    try:
        child.join(30)
        assert child.exitcode == 3
    finally:
        if child.is_alive():
            child.kill()
    with Store(shared_url, namespace=namespace) as store:
        fn = store.cached(ttl=60, lease=2.0)(crash_while_computing)
        flight = store._keyspace.full_key(fn.cache_key(41), internal=True) + ":flight"
        if store.backend.get(flight) is None:
            pytest.fail("the crashed child left no flight key; the test did not test anything")
        began = time.monotonic()
        assert fn(41) == 42
        assert time.monotonic() - began < 20  # the lease (2 s) bounds the wait, not forever
