"""``sharedstate.starlette.SessionMiddleware``: behaviour in process (httpx over ASGI, Starlette's
TestClient for websockets), then the acceptance checks of the Flask sessions under real
``uvicorn --workers 4`` on sqlite:// and redis://.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from itsdangerous import TimestampSigner
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as CookieSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sharedstate import AsyncStore, Store
from sharedstate._sessions import SESSION_PREFIX, CookieSigner
from sharedstate.errors import LockTimeout
from sharedstate.starlette import Session, SessionMiddleware, get_session
from tests import servers
from tests.apps.starlette_app import SECRET_KEY, create_app
from tests.test_sessions import Reply, fetch, together

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
pytestmark = pytest.mark.timeout(120)


class CountingBackend:
    """An async backend that counts the calls of the one it wraps, by method name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name in {"get", "set", "add", "compare_and_set", "delete", "delete_if_version", "touch", "incr"}:

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return await value(*args, **kwargs)

            return counted
        return value

    def writes(self) -> list[str]:
        return [c for c in self.calls if c != "get"]


def in_loop(body: Callable[[AsyncStore], Awaitable[None]]) -> Callable[[Path], None]:
    """A test running ``body(store)`` with ``asyncio.run`` on a fresh SQLite file (no plugin)."""

    def test(tmp_path: Path) -> None:
        async def main() -> None:
            store = AsyncStore(f"sqlite:///{tmp_path}/state.sqlite3", namespace="st")
            try:
                await body(store)
            finally:
                await store.aclose()

        asyncio.run(main())

    test.__name__, test.__doc__ = body.__name__, body.__doc__
    return test


def client(app: Any, base_url: str = "http://testserver", **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, **kwargs)


def set_cookie(response: httpx.Response, name: str = "session") -> str | None:
    """The value ``response`` sets for cookie ``name`` ("null" when it deletes it), else None."""
    for value in response.headers.get_list("set-cookie"):
        key, _, rest = value.partition("=")
        if key == name:
            return rest.split(";")[0]
    return None


async def stored(store: AsyncStore, cookie: str) -> Any:
    sid = cookie.split(".")[0]
    full = store._keyspace.full_key(SESSION_PREFIX + hashlib.sha256(sid.encode()).hexdigest(), internal=True)
    entry = await store.backend.get(full)
    return None if entry is None else store._keyspace.decode(full, entry.value)


# -- in process --------------------------------------------------------------------------------


@in_loop
async def test_no_cookie_reads_nothing_and_read_only_writes_nothing(store: AsyncStore) -> None:
    counting = CountingBackend(store.backend)
    async with client(create_on(store, counting)) as c:
        r = await c.get("/get")
        assert r.json() == {} and set_cookie(r) is None
        r = await c.get("/noop")
        assert counting.calls == [] and "vary" not in r.headers  # no cookie: no read, no Vary
        r = await c.get("/set/a/1")
        assert set_cookie(r) and counting.writes() == ["add"]  # a new session: one add
        counting.calls.clear()
        r = await c.get("/get")
        assert r.json() == {"a": "1"} and set_cookie(r) is None
        assert counting.calls == ["get"]  # one read, no write (not due for a refresh)
        assert r.headers["vary"] == "Cookie"
        counting.calls.clear()
        await c.get("/set/a/1")  # same value: nothing changed
        assert counting.calls == ["get"]
        await c.get("/append/x/1")  # nested change found without marking
        await c.get("/append/x/2")
        assert (await c.get("/get")).json() == {"a": "1", "x": {"items": ["1", "2"]}}


@in_loop
async def test_vary_cookie_joins_the_apps_own_vary(store: AsyncStore) -> None:
    """A response that read the session varies on ``Cookie``, added to any ``Vary`` the app set."""

    async def login(request: Request) -> PlainTextResponse:
        request.session["user"] = "alice"
        return PlainTextResponse("ok")

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.session.get("user", ""), headers={"Vary": "Accept-Encoding"})

    async def read_plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.session.get("user", ""))

    app = Starlette(
        routes=[Route("/login", login), Route("/read", read), Route("/plain", read_plain)],
        middleware=[Middleware(SessionMiddleware, store=store, secret_key="k" * 32)],
    )
    async with client(app) as c:
        assert set_cookie(await c.get("/login"))
        r = await c.get("/read")
        assert r.text == "alice" and set_cookie(r) is None
        assert r.headers.get_list("vary") == ["Accept-Encoding, Cookie"]
        r = await c.get("/plain")
        assert r.text == "alice" and r.headers.get_list("vary") == ["Cookie"]


