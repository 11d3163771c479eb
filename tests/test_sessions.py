"""Server-side sessions (sharedstate.sessions) under real servers and real concurrent HTTP clients.

The acceptance checks run under werkzeug's threaded server and under gunicorn with three worker
processes, on sqlite:// and redis://; the finer checks (laziness, cookies, lifetimes) run under
werkzeug on sqlite://, counting store calls with a pass-through wrapper around the real backend.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string, request, session
from itsdangerous import TimestampSigner
from markupsafe import Markup
from werkzeug.serving import make_server

from sharedstate import Store
from sharedstate.backends import sqlite as sqlite_backend
from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
from sharedstate.sessions import SESSION_PREFIX, SharedStateSessionInterface
from tests import servers
from tests.apps.session_app import SECRET_KEY, add_routes, create_app

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
pytestmark = pytest.mark.timeout(120)


# -- HTTP plumbing -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: str
    headers: list[tuple[str, str]]
    cookies: dict[str, SimpleCookie] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_cookie(self, name: str = "session") -> str | None:
        """The value this reply sets for cookie ``name`` ("" if it deletes it), None if untouched."""
        for k, v in self.headers:
            if k.lower() == "set-cookie":
                # By hand: SimpleCookie drops a whole header with an attribute it does not know
                # (Partitioned, before Python 3.14).
                cookie_name, _, value = v.split(";")[0].partition("=")
                if cookie_name.strip() == name:
                    return value.strip().strip('"')
        return None

    def raw_set_cookie(self) -> str:
        return next(v for k, v in self.headers if k.lower() == "set-cookie")


def fetch(base: str, path: str, cookie: str | None = None, name: str = "session") -> Reply:
    host, port = base.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        headers = {"Cookie": f"{name}={cookie}"} if cookie else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.read().decode(), resp.getheaders())
    finally:
        conn.close()


def together(fn: Callable[[int], Any], n: int, workers: int | None = None) -> list[Any]:
    """Run fn(0..n-1) from ``workers`` threads (default n), all released at once."""
    workers = workers or n
    gate = threading.Barrier(min(n, workers))

    def run(i: int) -> Any:
        if i < workers:
            gate.wait(30)
        return fn(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(n)))


def new_session(base: str, prefix: str = "", name: str = "session") -> str:
    reply = fetch(base, f"{prefix}/set/init/1")
    assert reply.status == 200
    cookie = reply.set_cookie(name)
    assert cookie
    return cookie


def session_data(base: str, cookie: str, prefix: str = "", name: str = "session") -> dict[str, Any]:
    import json

    reply = fetch(base, f"{prefix}/get", cookie, name)
    assert reply.status == 200, reply.body
    data: dict[str, Any] = json.loads(reply.body)
    return data


# -- servers -----------------------------------------------------------------------------------


class Werkzeug:
    """A threaded werkzeug server in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()


class Gunicorn:
    """``gunicorn -w 3`` on the session app, configured from the environment."""

    def __init__(self, url: str, namespace: str) -> None:
        port = servers.free_port()
        env = {**os.environ, "SHAREDSTATE_URL": url, "SHAREDSTATE_NAMESPACE": namespace}
        env["SHAREDSTATE_SESSION_IDLE_TIMEOUT"] = "600"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                str(GUNICORN),
                "-w",
                "3",
                "--threads",
                "4",
                "-b",
                f"127.0.0.1:{port}",
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
                "--chdir",
                str(ROOT),
                "tests.apps.session_app:create_app()",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.base = f"127.0.0.1:{port}"
        try:
            servers.wait_for_port(port, 30)
            # the port opens before the workers import the app: wait for a real answer
            deadline = time.monotonic() + 30
            while fetch(self.base, "/noop").status != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def drop_namespace(url: str, namespace: str) -> None:
    with Store(url, namespace=namespace) as store:
        for key in list(store.backend.scan(namespace + "/")):
            store.backend.delete(key)


@pytest.fixture(
    scope="module", params=["werkzeug-sqlite", "werkzeug-redis", "gunicorn-sqlite", "gunicorn-redis"]
)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Store]]:
    """(base address, store) of the session app under a real server."""
    kind, backend = request.param.split("-")
    url = servers.backend_url(backend, tmp_path_factory.mktemp("sessions"))
    namespace = f"t{servers.RUN_ID}{uuid.uuid4().hex[:8]}"
    server: Werkzeug | Gunicorn
    if kind == "werkzeug":
        server = Werkzeug(create_app(url, namespace, SHAREDSTATE_SESSION_IDLE_TIMEOUT=600))
    else:
        server = Gunicorn(url, namespace)
    store = Store(url, namespace=namespace)
    try:
        yield server.base, store
    finally:
        server.stop()
        drop_namespace(url, namespace)
        store.close()


