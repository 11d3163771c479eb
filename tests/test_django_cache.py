"""``sharedstate.django.SharedStateCache``: Django's own cache tests, exact counts across processes,
the native async methods, and the promises the docs make (timeouts, clear, serializers, keys).

Django's ``BaseCacheTests`` come from Django's released sdist (``scripts/peer_suite.py``), run by
``tests/django_peer/run.py`` in subprocesses; nothing of Django's suite is copied here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import pickle
import re
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from django.conf import settings
from django.core.cache import CacheKeyWarning, InvalidCacheKey
from django.core.cache.backends.base import BaseCache, InvalidCacheBackendError

from sharedstate import SerializationError, Store
from sharedstate.django import DEFAULT_NAMESPACE, SharedStateCache, UnpicklableValueError
from tests import django_workers, servers, workers

ROOT = Path(__file__).resolve().parent.parent

if not settings.configured:
    settings.configure(SECRET_KEY="sharedstate-tests-secret", USE_TZ=False)


def _peer_suite_module() -> Any:
    spec = importlib.util.spec_from_file_location("peer_suite_script", ROOT / "scripts" / "peer_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cleanup(url: str, namespace: str) -> None:
    if url.startswith("redis"):  # the shared server outlives the run: leave nothing behind
        with Store(url, namespace=namespace) as store:
            keys = store.keys()
            if keys:
                store.delete_many(keys)


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return servers.backend_url(request.param, tmp_path)


@pytest.fixture
def ns() -> str:
    return f"dj{servers.RUN_ID}{uuid.uuid4().hex[:8]}"


def make(url: str, ns: str, **params: Any) -> SharedStateCache:
    options = {"namespace": ns, **params.pop("OPTIONS", {})}
    return SharedStateCache(url, {**params, "OPTIONS": options})


@pytest.fixture
def cache(url: str, ns: str) -> Iterator[SharedStateCache]:
    yield make(url, ns)
    _cleanup(url, ns)


# -- Django's own suite -------------------------------------------------------------------------

# Django's tests that store objects JSON cannot hold: skipped when the serializer is "json"
# (tests/django_peer/peer_cache.py NEEDS_PICKLE). The cull tests skip themselves: this backend
# refuses MAX_ENTRIES with InvalidCacheBackendError, which is how Django's suite learns "no culling".
CULL = {"test_cull", "test_zero_cull", "test_cull_delete_when_store_empty"}
NEEDS_PICKLE = {
    "test_data_types",
    "test_cache_read_for_model_instance",
    "test_cache_write_for_model_instance_with_deferred",
    "test_cache_read_for_model_instance_with_deferred",
    "test_cache_write_unpicklable_object",
    "test_add_fail_on_pickleerror",
    "test_set_fail_on_pickleerror",
}
MIN_TESTS = 54  # BaseCacheTests in Django 5.2
MIN_SESSION_TESTS = 70  # CacheSessionTests (Django's cache session engine) in Django 5.2


@pytest.mark.timeout(120)
def test_django_own_cache_suite(tmp_path: Path) -> None:
    """Django's ``BaseCacheTests``, and its ``CacheSessionTests`` (the ``cache`` session engine),
    pass against SharedStateCache on sqlite:// (pickle and json serializers) and redis://, the
    three runs at once (each is mostly Django's own sleeps)."""
    peer = _peer_suite_module()
    try:
        django_dir = peer.peer_suite("Django")
    except peer.PeerSuiteUnavailable as exc:
        servers.unavailable(f"Django's test suite cannot be fetched: {exc}")
    runs = {
        "sqlite-pickle": (f"sqlite:///{tmp_path}/pickle.sqlite3", "pickle"),
        "sqlite-json": (f"sqlite:///{tmp_path}/json.sqlite3", "json"),
    }
    with contextlib.suppress(pytest.skip.Exception):  # outside CI without Redis: sqlite still runs
        runs["redis-pickle"] = (servers.backend_url("redis", tmp_path), "pickle")
    procs = {}
    for name, (store_url, serializer) in runs.items():
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "SHAREDSTATE_DJANGO_URL": store_url,
            "SHAREDSTATE_DJANGO_NS": f"djpeer{servers.RUN_ID}{uuid.uuid4().hex[:6]}",
            "SHAREDSTATE_DJANGO_SERIALIZER": serializer,
        }
        procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "django_peer" / "run.py"), str(django_dir / "tests")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=100)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            pytest.fail(f"{name}: Django's cache suite did not finish in 100 s:\n{output[-3000:]}")
        assert proc.returncode == 0, f"{name}: Django's cache suite failed:\n{output[-6000:]}"
        ran = re.search(r"^Ran (\d+) tests?", output, re.MULTILINE)
        minimum = MIN_TESTS + MIN_SESSION_TESTS
        assert ran and int(ran.group(1)) >= minimum, f"{name}: too few tests ran:\n{output[-3000:]}"
        sessions_ok = re.findall(r"\(peer_sessions\.SharedStateCacheSessionTests\.\w+\)", output)
        assert len(sessions_ok) >= MIN_SESSION_TESTS, f"{name}: session tests missing"
        skipped = set(re.findall(r"^(test_\w+) \(.*\) \.\.\. skipped", output, re.MULTILINE))
        expected = CULL | (NEEDS_PICKLE if name.endswith("json") else set())
        assert skipped == expected, f"{name}: unexpected skips {skipped ^ expected}"
        assert int(ran.group(1)) - len(skipped) >= minimum - len(expected)