def create_on(store: AsyncStore, backend: Any, **options: Any) -> Starlette:
    """The test routes on ``store`` with its backend replaced by ``backend``."""
    from tests.apps.starlette_app import add_routes

    store.backend = backend
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET_KEY, **options)
    add_routes(app, store)
    return app  # type: ignore[return-value]


@in_loop
async def test_empty_session_never_stored_and_5xx_or_crash_saves_nothing(store: AsyncStore) -> None:
    counting = CountingBackend(store.backend)
    app = create_on(store, counting)
    async with client(app) as c:
        r = await c.get("/clear")
        assert set_cookie(r) is None and counting.calls == []
        r = await c.get("/fail")
        assert r.status_code == 500 and set_cookie(r) is None and counting.calls == []
        cookie = set_cookie(await c.get("/set/a/1"))
        assert cookie
        with pytest.raises(RuntimeError, match="boom"):
            await c.get("/crash")
        r = await c.get("/fail")
        assert r.status_code == 500
        assert (await c.get("/get")).json() == {"a": "1"}
        assert (await stored(store, cookie))["d"] == {"a": "1"}


@in_loop
async def test_cookie_is_a_signed_256_bit_id_and_bad_cookies_get_a_fresh_session(store: AsyncStore) -> None:
    app = create_app(store.url, "st")
    async with client(app) as c:
        cookie = set_cookie(await c.get("/set/a/1"))
        assert cookie
        sid, stamp, sig = cookie.split(".")
        assert len(sid) == 43 and (await stored(store, cookie))["d"] == {"a": "1"}
        forged = TimestampSigner("wrong", salt="sharedstate.starlette.session").sign(sid).decode()
        flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
        for bad in [forged, f"{sid}.{stamp}.{flipped}", "garbage", sid, "a.b.c"]:
            async with client(app, cookies={"session": bad}) as other:
                assert (await other.get("/get")).json() == {}
                new = set_cookie(await other.get("/set/x/1"))
                assert new and new.split(".")[0] != sid
        assert (await c.get("/get")).json() == {"a": "1"}


@in_loop
async def test_max_age_and_cookie_attributes(store: AsyncStore) -> None:
    app = Starlette(
        routes=[Route("/set", _set_a), Route("/get", _get)],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                secret_key="k",
                session_cookie="sid",
                max_age=2,
                path="/",
                same_site="strict",
                https_only=True,
                domain="example.com",
            )
        ],
    )
    async with client(app, base_url="https://example.com") as c:
        r = await c.get("/set")
        header = r.headers["set-cookie"]
        assert (
            header.startswith("sid=") and "; path=/; Max-Age=2; httponly; samesite=strict; secure" in header
        )
        assert header.endswith("; domain=example.com")
        assert (await c.get("/get")).json() == {"a": 1}
        # Max-Age bounds the cookie as Starlette's does: a cookie signed longer ago is refused.
        sid = str(set_cookie(r, "sid")).split(".")[0]
        signer = CookieSigner(["k"], "sharedstate.starlette.session").timestamp_signer
        signer.get_timestamp = lambda: int(time.time()) - 3
        old_cookie = signer.sign(sid).decode()
        async with client(app, base_url="https://example.com", cookies={"sid": old_cookie}) as old:
            assert (await old.get("/get")).json() == {}
        signer.get_timestamp = lambda: int(time.time()) - 1
        async with client(
            app, base_url="https://example.com", cookies={"sid": signer.sign(sid).decode()}
        ) as ok:
            assert (await ok.get("/get")).json() == {"a": 1}


async def _set_a(request: Request) -> PlainTextResponse:
    request.session["a"] = 1
    return PlainTextResponse("ok")