def stored_entry(store: Store, cookie: str) -> Entry | None:
    sid = cookie.split(".")[0]
    digest = hashlib.sha256(sid.encode()).hexdigest()
    return store.backend.get(store._keyspace.full_key(SESSION_PREFIX + digest, internal=True))


# -- acceptance: one client cookie, many concurrent requests -------------------------------------


def test_concurrent_writes_of_different_keys_all_persist(live: tuple[str, Store]) -> None:
    base, _ = live
    cookie = new_session(base)
    replies = together(lambda i: fetch(base, f"/set/k{i}/{i}?delay=0.05", cookie), 40, 20)
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
    forged = TimestampSigner("not-the-key", salt="sharedstate.session").sign(sid).decode()
    for bad in [f"{sid}.{stamp}.{flipped}", forged, "garbage", sid, f"{sid}..", "a.b.c", "é"]:
        reply = fetch(base, "/get", bad)
        assert reply.status == 200, bad
        assert reply.body.strip() == "{}", bad
        # writing under a bad cookie creates a new session with a new id, never the presented one
        reply = fetch(base, "/set/x/1", bad)
        assert reply.status == 200
        new = reply.set_cookie()
        assert new and new.split(".")[0] != sid
    assert session_data(base, cookie) == {"init": "1"}
    assert stored_entry(store, cookie) is not None


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
    assert logout.status == 200 and logout.set_cookie() == ""
    assert '"user":"alice"' in reads.body.replace(" ", "")  # it read before the logout
    assert writes.status == 200
    assert stored_entry(store, cookie) is None  # nothing wrote the destroyed session back
    # whatever cookie the client keeps last, it is logged out
    for kept in [cookie, reads.set_cookie(), writes.set_cookie()]:
        if kept:
            assert "user" not in session_data(base, kept)


# -- the rest, in-process on sqlite under werkzeug ---------------------------------------------


