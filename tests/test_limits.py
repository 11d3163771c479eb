"""``sharedstate.limits``: limits (and Flask-Limiter) storages on every backend.

- limits' own storage, strategy and concurrency tests, from its released sdist, run against our
  schemes (tests/peer_plugins/sharedstate_limits_peer.py rewrites their storage parameters);
- every strategy exact across real processes, on every backend (sync) and across tasks (async);
- a Flask-Limiter app under ``gunicorn -w 4``: 50 concurrent requests, exactly 10 pass;
- the window arithmetic, without IO.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from limits import parse
from limits.aio import strategies as aio_strategies
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from sharedstate import AsyncStore, Store
from sharedstate.limits import (
    SCHEMES,
    AsyncSharedStateStorage,
    SharedStateStorage,
    _Refused,
    moving_acquire,
    moving_window,
    sliding_acquire,
    sliding_window,
)
from tests import servers
from tests.conftest import ALL_BACKENDS

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
STRATEGIES = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
ASYNC_STRATEGIES = {
    "fixed-window": aio_strategies.FixedWindowRateLimiter,
    "moving-window": aio_strategies.MovingWindowRateLimiter,
    "sliding-window-counter": aio_strategies.SlidingWindowCounterRateLimiter,
}

pytestmark = pytest.mark.filterwarnings("ignore:.*may evict any entry:RuntimeWarning")  # memcached


def _avoid_window_edge(strategy: str, period: float = 60.0, margin: float = 3.0) -> None:
    # The sliding window counter is an approximation by design: across a window edge a hit of the
    # previous window weighs a little less than one, so an exact count needs one window.
    if strategy == "sliding-window-counter":
        left = period - time.time() % period
        if left < margin:
            time.sleep(left + 0.05)


# -- registration and options -----------------------------------------------------------------------


def test_every_scheme_is_registered_for_both_apis(tmp_path: Path) -> None:
    for scheme in ("sqlite", "redis", "postgresql", "memcached", "memory", "lmdb"):
        assert scheme in SCHEMES
    storage = storage_from_string(f"sharedstate+sqlite:///{tmp_path}/l.db", namespace="x")
    assert isinstance(storage, SharedStateStorage)
    assert storage.store.url == f"sqlite:///{tmp_path}/l.db" and storage.store.namespace == "x"
    astorage = storage_from_string("async+sharedstate+memory://")
    assert isinstance(astorage, AsyncSharedStateStorage)
    assert isinstance(astorage.store, AsyncStore) and astorage.store.namespace == "limits"
    storage.store.close()


def test_options_and_an_open_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown storage option.*bogus"):
        storage_from_string("sharedstate+memory://", bogus=1)
    with Store(f"sqlite:///{tmp_path}/s.db", namespace="mine") as store:
        storage = SharedStateStorage("sharedstate+memory://", store=store)
        assert storage.store is store
        storage.incr("k", 60)
        assert store.get("k") == 1


def test_errors_are_limits_storage_errors_when_wrapped() -> None:
    # A server that is not there: check() says so, and every call raises (wrapped if asked).
    port = servers.free_port()
    storage = storage_from_string(f"sharedstate+redis://127.0.0.1:{port}/0", wrap_exceptions=True)
    assert storage.check() is False
    with pytest.raises(StorageError):
        storage.incr("k", 60)


# -- the window arithmetic ----------------------------------------------------------------------


def test_moving_window_arithmetic() -> None:
    state: Any = None
    for i in range(3):
        state = moving_acquire(state, 3, 10, 1, 100.0 + i)
    with pytest.raises(_Refused):
        moving_acquire(state, 3, 10, 1, 105.0)
    assert moving_window(state, 10, 105.0) == (100.0, 3)
    state = moving_acquire(state, 3, 10, 1, 110.5)  # the first entry left the window
    assert moving_window(state, 10, 110.5) == (101.0, 3)
    # One pair per hit however costly; a clock behind the newest entry never inserts below it.
    big = moving_acquire(None, 1_000_000, 10, 999_999, 50.0)
    assert big == [[50.0, 999_999]]
    assert moving_acquire(big, 1_000_000, 10, 1, 49.0)[0] == [50.0, 1]
    with pytest.raises(_Refused):
        moving_acquire(big, 1_000_000, 10, 2, 51.0)


def test_sliding_window_arithmetic() -> None:
    state = sliding_acquire(None, 10, 60, 10, 600.0)  # window 10, full
    with pytest.raises(_Refused):
        sliding_acquire(state, 10, 60, 1, 630.0)
    # Next window, 15 s in: the previous 10 weigh 45/60, so 7 + 3 = 10.
    assert sliding_window(state, 60, 675.0) == (10, 45.0, 0, 105.0)
    state = sliding_acquire(state, 10, 60, 3, 675.0)
    with pytest.raises(_Refused):
        sliding_acquire(state, 10, 60, 1, 675.0)
    assert sliding_window(state, 60, 800.0)[0::2] == (0, 0)  # two windows later: all gone


# -- exact across processes (sync) and tasks (async), every backend --------------------------------


def _hammer(url: str, namespace: str, strategy: str, key: str, tries: int, start: Any, out: Any) -> None:
    storage = storage_from_string(f"sharedstate+{url}", namespace=namespace)
    limiter = STRATEGIES[strategy](storage)
    item = parse("10/hour")
    start.wait()
    out.put(sum(limiter.hit(item, key) for _ in range(tries)))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_exact_across_processes(shared_url: str, namespace: str, strategy: str) -> None:
    _avoid_window_edge(strategy, 3600, 60)
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(shared_url, namespace, strategy, "k", 8, start, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    try:
        assert sum(out.get(timeout=90) for _ in procs) == 10
    finally:
        for p in procs:
            p.join(30)
    storage = storage_from_string(f"sharedstate+{shared_url}", namespace=namespace)
    limiter = STRATEGIES[strategy](storage)
    assert limiter.get_window_stats(parse("10/hour"), "k").remaining == 0
    if not shared_url.startswith("memcached"):
        assert storage.reset() == 1
    storage.store.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_async_storage(store_url: str, namespace: str, strategy: str) -> None:
    _avoid_window_edge(strategy, 3600, 60)

    async def main() -> None:
        storage = storage_from_string(f"async+sharedstate+{store_url}", namespace=namespace)
        assert isinstance(storage, AsyncSharedStateStorage)
        assert await storage.check()
        limiter = ASYNC_STRATEGIES[strategy](storage)
        item = parse("10/hour")
        hits = await asyncio.gather(*(limiter.hit(item, "k") for _ in range(30)))
        assert hits.count(True) == 10
        stats = await limiter.get_window_stats(item, "k")
        assert stats.remaining == 0
        assert time.time() < stats.reset_time <= time.time() + 3601
        assert not await limiter.test(item, "k")
        await limiter.clear(item, "k")
        assert await limiter.hit(item, "k")
        if strategy == "fixed-window":
            assert await storage.get(item.key_for("k")) == 1
            assert await storage.get_expiry(item.key_for("k")) == pytest.approx(time.time() + 3600, abs=2.5)
        if not store_url.startswith("memcached"):
            assert await storage.reset() == 1
        await storage.store.aclose()

    asyncio.run(main())


# -- limits' own suite ----------------------------------------------------------------------------

# What runs from limits' sdist: every test parametrized over limits' storages (strategies, concrete
# storages, concurrency), sync and async. In full on the three backends processes share in
# production (sqlite, redis, postgresql), one process per backend and API, all at once; on the
# others (memory, lmdb, memcached) only the tests that do not wait for windows to pass (our own
# tests above cover every strategy there), to stay within a minute. Left out everywhere: limits'
# tests of its own backends (tests/storage/*), of its registry and error wrapping with toy storages
# (TestBaseStorage, TestStorageErrors: no storage of ours involved), its benchmarks, and limit
# parsing (no storage). The plugin skips, on memcached, reset (limits skips it for its own
# memcached storage) and the two tests that give a 1 s expiry 0.1 s (memcached expires in whole
# seconds, up to 2 s late).
PEER_SYNC = [
    "tests/test_strategy.py",
    "tests/test_storage.py::TestConcreteStorages",
    "tests/integration/test_concurrency.py::TestConcurrency",
]
PEER_ASYNC = [
    "tests/aio/test_strategy.py",
    "tests/aio/test_storage.py::TestConcreteStorages",
    "tests/integration/test_concurrency.py::TestAsyncConcurrency",
]
PEER_FULL = ("sqlite", "redis")
PEER_QUICK = "(TestConcreteStorages and not expiry) or Concurrency"
#: At least this many must pass per run (untimed, full: 26 sync and 27 async exist; quick: 18,
#: memcached 16).
PEER_MINIMUM = {"full": 26, "quick": 16}
#: The timed tests (limits marks them ``flaky``), per run on the full backends.
PEER_TIMED_MINIMUM = {"full sync": 4, "full async": 4}
PEER_INI = """[pytest]
anyio_mode = auto
filterwarnings =
    ignore::pytest.PytestUnknownMarkWarning
    ignore:.*may evict any entry:RuntimeWarning