async def _get(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


@in_loop
async def test_incr_regenerate_destroy(store: AsyncStore) -> None:
    app = create_app(store.url, "st")
    async with client(app) as c:
        assert (await c.get("/incr/n")).text == "1"  # a new session, stored at once
        cookie = c.cookies["session"]
        assert (await c.get("/incr/n")).text == "2"
        await c.get("/set/s/x")
        with pytest.raises(TypeError, match="not an int"):
            await c.get("/incr/s")
        r = await c.get("/login/ann")
        new = set_cookie(r)
        assert new and new != cookie and await stored(store, cookie) is None
        assert (await c.get("/get")).json() == {"n": 2, "s": "x", "user": "ann"}
        async with client(app, cookies={"session": cookie}) as old:
            assert (await old.get("/get")).json() == {}  # the old id is dead
        r = await c.get("/logout")
        assert set_cookie(r) == "null" and "expires=Thu, 01 Jan 1970" in r.headers["set-cookie"]
        assert await stored(store, new) is None


@in_loop
async def test_regenerate_carries_over_a_concurrent_write(store: AsyncStore) -> None:
    app = create_app(store.url, "st")
    async with client(app) as c:
        await c.get("/set/a/1")
        login = asyncio.create_task(c.get("/login/bob?delay=0.3"))
        await asyncio.sleep(0.1)
        await c.get("/set/late/yes")  # written to the old id while the login is in flight
        await login
        assert (await c.get("/get")).json() == {"a": "1", "user": "bob", "late": "yes"}


@in_loop
async def test_lifetimes(store: AsyncStore) -> None:
    app = create_app(store.url, "st", idle_timeout=1, refresh_fraction=0.2)
    async with client(app) as c:
        await c.get("/set/a/1")
        for _ in range(2):  # read-only use keeps it alive (a throttled touch)
            await asyncio.sleep(0.6)
            assert (await c.get("/get")).json() == {"a": "1"}
        await asyncio.sleep(1.3)
        assert (await c.get("/get")).json() == {}
    app = create_app(store.url, "st", absolute_timeout=1)
    async with client(app) as c:
        await c.get("/set/a/1")
        await asyncio.sleep(0.6)
        assert (await c.get("/set/b/2")).status_code == 200
        await asyncio.sleep(0.6)
        assert (await c.get("/get")).json() == {}


@in_loop
async def test_locked_read_then_write_in_process(store: AsyncStore) -> None:
    app = create_app(store.url, "st")
    async with client(app) as c:
        await c.get("/locked/set/init/1")
        replies = await asyncio.gather(*(c.get("/locked/rmw/n") for _ in range(20)))
        assert sorted(int(r.text) for r in replies) == list(range(1, 21))
        # a request that does not carry the cookie never waits for the lock
        assert (await c.get("/noop")).status_code == 200


@in_loop
async def test_lock_wait_is_bounded(store: AsyncStore) -> None:
    app = create_app(store.url, "st", lock_timeout=0.3, lock_lease=5)
    async with client(app) as c:
        await c.get("/locked/set/init/1")
        slow = asyncio.create_task(c.get("/locked/get?delay=1"))
        await asyncio.sleep(0.2)
        with pytest.raises(LockTimeout, match="lock_timeout"):
            await c.get("/locked/set/x/1")
        assert (await slow).status_code == 200
        assert (await c.get("/locked/set/x/1")).status_code == 200  # released after the response


@in_loop
async def test_misuse_fails_loudly(store: AsyncStore) -> None:
    errors: list[BaseException] = []

    async def later(session: Session) -> None:
        try:
            session["late"] = 1
        except RuntimeError as exc:
            errors.append(exc)

    async def background(request: Request) -> PlainTextResponse:
        request.session["a"] = 1
        return PlainTextResponse("ok", background=BackgroundTask(later, request.session))

    app = Starlette(
        routes=[Route("/bg", background), Route("/get", _get)],
        middleware=[Middleware(SessionMiddleware, store=store, secret_key="k")],
    )
    async with client(app) as c:
        await c.get("/bg")
        assert "could not be saved" in str(errors[0])
        assert (await c.get("/get")).json() == {"a": 1}
    with pytest.raises(TypeError, match="AsyncStore"):
        SessionMiddleware(app, store=Store("memory://"), secret_key="k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        SessionMiddleware(app, store=store, secret_key="k", idle_timeout=-1)
    with pytest.raises(ValueError, match="longer than max_age"):
        SessionMiddleware(app, store=store, secret_key="k", max_age=60, idle_timeout=120)
    with pytest.raises(ValueError, match="same_site"):
        SessionMiddleware(app, store=store, secret_key="k", same_site="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="secret key"):
        SessionMiddleware(app, store=store, secret_key="")
    by_url = SessionMiddleware(app, store=store.url.replace("state.sqlite3", "other.sqlite3"), secret_key="k")
    assert isinstance(by_url.store, AsyncStore)
    await by_url.store.aclose()


@in_loop
async def test_websocket_session_is_readable_and_read_only(store: AsyncStore) -> None:
    seen: list[Any] = []

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.append(dict(websocket.session))
        try:
            websocket.session["x"] = 1
        except RuntimeError as exc:
            seen.append(str(exc))
        await websocket.close()

    async def set_(request: Request) -> PlainTextResponse:
        request.session["user"] = "ann"
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/set", set_), WebSocketRoute("/ws", ws)],
        middleware=[Middleware(SessionMiddleware, store=store, secret_key="k", lock=True)],
    )
    async with client(app) as c:
        cookie = set_cookie(await c.get("/set"))
    # A websocket handshake driven by hand (httpx speaks no websocket): connect, then wait.
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(10)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"session={cookie}".encode())],
        "scheme": "ws",
        "subprotocols": [],
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert seen[0] == {"user": "ann"}
    assert "read-only" in seen[1]