# -- exact counts across processes --------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_incr_8_processes_exact(backend: str, ns: str, tmp_path: Path) -> None:
    """8 processes x 500 ``cache.incr`` on one key: every value 1..4000 returned exactly once."""
    url = servers.backend_url(backend, tmp_path)
    processes, per_process = 8, 500
    cache = make(url, ns)
    cache.set("hits", 0, timeout=None)
    outs = [tmp_path / f"incr-{i}.json" for i in range(processes)]
    args = [(url, ns, "hits", per_process, str(out)) for out in outs]
    try:
        workers.run_processes("spawn", django_workers.django_incr, args, timeout=220)
        values = [v for out in outs for v in workers.read_result(out)["values"]]
        total = processes * per_process
        assert len(values) == total
        assert sorted(values) == list(range(1, total + 1)), "duplicates or gaps"
        assert cache.get("hits") == total
    finally:
        _cleanup(url, ns)


# -- Django's contract, checked where Django's suite does not look ------------------------------


def test_timeouts(cache: SharedStateCache) -> None:
    store = cache.store
    k = cache.make_key
    cache.set("forever", 1, timeout=None)
    assert store.ttl(k("forever")) is None
    cache.set("default", 1)
    ttl = store.ttl(k("default"))
    assert ttl is not None and 290 < ttl <= 300  # TIMEOUT's default, 300 s
    cache.set("float", 1, timeout=12.5)
    ttl = store.ttl(k("float"))
    assert ttl is not None and 11 < ttl <= 12.5
    cache.set("huge", 1, timeout=10**12)  # over 100 years: kept without expiry
    assert store.ttl(k("huge")) is None
    for zero in (0, -1, -0.5):
        cache.set("z", "old", timeout=None)
        cache.set("z", "new", timeout=zero)  # "don't cache": the old value is gone too
        assert cache.get("z", "absent") == "absent"
        assert cache.add("z", "x", timeout=zero) is True  # absent: "added", and gone at once
        assert not cache.has_key("z")
        cache.set("z", "kept", timeout=None)
        assert cache.add("z", "x", timeout=zero) is False  # present: not added, unchanged
        assert cache.get("z") == "kept"
        assert cache.touch("z", timeout=zero) is True  # expires it now
        assert cache.get("z") is None
        assert cache.touch("z", timeout=zero) is False
        cache.set_many({"a": 1, "b": 2}, timeout=None)
        assert cache.set_many({"a": 3, "b": 4}, timeout=zero) == []
        assert cache.get_many(["a", "b"]) == {}
    forever = SharedStateCache(cache.location, {"TIMEOUT": None, "OPTIONS": {"namespace": cache.namespace}})
    forever.set("t", 1)
    assert store.ttl(k("t")) is None
    never = SharedStateCache(cache.location, {"TIMEOUT": 0, "OPTIONS": {"namespace": cache.namespace}})
    never.set("t", 2)
    assert cache.get("t") is None


