"""Where the test suite finds (or starts) the servers the server backends need.

Under ``CI=true`` a missing server fails the tests that need it; elsewhere they skip, saying why.
Override the addresses with ``SHAREDSTATE_TEST_REDIS_URL``, ``SHAREDSTATE_TEST_POSTGRES_URL`` and
``SHAREDSTATE_TEST_MEMCACHED_URL``. Memcached is started by the suite itself on a free loopback port
when the ``memcached`` binary is installed (``make test`` installs it).
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: One id per test run: PostgreSQL tables and key namespaces carry it, so runs never collide.
RUN_ID = uuid.uuid4().hex[:10]

REDIS_URL = os.environ.get("SHAREDSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("SHAREDSTATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Fail under CI (the server must be there), skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Memcached:
    """A memcached process of our own on a free loopback port, stopped at the end of the run."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = os.environ.get("SHAREDSTATE_TEST_MEMCACHED_URL")
        self.reason = ""

    def start(self) -> str | None:
        if self.url or self.reason:
            return self.url
        binary = shutil.which("memcached") or (
            "/usr/bin/memcached" if os.path.exists("/usr/bin/memcached") else None
        )
        if binary is None:
            self.reason = "memcached is not installed (make test installs it: apt-get install memcached)"
            return None
        port = free_port()
        self.process = subprocess.Popen(
            [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-u", "root"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
        self.url = f"memcached://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


MEMCACHED = Memcached()


_BACKEND_MODULES = {
    "redis": "sharedstate.backends.redis",
    "postgresql": "sharedstate.backends.postgres",
    "memcached": "sharedstate.backends.memcached",
}


def backend_url(name: str, tmp_path: Path) -> str:
    """The URL for backend ``name``: a file (sqlite) or directory (lmdb) in ``tmp_path``, else a
    server (or skip/fail)."""
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{tmp_path}/state.sqlite3"
    if name == "lmdb":
        try:
            importlib.import_module("lmdb")
        except ImportError as exc:
            unavailable(f"the lmdb module is not installed (pip install 'sharedstate[lmdb]'): {exc}")
        return f"lmdb:///{tmp_path}/state.lmdb"
    try:
        importlib.import_module(_BACKEND_MODULES[name])
    except ImportError as exc:
        unavailable(f"the {name} backend cannot be imported: {exc}")
    if name == "redis":
        if not reachable(REDIS_URL, 6379):
            unavailable(f"Redis is not reachable at {REDIS_URL}")
        return REDIS_URL
    if name == "postgresql":
        if not reachable(POSTGRES_URL, 5432):
            unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}")
        sep = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{sep}table=sharedstate_test_{RUN_ID}"
    if name == "memcached":
        url = MEMCACHED.start()
        if url is None:
            unavailable(MEMCACHED.reason)
        assert url is not None
        return url
    raise AssertionError(name)
