"""A Flask-Caching app whose backend comes from the environment, run under ``gunicorn -w N``.

``gunicorn 'tests.apps.caching_app:create_app()'`` with ``CACHING_APP_TYPE`` as ``CACHE_TYPE``
(default ``sharedstate.cachelib.SharedStateCache``), ``CACHING_APP_URL`` as
``CACHE_SHAREDSTATE_URL``, ``CACHING_APP_DIR`` as ``CACHE_DIR`` (FileSystemCache) and
``CACHING_APP_INSTANCE`` as the instance folder. Used by tests/test_cachelib.py (the count under
gunicorn) and benchmarks/bench_cachelib.py (the same count with Flask-Caching's own backends).
:func:`serve` starts it on a free port and yields the port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_caching import Cache

ROOT = Path(__file__).resolve().parent.parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"

cache = Cache()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("CACHING_APP_INSTANCE") or None)
    app.config["CACHE_TYPE"] = os.environ.get("CACHING_APP_TYPE", "sharedstate.cachelib.SharedStateCache")
    if os.environ.get("CACHING_APP_URL"):
        app.config["CACHE_SHAREDSTATE_URL"] = os.environ["CACHING_APP_URL"]
    if os.environ.get("CACHING_APP_DIR"):
        app.config["CACHE_DIR"] = os.environ["CACHING_APP_DIR"]
    app.config["CACHE_DEFAULT_TIMEOUT"] = 600
    app.config.update(config or {})
    cache.init_app(app)

    @app.get("/inc")
    def inc() -> ResponseReturnValue:
        pause = float(request.args.get("sleep", "0"))
        if pause:  # lets concurrent requests overlap and spread over the workers
            time.sleep(min(pause, 0.5))
        # Flask-Caching's Cache has no inc(): the backend's, as Flask-Caching's docs say.
        return jsonify(n=cache.cache.inc("hits"), pid=os.getpid())

    @app.get("/get")
    def get() -> ResponseReturnValue:
        return jsonify(n=cache.get("hits"), pid=os.getpid())

    return app


@contextmanager
def serve(env: dict[str, str], log_path: Path, workers: int = 4) -> Iterator[int]:
    """Run this app under ``gunicorn -w workers`` on a free loopback port; yields the port."""
    from tests import servers

    port = servers.free_port()
    command = [str(GUNICORN), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT)]
    command += ["--timeout", "60", "--graceful-timeout", "5", "tests.apps.caching_app:create_app()"]
    # This tree's sharedstate, not an installed one, in every worker.
    pythonpath = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**env, "PYTHONPATH": pythonpath}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            # Every worker up before the load starts, so the requests spread over all of them.
            while log_path.read_text(errors="replace").count("Booting worker") < workers:
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


def fetch(port: int, path: str) -> dict[str, Any]:
    """GET ``path`` and return its JSON body (asserting a 200)."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:500]
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        conn.close()


def fire(port: int, path: str, requests: int, concurrency: int) -> list[dict[str, Any]]:
    """``requests`` GETs of ``path`` from ``concurrency`` client threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: fetch(port, path), range(requests)))