def test_incr_contract(cache: SharedStateCache) -> None:
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    assert not cache.has_key("missing")  # incr of a missing key creates nothing
    for value in (None, "7", 1.5, [1], True):
        cache.set("v", value)
        with pytest.raises(TypeError):
            cache.incr("v")
        assert cache.get("v") == value and type(cache.get("v")) is type(value)  # unchanged
    cache.set("n", 10, timeout=50)
    assert cache.incr("n", 5) == 15
    assert cache.decr("n", 20) == -5
    ttl = cache.store.ttl(cache.make_key("n"))
    assert ttl is not None and 45 < ttl <= 50  # incr keeps the expiry
    cache.set("big", 2**63 - 1)
    with pytest.raises((OverflowError, ValueError, TypeError)):
        cache.incr("big")
    assert cache.get("big") == 2**63 - 1


def test_incr_version_keeps_remaining_timeout(cache: SharedStateCache) -> None:
    cache.set("k", {"x": 1}, timeout=40)
    assert cache.incr_version("k") == 2
    assert cache.get("k") is None and cache.get("k", version=2) == {"x": 1}
    ttl = cache.store.ttl(cache.make_key("k", version=2))
    assert ttl is not None and 35 < ttl <= 40
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == {"x": 1}
    with pytest.raises(ValueError):
        cache.incr_version("missing")


def test_clear_removes_only_this_cache(url: str, ns: str) -> None:
    other_ns = f"{ns}other"
    try:
        with Store(url, namespace=ns) as store:
            store.set("user-state", 1)  # a store key outside the cache's namespace
            prefixed = SharedStateCache(url, {"KEY_PREFIX": "site/a", "OPTIONS": {"secret_key": "k"}})
            plain = SharedStateCache(url, {"OPTIONS": {"secret_key": "k"}})
            assert prefixed.namespace == f"{DEFAULT_NAMESPACE}:site%2Fa"
            assert plain.namespace == DEFAULT_NAMESPACE
            mine = make(url, other_ns)
            mine.set_many({"a": 1, "b": 2})
            mine.set("c", 3, version=7)
            mine.store.set("written-by-the-store", 1)  # same namespace: it is this cache's
            prefixed.set("p", 1)
            mine.clear()
            assert mine.get_many(["a", "b"]) == {} and mine.get("c", version=7) is None
            assert mine.store.keys() == []
            assert store.get("user-state") == 1
            assert prefixed.get("p") == 1
            prefixed.clear()
            assert prefixed.get("p") is None
    finally:
        _cleanup(url, ns)
        _cleanup(url, other_ns)


def test_many(cache: SharedStateCache) -> None:
    assert cache.set_many({"a": 1, "b": [1, 2], 7: "int key"}) == []
    assert cache.get_many(["a", "b", "missing", 7]) == {"a": 1, "b": [1, 2], 7: "int key"}
    assert cache.get_many(iter(["a", "a"])) == {"a": 1}
    cache.delete_many(["a", "missing"])
    assert cache.get_many(["a", "b"]) == {"b": [1, 2]}
    assert cache.delete("b") is True and cache.delete("b") is False
    assert cache.get_or_set("g", lambda: 5) == 5 and cache.get_or_set("g", 6) == 5


