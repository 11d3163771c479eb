"""``memory://`` opened by sibling processes of one server fails loudly instead of splitting the data.

Under ``gunicorn -w 4`` without ``--preload`` every worker imports the app and opens its own
``memory://``: without the sibling check, 200 requests come back 200 with four independent counters.
The check refuses the second process of the same parent and command line on the same namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sharedstate import NotSupportedError, Store
from tests import servers

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def open_and_report(url: str, namespace: str, out: str, hold: float, release: str = "") -> None:
    """Open ``Store(url)`` twice (two stores of one process share its claim), write what happened,
    then stay alive ``hold`` seconds or until the file ``release`` appears."""
    try:
        first, second = Store(url, namespace=namespace), Store(url, namespace=namespace)
        first.set("k", os.getpid())
        result: dict[str, Any] = {"opened": True, "k": second.get("k") is None}
    except NotSupportedError as exc:
        result = {"opened": False, "message": str(exc)}
    Path(out + ".tmp").write_text(json.dumps(result))
    os.replace(out + ".tmp", out)
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline and not (release and os.path.exists(release)):
        time.sleep(0.02)


def wait_for(path: Path, limit: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.01)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.timeout(60)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_second_sibling_process_is_refused(context: str, namespace: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context(context)
    release = str(tmp_path / "release")

    def start(url: str, name: str, hold: float) -> tuple[Any, dict[str, Any]]:
        out = str(tmp_path / name)
        proc = ctx.Process(target=open_and_report, args=(url, namespace, out, hold, release))
        proc.start()
        return proc, wait_for(Path(out))

    first, seen = start("memory://", "first", 60)
    try:
        assert seen["opened"]  # two stores of one process: the claim is per process, not per store
        second, refused = start("memory://", "second", 0)
        second.join(10)
        assert not refused["opened"]
        assert "sqlite://" in refused["message"] and "check_siblings=false" in refused["message"]
        assert str(first.pid) in refused["message"]  # names the process that holds it
        # Another namespace is another app's data: no conflict.
        other_args = ("memory://", namespace + "x", str(tmp_path / "o"), 0)
        other = ctx.Process(target=open_and_report, args=other_args)
        other.start()
        assert wait_for(tmp_path / "o")["opened"]
        other.join(10)
        # The documented opt-out.
        optout, allowed = start("memory://?check_siblings=false", "optout", 0)
        optout.join(10)
        assert allowed["opened"]
        # A worker that dies (SIGKILL: no cleanup) frees the namespace for its replacement.
        first.kill()
        first.join(10)
        respawned, taken = start("memory://", "respawned", 0)
        respawned.join(10)
        assert taken["opened"]
    finally:
        Path(release).touch()
        first.kill()
        first.join(10)


def test_stores_of_one_process_share_the_claim(namespace: str) -> None:
    stores = [Store("memory://", namespace=namespace) for _ in range(3)]
    for i, store in enumerate(stores):
        store.set("k", i)
        assert store.get("k") == i  # each store still has its own data, as documented


@pytest.mark.timeout(120)
@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_gunicorn_workers_fail_loudly_with_memory(preload: bool, namespace: str, tmp_path: Path) -> None:
    """200 requests to ``gunicorn -w 4`` on ``memory://``: never 200s with split counts.

    Without ``--preload`` the second worker fails to boot (gunicorn stops, its log names the
    opt-out); with it, every request in a worker gets a 500 (the inherited store refuses).
    """
    port = servers.free_port()
    log_path = tmp_path / "gunicorn.log"
    command = [str(GUNICORN), "-w", "4", "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT)]
    command += ["--timeout", "30", "--graceful-timeout", "2"] + (["--preload"] if preload else [])
    command.append("tests.apps.ext_app:create_app()")
    env = {**os.environ, "EXT_APP_URL": "memory://", "EXT_APP_NAMESPACE": namespace}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "Booting worker" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)

        def request(_: int) -> tuple[int, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/incr?sleep=0.01")
                response = conn.getresponse()
                body = response.read()
                return response.status, json.loads(body)["n"] if response.status == 200 else None
            except (OSError, http.client.HTTPException):
                return 0, None  # refused or reset: gunicorn stopped, loudly
            finally:
                conn.close()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(request, range(200)))
        if not preload:  # the refused workers give up after the grace period; gunicorn then stops
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log_text = log_path.read_text(errors="replace")
    served = [n for status, n in results if status == 200]
    assert len(served) == len(set(served)), f"split counters: {sorted(served)}"
    if preload:
        assert {status for status, _ in results} == {500}
        assert "sqlite://" in log_text
    else:
        assert "check_siblings=false" in log_text and "sqlite://" in log_text
        assert proc.returncode != 0, "gunicorn went on serving with a worker that failed to boot"
