"""The Flask extension: app factories, isolation between apps, config, and real servers.

Concurrency is checked through real HTTP: werkzeug's threaded server in this process, and gunicorn
with three worker processes, each asserting exact counts.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.serving import make_server

from sharedstate import Counter, Lock, LockNotOwnedError, LockTimeout, SharedDict, Store, ValueTooLargeError
from sharedstate.flask import (
    EXTENSION_KEY,
    STORE_KEY,
    AppCounter,
    AppDict,
    AppLock,
    SharedState,
    store_for,
)
from tests import servers

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def make_app(name: str, tmp_path: Path, **config: Any) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / f"instance-{name}"))
    app.config.update(config)
    return app


@pytest.fixture
def closing() -> Iterator[list[Flask]]:
    """Apps appended here have their stores closed after the test."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        if STORE_KEY in app.extensions:
            store_for(app).close()


# -- setup and config ----------------------------------------------------------------------------


def test_import_sharedstate_does_not_import_flask() -> None:
    code = "import sys, sharedstate, sharedstate.cache; sys.exit('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_app_factory(tmp_path: Path, closing: list[Flask]) -> None:
    state = SharedState()

    def create_app() -> Flask:
        app = make_app("factory_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/f.db")
        state.init_app(app)
        closing.append(app)
        return app

    first, second = create_app(), create_app()  # same app twice, as two workers would build it
    with first.app_context():
        assert state.counter("hits").incr() == 1
    with second.app_context():
        assert state.counter("hits").incr() == 2  # same URL and namespace: shared
    with pytest.raises(RuntimeError, match="application context"):
        state.counter("hits").incr()  # made fine without an app; used, it needs one


def test_registers_itself_and_its_store(tmp_path: Path, closing: list[Flask]) -> None:
    app = make_app("reg_app", tmp_path, SHAREDSTATE_URL="memory://")
    state = SharedState(app)
    closing.append(app)
    assert app.extensions[EXTENSION_KEY] is state
    store = app.extensions[STORE_KEY]
    assert isinstance(store, Store)
    with app.app_context():
        assert state.store is store
    assert "state" in app.cli.commands
    # No store lives on the extension object, and the app it was made with only by a weak reference.
    assert not any(isinstance(v, (Flask, Store)) for v in vars(state).values())
    with pytest.raises(RuntimeError, match="already set up"):
        state.init_app(app)
    with pytest.raises(RuntimeError, match="already set up"):
        SharedState(app)


def test_uninitialized_app_says_how_to_fix(tmp_path: Path) -> None:
    state = SharedState()
    app = make_app("bare_app", tmp_path)
    with app.app_context(), pytest.raises(RuntimeError, match=r"init_app\(app\)"):
        state.counter("x")


