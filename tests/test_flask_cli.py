"""``flask state ...``: list, get, delete, clear, sweep and stats against a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from sharedstate import LockNotOwnedError, Store, register_backend
from sharedstate.backends.sqlite import SQLiteBackend
from sharedstate.flask import SharedState, store_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.sqlite3"


@pytest.fixture
def app(db: Path, tmp_path: Path) -> Iterator[Flask]:
    app = Flask("cli_app", instance_path=str(tmp_path / "instance"))
    app.config["SHAREDSTATE_URL"] = f"sqlite:///{db}"
    SharedState(app)
    yield app
    store_for(app).close()


@pytest.fixture
def store(app: Flask) -> Store:
    return store_for(app)


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def rows(db: Path) -> list[str]:
    """Every key in the file, read with the sqlite3 module rather than through the library."""
    with sqlite3.connect(db) as conn:
        return sorted(k for (k,) in conn.execute("SELECT key FROM sharedstate"))


def test_list(runner: FlaskCliRunner, store: Store) -> None:
    store.set("alpha", 1)
    store.dict("prefs")["theme"] = "dark"
    store.cached(ttl=60)(len)("abc")
    result = runner.invoke(args=["state", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["alpha", "prefs:theme"]
    assert runner.invoke(args=["state", "list", "pre"]).output.splitlines() == ["prefs:theme"]
    everything = runner.invoke(args=["state", "list", "--all"]).output.splitlines()
    assert everything[:2] == ["_ss:cache:builtins.len:" + everything[0].rsplit(":", 1)[1], "alpha"]
    assert len(everything) == 3
    assert runner.invoke(args=["state", "list", "_ss:"]).output.splitlines() == everything[:1]
    assert runner.invoke(args=["state", "list", "nothing"]).output == ""


def test_get(runner: FlaskCliRunner, store: Store) -> None:
    store.set("config", {"b": [1, 2], "a": (3, "x")})
    result = runner.invoke(args=["state", "get", "config"])
    assert result.exit_code == 0, result.output
    assert result.output == "{'a': (3, 'x'), 'b': [1, 2]}\n"
    store.counter("hits").incr(7)
    assert runner.invoke(args=["state", "get", "hits"]).output == "7\n"
    missing = runner.invoke(args=["state", "get", "nope"])
    assert missing.exit_code == 1
    assert "no key 'nope'" in missing.output


def test_get_and_delete_internal_keys(runner: FlaskCliRunner, store: Store) -> None:
    fn = store.cached(ttl=60)(len)
    fn("abcd")
    key = fn.cache_key("abcd")
    assert runner.invoke(args=["state", "get", key]).output == "{'v': 4}\n"
    assert runner.invoke(args=["state", "delete", key]).exit_code == 0
    assert store.keys("_ss:") == []


def test_delete(runner: FlaskCliRunner, store: Store, db: Path) -> None:
    store.set("a", 1)
    store.set("b", 2)
    result = runner.invoke(args=["state", "delete", "a"])
    assert result.exit_code == 0, result.output
    assert rows(db) == ["cli_app/b"]
    again = runner.invoke(args=["state", "delete", "a"])
    assert again.exit_code == 1 and "no key 'a'" in again.output


def test_clear_asks_first_and_spares_other_namespaces(runner: FlaskCliRunner, store: Store, db: Path) -> None:
    with Store(f"sqlite:///{db}", namespace="other_app") as other:
        other.set("keep", 1)
    store.set("a", 1)
    store.counter("c").incr()
    lock = store.lock("held", ttl=60)
    lock.acquire()
    store.cached(ttl=60)(len)("xy")
    before = rows(db)
    assert any(k.startswith("cli_app/_ss:") for k in before)

    declined = runner.invoke(args=["state", "clear"], input="n\n")
    assert declined.exit_code == 1
    assert "Aborted" in declined.output
    assert "namespace 'cli_app'" in declined.output
    assert rows(db) == before

    accepted = runner.invoke(args=["state", "clear"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert rows(db) == ["other_app/keep"]
    with pytest.raises(LockNotOwnedError):
        lock.release()  # its key was cleared too

    store.set("z", 1)
    yes = runner.invoke(args=["state", "clear", "--yes"])
    assert yes.exit_code == 0
    assert yes.output == "deleted 1 keys\n"
    assert rows(db) == ["other_app/keep"]


def test_sweep(runner: FlaskCliRunner, store: Store, db: Path) -> None:
    store.set("short1", 1, ttl=0.2)
    store.set("short2", 1, ttl=0.2)
    store.set("long", 1, ttl=600)
    time.sleep(0.4)
    assert len(rows(db)) == 3  # expired, but not removed yet
    result = runner.invoke(args=["state", "sweep"])
    assert result.exit_code == 0, result.output
    assert result.output == "swept 2 expired entries\n"
    assert rows(db) == ["cli_app/long"]


def test_stats(runner: FlaskCliRunner, store: Store, db: Path) -> None:
    store.set("a", 1)
    store.set("b", 2)
    store.cached(ttl=60)(len)("q")
    result = runner.invoke(args=["state", "stats"])
    assert result.exit_code == 0, result.output
    assert f"sqlite:///{db}" in result.output
    assert "namespace: 'cli_app'" in result.output
    assert "keys:      2 (+1 internal)" in result.output


def test_stats_masks_the_password(tmp_path: Path) -> None:
    scheme = f"sstest{uuid.uuid4().hex[:8]}"
    register_backend(scheme, lambda url: SQLiteBackend(str(tmp_path / "masked.sqlite3")))
    app = Flask("masked_app", instance_path=str(tmp_path / "instance"))
    app.config["SHAREDSTATE_URL"] = f"{scheme}://admin:hunter2secret@db.example:1234/0"
    SharedState(app)
    try:
        result = app.test_cli_runner().invoke(args=["state", "stats"])
        assert result.exit_code == 0, result.output
        assert "hunter2secret" not in result.output
        assert f"{scheme}://admin:***@db.example:1234/0" in result.output
        declined = app.test_cli_runner().invoke(args=["state", "clear"], input="n\n")
        assert "hunter2secret" not in declined.output
    finally:
        store_for(app).close()


def test_backend_errors_are_one_line(tmp_path: Path) -> None:
    app = Flask("broken_app", instance_path=str(tmp_path / "instance"))
    app.config["SHAREDSTATE_URL"] = f"sqlite:///{tmp_path}/missing-dir/x.sqlite3"
    SharedState(app)
    result = app.test_cli_runner().invoke(args=["state", "stats"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: BackendUnavailableError: cannot open SQLite database")
    assert "Traceback" not in result.output


def test_bad_key_is_a_usage_error(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["state", "get", ""])
    assert result.exit_code == 2
    assert "must not be empty" in result.output


@pytest.mark.timeout(120)
def test_real_flask_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/real.sqlite3"
    with Store(url, namespace="tests.apps.ext_app") as store:
        store.set("visible", [1, 2])
    env = {**os.environ, "EXT_APP_URL": url, "EXT_APP_INSTANCE": str(tmp_path / "instance")}
    env.pop("EXT_APP_NAMESPACE", None)
    flask = [sys.executable, "-m", "flask", "--app", "tests.apps.ext_app:create_app()", "state"]
    listed = subprocess.run([*flask, "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "visible\n"
    got = subprocess.run(
        [*flask, "get", "visible"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert got.stdout == "[1, 2]\n"