# -- real uvicorn --workers 4 --------------------------------------------------------------------


class Uvicorn:
    """``uvicorn --workers 4`` on tests/apps/starlette_app.py, on a free loopback port."""

    def __init__(self, url: str, namespace: str) -> None:
        port = servers.free_port()
        env = {
            **os.environ,
            "SHAREDSTATE_URL": url,
            "SHAREDSTATE_NAMESPACE": namespace,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        }
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.apps.starlette_app:app",
                "--workers",
                str(WORKERS),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.base = f"127.0.0.1:{port}"
        try:
            servers.wait_for_port(port, 60)
            # The port opens before the workers have imported the app: wait until every one of
            # them has answered (each new connection goes to whichever worker accepts it).
            pids: set[str] = set()
            deadline = time.monotonic() + 60
            while len(pids) < WORKERS:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(pids)} of {WORKERS} uvicorn workers answered in 60 s")
                try:
                    reply = fetch(self.base, "/pid")
                    if reply.status == 200:
                        pids.add(reply.body)
                except OSError:
                    pass
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        self.log.close()
        return text


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Store]]:
    """(base address, store) of the FastAPI app under ``uvicorn --workers 4``."""
    url = servers.backend_url(request.param, tmp_path_factory.mktemp("starlette"))
    namespace = f"t{servers.RUN_ID}{uuid.uuid4().hex[:8]}"
    server = Uvicorn(url, namespace)
    store = Store(url, namespace=namespace)
    try:
        yield server.base, store
    finally:
        log = server.stop()
        for key in list(store.backend.scan(namespace + "/")):
            store.backend.delete(key)
        store.close()
        assert "Traceback" not in log or "LockTimeout" in log, log[-3000:]


def new_session(base: str, prefix: str = "", name: str = "session") -> str:
    reply = fetch(base, f"{prefix}/set/init/1")
    assert reply.status == 200, reply.body
    cookie = reply.set_cookie(name)
    assert cookie
    return cookie


def session_data(base: str, cookie: str, prefix: str = "", name: str = "session") -> dict[str, Any]:
    reply = fetch(base, f"{prefix}/get", cookie, name)
    assert reply.status == 200, reply.body
    data: dict[str, Any] = json.loads(reply.body)
    return data


def stored_sync(store: Store, cookie: str) -> Any:
    sid = cookie.split(".")[0]
    digest = hashlib.sha256(sid.encode()).hexdigest()
    return store.backend.get(store._keyspace.full_key(SESSION_PREFIX + digest, internal=True))


async def _concurrently(
    n: int, call: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]], base: str
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://{base}", limits=limits, timeout=60) as c:
        return await asyncio.gather(*(call(c, i) for i in range(n)))


def test_counter_under_uvicorn_workers_is_exact(live: tuple[str, Store]) -> None:
    base, _ = live
    replies = asyncio.run(_concurrently(200, lambda c, i: c.get("/count"), base))
    assert [r.status_code for r in replies] == [200] * 200
    assert sorted(int(r.text) for r in replies) == list(range(1, 201))
    assert len({r.headers["x-worker"] for r in replies}) > 1  # served by several processes