def test_json_refuses_unsupported_values_before_writing(url: str, ns: str) -> None:
    cache = make(url, ns, OPTIONS={"serializer": "json"})
    try:
        cache.set("keep", "old")
        for write in (
            lambda: cache.set("keep", object()),
            lambda: cache.add("new", {1, object()}),
            lambda: cache.set_many({"fine": 1, "keep": [object()]}),
        ):
            with pytest.raises(SerializationError, match="not supported"):
                write()
        assert cache.get("keep") == "old" and not cache.has_key("new") and not cache.has_key("fine")
        assert not isinstance(SerializationError("x"), pickle.PickleError)
    finally:
        _cleanup(url, ns)


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise pickle.PicklingError("no")


def test_pickle_refusal_is_a_pickle_error(cache: SharedStateCache) -> None:
    cache.set("k", "old")
    with pytest.raises(UnpicklableValueError) as info:
        cache.set("k", _Unpicklable())
    assert isinstance(info.value, pickle.PickleError) and isinstance(info.value, SerializationError)
    with pytest.raises(pickle.PickleError):
        cache.set_many({"fine": 1, "k": _Unpicklable()})
    assert cache.get("k") == "old" and not cache.has_key("fine")


def test_forged_or_foreign_pickle_is_a_miss(url: str, ns: str, caplog: pytest.LogCaptureFixture) -> None:
    a = make(url, ns)  # signs with a key derived from settings.SECRET_KEY
    try:
        a.set("k", {"v": object.__name__}, timeout=None)
        a.set("n", 5)
        # The derived key is not SECRET_KEY itself: a cache built with the raw SECRET_KEY can't read it.
        raw_key = make(url, ns, OPTIONS={"secret_key": settings.SECRET_KEY})
        # Forged: a pickle whose signature is not this cache's.
        forged = make(url, ns, OPTIONS={"secret_key": "attacker"})
        forged.set("evil", ["payload"])
        with caplog.at_level(logging.WARNING, logger="sharedstate.django"):
            assert raw_key.get("k", "miss") == "miss"
            assert a.get("evil", "miss") == "miss"
            assert a.get_many(["k", "evil"]) == {"k": {"v": "object"}}
        assert "counts as a miss" in caplog.text and "attacker" not in caplog.text
        assert a.get("k") == {"v": "object"}
        assert raw_key.get("n") == 5  # integers are stored natively, unsigned, in every mode
    finally:
        _cleanup(url, ns)


def test_configuration_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.sqlite3"
    with pytest.raises(InvalidCacheBackendError, match="does not cull"):
        SharedStateCache(url, {"OPTIONS": {"MAX_ENTRIES": 10}})
    with pytest.raises(InvalidCacheBackendError, match="unknown SharedStateCache OPTIONS"):
        SharedStateCache(url, {"OPTIONS": {"pickle": True}})
    with pytest.raises(InvalidCacheBackendError, match="serializer"):
        SharedStateCache(url, {"OPTIONS": {"serializer": "marshal"}})
    from django.test import override_settings

    with override_settings(SECRET_KEY=""), pytest.raises(InvalidCacheBackendError, match="SECRET_KEY"):
        SharedStateCache(url, {})
    with override_settings(SECRET_KEY=""):
        SharedStateCache(url, {"OPTIONS": {"serializer": "json"}})  # json needs no key
    with pytest.raises(InvalidCacheBackendError, match="whole store"):
        SharedStateCache(url, {"OPTIONS": {"namespace": ""}})
    with pytest.raises(InvalidCacheBackendError, match="one sharedstate URL"):
        SharedStateCache(["redis://a", "redis://b"], {})  # type: ignore[arg-type]