class CountingBackend(Backend):
    """Passes every call to a real backend and counts them by method name."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self._mutex = threading.Lock()

    def _count(self, name: str) -> None:
        with self._mutex:
            self.calls[name] = self.calls.get(name, 0) + 1

    def reset(self) -> None:
        with self._mutex:
            self.calls = {}

    @property
    def writes(self) -> int:
        return sum(v for k, v in self.calls.items() if k not in ("get", "get_many", "expiry", "ping"))

    @classmethod
    def from_url(cls, url: str) -> Backend:
        raise NotImplementedError

    def get(self, key: str) -> Entry | None:
        self._count("get")
        return self.inner.get(key)

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        self._count("set")
        self.inner.set(key, value, ttl)

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        self._count("add")
        return self.inner.add(key, value, ttl)

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        self._count("compare_and_set")
        return self.inner.compare_and_set(key, expected, value, ttl)

    def delete(self, key: str) -> bool:
        self._count("delete")
        return self.inner.delete(key)

    def delete_if_version(self, key: str, version: Version) -> bool:
        self._count("delete_if_version")
        return self.inner.delete_if_version(key, version)

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        self._count("incr")
        return self.inner.incr(key, by, ttl)

    def touch(self, key: str, ttl: float | None) -> bool:
        self._count("touch")
        return self.inner.touch(key, ttl)

    def expiry(self, key: str) -> float | None:
        self._count("expiry")
        return self.inner.expiry(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        self._count("get_many")
        return self.inner.get_many(keys)

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        self._count("set_many")
        self.inner.set_many(items, ttl)

    def delete_many(self, keys: Sequence[str]) -> int:
        self._count("delete_many")
        return self.inner.delete_many(keys)

    def ping(self) -> None:
        self._count("ping")
        self.inner.ping()

    def scan(self, prefix: str = "") -> Iterator[str]:
        return self.inner.scan(prefix)

    def sweep(self, limit: int = 1000) -> int:
        return self.inner.sweep(limit)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Local:
    app: Flask
    store: Store
    counts: CountingBackend
    base: str


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    """The session app built by hand: ``app.session_interface = SharedStateSessionInterface(store)``."""
    app = Flask("local")
    app.config.update(SECRET_KEY=SECRET_KEY, SHAREDSTATE_SESSION_IDLE_TIMEOUT=600)
    store = Store(f"sqlite:///{tmp_path}/local.sqlite3", namespace="local")
    counts = CountingBackend(store.backend)
    store.backend = counts
    app.session_interface = SharedStateSessionInterface(store)  # built without an app
    add_routes(app)
    server = Werkzeug(app)
    try:
        yield Local(app, store, counts, server.base)
    finally:
        server.stop()
        store.close()


def test_request_that_does_not_use_the_session_reads_nothing(local: Local) -> None:
    cookie = new_session(local.base)
    local.counts.reset()
    reply = fetch(local.base, "/noop", cookie)
    assert reply.status == 200
    assert local.counts.calls == {}
    assert reply.header("Vary") is None and reply.set_cookie() is None


def test_read_only_request_writes_nothing(local: Local) -> None:
    cookie = new_session(local.base)
    local.counts.reset()
    reply = fetch(local.base, "/get", cookie)
    assert reply.body.strip() == '{"init":"1"}'
    assert local.counts.calls == {"get": 1}
    assert "Cookie" in (reply.header("Vary") or "")
    assert reply.set_cookie() is None


def test_empty_session_is_never_stored(local: Local) -> None:
    reply = fetch(local.base, "/get")
    assert reply.status == 200 and reply.set_cookie() is None
    assert local.counts.writes == 0
    assert local.store.keys(SESSION_PREFIX) == []
    cookie = new_session(local.base)
    reply = fetch(local.base, "/clear", cookie)  # emptied: the entry goes and the cookie with it
    assert reply.set_cookie() == ""
    assert local.store.keys(SESSION_PREFIX) == []


def test_nothing_is_saved_on_a_5xx(local: Local) -> None:
    cookie = new_session(local.base)
    local.counts.reset()
    assert fetch(local.base, "/fail", cookie).status == 500
    assert fetch(local.base, "/crash", cookie).status == 500
    assert local.counts.writes == 0
    assert fetch(local.base, "/fail").set_cookie() is None
    assert session_data(local.base, cookie) == {"init": "1"}
    assert local.store.keys(SESSION_PREFIX) and len(local.store.keys(SESSION_PREFIX)) == 1


def test_save_writes_one_compare_and_set_and_detects_nested_changes(local: Local) -> None:
    cookie = new_session(local.base)
    local.counts.reset()
    fetch(local.base, "/append/cart/apple", cookie)
    fetch(local.base, "/append/cart/pear", cookie)
    assert local.counts.calls == {"get": 2, "compare_and_set": 2}
    assert session_data(local.base, cookie)["cart"] == {"items": ["apple", "pear"]}


def test_cookie_carries_only_a_signed_256_bit_id(local: Local) -> None:
    reply = fetch(local.base, "/set/secret/hunter2")
    cookie = reply.set_cookie()
    assert cookie
    sid, _stamp, _sig = cookie.split(".")
    assert len(sid) == 43 and "hunter2" not in cookie
    TimestampSigner(
        SECRET_KEY, salt="sharedstate.session", key_derivation="hmac", digest_method=hashlib.sha256
    ).unsign(cookie)
    digest = hashlib.sha256(sid.encode()).hexdigest()
    assert local.store.keys(SESSION_PREFIX) == [SESSION_PREFIX + digest]
    assert sid not in str(local.store.keys(SESSION_PREFIX))
    # a second client gets another id
    assert fetch(local.base, "/set/secret/x").set_cookie() != cookie


def test_unknown_id_with_a_valid_signature_is_not_adopted(local: Local) -> None:
    signer = TimestampSigner(
        SECRET_KEY, salt="sharedstate.session", key_derivation="hmac", digest_method=hashlib.sha256
    )
    chosen = "A" * 43  # an attacker-chosen id, even if it were validly signed
    cookie = signer.sign(chosen).decode()
    reply = fetch(local.base, "/set/x/1", cookie)
    new = reply.set_cookie()
    assert new and new.split(".")[0] != chosen
    assert stored_entry(local.store, cookie) is None


def test_cookie_flags_follow_flask_config(local: Local) -> None:
    local.app.config.update(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    reply = fetch(local.base, "/set/a/1")
    raw = reply.raw_set_cookie()
    assert raw.startswith("sid=")
    for flag in ["Domain=example.test", "Path=/app", "Secure", "HttpOnly", "SameSite=Strict", "Partitioned"]:
        assert flag in raw, (flag, raw)
    assert "Expires" not in raw  # not permanent: a browser-session cookie
    cookie = reply.set_cookie("sid")
    raw = fetch(local.base, "/permanent", cookie, "sid").raw_set_cookie()
    expires = re.search(r"Expires=([^;]+)", raw)
    assert expires, raw
    when = datetime.strptime(expires.group(1), "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
    assert 590 < (when - datetime.now(timezone.utc)).total_seconds() <= 601  # the idle lifetime


def test_secret_key_fallbacks(local: Local) -> None:
    cookie = new_session(local.base)
    local.app.config.update(SECRET_KEY="a-new-key", SECRET_KEY_FALLBACKS=[SECRET_KEY])
    assert session_data(local.base, cookie) == {"init": "1"}
    reply = fetch(local.base, "/set/b/2", cookie)
    renewed = reply.set_cookie()  # re-signed with the new key
    assert renewed and renewed.split(".")[0] == cookie.split(".")[0] and renewed != cookie
    local.app.config.update(SECRET_KEY_FALLBACKS=[])
    assert session_data(local.base, cookie) == {}  # the old key alone is no longer accepted
    assert session_data(local.base, renewed) == {"init": "1", "b": "2"}


def test_incr_on_a_new_session_and_type_errors(local: Local) -> None:
    reply = fetch(local.base, "/incr/n")
    assert reply.body == "1"
    cookie = reply.set_cookie()
    assert cookie
    assert fetch(local.base, "/incr/n", cookie).body == "2"
    fetch(local.base, "/set/s/text", cookie)
    assert fetch(local.base, "/incr/s", cookie).status == 500
    assert session_data(local.base, cookie) == {"n": 2, "s": "text"}


def test_regenerate_moves_data_and_kills_the_old_id(local: Local) -> None:
    cookie = new_session(local.base)
    fetch(local.base, "/set/cart/3", cookie)
    reply = fetch(local.base, "/login/bob", cookie)
    new = reply.set_cookie()
    assert new and new.split(".")[0] != cookie.split(".")[0]
    assert session_data(local.base, new) == {"init": "1", "cart": "3", "user": "bob"}
    assert session_data(local.base, cookie) == {}
    assert stored_entry(local.store, cookie) is None
    assert len(local.store.keys(SESSION_PREFIX)) == 1
    # a write still in flight with the old cookie is not written back under the old id
    assert fetch(local.base, "/set/late/1", cookie).set_cookie() != cookie
    assert stored_entry(local.store, cookie) is None


def test_regenerate_carries_over_concurrent_writes_to_the_old_id(local: Local) -> None:
    cookie = new_session(local.base)
    with ThreadPoolExecutor(9) as pool:
        login = pool.submit(fetch, local.base, "/login/carol?delay=1.0", cookie)
        time.sleep(0.05)  # the login has read the session
        writes = [pool.submit(fetch, local.base, f"/set/w{i}/{i}", cookie) for i in range(8)]
        new = login.result().set_cookie()
        assert all(w.result().status == 200 for w in writes)
    assert new
    data = session_data(local.base, new)
    # every write finished before the move (1 s later) is carried to the new id
    assert {k for k in data if k.startswith("w")} == {f"w{i}" for i in range(8)}
    assert stored_entry(local.store, cookie) is None


def test_destroy_then_write_starts_a_new_session(local: Local) -> None:
    cookie = fetch(local.base, "/login/dave").set_cookie()
    assert cookie
    reply = fetch(local.base, "/logout-flash", cookie)
    new = reply.set_cookie()
    assert new and new.split(".")[0] != cookie.split(".")[0]
    assert session_data(local.base, new) == {"flash": "bye"}
    assert session_data(local.base, cookie) == {}


def test_idle_timeout_and_throttled_refresh(local: Local) -> None:
    # refresh 1.2 s after the cookie was issued (its timestamp has a resolution of 1 s)
    local.app.config.update(SHAREDSTATE_SESSION_IDLE_TIMEOUT=2.0, SHAREDSTATE_SESSION_REFRESH_FRACTION=0.6)
    cookie = new_session(local.base)
    local.counts.reset()
    fetch(local.base, "/get", cookie)  # just issued: no refresh
    assert local.counts.calls == {"get": 1}
    for _ in range(9):  # 2.7 s of activity, longer than the idle lifetime
        time.sleep(0.3)
        reply = fetch(local.base, "/get", cookie)
        assert reply.body.strip() == '{"init":"1"}'
        cookie = reply.set_cookie() or cookie  # the browser keeps the re-issued cookie
    calls = dict(local.counts.calls)
    assert calls.get("touch", 0) >= 1 and set(calls) == {"get", "touch"}  # refresh is a touch only
    assert calls["touch"] <= 3  # throttled: not one per request
    time.sleep(2.3)
    assert session_data(local.base, cookie) == {}  # idle too long


def test_refresh_never_rewrites_stale_data(local: Local) -> None:
    local.app.config.update(SHAREDSTATE_SESSION_IDLE_TIMEOUT=2.0, SHAREDSTATE_SESSION_REFRESH_FRACTION=0.05)
    cookie = new_session(local.base)
    time.sleep(0.2)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(fetch, local.base, "/get?delay=1.0", cookie)  # reads, refreshes at the end
        time.sleep(0.3)
        assert fetch(local.base, "/set/theme/dark", cookie).status == 200
        slow_reply = slow.result()
        assert "theme" not in slow_reply.body  # it read before the write
        assert slow_reply.set_cookie()  # and refreshed after it
    assert session_data(local.base, cookie)["theme"] == "dark"


def test_refresh_each_request_false_never_touches(local: Local) -> None:
    local.app.config.update(SESSION_REFRESH_EACH_REQUEST=False, SHAREDSTATE_SESSION_REFRESH_FRACTION=0)
    cookie = new_session(local.base)
    local.counts.reset()
    for _ in range(3):
        assert fetch(local.base, "/get", cookie).set_cookie() is None
    assert local.counts.calls == {"get": 3}


def test_absolute_timeout(local: Local) -> None:
    local.app.config.update(SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT=1.0, SHAREDSTATE_SESSION_REFRESH_FRACTION=0)
    cookie = new_session(local.base)
    deadline = time.monotonic() + 3
    while session_data(local.base, cookie) and time.monotonic() < deadline:
        fetch(local.base, "/set/busy/1", cookie)  # activity does not extend it
        time.sleep(0.1)
    assert session_data(local.base, cookie) == {}
    assert stored_entry(local.store, cookie) is None
    # (a write after the expiry, with the dead cookie, started a new session under a new id)


def test_expired_sessions_are_swept_in_bounded_batches(local: Local, tmp_path: Path) -> None:
    local.app.config.update(SHAREDSTATE_SESSION_IDLE_TIMEOUT=0.5)
    cookies = together(lambda i: new_session(local.base), 12, 4)
    db = sqlite3.connect(tmp_path / "local.sqlite3")

    def rows() -> int:
        return int(
            db.execute("SELECT count(*) FROM sharedstate WHERE key LIKE 'local/_ss:session:%'").fetchone()[0]
        )

    assert rows() == 12
    time.sleep(0.7)
    assert all(session_data(local.base, c) == {} for c in cookies)  # expired: never returned
    assert rows() == 12  # still on disk: nothing scans the table on the hot path
    assert local.store.sweep(limit=5) == 5  # a bounded batch
    assert rows() == 7
    with Store(f"sqlite:///{tmp_path}/local.sqlite3", namespace="other") as other:
        for i in range(sqlite_backend._SWEEP_EVERY_WRITES):  # the backend sweeps a batch by itself
            other.set(f"k{i % 10}", i)
    assert rows() == 0
    db.close()


def test_through_the_extension_with_sessions_enabled(tmp_path: Path) -> None:
    from sharedstate.flask import SharedState

    app = Flask("ext")
    app.config.update(
        SECRET_KEY="k",
        SHAREDSTATE_URL=f"sqlite:///{tmp_path}/ext.sqlite3",
        SHAREDSTATE_SESSIONS=True,
        SHAREDSTATE_SESSION_LOCK=True,
    )
    SharedState(app)
    assert isinstance(app.session_interface, SharedStateSessionInterface)

    @app.get("/rmw")
    def rmw() -> str:
        session["n"] = session.get("n", 0) + 1
        time.sleep(0.002)
        return str(session["n"])

    server = Werkzeug(app)
    try:
        cookie = fetch(server.base, "/rmw").set_cookie()
        assert cookie
        together(lambda i: fetch(server.base, "/rmw", cookie), 20, 10)
        assert fetch(server.base, "/rmw", cookie).body == "22"
    finally:
        server.stop()


def test_lock_is_released_when_the_exception_propagates(tmp_path: Path) -> None:
    app = Flask("prop")
    app.config.update(
        SECRET_KEY="k",
        PROPAGATE_EXCEPTIONS=True,
        SHAREDSTATE_SESSION_LOCK=True,
        SHAREDSTATE_SESSION_LOCK_TIMEOUT=3,
    )
    app.session_interface = SharedStateSessionInterface(Store(f"sqlite:///{tmp_path}/p.sqlite3"))

    @app.get("/set")
    def set_() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/boom")
    def boom() -> str:
        session.get("a")
        raise RuntimeError("boom")

    client = app.test_client()
    client.get("/set")
    with pytest.raises(RuntimeError):
        client.get("/boom")
    started = time.monotonic()
    client.get("/set")  # would wait for the 30 s lease if teardown had not released the lock
    assert time.monotonic() - started < 2.5


def test_no_secret_key_gives_flask_null_session(tmp_path: Path) -> None:
    app = Flask("nokey")
    app.testing = True
    app.session_interface = SharedStateSessionInterface(Store(f"sqlite:///{tmp_path}/n.sqlite3"))

    @app.get("/")
    def index() -> str:
        session["a"] = 1
        return "ok"

    with pytest.raises(RuntimeError, match="secret key"):
        app.test_client().get("/")


def test_lock_wait_is_bounded_and_the_lock_is_released(local: Local) -> None:
    local.app.config.update(SHAREDSTATE_SESSION_LOCK=True, SHAREDSTATE_SESSION_LOCK_TIMEOUT=0.3)
    cookie = new_session(local.base)
    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(fetch, local.base, "/get?delay=1.5", cookie)
        time.sleep(0.5)  # the holder has the lock
        assert fetch(local.base, "/set/x/1", cookie).status == 500  # LockTimeout, not a hang
        assert fetch(local.base, "/noop", cookie).status == 200  # not using the session: no wait
        assert holder.result().status == 200
    assert session_data(local.base, cookie) == {"init": "1"}  # the lock is free again
    assert local.store.keys("_ss:session-lock:") == []


# -- what apps rely on: Markup, dict behaviour, modified, SESSION_PERMANENT, settings ---------------


def session_app(tmp_path: Path, **config: Any) -> Flask:
    """A bare app with sharedstate sessions on an SQLite file, for the test client."""
    app = Flask("dictlike")
    app.config.update(SECRET_KEY=SECRET_KEY, **config)
    app.session_interface = SharedStateSessionInterface(Store(f"sqlite:///{tmp_path}/dict.sqlite3"))
    return app


def test_flashed_markup_comes_back_as_markup(local: Local) -> None:
    cookie = fetch(local.base, "/flash").set_cookie()
    assert cookie
    # Markup is shown as HTML, text escaped: as with Flask's own session.
    assert (
        fetch(local.base, "/flashes", cookie).body
        == "Markup,str|message:<b>hi</b>;info:&lt;i&gt;plain&lt;/i&gt;;"
    )
    assert fetch(local.base, "/flashes", cookie).body == "|"  # shown once
    assert local.store.keys(SESSION_PREFIX) == []  # emptied by get_flashed_messages: deleted


def test_markup_replacing_an_equal_str_is_saved(tmp_path: Path) -> None:
    app = session_app(tmp_path)

    @app.get("/text")
    def text() -> str:
        session["m"] = "<b>x</b>"
        return "ok"

    @app.get("/markup")
    def markup() -> str:
        session["m"] = Markup(session["m"])  # equal as str: only the type tells the change
        return "ok"

    @app.get("/show")
    def show() -> str:
        return render_template_string("{{ session['m'] }}|" + type(session["m"]).__name__)

    client = app.test_client()
    client.get("/text")
    assert client.get("/show").text == "&lt;b&gt;x&lt;/b&gt;|str"
    client.get("/markup")
    assert client.get("/show").text == "<b>x</b>|Markup"


def test_session_is_a_dict(tmp_path: Path) -> None:
    app = session_app(tmp_path)
    seen: dict[str, Any] = {}

    @app.get("/set")
    def set_() -> str:
        session.update(a=1, b={"x": [1, 2]})
        return "ok"

    @app.get("/look")
    def look() -> str:
        real = session._get_current_object()  # type: ignore[attr-defined]
        copied = session.copy()
        seen.update(
            isinstance=isinstance(real, dict),
            copy=(dict(copied), type(copied)),
            json=json.loads(json.dumps(real)),
            dict=dict(session),
            star={**real},
            kwargs=(lambda **kw: kw)(**real),
            or_=(session | {"c": 3}, type(session | {"c": 3})),
            ror={"c": 3, "a": 0} | real,
            eq=(
                session == {"a": 1, "b": {"x": [1, 2]}},
                session != {"a": 1},
                {"a": 1, "b": {"x": [1, 2]}} == real,  # noqa: SIM300 (dict.__eq__ reflected)
            ),
            len=len(session),
            iter=list(session),
            reversed=list(reversed(real)),
            items=sorted(session.items()),
            keys=sorted(session.keys()),
            values=list(session.values()),
            contains=("a" in session, "z" in session),
            deepcopy=(copy.deepcopy(real), type(copy.deepcopy(real))),
            copy_copy=type(copy.copy(real)),
            pickle=pickle.loads(pickle.dumps(real)),
            fromkeys=type(type(real).fromkeys(["k"])),
        )
        copied["a"] = 99
        seen["copy_is_apart"] = session["a"] == 1
        return "ok"

    client = app.test_client()
    client.get("/set")
    client.get("/look")
    data = {"a": 1, "b": {"x": [1, 2]}}
    assert seen == {
        "isinstance": True,
        "copy": (data, dict),
        "json": data,
        "dict": data,
        "star": data,
        "kwargs": data,
        "or_": ({**data, "c": 3}, dict),
        "ror": {"c": 3, **data},
        "eq": (True, True, True),
        "len": 2,
        "iter": ["a", "b"],
        "reversed": ["b", "a"],
        "items": sorted(data.items()),
        "keys": ["a", "b"],
        "values": [1, {"x": [1, 2]}],
        "contains": (True, False),
        "deepcopy": (data, dict),
        "copy_copy": dict,
        "pickle": data,
        "fromkeys": dict,
        "copy_is_apart": True,
    }
    with client.session_transaction() as sess:
        # An unloaded session handed to json's C encoder, which reads a dict's storage directly.
        assert json.loads(json.dumps(sess)) == data
    with client.session_transaction() as sess:
        assert sess == data and data == sess


MUTATIONS: dict[str, Callable[[Any], Any]] = {
    "setitem": lambda d: d.__setitem__("c", 3),
    "setitem nested": lambda d: d.__setitem__("b", {"x": [9]}),
    "delitem": lambda d: d.__delitem__("a"),
    "setdefault new": lambda d: d.setdefault("c", [3]).append(4),
    "setdefault existing": lambda d: d.setdefault("a", 5),
    "pop": lambda d: d.pop("a"),
    "pop default": lambda d: d.pop("zz", None),
    "popitem": lambda d: d.popitem(),
    "clear": lambda d: d.clear(),
    "update mapping": lambda d: d.update({"a": 10, "c": 3}),
    "update pairs and kwargs": lambda d: d.update([("c", 3)], d=4),
    "ior": lambda d: d.__ior__({"a": 11}),
    "nested in place": lambda d: d["b"]["x"].append(3),
    "permanent": lambda d: setattr(d, "permanent", True),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_every_mutating_dict_method_is_saved(tmp_path: Path, name: str) -> None:
    mutate = MUTATIONS[name]
    start = {"a": 1, "b": {"x": [1, 2]}}
    expected: Any = json.loads(json.dumps(start))
    if name == "permanent":
        expected["_permanent"] = True
    else:
        mutate(expected)
    app = session_app(tmp_path)
    results: list[Any] = []

    @app.get("/start")
    def start_() -> str:
        session.update(start)
        return "ok"

    @app.get("/mutate")
    def mutate_() -> str:
        mutate(session)
        return "ok"

    @app.get("/read")
    def read() -> str:
        results.append(dict(session))
        return "ok"

    client = app.test_client()
    client.get("/start")
    assert client.get("/mutate").status_code == 200
    client.get("/read")
    assert results == [expected]


def test_every_dict_method_loads_the_session_first() -> None:
    """C dict methods read the dict's own storage, which holds nothing until the session is loaded;
    so each one must be overridden (a new Python's new dict method fails here until it is)."""
    from sharedstate.sessions import SharedStateSession

    harmless = {
        "__new__",
        "__init__",
        "__getattribute__",
        "__sizeof__",
        "__class_getitem__",
        "__init_subclass__",
    }
    harmless |= {"__lt__", "__le__", "__gt__", "__ge__", "__doc__"}  # dicts do not order; the rest is data
    ours = [klass for klass in SharedStateSession.__mro__ if klass not in (dict, object)]
    missing = [
        name
        for name, value in vars(dict).items()
        if callable(value) and name not in harmless and not any(name in vars(klass) for klass in ours)
    ]
    assert missing == []


def test_modified_false_skips_the_save(local: Local) -> None:
    @local.app.after_request
    def no_save_for_api(response: Any) -> Any:
        if request.path.startswith("/api/"):
            session.modified = False  # the Flask idiom to not save the session
        return response

    @local.app.get("/api/set/<key>/<value>")
    def api_set(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @local.app.get("/mark-then-change")
    def mark_then_change() -> str:
        session["early"] = "1"
        session.modified = False
        session["late"] = "2"  # a change after modified = False saves them all, as in Flask
        return "ok"

    reply = fetch(local.base, "/api/set/x/1")
    assert reply.status == 200 and reply.set_cookie() is None  # a new session: nothing stored
    assert local.counts.writes == 0
    cookie = new_session(local.base)
    local.counts.reset()
    reply = fetch(local.base, "/api/set/x/1", cookie)
    assert reply.set_cookie() is None and local.counts.calls == {"get": 1}
    assert session_data(local.base, cookie) == {"init": "1"}
    fetch(local.base, "/set/y/2", cookie)  # without the hook it saves
    assert session_data(local.base, cookie) == {"init": "1", "y": "2"}
    fetch(local.base, "/mark-then-change", cookie)
    assert session_data(local.base, cookie) == {"init": "1", "y": "2", "early": "1", "late": "2"}


def test_session_permanent_setting(local: Local) -> None:
    @local.app.get("/not-permanent")
    def not_permanent() -> str:
        session.permanent = False  # one session opts out
        return str(session.permanent)

    assert "Expires" not in fetch(local.base, "/set/a/1").raw_set_cookie()  # default: False, as Flask
    local.app.config["SESSION_PERMANENT"] = True  # Flask-Session's setting (default True there)
    reply = fetch(local.base, "/set/a/1")
    expires = re.search(r"Expires=([^;]+)", reply.raw_set_cookie())
    assert expires, reply.raw_set_cookie()
    when = datetime.strptime(expires.group(1), "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
    assert 590 < (when - datetime.now(timezone.utc)).total_seconds() <= 601  # the idle lifetime
    cookie = reply.set_cookie()
    assert cookie
    reply = fetch(local.base, "/not-permanent", cookie)
    assert reply.body == "False" and "Expires" not in reply.raw_set_cookie()
    local.app.config["SESSION_PERMANENT"] = "False"  # e.g. an unparsed environment variable
    assert fetch(local.base, "/set/a/1").status == 500


def test_a_session_holding_only_the_permanent_flag_is_not_stored(local: Local) -> None:
    @local.app.before_request
    def make_permanent() -> None:
        session.permanent = True  # the common Flask idiom, on every request

    reply = fetch(local.base, "/get")
    assert reply.status == 200 and reply.set_cookie() is None
    assert local.counts.writes == 0 and local.store.keys(SESSION_PREFIX) == []
    cookie = new_session(local.base)
    assert "Expires" in fetch(local.base, "/set/b/2", cookie).raw_set_cookie()
    assert session_data(local.base, cookie) == {"init": "1", "b": "2", "_permanent": True}
    assert fetch(local.base, "/clear", cookie).set_cookie() == ""  # only the flag left: deleted
    assert local.store.keys(SESSION_PREFIX) == []


def test_settings_are_checked_and_named() -> None:
    from datetime import timedelta

    from sharedstate.sessions import SessionSettings

    app = Flask("settings")
    assert SessionSettings.from_app(app).idle == 31 * 24 * 3600  # PERMANENT_SESSION_LIFETIME
    app.config["SHAREDSTATE_SESSION_IDLE_TIMEOUT"] = timedelta(minutes=5)
    assert SessionSettings.from_app(app).idle == 300
    for setting, bad, error in [
        ("SHAREDSTATE_SESSION_IDLE_TIMEOUT", 0, ValueError),  # was taken as "unset": 31 days
        ("SHAREDSTATE_SESSION_IDLE_TIMEOUT", float("nan"), ValueError),
        ("SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT", "1h", TypeError),
        ("SHAREDSTATE_SESSION_LOCK_LEASE", 0.001, ValueError),  # under validation.MIN_LEASE
        ("SHAREDSTATE_SESSION_LOCK_TIMEOUT", None, TypeError),
        ("SESSION_PERMANENT", 1, TypeError),
    ]:
        bad_app = Flask("settings")
        bad_app.config[setting] = bad
        with pytest.raises(error, match=setting):
            SessionSettings.from_app(bad_app)
    bad_app = Flask("settings")
    bad_app.permanent_session_lifetime = timedelta(0)
    with pytest.raises(ValueError, match="PERMANENT_SESSION_LIFETIME"):
        SessionSettings.from_app(bad_app)


def test_unstorable_session_value_names_the_path_inside_the_session(tmp_path: Path) -> None:
    """The error names the user's path (``session['cart'][1]``), not the stored envelope's."""
    from sharedstate import SerializationError

    app = Flask("unstorable")
    app.config.update(SECRET_KEY=SECRET_KEY, TESTING=True)
    store = Store(f"sqlite:///{tmp_path}/s.sqlite3")
    app.session_interface = SharedStateSessionInterface(store)

    @app.route("/put")
    def put() -> str:
        session["cart"] = [1, object()]
        return "ok"

    with pytest.raises(SerializationError) as caught:
        app.test_client().get("/put")
    message = str(caught.value)
    assert "session['cart'][1]" in message
    assert "value['d']" not in message
    assert store.keys(SESSION_PREFIX) == []  # nothing was written
    store.close()
