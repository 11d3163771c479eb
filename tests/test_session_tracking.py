"""Change detection by touched keys: the Flask, Starlette and Quart sessions tell the engine
before they hand out, replace or remove a value, and the save compares only those keys.

Every way a value can leave the session (and then be changed in place) must still be saved; a
request that only reads encodes and writes nothing; the fast cookie check and the per-config
settings cache behave exactly as the slow paths they shortcut.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner

from sharedstate import AsyncStore, Store
from sharedstate._appconfig import SessionSettingsCache, read_session_settings
from sharedstate._async.sessions import AsyncSessionState
from sharedstate._sessions import CookieSigner, SessionSettings

SECRET = "tracking-secret"
START = {"a": 1, "b": {"x": [1, 2]}, "c": "s"}


def _update_other(d: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out.update(d)
    return out


def _pop_change_put_back(d: Any) -> None:
    value = d.pop("b")
    value["x"].append(3)
    d["b"] = value


def _read_delete_set_change(d: Any) -> None:
    value = d["b"]
    del d["b"]
    d["b"] = value
    value["x"].append(3)


def _clear_then_put_back(d: Any) -> None:
    value = d["b"]
    d.clear()
    d.update(b=value)
    value["x"].append(3)


def _read_then_replace(d: Any) -> None:
    old = d["b"]
    d["b"] = {"x": [1, 2]}  # equal to what was stored: not a change
    old["x"].append(9)  # detached from the session now


#: Each reads the session some way and changes what it got in place (or not at all).
READS: dict[str, Callable[[Any], Any]] = {
    "getitem": lambda d: d["b"]["x"].append(3),
    "get": lambda d: d.get("b")["x"].append(3),
    "values": lambda d: next(v for v in d.values() if isinstance(v, dict))["x"].append(3),
    "items": lambda d: dict(d.items())["b"]["x"].append(3),
    "copy": lambda d: d.copy()["b"]["x"].append(3),
    "dict()": lambda d: dict(d)["b"]["x"].append(3),
    "unpack": lambda d: {**d}["b"]["x"].append(3),
    "kwargs": lambda d: (lambda **kw: kw)(**d)["b"]["x"].append(3),
    "or": lambda d: (d | {})["b"]["x"].append(3),
    "ror": lambda d: ({} | d)["b"]["x"].append(3),
    "other.update": lambda d: _update_other(d)["b"]["x"].append(3),
    "setdefault": lambda d: d.setdefault("b", {})["x"].append(3),
    "copy.copy": lambda d: copy.copy(d)["b"]["x"].append(3),
    "pop, change, put back": _pop_change_put_back,
    "read, del, set, change": _read_delete_set_change,
    "clear, put back, change": _clear_then_put_back,
    "read, replace by equal": _read_then_replace,
    "equal value of another type": lambda d: d.__setitem__("a", 1.0),
    "same value": lambda d: d.__setitem__("a", 1),
    "popitem": lambda d: d.popitem(),
    "only reads": lambda d: (d["a"], dict(d), list(d.items())),
}


def expected_after(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(START))
    READS[name](data)
    return data


def flask_run(name: str) -> dict[str, Any]:
    from flask import Flask, jsonify, session

    from sharedstate.sessions import SharedStateSessionInterface

    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, SHAREDSTATE_SESSION_IDLE_TIMEOUT=600)
    store = Store("memory://", namespace=f"track{time.monotonic_ns()}")
    app.session_interface = SharedStateSessionInterface(store)

    @app.get("/start")
    def start() -> str:
        session.update(json.loads(json.dumps(START)))
        return "ok"

    @app.get("/apply")
    def apply() -> str:
        READS[name](session)
        return "ok"

    @app.get("/dump")
    def dump() -> Any:
        return jsonify(dict(session))

    client = app.test_client()
    client.get("/start")
    assert client.get("/apply").status_code == 200
    data: dict[str, Any] = client.get("/dump").get_json()
    store.close()
    return data


def starlette_run(name: str) -> dict[str, Any]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from sharedstate.starlette import SessionMiddleware

    async def start(request: Request) -> PlainTextResponse:
        request.session.update(json.loads(json.dumps(START)))
        return PlainTextResponse("ok")

    async def apply(request: Request) -> PlainTextResponse:
        READS[name](request.session)
        return PlainTextResponse("ok")

    async def dump(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    async def main() -> dict[str, Any]:
        store = AsyncStore("memory://", namespace=f"track{time.monotonic_ns()}")
        app = Starlette(routes=[Route("/start", start), Route("/apply", apply), Route("/dump", dump)])
        asgi = SessionMiddleware(app, store=store, secret_key=SECRET)
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.get("/start")
            assert (await c.get("/apply")).status_code == 200
            data: dict[str, Any] = (await c.get("/dump")).json()
        await store.aclose()
        return data

    return asyncio.run(main())


def quart_run(name: str) -> dict[str, Any]:
    from quart import Quart, jsonify, session

    from sharedstate.quart import QuartSessionInterface

    async def main() -> dict[str, Any]:
        app = Quart(__name__)
        app.config.update(SECRET_KEY=SECRET, SHAREDSTATE_SESSION_IDLE_TIMEOUT=600)
        store = AsyncStore("memory://", namespace=f"track{time.monotonic_ns()}")
        app.session_interface = QuartSessionInterface(store)

        @app.get("/start")
        async def start() -> str:
            session.update(json.loads(json.dumps(START)))
            return "ok"

        @app.get("/apply")
        async def apply() -> str:
            READS[name](session)
            return "ok"

        @app.get("/dump")
        async def dump() -> Any:
            return jsonify(dict(session))

        client = app.test_client()
        await client.get("/start")
        assert (await client.get("/apply")).status_code == 200
        data: dict[str, Any] = await (await client.get("/dump")).get_json()
        await store.aclose()
        return data

    return asyncio.run(main())


RUNS = {"flask": flask_run, "starlette": starlette_run, "quart": quart_run}


@pytest.mark.parametrize("name", list(READS))
@pytest.mark.parametrize("framework", list(RUNS))
def test_a_value_changed_after_any_read_is_saved(framework: str, name: str) -> None:
    assert RUNS[framework](name) == expected_after(name)


class Counting:
    """A keyspace as the engine sees it, counting encodes and backend writes (no behaviour changed)."""

    def __init__(self, keyspace: Any) -> None:
        self.keyspace = keyspace
        self.prefix = keyspace.prefix
        self.encoded: list[Any] = []
        self.writes: list[str] = []
        outer = self

        class Backend:
            def __getattr__(self, name: str) -> Any:
                value = getattr(keyspace.backend, name)
                if name in {"set", "add", "compare_and_set", "delete", "delete_if_version", "touch"}:

                    async def counted(*args: Any, **kwargs: Any) -> Any:
                        outer.writes.append(name)
                        return await value(*args, **kwargs)

                    return counted
                return value

        self.backend = Backend()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.keyspace, name)

    def encode(self, full_key: str, value: Any, **kwargs: Any) -> bytes | int:
        self.encoded.append(value)
        return self.keyspace.encode(full_key, value, **kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize("framework", list(RUNS))
def test_a_session_is_freed_by_reference_counting(framework: str) -> None:
    """No reference cycle between a session and its engine state: each request's session is freed
    when the request ends, not left for the cyclic garbage collector (whose collections it made
    more frequent, and costlier under a multi-process server)."""
    from sharedstate._sessiondict import TrackedDict
    from sharedstate._sync.sessions import SessionState

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        RUNS[framework]("only reads")
        gc.collect()
        kinds = (TrackedDict, SessionState, AsyncSessionState)
        kept = [o for o in gc.garbage if issubclass(type(o), kinds)]  # type(): garbage has dead proxies
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert kept == []


def test_only_touched_values_are_encoded_and_a_read_writes_nothing(tmp_path: Path) -> None:
    settings = SessionSettings.create(idle=600)
    big = [{"n": i} for i in range(50)]

    async def main() -> None:
        async with AsyncStore(f"sqlite:///{tmp_path}/s.db") as store:
            first = AsyncSessionState(store._keyspace, settings, None, None, tracked=True)
            await first.load()
            first.data.update(user="alice", cart={"items": ["apple"]}, big=big)
            first.changed()
            sid = (await first.save(time.time())).sid
            assert sid

            async def request(work: Callable[[AsyncSessionState], None]) -> tuple[str, Counting]:
                ks = Counting(store._keyspace)
                state = AsyncSessionState(ks, settings, sid, time.time(), tracked=True)  # type: ignore[arg-type]
                await state.load()
                work(state)
                return (await state.save(time.time())).kind, ks

            def read_user(s: AsyncSessionState) -> None:
                s.touch("user")
                assert s.data["user"] == "alice"

            kind, ks = await request(read_user)
            assert (kind, ks.encoded, ks.writes) == ("keep", [], [])  # an immutable value: no encode

            def read_cart(s: AsyncSessionState) -> None:
                s.touch("cart")
                s.touch("cart")  # once is enough

            kind, ks = await request(read_cart)
            assert (kind, ks.writes) == ("keep", [])
            assert ks.encoded == [{"items": ["apple"]}] * 2  # as read, and at the save: never "big"

            def change_cart(s: AsyncSessionState) -> None:
                s.touch("cart")
                s.data["cart"]["items"].append("pear")

            kind, ks = await request(change_cart)
            assert kind == "set" and ks.writes == ["compare_and_set"]
            assert all(value is not big for value in ks.encoded[:2])
            check = AsyncSessionState(store._keyspace, settings, sid, time.time())
            await check.load()
            assert check.data == {"user": "alice", "cart": {"items": ["apple", "pear"]}, "big": big}

    asyncio.run(main())


def test_fast_cookie_check_agrees_with_itsdangerous() -> None:
    signer = CookieSigner(["old", "new"], salt="s")
    peer = TimestampSigner(b"new", salt="s", key_derivation="hmac", digest_method=hashlib.sha256)
    sid = "A" * 43
    ours = signer.sign(sid)
    assert peer.unsign(ours) == sid.encode()  # itsdangerous accepts what we sign
    theirs = peer.sign(sid).decode()
    assert theirs.rsplit(".", 1)[0].rsplit(".", 1)[1] == ours.rsplit(".", 1)[0].rsplit(".", 1)[1]
    for cookie in (ours, theirs, theirs.encode(), CookieSigner(["old"], salt="s").sign(sid)):
        verified = signer.unsign(cookie)
        assert verified is not None and verified[0] == sid and abs(verified[1] - time.time()) < 5
        assert signer.unsign(cookie) == verified  # again: remembered, the same answer
    flipped = ours[:-2] + ("A" if ours[-2] != "A" else "B") + ours[-1]
    for bad in (flipped, flipped, ours + "x", "é" + ours, CookieSigner(["other"], salt="s").sign(sid)):
        assert signer.unsign(bad) is None  # never remembered as valid
    assert signer._verified.keys() <= {
        ours,
        theirs,
        theirs.encode(),
        CookieSigner(["old"], salt="s").sign(sid),
    }


def test_settings_cache_rebuilds_when_a_value_is_replaced() -> None:
    cache: SessionSettingsCache[SessionSettings] = SessionSettingsCache()
    config: dict[str, Any] = {"SESSION_PERMANENT": True, "SHAREDSTATE_SESSION_IDLE_TIMEOUT": 60}
    made: list[int] = []

    def make() -> SessionSettings:
        made.append(1)
        return read_session_settings(config, 600)

    first = cache.get(config, make)
    assert cache.get(config, make) is first and len(made) == 1  # built once
    config["SHAREDSTATE_SESSION_IDLE_TIMEOUT"] = 30
    assert cache.get(config, make).idle == 30 and len(made) == 2
    config["SESSION_PERMANENT"] = 1  # equal to True, but refused: never served from the cache
    with pytest.raises(TypeError, match="SESSION_PERMANENT"):
        cache.get(config, make)
    with pytest.raises(TypeError, match="SESSION_PERMANENT"):
        cache.get(config, make)


def test_every_starlette_dict_method_that_hands_out_values_is_tracked() -> None:
    """A new Python's new dict method that hands out values fails here until it is overridden."""
    from sharedstate.starlette import Session

    keys_only = {"__contains__", "__len__", "keys", "__reversed__", "__eq__", "__ne__", "__repr__"}
    harmless = {"__new__", "__init__", "__getattribute__", "__sizeof__", "__class_getitem__"}
    harmless |= {"__init_subclass__", "__lt__", "__le__", "__gt__", "__ge__", "__doc__"}
    ours = [klass for klass in Session.__mro__ if klass not in (dict, object)]
    untracked = {
        name
        for name, value in vars(dict).items()
        if callable(value) and not any(name in vars(klass) for klass in ours) and name not in harmless
    }
    assert untracked <= keys_only, untracked - keys_only
