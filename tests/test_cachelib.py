"""``sharedstate.cachelib.SharedStateCache``: cachelib's contract, Flask-Caching's config, and
increments that are never lost across real processes and real gunicorn workers.

cachelib's and Flask-Caching's own test suites run against it in tests/test_cachelib_peers.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import flask
import pytest
from flask_caching import Cache

from sharedstate import SerializationError, Store
from sharedstate.cachelib import SharedStateCache
from tests.apps import caching_app


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cache.sqlite3'}"


@pytest.fixture
def cache(url: str) -> Iterator[SharedStateCache]:
    c = SharedStateCache(url, default_timeout=60)
    yield c
    c.close()


# -- cachelib's contract -----------------------------------------------------------------------


def test_return_values(cache: SharedStateCache) -> None:
    assert cache.get("a") is None and cache.has("a") is False
    assert cache.set("a", {"x": [1, 2]}) is True
    assert cache.get("a") == {"x": [1, 2]} and cache.has("a") is True
    assert cache.add("a", 2) is False and cache.add("b", 2) is True
    assert cache.delete("a") is True and cache.delete("a") is False
    assert cache.inc("n") == 1 and cache.inc("n", 5) == 6 and cache.dec("n", 2) == 4
    assert cache.dec("m") == -1
    assert cache.set_many({"c": 1, "d": (1, "t")}) == ["c", "d"]
    assert cache.get_many("c", "nope", "d") == [1, None, (1, "t")]
    assert cache.get_dict("c", "d") == {"c": 1, "d": (1, "t")}
    assert cache.delete_many("c", "nope") == ["c", "nope"]
    assert cache.clear() is True
    assert cache.get_many("b", "d", "n") == [None, None, None]


def test_timeouts_as_cachelib_defines_them(cache: SharedStateCache) -> None:
    store = cache.store
    cache.set("default", 1)  # None: default_timeout (60)
    cache.set("forever", 1, timeout=0)
    cache.set("ten", 1, timeout=10)
    cache.set("delta", 1, timeout=dt.timedelta(milliseconds=1500))  # rounded up: 2 s
    with pytest.warns(DeprecationWarning, match="Float timeouts"):
        cache.set("float", 1, timeout=2.5)  # cachelib rounds it up (3 s), with its warning
    assert cache.set("expired", 1, timeout=-1) is True  # stored already expired
    assert cache.get("expired") is None and not cache.has("expired")
    assert cache.add("expired", 1, timeout=-5) is True and cache.get("expired") is None
    ttl = {k: store.ttl(f"cachelib:{k}") for k in ("default", "forever", "ten", "delta", "float")}
    assert 55 < ttl["default"] <= 60 and ttl["forever"] is None and 5 < ttl["ten"] <= 10
    assert 1 < ttl["delta"] <= 2 and 2 < ttl["float"] <= 3
    with pytest.raises(TypeError):
        cache.set("bad", 1, timeout="10")  # type: ignore[arg-type]


def test_inc_gives_a_new_key_the_default_timeout(url: str) -> None:
    cache = SharedStateCache(url, default_timeout=30)
    cache.inc("n")
    assert 25 < cache.store.ttl("cachelib:n") <= 30  # type: ignore[operator]
    forever = SharedStateCache(url, default_timeout=0, namespace="other")
    forever.inc("n")
    assert forever.store.ttl("other:n") is None
    with pytest.raises(TypeError):
        cache.inc("n", 1.5)  # type: ignore[arg-type]
    cache.set("s", "text")
    with pytest.raises(TypeError):
        cache.inc("s")


def test_unsupported_values_raise_before_anything_is_written(cache: SharedStateCache) -> None:
    with pytest.raises(TypeError, match="object") as info:
        cache.set("k", object())
    assert isinstance(info.value, SerializationError)
    with pytest.raises(TypeError):
        cache.set_many({"ok": 1, "bad": {1: 2}})
    with pytest.raises(TypeError):
        cache.add("k", flask.Response("x"))
    assert cache.get_many("k", "ok", "bad") == [None, None, None]


def test_cachelib_serializers_are_refused(cache: SharedStateCache) -> None:
    from cachelib.serializers import JSONSerializer

    assert not hasattr(cache, "serializer")
    with pytest.raises(TypeError, match="codec"):
        cache.serializer = JSONSerializer()


def test_signed_pickle_opt_in(url: str, tmp_path: Path) -> None:
    cache = SharedStateCache(url, serializer="pickle", secret_key="s3cret")
    response = flask.Response("hello", status=201, headers={"X-A": "b"})
    assert cache.set("view", response) and cache.set("n", 5)
    back = cache.get("view")
    assert isinstance(back, flask.Response) and back.status_code == 201 and back.get_data() == b"hello"
    assert cache.inc("n") == 6
    # Read with another key: refused, never unpickled; it reads as a miss (cachelib's "not readable").
    forger = SharedStateCache(url, serializer="pickle", secret_key="other")
    assert forger.get("view") is None and forger.has("view")
    assert SharedStateCache(url).get("view") is None  # JSON-only reader
    with pytest.raises(ValueError, match="secret_key"):
        SharedStateCache(url, serializer="pickle")
    with Store(url) as store, pytest.raises(ValueError, match="keeps its own codec"):
        SharedStateCache(store, serializer="pickle", secret_key="x")


def test_clear_touches_only_this_caches_entries(url: str) -> None:
    with Store(url) as store:
        store.set("counter", 7)
        store.counter("hits").incr()
        one = SharedStateCache(store, key_prefix="one:")
        two = SharedStateCache(store, key_prefix=lambda: "two:")
        other_ns = SharedStateCache(store, namespace="sessions-cache")
        for c in (one, two, other_ns):
            c.set("k", 1)
        assert one.clear()
        assert one.get("k") is None and two.get("k") == 1 and other_ns.get("k") == 1
        assert store.get("counter") == 7 and store.get("hits") == 1
        assert two.clear() and other_ns.clear()
        assert store.keys() == ["counter", "hits"]


def test_backend_errors_give_cachelibs_failure_values(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every call fails before anything is sent.
    cache = SharedStateCache("redis://127.0.0.1:1/0?timeout=0.5")
    with caplog.at_level(logging.WARNING, logger="sharedstate.cachelib"):
        assert cache.get("a") is None and cache.has("a") is False
        assert cache.set("a", 1) is False and cache.add("a", 1) is False and cache.delete("a") is False
        assert cache.inc("a") is None and cache.dec("a") is None
        assert cache.get_many("a", "b") == [None, None] and cache.set_many({"a": 1}) == []
        assert cache.delete_many("a") == [] and cache.clear() is False
    assert "it was not applied" in caplog.text
    strict = SharedStateCache("redis://127.0.0.1:1/0?timeout=0.5", ignore_delete_many_errors=False)
    with pytest.raises(RuntimeError, match="Failed to delete keys"):
        strict.delete_many("a")


def _hammer(url: str, n: int) -> None:
    cache = SharedStateCache(url)
    for _ in range(n):
        assert cache.inc("hits") is not None


@pytest.mark.timeout(120)
def test_inc_loses_nothing_across_processes(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(url, 100)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
        assert p.exitcode == 0
    assert SharedStateCache(url).get("hits") == 400


# -- Flask-Caching -----------------------------------------------------------------------------


def test_flask_caching_reads_the_url_prefix_and_timeout_from_its_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'from-config.sqlite3'}"
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["SHAREDSTATE_NAMESPACE"] = "myapp"
    cache = Cache(
        app,
        config={
            "CACHE_TYPE": "sharedstate.cachelib.SharedStateCache",
            "CACHE_SHAREDSTATE_URL": url,  # given to Cache(config=...), not in app.config
            "CACHE_KEY_PREFIX": "pfx_",
            "CACHE_DEFAULT_TIMEOUT": 120,
        },
    )
    backend = app.extensions["cache"][cache]
    assert isinstance(backend, SharedStateCache) and backend.default_timeout == 120
    cache.set("x", 1)  # outside any app context: the store was named at init_app
    assert cache.cache.inc("n") == 1
    with Store(url, namespace="myapp") as store:
        assert store.keys() == ["cachelib:pfx_n", "cachelib:pfx_x"]
        assert 115 < store.ttl("cachelib:pfx_x") <= 120  # type: ignore[operator]
    assert not (tmp_path / "instance").exists()


def test_flask_caching_default_url_is_the_extensions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHAREDSTATE_URL", raising=False)
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["CACHE_TYPE"] = "sharedstate.cachelib.SharedStateCache"
    cache = Cache(app)
    with app.app_context():
        cache.set("x", 1)
    path = tmp_path / "instance" / "sharedstate.sqlite3"
    assert cache.cache.store.url == f"sqlite:///{path}" and path.exists()
    with Store(f"sqlite:///{path}", namespace="tests.test_cachelib") as store:
        assert store.get("cachelib:flask_cache_x") == 1  # Flask-Caching's default prefix


def test_flask_caching_pickle_caches_response_views(tmp_path: Path) -> None:
    def make(serializer: str) -> tuple[flask.Flask, Cache, list[int]]:
        app = flask.Flask(f"app_{serializer}", instance_path=str(tmp_path / serializer))
        app.config.update(
            CACHE_TYPE="sharedstate.cachelib.SharedStateCache",
            CACHE_SHAREDSTATE_SERIALIZER=serializer,
            SECRET_KEY="k",
        )
        cache = Cache(app)
        runs: list[int] = []

        @app.get("/")
        @cache.cached(timeout=60)
        def view() -> flask.Response:
            runs.append(1)
            return flask.jsonify(n=len(runs))

        return app, cache, runs

    app, _, runs = make("pickle")
    client = app.test_client()
    assert [client.get("/").json for _ in range(3)] == [{"n": 1}] * 3 and len(runs) == 1
    # JSON: the Response is refused (Flask-Caching logs it and serves the view uncached) ...
    app, _, runs = make("json")
    client = app.test_client()
    assert [client.get("/").json for _ in range(2)] == [{"n": 1}, {"n": 2}]
    # ... and in debug mode Flask-Caching lets the TypeError through.
    app.debug = True
    with pytest.raises(TypeError, match="Response"):
        client.get("/")


def test_without_a_store_outside_flask_says_what_to_pass() -> None:
    cache = SharedStateCache()
    with pytest.raises(RuntimeError, match="CACHE_SHAREDSTATE_URL"):
        cache.set("a", 1)


@pytest.mark.timeout(180)
def test_gunicorn_four_workers_count_every_inc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gunicorn.sqlite3'}"
    env = {"CACHING_APP_URL": url, "CACHING_APP_INSTANCE": str(tmp_path / "instance")}
    with caching_app.serve(env, tmp_path / "gunicorn.log", workers=4) as port:
        hits = caching_app.fire(port, "/inc?sleep=0.01", requests=200, concurrency=200)
        assert sorted(h["n"] for h in hits) == list(range(1, 201))  # unique: none lost, none twice
        assert len({h["pid"] for h in hits}) >= 2, "the requests did not spread over the workers"
        assert caching_app.fetch(port, "/get")["n"] == 200


def test_factory_takes_flask_cachings_app_and_config(tmp_path: Path) -> None:
    # What Flask-Caching calls for subclasses of its own BaseCache named without "cachelib".
    url = f"sqlite:///{tmp_path / 'factory.sqlite3'}"
    app = flask.Flask(__name__)
    config = {"CACHE_SHAREDSTATE_URL": url, "CACHE_KEY_PREFIX": "f_", "SHAREDSTATE_NAMESPACE": ""}
    cache = SharedStateCache.factory(app, config, [], {"default_timeout": 5})
    assert cache.default_timeout == 5 and cache.set("x", 1)
    with Store(url) as store:
        assert store.keys() == ["cachelib:f_x"]


@pytest.mark.filterwarnings("ignore:.*may evict any entry:RuntimeWarning")  # memcached, on purpose
def test_every_backend(store: Store) -> None:
    cache = SharedStateCache(store, key_prefix="p:", default_timeout=60)
    assert cache.set("a", [1, "x"]) and cache.get("a") == [1, "x"] and cache.has("a")
    assert cache.add("a", 2) is False and cache.add("b", 2) is True
    assert cache.inc("n", 3) == 3 and cache.dec("n") == 2
    assert cache.set_many({"c": 1, "d": 2}, timeout=0) == ["c", "d"]
    assert cache.get_many("a", "c", "nope") == [[1, "x"], 1, None]
    assert cache.delete_many("c", "nope") == ["c", "nope"] and not cache.has("c")
    assert cache.set("gone", 1, timeout=-1) and not cache.has("gone")
    store.set("other", 1)
    if store.url.startswith("memcached"):  # cannot list keys: cachelib's "not cleared"
        assert cache.clear() is False and cache.get("a") == [1, "x"]
        return
    assert cache.clear() and cache.get_many("a", "b", "n", "d") == [None] * 4
    assert store.get("other") == 1


def test_without_a_store_inside_an_app_uses_the_apps_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lazy.sqlite3'}"
    cache = SharedStateCache()  # made by hand, not by Flask-Caching: resolved on first use
    app = flask.Flask(__name__)
    app.config.update(CACHE_SHAREDSTATE_URL=url, CACHE_KEY_PREFIX="lazy_", SHAREDSTATE_NAMESPACE="")
    with app.app_context():
        assert cache.set("x", 1)
    assert cache.get("x") == 1  # bound to that store from then on
    with Store(url) as store:
        assert store.keys() == ["cachelib:lazy_x"]
