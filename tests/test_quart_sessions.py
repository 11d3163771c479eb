"""Quart sessions (``sharedstate.quart.QuartSessionInterface``) on the async session engine.

The acceptance checks are the Flask sessions' own (imported from tests/test_sessions.py and run
here against :func:`live`): the Quart twin of the Flask session app under ``hypercorn --workers 4``,
on sqlite:// and redis://, hit by real concurrent HTTP clients. The finer checks run in-process
with Quart's test client.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from quart import Quart, session

from sharedstate import LockTimeout, Store
from sharedstate.flask import SharedState as FlaskSharedState
from sharedstate.quart import QuartSession, SharedState, store_for
from tests import servers
from tests.test_quart import Hypercorn, drop_namespace

# The Flask acceptance checks, collected here too: they run against this module's `live`.
from tests.test_sessions import (  # noqa: F401
    stored_entry,
    test_concurrent_incr_loses_nothing,
    test_concurrent_writes_of_different_keys_all_persist,
    test_locked_read_then_write_loses_nothing,
    test_logout_overlapping_slow_requests_stays_logged_out,
    test_tampered_cookie_gets_a_fresh_empty_session,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["hypercorn-sqlite", "hypercorn-redis"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Store]]:
    """(host:port, store) of tests.apps.quart_session_app under ``hypercorn --workers 4``."""
    backend = request.param.split("-")[1]
    url = servers.backend_url(backend, tmp_path_factory.mktemp("quart-sessions"))
    namespace = f"qs{servers.RUN_ID}{uuid.uuid4().hex[:8]}"
    env = {"SHAREDSTATE_URL": url, "SHAREDSTATE_NAMESPACE": namespace}
    env["SHAREDSTATE_SESSION_IDLE_TIMEOUT"] = "600"
    server = Hypercorn("tests.apps.quart_session_app:create_app()", env)
    store = Store(url, namespace=namespace)
    try:
        yield server.base.removeprefix("http://"), store
    finally:
        server.stop()
        drop_namespace(url, namespace)
        store.close()


# -- in-process, Quart's test client ------------------------------------------------------------------


def session_app(tmp_path: Path, *, lock: bool = False, **config: Any) -> Quart:
    from tests.apps.quart_session_app import make_quart_app

    return make_quart_app(f"sqlite:///{tmp_path}/s.sqlite3", "qs", lock=lock, **config)


def cookie_of(reply: Any, name: str = "session") -> str | None:
    """The value the reply sets for cookie ``name`` ("" if it deletes it), None if untouched."""
    for header in reply.headers.getlist("Set-Cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";")[0].strip('"')
    return None


def test_lazy_merge_5xx_nested_and_clear(tmp_path: Path) -> None:
    app = session_app(tmp_path)
    store = store_for(app)

    async def entries() -> list[str]:
        return await store.keys("_ss:session:")

    async def main() -> None:
        client = app.test_client()
        noop = await client.get("/noop")
        assert cookie_of(noop) is None and "Cookie" not in noop.headers.get("Vary", "")
        assert await (await client.get("/get")).get_json() == {}
        assert await entries() == []  # an empty session is never stored
        failed = await client.get("/fail")
        assert failed.status_code == 500 and cookie_of(failed) is None  # nothing saved on a 5xx
        made = await client.get("/set/a/1")
        sid_cookie = cookie_of(made)
        assert sid_cookie and len(sid_cookie.split(".")[0]) == 43  # only a signed 256-bit id
        assert "Cookie" in made.headers["Vary"]
        read = await client.get("/get")
        assert cookie_of(read) is None  # a read-only request sends no cookie (refresh throttled)
        await client.get("/append/cart/x")
        await client.get("/append/cart/y")  # nested changes, detected at save time
        assert await (await client.get("/get")).get_json() == {"a": "1", "cart": {"items": ["x", "y"]}}
        assert await (await client.get("/incr/n")).get_data(as_text=True) == "1"
        assert await (await client.get("/incr/n")).get_data(as_text=True) == "2"
        assert len(await entries()) == 1
        cleared = await client.get("/clear")
        assert cookie_of(cleared) == ""  # emptied: entry and cookie deleted
        assert await entries() == []
        await store.aclose()

    asyncio.run(main())


def test_login_regenerates_and_logout_destroys(tmp_path: Path) -> None:
    app = session_app(tmp_path)
    store = store_for(app)

    async def main() -> None:
        client = app.test_client()
        first = cookie_of(await client.get("/set/cart/1"))
        assert first
        login = await client.get("/login/alice")
        second = cookie_of(login)
        assert second and second.split(".")[0] != first.split(".")[0]
        data = await (await client.get("/get")).get_json()
        assert data == {"cart": "1", "user": "alice"}  # the data moved to the new id
        # the old id is dead: presenting it gets a fresh session
        old = app.test_client()
        old.cookie_jar = None  # type: ignore[assignment]
        stale = await old.get("/get", headers={"Cookie": f"session={first}"})
        assert await stale.get_json() == {}
        logout = await client.get("/logout")
        assert cookie_of(logout) == ""
        assert await store.keys("_ss:session:") == []
        await store.aclose()

    asyncio.run(main())


def test_no_secret_key_and_bad_settings(tmp_path: Path) -> None:
    app = session_app(tmp_path, SECRET_KEY=None)

    async def main() -> None:
        reply = await app.test_client().get("/set/a/1")
        assert reply.status_code == 500  # Quart's null session refuses writes without SECRET_KEY
        app.config.update(SECRET_KEY="k", SHAREDSTATE_SESSION_IDLE_TIMEOUT=-1)
        app.config["PROPAGATE_EXCEPTIONS"] = True
        with pytest.raises(ValueError, match="SHAREDSTATE_SESSION_IDLE_TIMEOUT"):
            await app.test_client().get("/get")
        await store_for(app).aclose()

    asyncio.run(main())


def test_lock_released_when_the_exception_propagates(tmp_path: Path) -> None:
    app = session_app(tmp_path, lock=True, SHAREDSTATE_SESSION_LOCK_TIMEOUT=1)
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/crash")
    async def crash() -> str:
        session["x"] = 1
        raise RuntimeError("boom")

    async def main() -> None:
        client = app.test_client()
        await client.get("/locked/set/a/1")
        with pytest.raises(RuntimeError, match="boom"):
            await client.get("/crash")
        # the lock was released at teardown: the next request does not wait for the lease
        reply = await client.get("/locked/get")
        assert await reply.get_json() == {"a": "1"}
        await store_for(app).aclose()

    asyncio.run(main())


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    app = session_app(tmp_path, lock=True, SHAREDSTATE_SESSION_LOCK_TIMEOUT=0.3)
    app.config["PROPAGATE_EXCEPTIONS"] = True

    async def main() -> None:
        client = app.test_client()
        await client.get("/locked/set/a/1")
        slow = asyncio.ensure_future(client.get("/locked/get?delay=1"))
        await asyncio.sleep(0.3)
        with pytest.raises(LockTimeout, match="SHAREDSTATE_SESSION_LOCK_TIMEOUT"):
            await client.get("/locked/get")
        assert await (await slow).get_json() == {"a": "1"}
        await store_for(app).aclose()

    asyncio.run(main())


def test_flask_and_quart_share_sessions(tmp_path: Path) -> None:
    """One secret key and one store: a session made by Flask is read and changed by Quart."""
    url = f"sqlite:///{tmp_path}/shared.sqlite3"
    config = {"SECRET_KEY": "shared", "SHAREDSTATE_URL": url, "SHAREDSTATE_NAMESPACE": "site"}
    config["SHAREDSTATE_SESSIONS"] = True
    flask_app = Flask("flask_side")
    flask_app.config.update(config)
    FlaskSharedState(flask_app)

    @flask_app.get("/login")
    def login() -> str:
        from flask import session as flask_session

        flask_session["user"] = "alice"
        return "ok"

    @flask_app.get("/who")
    def who() -> dict[str, Any]:
        from flask import session as flask_session

        return dict(flask_session)

    quart_app = Quart("quart_side")
    quart_app.config.update(config)
    SharedState(quart_app)

    @quart_app.get("/visit")
    async def visit() -> str:
        assert isinstance(session._get_current_object(), QuartSession)  # type: ignore[attr-defined]
        return f"{session['user']}:{await session.incr('visits')}"  # type: ignore[attr-defined]

    with flask_app.test_client() as fc:
        reply = fc.get("/login")
        cookie = next(
            h.split(";")[0].split("=", 1)[1]
            for h in reply.headers.getlist("Set-Cookie")
            if h.startswith("session=")
        )

    async def main() -> str:
        reply = await quart_app.test_client().get("/visit", headers={"Cookie": f"session={cookie}"})
        text = await reply.get_data(as_text=True)
        await store_for(quart_app).aclose()
        return text

    assert asyncio.run(main()) == "alice:1"
    with flask_app.test_client() as fc:
        fc.set_cookie("session", cookie)
        assert fc.get("/who").get_json() == {"user": "alice", "visits": 1}