def test_concurrent_writes_of_different_keys_all_persist(live: tuple[str, Store]) -> None:
    base, _ = live
    cookie = new_session(base)
    replies: list[Reply] = together(lambda i: fetch(base, f"/set/k{i}/{i}?delay=0.05", cookie), 40, 20)
    assert [r.status for r in replies] == [200] * 40
    data = session_data(base, cookie)
    assert {k: data[k] for k in data if k.startswith("k")} == {f"k{i}": str(i) for i in range(40)}
    assert data["init"] == "1"


def test_concurrent_incr_loses_nothing(live: tuple[str, Store]) -> None:
    base, _ = live
    cookie = new_session(base)
    replies = together(lambda i: fetch(base, "/incr/n", cookie), 50, 25)
    assert sorted(int(r.body) for r in replies) == list(range(1, 51))
    assert session_data(base, cookie)["n"] == 50


def test_locked_read_then_write_loses_nothing(live: tuple[str, Store]) -> None:
    base, _ = live
    cookie = new_session(base, "/locked", "locked_session")
    replies = together(lambda i: fetch(base, "/locked/rmw/n?delay=0.005", cookie, "locked_session"), 50, 25)
    assert [r.status for r in replies] == [200] * 50
    assert sorted(int(r.body) for r in replies) == list(range(1, 51))
    assert session_data(base, cookie, "/locked", "locked_session")["n"] == 50


def test_tampered_cookie_gets_a_fresh_empty_session(live: tuple[str, Store]) -> None:
    base, store = live
    cookie = new_session(base)
    sid, stamp, sig = cookie.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    forged = TimestampSigner("not-the-key", salt="sharedstate.starlette.session").sign(sid).decode()
    for bad in [f"{sid}.{stamp}.{flipped}", forged, "garbage", sid, f"{sid}..", "a.b.c", "é"]:
        reply = fetch(base, "/get", bad)
        assert reply.status == 200, bad
        assert reply.body.strip() == "{}", bad
        reply = fetch(base, "/set/x/1", bad)
        assert reply.status == 200
        new = reply.set_cookie()
        assert new and new.split(".")[0] != sid
    assert session_data(base, cookie) == {"init": "1"}
    assert stored_sync(store, cookie) is not None


def test_logout_overlapping_slow_requests_stays_logged_out(live: tuple[str, Store]) -> None:
    base, store = live
    cookie = fetch(base, "/login/alice").set_cookie()
    assert cookie
    with ThreadPoolExecutor(3) as pool:
        slow_read = pool.submit(fetch, base, "/get?delay=1.5", cookie)
        slow_write = pool.submit(fetch, base, "/set/theme/dark?delay=1.5", cookie)
        time.sleep(0.5)  # both have read the session by now (asserted below)
        logout = fetch(base, "/logout", cookie)
        reads, writes = slow_read.result(), slow_write.result()
    assert logout.status == 200 and logout.set_cookie() == "null"
    assert '"user":"alice"' in reads.body.replace(" ", "")  # it read before the logout
    assert writes.status == 200
    assert stored_sync(store, cookie) is None  # nothing wrote the destroyed session back
    for kept in [cookie, reads.set_cookie(), writes.set_cookie()]:
        if kept and kept != "null":
            assert "user" not in session_data(base, kept)


@in_loop
async def test_get_session_types_it_and_names_the_missing_middleware(store: AsyncStore) -> None:
    def build(middleware: Any, **kwargs: Any) -> FastAPI:
        app = FastAPI()
        if middleware is not None:
            app.add_middleware(middleware, **kwargs)

        @app.get("/visit")
        async def visit(session: Annotated[Session, Depends(get_session)]) -> int:
            return await session.incr("visits")

        return app

    async with client(build(SessionMiddleware, store=store, secret_key="k")) as c:
        assert (await c.get("/visit")).json() == 1
        assert (await c.get("/visit")).json() == 2
    async with client(build(None)) as c:
        with pytest.raises(RuntimeError, match=r"add sharedstate\.starlette\.SessionMiddleware"):
            await c.get("/visit")
    async with client(build(CookieSessionMiddleware, secret_key="k")) as c:
        with pytest.raises(RuntimeError, match="not a sharedstate session"):
            await c.get("/visit")