def test_memcached_location(tmp_path: Path, ns: str) -> None:
    """memcached:// works as a cache, except clear(), which cannot list keys and says so."""
    from sharedstate import NotSupportedError

    cache = make(servers.backend_url("memcached", tmp_path), ns)
    cache.set("a", {"x": 1}, timeout=30)
    assert cache.get("a") == {"x": 1} and cache.has_key("a")
    cache.set("n", 1)
    assert cache.incr("n", 2) == 3
    assert cache.set_many({"b": 2, "c": 3}) == [] and cache.get_many(["b", "c", "d"]) == {"b": 2, "c": 3}
    cache.delete_many(["a", "b", "c", "n"])
    assert cache.get_many(["a", "b", "c", "n"]) == {}
    with pytest.raises(NotSupportedError, match="clear"):
        cache.clear()


def test_keys_warn_like_djangos_and_refuse_what_no_backend_stores(cache: SharedStateCache) -> None:
    with pytest.warns(CacheKeyWarning, match="memcached"):
        cache.set("with space", 1)
    with pytest.warns(CacheKeyWarning, match="memcached"):
        assert cache.get("with space") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        with pytest.raises(InvalidCacheKey, match="NUL"):
            cache.set("nul\0key", 1)
    odd = SharedStateCache(cache.location, {"KEY_PREFIX": "_ss", "OPTIONS": {"namespace": cache.namespace}})
    with pytest.raises(InvalidCacheKey, match="sharedstate reserves"):
        odd.get("x")
    custom = SharedStateCache(
        cache.location,
        {
            "KEY_FUNCTION": lambda key, prefix, version: f"v{version}|{key}",
            "OPTIONS": {"namespace": cache.namespace},
        },
    )
    custom.set("k", 1)
    assert cache.store.get("v1|k") == 1


def test_one_setting_switch(tmp_path: Path) -> None:
    from django.core.cache import caches
    from django.test import override_settings

    location = f"sqlite:///{tmp_path}/app.sqlite3"
    config = {"default": {"BACKEND": "sharedstate.django.SharedStateCache", "LOCATION": location}}
    with override_settings(CACHES=config):
        cache = caches["default"]
        assert isinstance(cache, SharedStateCache)
        cache.set("hello", "world")
        assert cache.get("hello") == "world"
        assert Store(location, namespace=DEFAULT_NAMESPACE).keys() == [":1:hello"]
        cache.close()  # Django calls it after every request: the store stays usable
        assert cache.get("hello") == "world"


# -- async ---------------------------------------------------------------------------------------

ASYNC_METHODS = [
    "aget", "aset", "aadd", "atouch", "adelete", "aincr", "aget_many", "aset_many",
    "adelete_many", "ahas_key", "aclear", "aincr_version",
]  # fmt: skip


def test_async_methods_are_native() -> None:
    """Each of these awaits the store; none is Django's ``sync_to_async`` wrapper around the sync one."""
    for name in ASYNC_METHODS:
        assert getattr(SharedStateCache, name) is not getattr(BaseCache, name), name


