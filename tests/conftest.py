"""Fixtures shared by the whole suite: one parametrization over every backend.

``store_url`` / ``store`` run a test on every backend; ``shared_url`` / ``shared_store`` on the
backends that processes can share (all but ``memory://``). A server backend plugs in by adding its
name to ``ALL_BACKENDS`` and a branch to ``servers.backend_url``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sharedstate import Store
from tests import servers

ALL_BACKENDS = ["memory", "sqlite", "redis", "postgresql", "memcached", "lmdb"]
SHARED_BACKENDS = [b for b in ALL_BACKENDS if b != "memory"]

# Property-based tests (tests/test_properties.py). Bounded by default: 25 examples per property and
# backend keep the file well under a minute. The deadline fails an example that is merely slow (10 s
# tolerates a loaded CI machine); a call that never returns is stopped by test_properties.HANG.
# Under CI the examples are derandomized (a fixed seed, no example database), so CI runs the same
# examples every time: a red run is reproducible, never a flake. A developer's run draws new
# examples and replays earlier failures from .hypothesis/. `-m slow` runs the thorough variants
# (16 times the examples); `--hypothesis-profile=sharedstate-slow` raises every property to 400.
settings.register_profile(
    "sharedstate",
    max_examples=25,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
_BOUNDED = settings.get_profile("sharedstate")
settings.register_profile("sharedstate-ci", _BOUNDED, derandomize=True, database=None)
settings.register_profile("sharedstate-slow", _BOUNDED, max_examples=400)
settings.load_profile("sharedstate-ci" if servers.IN_CI else "sharedstate")

# pytest-xdist workers share a parent and a command line, which is what memory:// takes for the
# workers of one server (it refuses to split its data between them). They are independent runs:
# give each its own command line, so memory:// tells them apart.
if os.environ.get("PYTEST_XDIST_WORKER"):
    sys.argv = [*sys.argv, f"--xdist-worker={os.environ['PYTEST_XDIST_WORKER']}"]


@pytest.fixture(params=ALL_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return servers.backend_url(request.param, tmp_path)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return servers.backend_url(request.param, tmp_path)


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for each test, so tests on server backends never see each other."""
    return f"t{servers.RUN_ID}{uuid.uuid4().hex[:8]}"


def _open(url: str, namespace: str) -> Iterator[Store]:
    with Store(url, namespace=namespace) as s:
        yield s
        if url.startswith("redis"):  # the shared server outlives the run: leave nothing behind
            for key in list(s.backend.scan(f"{namespace}/")):
                s.backend.delete(key)


@pytest.fixture
def store(store_url: str, namespace: str) -> Iterator[Store]:
    yield from _open(store_url, namespace)


@pytest.fixture
def shared_store(shared_url: str, namespace: str) -> Iterator[Store]:
    yield from _open(shared_url, namespace)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # PostgreSQL serves 100 connections; one multi-process test alone can hold 30-80 (8 processes,
    # each with a pool). Under pytest-xdist (`--dist loadgroup`) every PostgreSQL test runs on one
    # worker, one at a time, so parallel workers never exhaust the server between them.
    for item in items:
        if "postgres" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("postgresql"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    servers.MEMCACHED.stop()
    _drop_postgres_test_table()


def _drop_postgres_test_table() -> None:
    try:
        import psycopg
    except ImportError:
        return
    if not servers.reachable(servers.POSTGRES_URL, 5432):
        return
    try:
        with psycopg.connect(servers.POSTGRES_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS sharedstate_test_{servers.RUN_ID}")
    except psycopg.Error:
        pass
