"""``sharedstate.quart``: the extension and its sessions in-process (Quart's test client and test CLI
runner) and under real hypercorn with four worker processes, hit by real concurrent HTTP clients,
on sqlite:// and redis://.

The session acceptance checks are the Flask sessions' own, imported from tests/test_sessions.py and
run here against :func:`live`: the Quart twin of the Flask session app (tests/apps/quart_session_app.py)
under ``hypercorn --workers 4``. One hypercorn per backend serves every test of this module.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from quart import Quart, session

from sharedstate import AsyncStore, LockNotOwnedError, LockTimeout, Store
from sharedstate.flask import SharedState as FlaskSharedState
from sharedstate.quart import QuartSession, SharedState, default_namespace, store_for
from tests import servers

# The Flask acceptance checks, collected here too: they run against this module's `live`.
from tests.test_sessions import (  # noqa: F401
    test_concurrent_incr_loses_nothing,
    test_concurrent_writes_of_different_keys_all_persist,
    test_locked_read_then_write_loses_nothing,
    test_logout_overlapping_slow_requests_stays_logged_out,
    test_tampered_cookie_gets_a_fresh_empty_session,
)

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = Path(sys.executable).parent / "hypercorn"
WORKERS = 4
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def namespace() -> str:
    return f"q{servers.RUN_ID}{uuid.uuid4().hex[:8]}"


def make_app(name: str, tmp_path: Path, **config: Any) -> Quart:
    app = Quart(name, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app


def drop_namespace(url: str, namespace: str) -> None:
    with Store(url, namespace=namespace) as store:
        for key in list(store.backend.scan(namespace + "/")):
            store.backend.delete(key)


# -- in-process ------------------------------------------------------------------------------------


def test_routes_and_objects_made_at_import_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.apps import quart_app

    monkeypatch.delenv("QUART_APP_URL", raising=False)
    monkeypatch.delenv("QUART_APP_NAMESPACE", raising=False)
    monkeypatch.setenv("QUART_APP_INSTANCE", str(tmp_path / "instance"))
    app = quart_app.create_app()
    store = store_for(app)
    assert store.url == f"sqlite:///{tmp_path}/instance/sharedstate.sqlite3"
    assert store.namespace == "tests.apps.quart_app" == default_namespace(app)
    assert repr(quart_app.module_hits) == "<QuartCounter 'module_hits'>"

    async def main() -> None:
        client = app.test_client()
        for n in range(1, 4):
            reply = await client.get("/incr")
            assert (await reply.get_json())["n"] == n
        assert (await (await client.get("/edit")).get_json())["param"] == 1
        guarded = await (await client.get("/module-locked")).get_json()
        assert guarded["value"] == 1 and guarded["n"] == 1
        first = await (await client.get("/report")).get_json()
        again = await (await client.get("/report")).get_json()
        assert first["run"] == again["run"] == 1
        assert await store.get("settings:guarded") == 1
        await store.aclose()

    try:
        asyncio.run(main())
    finally:
        drop_namespace(store.url, store.namespace)


def test_default_url_is_a_file_in_the_instance_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHAREDSTATE_URL", raising=False)
    app = make_app("default_url_app", tmp_path)
    state = SharedState(app)
    assert state.store.url == f"sqlite:///{tmp_path}/instance/sharedstate.sqlite3"
    assert (tmp_path / "instance").is_dir()
    assert state.store.namespace == "default_url_app"
    assert app.config["SHAREDSTATE_SESSIONS"] is False

    async def main() -> None:
        assert await state.counter("c").incr() == 1  # outside any app context: SharedState(app)'s app
        await state.store.aclose()

    asyncio.run(main())
    with sqlite3.connect(tmp_path / "instance" / "sharedstate.sqlite3") as conn:
        assert conn.execute("SELECT key FROM sharedstate").fetchall() == [("default_url_app/c",)]


def test_one_extension_many_apps_and_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/many.sqlite3"
    state = SharedState()
    hits = state.counter("hits")  # before any app exists
    prefs = state.dict("prefs")
    guard = state.lock("guard", ttl=5, timeout=0)
    with pytest.raises(ValueError, match="reserved"):
        state.counter("_ss:x")
    a = make_app("app_a", tmp_path, SHAREDSTATE_URL=url)
    b = make_app("app_b", tmp_path, SHAREDSTATE_URL=url)
    state.init_app(a)
    state.init_app(b)
    with pytest.raises(RuntimeError, match="already set up"):
        state.init_app(a)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="outside of application context"):
            await hits.incr()
        async with a.app_context():
            assert await hits.incr() == 1
            assert await hits.incr() == 2
            await prefs.set("theme", "dark")
            assert await prefs.setdefault("lang", "en") == "en"
            assert await prefs.items() == [("lang", "en"), ("theme", "dark")]
            assert await prefs.pop("lang") == "en"
            assert await prefs.pop("lang", None) is None
            with pytest.raises(KeyError):
                await prefs.pop("lang")
            async with guard:
                assert await guard.owned and await guard.locked
                assert guard.fencing_token == 1
                other = asyncio.ensure_future(guard.acquire())  # another task: its own context
                with pytest.raises(LockTimeout):
                    await other
                with pytest.raises(RuntimeError, match="already held"):
                    await guard.acquire()
            assert not await guard.owned
            with pytest.raises(LockNotOwnedError):
                await guard.release()
        async with b.app_context():
            assert await hits.incr() == 1  # app_b's own namespace
            assert await prefs.keys() == []
            assert await state.update("n", lambda v: v + 1, default=0) == 1
        async with a.app_context():
            assert await state.keys() == ["hits", "prefs:theme"]
        await store_for(a).aclose()
        await store_for(b).aclose()

    asyncio.run(main())


def test_cached_single_flight_and_stale(tmp_path: Path) -> None:
    app = make_app("cached_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/c.sqlite3")
    state = SharedState(app)
    runs: list[int] = []

    @state.cached(ttl=0.5, stale_ttl=30)
    async def rates(day: str) -> dict[str, Any]:
        runs.append(1)
        await asyncio.sleep(0.2)
        return {"day": day, "run": len(runs)}

    with pytest.raises(TypeError):
        state.cached(ttl=1)(len)  # type: ignore[arg-type]  # a sync function: refused

    async def main() -> None:
        async with app.app_context():
            first = await asyncio.gather(*[rates("mon") for _ in range(20)])
            assert {r["run"] for r in first} == {1} and len(runs) == 1  # a stampede, computed once
            await asyncio.sleep(0.6)  # stale now
            stale = await asyncio.gather(*[rates("mon") for _ in range(10)])
            runs_seen = sorted(r["run"] for r in stale)
            # One refreshes; nine got the stale value (had they waited, they would have run 2).
            assert runs_seen.count(2) == 1 and runs_seen.count(1) == 9
            assert len(runs) == 2
            assert await rates.invalidate("mon")
        await state.store.aclose()

    asyncio.run(main())


# -- quart state (the test CLI runner) ----------------------------------------------------------------


def test_cli(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite3"
    app = make_app("cli_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{db}")
    state = SharedState(app)

    async def fill() -> None:
        await state.set("alpha", {"b": [1, 2], "a": (3, "x")})
        await state.dict("prefs").set("theme", "dark")
        await state.counter("hits").incr(7)
        await state.set("short", 1, ttl=0.1)
        await state.cached(ttl=60, name="report")(asyncio.sleep)(0)
        await state.store.aclose()

    asyncio.run(fill())
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["state", "list"])
    assert listed.exit_code == 0, listed.output
    time.sleep(0.2)
    assert runner.invoke(args=["state", "list"]).output.splitlines() == ["alpha", "hits", "prefs:theme"]
    assert len(runner.invoke(args=["state", "list", "--all"]).output.splitlines()) == 4
    assert runner.invoke(args=["state", "get", "alpha"]).output == "{'a': (3, 'x'), 'b': [1, 2]}\n"
    assert runner.invoke(args=["state", "get", "hits"]).output == "7\n"
    missing = runner.invoke(args=["state", "get", "nope"])
    assert missing.exit_code == 1 and "no key 'nope'" in missing.output
    assert runner.invoke(args=["state", "get", ""]).exit_code == 2
    stats = runner.invoke(args=["state", "stats"]).output
    assert f"sqlite:///{db}" in stats and "namespace: 'cli_app'" in stats
    assert "keys:      3 (+1 internal)" in stats
    assert runner.invoke(args=["state", "sweep"]).output == "swept 1 expired entries\n"
    assert runner.invoke(args=["state", "delete", "alpha"]).output == "deleted alpha\n"
    declined = runner.invoke(args=["state", "clear"], input="n\n")
    assert declined.exit_code == 1 and "namespace 'cli_app'" in declined.output
    assert runner.invoke(args=["state", "clear", "--yes"]).output == "deleted 3 keys\n"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sharedstate").fetchone() == (0,)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    app = make_app("broken_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/missing-dir/x.sqlite3")
    SharedState(app)
    result = app.test_cli_runner().invoke(args=["state", "stats"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: BackendUnavailableError: cannot open SQLite database")
    bare = make_app("bare_app", tmp_path)
    from sharedstate.quart import state_cli

    bare.cli.add_command(state_cli)
    result = bare.test_cli_runner().invoke(args=["state", "stats"])
    assert result.exit_code == 1 and "not set up on app 'bare_app'" in result.output


def test_real_quart_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/real.sqlite3"
    with Store(url, namespace="tests.apps.quart_app") as store:
        store.set("visible", [1, 2])
    env = {**os.environ, "QUART_APP_URL": url, "QUART_APP_INSTANCE": str(tmp_path / "instance")}
    env.pop("QUART_APP_NAMESPACE", None)
    quart = [sys.executable, "-m", "quart", "--app", "tests.apps.quart_app:create_app()", "state"]
    listed = subprocess.run([*quart, "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "visible\n"


# -- hypercorn --workers 4 -----------------------------------------------------------------------------


class Hypercorn:
    """``hypercorn --workers 4`` on an app spec, configured from the environment."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        port = servers.free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                *(str(HYPERCORN), "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}"),
                *("--backlog", "1024", "--graceful-timeout", "1", app),
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.base = f"http://127.0.0.1:{port}"
        try:
            # Until a worker answers (the port opens before the workers import the app); a server
            # that exits (a bad option, an app that fails to import) is reported at once.
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{self.base}/noop", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"hypercorn did not start:\n{self.output()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def fire(base: str, paths: list[str], stagger: float = 0.0) -> list[httpx.Response]:
    """Send every request at once, each on its own connection (the i-th after ``i * stagger`` s)."""

    async def get(client: httpx.AsyncClient, i: int, path: str) -> httpx.Response:
        if stagger:
            await asyncio.sleep(i * stagger)
        return await client.get(path)

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            return list(await asyncio.gather(*[get(client, i, p) for i, p in enumerate(paths)]))

    return asyncio.run(main())


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def hypercorn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """(base URL, store URL, namespace) of one ``hypercorn --workers 4`` serving the session apps
    of tests/apps/quart_session_app.py and the state app of tests/apps/quart_app.py."""
    tmp_path = tmp_path_factory.mktemp("hypercorn")
    url = servers.backend_url(request.param, tmp_path)
    namespace = f"q{servers.RUN_ID}{uuid.uuid4().hex[:8]}"
    env = {"QUART_APP_URL": url, "QUART_APP_NAMESPACE": namespace, "QUART_APP_INSTANCE": str(tmp_path)}
    env.update(SHAREDSTATE_URL=url, SHAREDSTATE_NAMESPACE=namespace, SHAREDSTATE_SESSION_IDLE_TIMEOUT="600")
    server = Hypercorn("tests.apps.quart_session_app:create_app()", env)
    try:
        yield server.base, url, namespace
    finally:
        server.stop()
        drop_namespace(url, namespace)


@pytest.fixture(scope="module")
def live(hypercorn: tuple[str, str, str]) -> Iterator[tuple[str, Store]]:
    """(host:port, store): what the Flask session acceptance checks (tests/test_sessions.py) take."""
    base, url, namespace = hypercorn
    with Store(url, namespace=namespace) as store:
        yield base.removeprefix("http://"), store


def test_hypercorn_counter_is_exact(hypercorn: tuple[str, str, str]) -> None:
    base, url, namespace = hypercorn
    pids: set[int] = set()
    rounds = 0
    # One event loop can take all 200 connections; on a busy machine one worker sometimes does, so
    # fire again (the counts must stay exact) until the load reached two workers, at most 3 times.
    while len(pids) < 2 and rounds < 3:
        replies = fire(base, ["/incr?sleep=0.05"] * 200)
        assert [r.status_code for r in replies] == [200] * 200
        first = rounds * 200 + 1
        assert sorted(r.json()["n"] for r in replies) == list(range(first, first + 200))
        pids |= {r.json()["pid"] for r in replies}
        rounds += 1
    assert len(pids) >= 2, "the requests did not spread over the workers"
    with Store(url, namespace=namespace) as store:
        assert store.get("hits") == rounds * 200


def test_hypercorn_edit_lock_and_cached_stampede(hypercorn: tuple[str, str, str]) -> None:
    base, url, namespace = hypercorn
    edits = fire(base, ["/edit"] * 40)
    assert sorted(r.json()["param"] for r in edits) == list(range(1, 41))
    guarded = fire(base, ["/module-locked?sleep=0.005"] * 20)
    assert sorted(r.json()["value"] for r in guarded) == list(range(1, 21))
    served: set[int] = set()
    for _ in range(3):  # a cold cache, hit by 40 requests; again if one worker took them all
        with Store(url, namespace=namespace) as store:  # cold again
            for key in [*store.keys("_ss:cache:"), "report_runs"]:
                store.backend.delete(store._keyspace.full_key(key, internal=True))
        reports = fire(base, ["/report"] * 40, stagger=0.004)
        assert [r.status_code for r in reports] == [200] * 40
        assert {r.json()["run"] for r in reports} == {1}  # computed once, everyone got it
        assert len({r.json()["pid"] for r in reports}) == 1
        served = {r.json()["served_by"] for r in reports}
        if len(served) >= 2:
            break
    assert len(served) >= 2, "the requests did not spread over the workers"
    with Store(url, namespace=namespace) as store:
        assert store.get("report_runs") == 1
        assert store.get("global_obj") == {"param": 40}
        assert store.get("guarded_value") == 20 == store.get("settings:guarded")


def test_async_store_sees_what_the_workers_wrote(hypercorn: tuple[str, str, str]) -> None:
    base, url, namespace = hypercorn

    async def main() -> Any:
        async with AsyncStore(url, namespace=namespace) as store:
            return await store.get("global_obj")

    fire(base, ["/edit"])
    assert asyncio.run(main())["param"] >= 1


# -- sessions, in-process (Quart's test client) -------------------------------------------------------


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


def test_flash_markup_and_websocket_saves(tmp_path: Path) -> None:
    from markupsafe import Markup
    from quart import flash, get_flashed_messages, websocket

    app = session_app(tmp_path)

    @app.get("/flash")
    async def flash_messages() -> str:
        await flash(Markup("<b>hi</b>"))  # safe HTML: comes back as Markup
        await flash("<i>plain</i>", "info")
        return "ok"

    @app.get("/flashes")
    async def flashes() -> str:
        messages = get_flashed_messages(with_categories=True)
        return repr([(category, type(m).__name__, str(m)) for category, m in messages])

    @app.websocket("/ws")
    async def ws() -> None:
        session["from_ws"] = "yes"  # saved after the websocket, without a cookie
        await websocket.send("hi")

    async def main() -> None:
        client = app.test_client()
        await client.get("/flash")
        shown = await (await client.get("/flashes")).get_data(as_text=True)
        assert shown == "[('message', 'Markup', '<b>hi</b>'), ('info', 'str', '<i>plain</i>')]"
        assert await (await client.get("/flashes")).get_data(as_text=True) == "[]"
        async with client.websocket("/ws") as ws_client:  # no session yet: a new one cannot be sent
            assert await ws_client.receive() == "hi"
        await asyncio.sleep(0.1)
        assert await store_for(app).keys("_ss:session:") == []
        await client.get("/set/a/1")
        async with client.websocket("/ws") as ws_client:
            assert await ws_client.receive() == "hi"
        deadline = time.monotonic() + 5
        while "from_ws" not in (data := await (await client.get("/get")).get_json()):
            assert time.monotonic() < deadline, data
            await asyncio.sleep(0.05)
        await store_for(app).aclose()

    asyncio.run(main())


def test_a_request_that_never_uses_the_session_renews_nothing(tmp_path: Path) -> None:
    app = session_app(tmp_path, SHAREDSTATE_SESSION_REFRESH_FRACTION=0)  # every use renews

    async def main() -> None:
        client = app.test_client()
        assert cookie_of(await client.get("/set/a/1"))
        noop = await client.get("/noop")  # loaded (it carries the cookie), never used
        assert cookie_of(noop) is None and "Cookie" not in noop.headers.get("Vary", "")
        read = await client.get("/get")  # used read-only: the expiry is renewed, the cookie re-sent
        assert cookie_of(read) and "Cookie" in read.headers["Vary"]
        await store_for(app).aclose()

    asyncio.run(main())