"""


def _peer_urls(tmp_path: Path) -> dict[str, str]:
    urls = {}
    for name in ALL_BACKENDS:
        (tmp_path / name).mkdir()
        try:
            urls[name] = servers.backend_url(name, tmp_path / name)
        except pytest.skip.Exception as exc:  # not under CI: run the others, say which was left out
            print(f"limits peer suite: {name} left out: {exc}")
    return urls


def _limits_suite() -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from peer_suite import PeerSuiteUnavailable, peer_suite
    finally:
        sys.path.pop(0)
    if importlib.util.find_spec("pytest_lazy_fixtures") is None:
        servers.unavailable("limits' tests need pytest-lazy-fixtures (a dev dependency)")
    try:
        return peer_suite("limits")
    except PeerSuiteUnavailable as exc:
        servers.unavailable(f"limits' sdist: {exc}")
        raise


def _run_limits_suite(tmp_path: Path, marks: str, backends: tuple[str, ...], *, at_once: bool) -> None:
    """Run limits' own tests selected by ``marks`` against our schemes, one pytest per backend."""
    suite = _limits_suite()
    ini = tmp_path / "pytest.ini"
    ini.write_text(PEER_INI)
    runs = {}
    urls = _peer_urls(tmp_path)
    for name, url in urls.items():
        if name not in backends:
            continue
        env = {
            **os.environ,
            "SHAREDSTATE_LIMITS_PEER_URLS": json.dumps({name: url}),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests" / "peer_plugins")]),
        }
        command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(suite), "--noconftest"]
        command += ["-p", "sharedstate_limits_peer", "-p", "no:cacheprovider", "-q", "--timeout", "60"]
        command += ["-m", marks]
        if name in PEER_FULL:
            selections = {"full sync": PEER_SYNC, "full async": PEER_ASYNC}
        else:
            selections = {"quick": ["-k", PEER_QUICK, *PEER_SYNC, *PEER_ASYNC]}
        for what, args in selections.items():
            runs[name, what] = subprocess.Popen(
                command + args,
                cwd=suite,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if not at_once:
                runs[name, what].wait(timeout=170)
    failures = []
    for (name, what), proc in runs.items():
        output, _ = proc.communicate(timeout=170)
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
        reruns = [line for line in output.splitlines() if line.startswith("flaky rerun:")]
        print(f"limits' suite ({marks}), {name} {what}: {summary}", *reruns, sep="\n  ")
        minimum = PEER_MINIMUM[what.split()[0]] if marks == "not flaky" else PEER_TIMED_MINIMUM[what]
        if proc.returncode != 0 or passed < minimum:
            failures.append(f"--- {name} {what} (exit {proc.returncode}, {passed} passed):\n{output[-4000:]}")
    assert not failures, "\n".join(failures)
    assert set(backends) & {"sqlite", "memory", "lmdb"} <= {name for name, _ in runs}


@pytest.mark.timeout(180)
def test_limits_own_suite(tmp_path: Path) -> None:
    """limits' storage, strategy and concurrency tests, all backends at once (the untimed ones)."""
    _run_limits_suite(tmp_path, "not flaky", tuple(ALL_BACKENDS), at_once=True)


@pytest.mark.timing
@pytest.mark.timeout(180)
def test_limits_own_timed_tests(tmp_path: Path) -> None:
    """The tests limits marks ``flaky``: they allow 30 ms of timing error, so they run alone.

    limits reruns them up to three times itself; so does our plugin.
    """
    _run_limits_suite(tmp_path, "flaky", PEER_FULL, at_once=False)


# -- Flask-Limiter under gunicorn -----------------------------------------------------------------


@contextmanager
def gunicorn(tmp_path: Path, env: dict[str, str]) -> Iterator[int]:
    port = servers.free_port()
    log_path = tmp_path / "gunicorn.log"
    command = [str(GUNICORN), "-w", "4", "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT)]
    command += ["--timeout", "30", "--graceful-timeout", "5"]
    command.append("tests.apps.limiter_app:create_app()")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while log_path.read_text(errors="replace").count("Booting worker") < 4:
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


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Worker-Pid", "")
    finally:
        conn.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_flask_limiter_under_gunicorn(backend: str, namespace: str, tmp_path: Path) -> None:
    """``gunicorn -w 4``, one limiter per strategy ("10 per minute" on its own route): 50
    concurrent requests per route, all routes at once, give exactly 10 200s and 40 429s each."""
    url = servers.backend_url(backend, tmp_path)
    env = {"LIMITER_APP_STORAGE": f"sharedstate+{url}", "LIMITER_APP_NAMESPACE": namespace}
    with gunicorn(tmp_path, env) as port:
        _avoid_window_edge("sliding-window-counter", margin=10.0)
        paths = [f"/{strategy}" for strategy in STRATEGIES] * 50
        with ThreadPoolExecutor(len(paths)) as pool:  # 50 at once per route
            results = list(zip(paths, pool.map(lambda path: _get(port, path), paths), strict=True))
    for strategy in STRATEGIES:
        statuses = [status for path, (status, _) in results if path == f"/{strategy}"]
        assert (statuses.count(200), statuses.count(429)) == (10, 40), (strategy, statuses)
    assert len({pid for _, (_, pid) in results}) >= 2, "the requests did not spread over gunicorn's workers"
    storage = storage_from_string(f"sharedstate+{url}", namespace=namespace)
    assert storage.reset() == 3  # one limit key per strategy, nothing left behind on the server
    storage.store.close()
