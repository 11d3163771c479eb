"""The framework-free session engine (``sharedstate._async.sessions`` and its generated sync twin,
``sharedstate._sessions``), driven directly, as the Flask, Starlette and Quart adapters drive it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sharedstate import AsyncStore, Store
from sharedstate._async.sessions import AsyncSessionState
from sharedstate._sessions import CookieSigner, SessionSettings, entry_key
from sharedstate._sync.sessions import SessionState

SETTINGS = SessionSettings.create(idle=60)


def test_cookie_signer_round_trip_rotation_and_refusals() -> None:
    old, new = CookieSigner(["old"]), CookieSigner(["old", "new"])
    sid = "A" * 43
    cookie = new.sign(sid)
    verified = new.unsign(cookie)
    assert verified is not None and verified[0] == sid and abs(verified[1] - time.time()) < 5
    assert new.unsign(old.sign(sid)) is not None  # an old key is still accepted
    assert old.unsign(cookie) is None  # signed with a key it does not know
    assert CookieSigner(["old"], salt="other").unsign(old.sign(sid)) is None
    # The second-to-last character: the last one of a 256-bit signature also holds padding bits.
    flipped = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
    for bad in ["", "garbage", "a.b.c", sid, flipped, "é"]:
        assert new.unsign(bad) is None, bad
    assert new.unsign(new.sign("short-id")) is None  # signed, but not a session id
    with pytest.raises(ValueError, match="secret key"):
        CookieSigner([""])


def test_settings_are_checked_with_the_callers_names() -> None:
    with pytest.raises(ValueError, match="IDLE"):
        SessionSettings.create(idle=0, names={"idle": "IDLE"})
    with pytest.raises(ValueError, match="refresh_fraction"):
        SessionSettings.create(idle=1, refresh_fraction=2)
    with pytest.raises(TypeError, match="permanent"):
        SessionSettings.create(idle=1, permanent="False")  # type: ignore[arg-type]
    s = SessionSettings.create(idle=10, absolute=15)
    assert s.ttl(created=100, now=100) == 10 and s.ttl(created=100, now=110) == 5
    assert s.ttl(created=100, now=115) is None


def test_async_engine_merges_concurrent_saves_and_never_resurrects(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncStore(f"sqlite:///{tmp_path}/s.db") as store:
            ks = store._keyspace
            first = AsyncSessionState(ks, SETTINGS, None, None)
            await first.load()
            first.data["a"] = 1
            first.changed()
            action = await first.save(time.time())
            assert action.kind == "set" and action.sid
            sid = action.sid

            async def change(key: str, value: Any) -> str:
                data: dict[str, Any] = {}  # any dict the adapter owns
                state = AsyncSessionState(ks, SETTINGS, sid, time.time(), data=data)
                await state.load()
                await asyncio.sleep(0.01)
                data[key] = value
                state.changed()
                return (await state.save(time.time())).kind

            assert await asyncio.gather(*(change(f"k{i}", i) for i in range(10))) == ["set"] * 10
            check = AsyncSessionState(ks, SETTINGS, sid, time.time())
            await check.load()
            assert check.data == {"a": 1, **{f"k{i}": i for i in range(10)}}
            assert await check.incr("n", 5) == 5

            # A request that read the session before a destroy cannot write it back.
            slow = AsyncSessionState(ks, SETTINGS, sid, time.time())
            await slow.load()
            gone = AsyncSessionState(ks, SETTINGS, sid, time.time())
            await gone.load()
            await gone.destroy()
            assert (await gone.save(time.time())).kind == "delete"
            slow.data["late"] = True
            assert (await slow.save(time.time())).kind == "keep"
            assert await store.backend.get(entry_key(ks, sid)) is None

    asyncio.run(main())


def test_sync_engine_is_generated_and_works(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/s.db") as store:
        state = SessionState(store._keyspace, SessionSettings.create(idle=60, lock=True), None, None)
        state.load()
        assert state.incr("n") == 1 and state.sid is not None  # a new session, stored at once
        sid = state.sid
        again = SessionState(store._keyspace, SessionSettings.create(idle=60, lock=True), sid, time.time())
        again.load()
        assert again.lock is not None and again.data == {"n": 1}  # loaded under the session lock
        again.regenerate()
        moved = again.save(time.time())
        again.release_lock()
        assert moved.kind == "set" and moved.sid != sid
        assert store.backend.get(entry_key(store._keyspace, sid)) is None