def test_default_url_is_a_file_in_the_instance_folder(
    tmp_path: Path, closing: list[Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHAREDSTATE_URL", raising=False)
    app = make_app("default_url_app", tmp_path)
    instance = Path(app.instance_path)
    assert not instance.exists()
    state = SharedState(app)
    closing.append(app)
    assert instance.is_dir()
    store = store_for(app)
    assert store.url == f"sqlite:///{instance / 'sharedstate.sqlite3'}"
    assert store.namespace == "default_url_app"
    assert app.config["SHAREDSTATE_URL"] is None
    assert app.config["SHAREDSTATE_SESSIONS"] is False
    assert app.config["SHAREDSTATE_SESSION_LOCK"] is False
    with app.app_context():
        state.set("k", 1)
    assert (instance / "sharedstate.sqlite3").is_file()


def test_environment_url_comes_before_the_instance_folder(
    tmp_path: Path, closing: list[Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHAREDSTATE_URL", f"sqlite:///{tmp_path}/from_env.db")
    app = make_app("env_app", tmp_path)
    SharedState(app)
    closing.append(app)
    assert store_for(app).url == f"sqlite:///{tmp_path}/from_env.db"
    assert not Path(app.instance_path).exists()
    configured = make_app("configured_app", tmp_path, SHAREDSTATE_URL="memory://")
    SharedState(configured)
    closing.append(configured)
    assert store_for(configured).url == "memory://"


def test_two_apps_in_one_process_are_isolated(tmp_path: Path, closing: list[Flask]) -> None:
    url = f"sqlite:///{tmp_path}/both.db"
    state = SharedState()
    runs: list[str] = []

    @state.cached(ttl=60)  # decorated before any app exists
    def which(tag: str) -> str:
        runs.append(tag)
        return f"{tag}-{len(runs)}"

    a = make_app("app_a", tmp_path, SHAREDSTATE_URL=url)
    b = make_app("app_b", tmp_path, SHAREDSTATE_URL=url)
    for app in (a, b):
        state.init_app(app)
        closing.append(app)
    assert store_for(a) is not store_for(b)
    with a.app_context():
        assert state.counter("hits").incr() == 1
        assert state.counter("hits").incr() == 2
        state.set("owner", "a")
        assert which("x") == "x-1"
    with b.app_context():
        assert state.counter("hits").incr() == 1
        assert state.get("owner") is None
        assert state.keys() == ["hits"]
        assert which("x") == "x-2"  # its own cache entry
    with a.app_context():
        assert state.get("owner") == "a"
        assert which("x") == "x-1"
        assert sorted(state.keys()) == ["hits", "owner"]
    assert runs == ["x", "x"]
    # Same file: the namespaces (the apps' import names) are what keeps them apart.
    raw = Store(url)
    try:
        assert raw.get("app_a/hits") == 2 and raw.get("app_b/hits") == 1
    finally:
        raw.close()


def test_explicit_namespace_is_shared(tmp_path: Path, closing: list[Flask]) -> None:
    url = f"sqlite:///{tmp_path}/ns.db"
    state = SharedState()
    apps = [make_app(n, tmp_path, SHAREDSTATE_URL=url, SHAREDSTATE_NAMESPACE="team") for n in ("x1", "x2")]
    for app in apps:
        state.init_app(app)
        closing.append(app)
    with apps[0].app_context():
        state.set("shared", 42)
    with apps[1].app_context():
        assert state.get("shared") == 42
        assert state.store.namespace == "team"


def test_store_options(tmp_path: Path, closing: list[Flask]) -> None:
    app = make_app(
        "opts_app", tmp_path, SHAREDSTATE_URL="memory://", SHAREDSTATE_STORE_OPTIONS={"max_value_size": 64}
    )
    state = SharedState(app)
    closing.append(app)
    with app.app_context(), pytest.raises(ValueTooLargeError):
        state.set("big", "x" * 100)


def test_every_store_operation_is_delegated(tmp_path: Path, closing: list[Flask]) -> None:
    app = make_app("deleg_app", tmp_path, SHAREDSTATE_URL="memory://")
    state = SharedState(app)
    closing.append(app)
    with app.app_context():
        assert isinstance(state.counter("c"), Counter)
        assert state.counter("c").incr(5) == 5
        d = state.dict("d")
        assert isinstance(d, SharedDict)
        d["a"] = 1
        assert state.dict("d")["a"] == 1
        with state.edit("obj", default={"param": 0}) as obj:
            obj["param"] += 1
        assert state.get("obj") == {"param": 1}
        assert state.update("n", lambda n: n + 1, default=0) == 1
        lock = state.lock("l", ttl=5)
        assert isinstance(lock, Lock)
        with lock:
            assert lock.owned
        state.set("k", "v", ttl=60)
        assert state.get("k") == "v"
        assert state.add("k", "w") is False
        assert state.add("k2", "w") is True
        assert state.incr("i", 2) == 2
        assert state.touch("k", 120) is True
        assert state.delete("k2") is True
        assert state.get("k2", "gone") == "gone"
        assert state.keys("d") == ["d:a"]

        @state.cached(ttl=60)
        def double(x: int) -> int:
            return 2 * x

        assert double(21) == 42
        assert double.cache_key(21) in state.keys("_ss:cache:")


def test_sessions_setting_installs_the_session_interface(tmp_path: Path, closing: list[Flask]) -> None:
    plain = make_app("plain_app", tmp_path, SHAREDSTATE_URL="memory://")
    SharedState(plain)
    closing.append(plain)
    assert type(plain.session_interface) is SecureCookieSessionInterface
    try:
        from sharedstate.sessions import SharedStateSessionInterface
    except ImportError as exc:
        pytest.skip(f"sharedstate.sessions is not there yet: {exc}")
    app = make_app(
        "sess_app", tmp_path, SHAREDSTATE_URL="memory://", SHAREDSTATE_SESSIONS=True, SECRET_KEY="s" * 32
    )
    SharedState(app)
    closing.append(app)
    assert isinstance(app.session_interface, SharedStateSessionInterface)
    client = app.test_client()

    @app.get("/login")
    def login() -> str:
        from flask import session

        session["user"] = "ann"
        return "ok"

    @app.get("/me")
    def me() -> str:
        from flask import session

        return str(session.get("user"))

    assert client.get("/login").status_code == 200
    assert client.get("/me").text == "ann"
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    # The data stays server-side: the cookie is only "<43-char random id>.<timestamp>.<signature>".
    assert cookie is not None
    session_id, _, _ = cookie.value.split(".")
    assert len(session_id) == 43 and len(cookie.value) < 100


# -- objects made at import time ------------------------------------------------------------------


def test_objects_made_before_any_app_follow_the_app_in_use(tmp_path: Path, closing: list[Flask]) -> None:
    url = f"sqlite:///{tmp_path}/lazy.db"
    state = SharedState()
    # As at module level: no app exists yet, no app context.
    hits = state.counter("hits")
    settings = state.dict("settings")
    job = state.lock("job", ttl=5)
    assert isinstance(hits, Counter) and isinstance(settings, SharedDict) and isinstance(job, Lock)
    a = make_app("lazy_a", tmp_path, SHAREDSTATE_URL=url)
    b = make_app("lazy_b", tmp_path, SHAREDSTATE_URL=url)
    for app in (a, b):
        state.init_app(app)
        closing.append(app)
    with a.app_context():
        assert hits.incr() == 1 and hits.incr() == 2
        settings["theme"] = "dark"
        assert settings.setdefault("lang", "en") == "en"
        with job:
            assert job.owned and job.fencing_token == 1
        assert not job.owned and job.fencing_token is None
    with b.app_context():  # the same objects, on app b's store
        assert hits.incr() == 1
        assert dict(settings) == {} and "theme" not in settings
        with job:
            assert job.fencing_token == 1  # b's own lock and fencing counter
    with a.app_context():
        with b.app_context():  # nested: the innermost app is the one in use, then a again
            assert hits.get() == 1 and state.store is store_for(b)
        assert state.store is store_for(a)
        assert hits.get() == 2
        assert dict(settings) == {"theme": "dark", "lang": "en"}
        assert job.acquire() == 2
        job.release()
    for use in (hits.incr, lambda: settings["x"], job.acquire, lambda: job.locked):
        with pytest.raises(RuntimeError, match=r"application context.*SharedState\(app\)"):
            use()


def test_objects_of_an_extension_made_with_its_app_need_no_app_context(
    tmp_path: Path, closing: list[Flask]
) -> None:
    app = make_app("bound_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/bound.db")
    state = SharedState(app)
    closing.append(app)
    # Import time, right after SharedState(app): bound to app's store at once.
    settings = state.dict("settings")
    settings["theme"] = "dark"
    assert state.counter("hits").incr() == 1
    assert state.update("n", lambda n: n + 1, default=0) == 1
    with state.edit("obj", default={"k": 0}) as obj:
        obj["k"] += 1
    with state.lock("job") as job:
        assert job.owned
    state.set("k", "v")
    assert state.get("k") == "v" and state.store is store_for(app)

    @state.cached(ttl=60)
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    with app.app_context():
        assert state.dict("settings")["theme"] == "dark"
        assert state.get("obj") == {"k": 1} and state.get("n") == 1 and state.get("hits") == 1
    # In another app's context, that app's store wins over the one given to SharedState(app).
    other = make_app("bound_other", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/bound.db")
    state.init_app(other)
    closing.append(other)
    with other.app_context():
        assert "theme" not in settings and state.get("k") is None
    assert settings["theme"] == "dark"


def test_bad_object_names_fail_where_the_object_is_made(tmp_path: Path) -> None:
    state = SharedState()
    for make in (state.counter, state.dict, state.lock):
        with pytest.raises(TypeError, match="name"):
            make(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            make("")
        with pytest.raises(ValueError, match="reserved"):
            make("_ss:x")
    with pytest.raises(ValueError, match="ttl"):
        state.lock("x", ttl=0)


def test_one_module_level_lock_serialises_every_thread(tmp_path: Path, closing: list[Flask]) -> None:
    state = SharedState()
    guard = state.lock("guard", ttl=10, timeout=10)  # module level, shared by every request thread
    app = make_app("guard_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/guard.db")
    state.init_app(app)
    closing.append(app)
    tokens: list[int | None] = []

    def work(_: int) -> None:
        with app.app_context():
            for _ in range(5):
                with guard:  # each thread holds its own acquisition of the one object
                    value = state.get("v", 0)
                    time.sleep(0.002)
                    state.set("v", value + 1)
                    tokens.append(guard.fencing_token)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    with app.app_context():
        assert state.get("v") == 40
        assert sorted(t for t in tokens if t is not None) == list(range(1, 41))
        with pytest.raises(LockNotOwnedError):
            guard.release()  # this context holds nothing
        guard.acquire()
        with pytest.raises(RuntimeError, match="already held"):
            guard.acquire()  # not reentrant
        held_elsewhere = ThreadPoolExecutor(1).submit(lambda: guard.owned).result()
        assert guard.owned and not held_elsewhere
        guard.release()
        assert not guard.locked


def test_lock_blocking_false_tries_once(tmp_path: Path, closing: list[Flask]) -> None:
    """``state.lock(name, blocking=False)``, the standard library's spelling (needs Store.lock(blocking=))."""
    app = make_app("blocking_app", tmp_path, SHAREDSTATE_URL=f"sqlite:///{tmp_path}/blocking.db")
    state = SharedState(app)
    closing.append(app)
    with app.app_context():
        with state.lock("busy") as holder:
            started = time.monotonic()
            with pytest.raises(LockTimeout), state.lock("busy", blocking=False):
                pass
            assert state.lock("busy").acquire(blocking=False) is False
            assert time.monotonic() - started < 1  # no wait, although the default timeout is None
            assert holder.owned
        with state.lock("busy", blocking=False) as lock:
            assert lock.owned


@pytest.mark.parametrize(
    ("base", "app_class"), [(Counter, AppCounter), (SharedDict, AppDict), (Lock, AppLock)]
)
def test_app_objects_override_every_method_of_the_store_objects(base: type, app_class: type) -> None:
    """The App* objects skip the base __init__, so an inherited method would find no store."""
    methods = {
        name
        for name, value in vars(base).items()
        if (callable(value) or isinstance(value, property))
        and name != "__init__"
        and not (name.startswith("_") and not name.startswith("__"))
    }
    assert methods and methods <= set(vars(app_class)), methods - set(vars(app_class))
    with Store("memory://") as store:
        real = {Counter: store.counter, SharedDict: store.dict, Lock: store.lock}[base]("x")
        state = SharedState()
        made = {Counter: state.counter, SharedDict: state.dict, Lock: state.lock}[base]("x")
        missing = [
            a
            for a in vars(real)
            if not a.startswith("_") and not hasattr(type(made), a) and a not in vars(made)
        ]
        assert not missing


APP_MODULE = """
import os

from flask import Flask

from sharedstate.flask import SharedState

app = Flask(__name__, instance_path=os.environ["APP_INSTANCE"])
app.config["SHAREDSTATE_URL"] = os.environ["APP_URL"]
state = SharedState(app)


@app.get("/hit")
def hit() -> str:
    with app.app_context():
        return f"{state.counter('hits').incr()} {state.store.namespace}"


if __name__ == "__main__":
    print(hit())
"""


@pytest.mark.timeout(120)
def test_default_namespace_is_the_same_however_the_app_is_started(tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text(APP_MODULE)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "web.py").write_text(APP_MODULE)
    env = {
        **os.environ,
        "APP_URL": f"sqlite:///{tmp_path}/one.db",
        "APP_INSTANCE": str(tmp_path / "instance"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")]),
    }

    def run(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run("web.py") == ["1", "web"]  # python web.py: import name "__main__"
    assert run("-m", "web") == ["2", "web"]  # python -m web: "__main__" too
    assert run("-c", "import web; print(web.hit())") == ["3", "web"]  # imported, as by a server
    assert run("-m", "pkg.web") == ["1", "pkg.web"]
    assert run("-c", "import pkg.web; print(pkg.web.hit())") == ["2", "pkg.web"]
    flask_cli = subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", "web", "state", "get", "hits"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flask_cli.stdout.strip() == "3", flask_cli.stderr
    port = servers.free_port()
    server = subprocess.Popen(
        [str(GUNICORN), "-w", "1", "-b", f"127.0.0.1:{port}", "web:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        servers.wait_for_port(port, timeout=30)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/hit")
        assert conn.getresponse().read().decode() == "4 web"
        conn.close()
    finally:
        server.terminate()
        server.wait(20)


# -- under real servers ---------------------------------------------------------------------------


def fetch(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:500]
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        conn.close()


def fire(port: int, paths: list[str], concurrency: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda p: fetch(port, p), paths))


@contextmanager
def werkzeug_server(app: Flask) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:.*may evict any entry:RuntimeWarning")  # memcached, on purpose
def test_threaded_werkzeug_server(store_url: str, namespace: str, tmp_path: Path) -> None:
    from tests.apps.ext_app import create_app

    app = create_app({"SHAREDSTATE_URL": store_url, "SHAREDSTATE_NAMESPACE": namespace})
    try:
        with werkzeug_server(app) as port:
            hits = fire(port, ["/incr?sleep=0.01"] * 50, concurrency=50)
            assert sorted(r["n"] for r in hits) == list(range(1, 51))
            edits = fire(port, ["/edit"] * 40, concurrency=20)
            assert sorted(r["param"] for r in edits) == list(range(1, 41))
            locked = fire(port, ["/locked"] * 20, concurrency=10)
            assert sorted(r["value"] for r in locked) == list(range(1, 21))
            votes = fire(port, ["/votes/a", "/votes/b"] * 15, concurrency=15)
            assert sorted(r["votes"] for r in votes) == sorted(list(range(1, 16)) * 2)
            reports = fire(port, ["/report"] * 20, concurrency=20)
            assert {r["run"] for r in reports} == {1}  # computed once, everyone got it
            guarded = fire(port, ["/module-locked?sleep=0.005"] * 20, concurrency=10)
            assert sorted(r["value"] for r in guarded) == list(range(1, 21))
            assert sorted(r["n"] for r in guarded) == list(range(1, 21))
            assert fetch(port, "/get/report_runs")["value"] == 1
            assert fetch(port, "/get/hits")["value"] == 50
    finally:
        store_for(app).close()


@contextmanager
def gunicorn(tmp_path: Path, env: dict[str, str], *, preload: bool) -> Iterator[int]:
    port = servers.free_port()
    log_path = tmp_path / "gunicorn.log"
    command = [str(GUNICORN), "-w", "3", "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT)]
    command += ["--timeout", "30", "--graceful-timeout", "5"]
    command += ["--preload"] if preload else []
    command.append("tests.apps.ext_app:create_app()")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            # Every worker up before the load starts, so the requests spread over all three.
            while log_path.read_text(errors="replace").count("Booting worker") < 3:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            servers.wait_for_port(port, timeout=30)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_gunicorn_workers(backend: str, preload: bool, namespace: str, tmp_path: Path) -> None:
    url = servers.backend_url(backend, tmp_path)
    env = {"EXT_APP_URL": url, "EXT_APP_NAMESPACE": namespace, "EXT_APP_INSTANCE": str(tmp_path / "inst")}
    with gunicorn(tmp_path, env, preload=preload) as port:
        hits = fire(port, ["/incr?sleep=0.02"] * 60, concurrency=12)
        assert sorted(r["n"] for r in hits) == list(range(1, 61))
        assert len({r["pid"] for r in hits}) >= 2, "the requests did not spread over worker processes"
        edits = fire(port, ["/edit"] * 40, concurrency=12)
        assert sorted(r["param"] for r in edits) == list(range(1, 41))
        locked = fire(port, ["/locked?sleep=0.005"] * 20, concurrency=8)
        assert sorted(r["value"] for r in locked) == list(range(1, 21))
        reports = fire(port, ["/report"] * 20, concurrency=12)
        assert {r["run"] for r in reports} == {1}
        assert len({r["pid"] for r in reports}) == 1  # one process computed it, for everyone
        guarded = fire(port, ["/module-locked?sleep=0.005"] * 20, concurrency=8)
        assert sorted(r["value"] for r in guarded) == list(range(1, 21))
    with Store(url, namespace=namespace) as store:
        assert store.get("hits") == 60
        assert store.get("global_obj") == {"param": 40}
        assert store.get("guarded_value") == 20
        assert store.get("report_runs") == 1
        assert store.get("settings:guarded") == 20 and store.get("module_hits") == 20
        if backend == "redis":
            for key in store.keys("") + store.keys("_ss:"):
                store.backend.delete(store._keyspace.full_key(key, internal=True))