def test_async_methods(url: str, ns: str) -> None:
    cache = make(url, ns)

    async def body() -> None:
        # Prove no method hops to a thread through Django's sync_to_async: make that impossible.
        import django.core.cache.backends.base as django_base

        real = django_base.sync_to_async
        django_base.sync_to_async = None
        try:
            await cache.aset("k", {"a": 1})
            assert await cache.aget("k") == {"a": 1}
            assert await cache.aget("missing", "d") == "d"
            assert await cache.aadd("k", 2) is False and await cache.aadd("k2", 2) is True
            assert await cache.ahas_key("k2") and not await cache.ahas_key("nope")
            assert await cache.aincr("k2", 3) == 5 and await cache.adecr("k2") == 4
            with pytest.raises(ValueError):
                await cache.aincr("nope")
            await cache.aset("s", "text")
            with pytest.raises(TypeError):
                await cache.aincr("s")
            assert await cache.atouch("k", 30) is True and await cache.atouch("nope") is False
            ttl = await cache._astore().ttl(cache.make_key("k"))
            assert ttl is not None and 25 < ttl <= 30
            assert await cache.aset_many({"x": 1, "y": 2}) == []
            assert await cache.aget_many(["x", "y", "z"]) == {"x": 1, "y": 2}
            await cache.adelete_many(["x"])
            assert await cache.aget_many(["x", "y"]) == {"y": 2}
            assert await cache.adelete("y") is True and await cache.adelete("y") is False
            assert await cache.aget_or_set("g", lambda: 7) == 7 and await cache.aget_or_set("g", 8) == 7
            await cache.aset("z", 1, timeout=0)
            assert await cache.aget("z") is None
            assert await cache.aadd("z", 1, timeout=0) is True and await cache.atouch("k", 0) is True
            assert await cache.aset_many({"z": 1}, timeout=-1) == [] and not await cache.ahas_key("z")
            await cache.aset("v", 9, timeout=40)
            assert await cache.aincr_version("v") == 2 and await cache.aget("v", version=2) == 9
            with pytest.raises(UnpicklableValueError):
                await cache.aset("bad", _Unpicklable())
            assert cache.get("k2") == 4  # sync and async see the same entries
            await cache.aclear()
            assert await cache.aget_many(["k2", "g", "s"]) == {}
            await cache.aclose()
        finally:
            django_base.sync_to_async = real

    asyncio.run(body())
    asyncio.run(body())  # a second event loop gets its own AsyncStore
    _cleanup(url, ns)


def test_async_incr_exact_under_tasks_and_threads(url: str, ns: str) -> None:
    """200 tasks ``aincr`` while a thread ``incr`` s the same key: no increment lost."""
    import threading

    cache = make(url, ns)
    cache.set("n", 0, timeout=None)
    tasks, threads_incrs = 200, 100

    async def body() -> list[int]:
        return list(await asyncio.gather(*(cache.aincr("n") for _ in range(tasks))))

    got: list[int] = []
    thread = threading.Thread(target=lambda: got.extend(cache.incr("n") for _ in range(threads_incrs)))
    thread.start()
    values = asyncio.run(body())
    thread.join()
    assert sorted(values + got) == list(range(1, tasks + threads_incrs + 1))
    _cleanup(url, ns)


def test_expired_entries_are_misses(cache: SharedStateCache) -> None:
    cache.set("short", 1, timeout=0.3)
    time.sleep(0.6)
    assert cache.get("short") is None and not cache.has_key("short")
    with pytest.raises(ValueError):
        cache.incr("short")


def test_add_has_one_winner_among_threads(cache: SharedStateCache) -> None:
    import threading

    results: list[bool] = []
    start = threading.Barrier(16)

    def run(i: int) -> None:
        start.wait()
        results.append(cache.add("once", i, timeout=None))

    pool = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert results.count(True) == 1


def test_djangos_cache_session_engine_runs_on_it(tmp_path: Path) -> None:
    from django.contrib.sessions.backends.cache import SessionStore
    from django.core.cache import caches
    from django.test import override_settings

    config = {
        "default": {
            "BACKEND": "sharedstate.django.SharedStateCache",
            "LOCATION": f"sqlite:///{tmp_path}/s.sqlite3",
        }
    }
    with override_settings(CACHES=config, SESSION_CACHE_ALIAS="default"):
        session = SessionStore()
        session["cart"] = [1, 2]
        session.save()
        again = SessionStore(session.session_key)
        assert again["cart"] == [1, 2]
        again.flush()
        assert not caches["default"].store.keys()


def test_one_store_per_configuration_shared_by_threads(tmp_path: Path) -> None:
    """Django builds one cache object per thread; they share one Store (one connection pool)."""
    import threading

    url = f"sqlite:///{tmp_path}/t.sqlite3"
    built: list[SharedStateCache] = []
    pool = [threading.Thread(target=lambda: built.append(SharedStateCache(url, {}))) for _ in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len({id(c.store) for c in built}) == 1
    other = SharedStateCache(url, {"KEY_PREFIX": "p"})
    assert other.store is not built[0].store and other.namespace == f"{DEFAULT_NAMESPACE}:p"
