"""The async backend contract (:class:`~sharedstate.backends.base.AsyncBackend`) on every backend.

Each test opens the async backend for one backend name with ``async_backend_from_url`` and runs
its scenario with ``asyncio.run`` (a new event loop per call: one backend instance serves loop
after loop). Keys live under a namespace of the test's own. A backend whose module has no async
class yet skips with the registry's reason; once the class exists it runs here unchanged.
Operations a backend documents as unsupported (``NotSupportedError``: listing keys on memcached)
are checked to raise it.

Plus the async registry, many tasks on one key, fork safety, and the event-loop lag probe on
``sqlite://`` under four contending processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from sharedstate import BackendUnavailableError, NotSupportedError
from sharedstate.backends import (
    AsyncBackend,
    async_backend_from_url,
    backend_from_url,
    known_schemes,
    register_backend,
)
from sharedstate.backends.memory import AsyncMemoryBackend, MemoryBackend
from tests import servers
from tests.conftest import ALL_BACKENDS
from tests.freeze_proxy import FreezeProxy
from tests.test_frozen_server import MARGIN as FROZEN_MARGIN
from tests.test_frozen_server import TIMEOUT as FROZEN_TIMEOUT
from tests.test_frozen_server import _through as through_proxy

T = TypeVar("T")

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
TTL = 0.3
EXPIRY_LIMIT = TTL + 2.5  # memcached rounds expiry up to whole seconds, plus one tick


class Opened:
    """An async backend under test, its URL, its backend name and the test's key prefix."""

    def __init__(self, name: str, url: str, backend: AsyncBackend, prefix: str) -> None:
        self.name, self.url, self.backend, self.prefix = name, url, backend, prefix

    def key(self, name: str) -> str:
        return self.prefix + name

    def run(self, scenario: Callable[[AsyncBackend], Awaitable[T]]) -> T:
        """Run ``scenario(backend)`` in a new event loop."""

        async def main() -> T:
            return await scenario(self.backend)

        return asyncio.run(main())


def open_async(name: str, url: str) -> AsyncBackend:
    try:
        return async_backend_from_url(url)
    except NotSupportedError as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=ALL_BACKENDS)
def opened(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[Opened]:
    name = request.param
    url = servers.backend_url(name, tmp_path)
    backend = open_async(name, url)
    yield Opened(name, url, backend, f"{namespace}/")
    asyncio.run(backend.aclose())
    if name == "redis":  # the shared server outlives the run: leave nothing behind
        sync = backend_from_url(url)
        for key in list(sync.scan(f"{namespace}/")):
            sync.delete(key)
        sync.close()


async def keys_of(backend: AsyncBackend, prefix: str) -> set[str]:
    return {key async for key in backend.scan(prefix)}


def as_int(value: object) -> int:
    """A stored integer: ``int``, or ``bytes`` text where the backend stores integers as text."""
    assert isinstance(value, (int, bytes)), value
    return int(value)


async def wait_until_async(condition: Callable[[], Awaitable[bool]], limit: float = EXPIRY_LIMIT) -> None:
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < limit, f"condition still false after {limit}s"
        await asyncio.sleep(0.02)


# -- the contract ----------------------------------------------------------------------------------


def test_get_set_delete(opened: Opened) -> None:
    k = opened.key("a")

    async def scenario(b: AsyncBackend) -> None:
        assert await b.get(k) is None
        await b.set(k, b"one")
        entry = await b.get(k)
        assert entry is not None and entry.value == b"one"
        await b.set(k, b"")  # falsy values are values
        entry = await b.get(k)
        assert entry is not None and entry.value == b""
        await b.set(k, 42)
        entry = await b.get(k)
        assert entry is not None and as_int(entry.value) == 42
        assert await b.delete(k) is True
        assert await b.delete(k) is False
        assert await b.get(k) is None

    opened.run(scenario)


def test_add_only_if_absent(opened: Opened) -> None:
    k = opened.key("a")

    async def scenario(b: AsyncBackend) -> None:
        assert await b.add(k, b"first") is True
        assert await b.add(k, b"second") is False
        entry = await b.get(k)
        assert entry is not None and entry.value == b"first"

    opened.run(scenario)


def test_compare_and_set_refusal_carries_the_entry_success_the_entry_written(opened: Opened) -> None:
    k = opened.key("a")

    async def scenario(b: AsyncBackend) -> None:
        created = await b.compare_and_set(k, None, b"v1")
        assert created.stored is True
        if created.entry is not None:  # None only where the backend cannot learn it (memcached)
            assert created.entry.value == b"v1"
        current = await b.get(k)
        assert current is not None and current.value == b"v1"
        if created.entry is not None:
            assert created.entry.version == current.version

        refused = await b.compare_and_set(k, None, b"other")  # "only if absent", but present
        assert refused == (False, current)

        written = await b.compare_and_set(k, current.version, b"v2")
        assert written.stored is True
        after = await b.get(k)
        assert after is not None and after.value == b"v2"
        if written.entry is not None:
            assert written.entry == after
            # The written entry is good for the next compare-and-set, without reading again.
            assert (await b.compare_and_set(k, written.entry.version, b"v3")).stored is True
            after = await b.get(k)
            assert after is not None

        stale = await b.compare_and_set(k, current.version, b"lost")  # the version seen before v2
        assert stale.stored is False
        assert stale.entry == after
        assert (await b.get(k)) == after

        await b.delete(k)
        gone = await b.compare_and_set(k, current.version, b"x")  # expected present, is absent
        assert gone == (False, None)

    opened.run(scenario)


def test_delete_if_version(opened: Opened) -> None:
    k = opened.key("a")

    async def scenario(b: AsyncBackend) -> None:
        await b.set(k, b"v1")
        old = await b.get(k)
        assert old is not None
        await b.set(k, b"v2")
        assert await b.delete_if_version(k, old.version) is False
        current = await b.get(k)
        assert current is not None and current.value == b"v2"
        assert await b.delete_if_version(k, current.version) is True
        assert await b.get(k) is None
        assert await b.delete_if_version(k, current.version) is False

    opened.run(scenario)


def test_incr(opened: Opened) -> None:
    k, text = opened.key("n"), opened.key("text")

    async def scenario(b: AsyncBackend) -> None:
        assert await b.incr(k) == 1
        assert await b.incr(k, 5) == 6
        assert await b.incr(k, -10) == -4
        entry = await b.get(k)
        assert entry is not None and as_int(entry.value) == -4

        await b.set(text, b'"not a number"')
        with pytest.raises(TypeError):
            await b.incr(text)
        entry = await b.get(text)
        assert entry is not None and entry.value == b'"not a number"'

    opened.run(scenario)


def test_incr_int64_bounds(opened: Opened) -> None:
    top, bottom = opened.key("top"), opened.key("bottom")

    async def scenario(b: AsyncBackend) -> None:
        assert await b.incr(top, INT64_MAX) == INT64_MAX
        with pytest.raises(OverflowError):
            await b.incr(top)
        entry = await b.get(top)
        assert entry is not None and as_int(entry.value) == INT64_MAX

        assert await b.incr(bottom, INT64_MIN) == INT64_MIN
        with pytest.raises(OverflowError):
            await b.incr(bottom, -1)
        entry = await b.get(bottom)
        assert entry is not None and as_int(entry.value) == INT64_MIN

    opened.run(scenario)


def test_touch_keeps_value_and_version(opened: Opened) -> None:
    k = opened.key("a")

    async def scenario(b: AsyncBackend) -> None:
        assert await b.touch(k, 10) is False
        await b.set(k, b"v", ttl=TTL)
        before = await b.get(k)
        assert await b.touch(k, None) is True
        assert await b.get(k) == before
        await asyncio.sleep(EXPIRY_LIMIT if opened.name == "memcached" else TTL + 0.2)
        assert await b.get(k) == before  # no longer expires

    opened.run(scenario)


def test_scan(opened: Opened) -> None:
    names = [opened.key(f"p/{i}") for i in range(7)] + [opened.key("q/0")]

    async def scenario(b: AsyncBackend) -> None:
        for name in names:
            await b.set(name, b"x")
        await b.set(opened.key("p/expiring"), b"x", ttl=TTL)
        await asyncio.sleep(EXPIRY_LIMIT if opened.name == "memcached" else TTL + 0.1)
        assert await keys_of(b, opened.key("p/")) == set(names[:7])
        assert await keys_of(b, opened.prefix) == set(names)

    if opened.name == "memcached":  # documented: memcached cannot list keys
        with pytest.raises(NotSupportedError):
            opened.run(scenario)
        return
    opened.run(scenario)


def test_expired_entries_are_absent_for_every_operation(opened: Opened) -> None:
    k = opened.key("a")

    async def scenario(b: AsyncBackend) -> None:
        await b.set(k, b"v", ttl=TTL)
        entry = await b.get(k)
        assert entry is not None

        async def gone() -> bool:
            return await b.get(k) is None

        await wait_until_async(gone)
        assert await b.touch(k, 10) is False
        assert await b.delete_if_version(k, entry.version) is False
        assert await b.delete(k) is False
        assert await b.add(k, b"again") is True
        await b.set(k, 7, ttl=TTL)
        await wait_until_async(gone)
        assert await b.incr(k, 2) == 2  # an expired counter starts over
        await b.set(k, b"v", ttl=TTL)
        await wait_until_async(gone)
        assert (await b.compare_and_set(k, None, b"new")).stored is True

    opened.run(scenario)


def test_expiry(opened: Opened) -> None:
    k, forever, short = opened.key("a"), opened.key("forever"), opened.key("short")

    async def scenario(b: AsyncBackend) -> None:
        with pytest.raises(KeyError):
            await b.expiry(k)
        await b.set(k, b"v", ttl=100)
        left = await b.expiry(k)
        assert left is not None and 90 <= left <= 100
        await b.set(forever, 1)
        assert await b.expiry(forever) is None
        await b.set(short, b"v", ttl=TTL)

        async def gone() -> bool:
            return await b.get(short) is None

        await wait_until_async(gone)
        with pytest.raises(KeyError):
            await b.expiry(short)

    opened.run(scenario)


def test_batches(opened: Opened) -> None:
    a, n, missing, short = (opened.key(name) for name in ("a", "n", "missing", "short"))

    async def scenario(b: AsyncBackend) -> None:
        await b.set_many({a: b"one", n: 7})
        entries = await b.get_many([n, missing, a])
        assert list(entries) == [n, a]  # the order given, absent keys left out
        assert entries[a] == await b.get(a)  # the same entry, version and all
        assert as_int(entries[n].value) == 7
        assert await b.incr(n) == 8  # set_many stores an int natively
        assert (await b.compare_and_set(a, entries[a].version, b"two")).stored is True

        await b.set_many({short: b"s"}, ttl=TTL)
        left = await b.expiry(short)
        assert left is not None and left <= TTL + 2

        async def gone() -> bool:
            return await b.get_many([short, a]) == {a: await b.get(a)}

        await wait_until_async(gone)
        assert await b.delete_many([a, missing, short, n]) == 2  # the expired one does not count
        assert await b.get_many([a, n]) == {}
        await b.ping()

    opened.run(scenario)


def test_sweep(opened: Opened) -> None:
    keys = [opened.key(f"s{i}") for i in range(3)]

    async def scenario(b: AsyncBackend) -> None:
        for key in keys:
            await b.set(key, b"x", ttl=0.05)
        await b.set(opened.key("kept"), b"x")
        await asyncio.sleep(0.2)
        removed = await b.sweep()
        if opened.name in ("memory", "sqlite", "postgresql", "lmdb"):  # they sweep; servers expire themselves
            assert removed >= len(keys)
        else:
            assert removed == 0
        assert await b.sweep(0) == 0
        entry = await b.get(opened.key("kept"))
        assert entry is not None

    opened.run(scenario)


def test_aclose_then_use_again(opened: Opened) -> None:
    k = opened.key("n")

    async def scenario(b: AsyncBackend) -> None:
        assert await b.incr(k) == 1
        await b.aclose()
        assert await b.incr(k) == 2
        await b.aclose()
        await b.aclose()  # twice is harmless
        entry = await b.get(k)
        assert entry is not None and as_int(entry.value) == 2

    opened.run(scenario)
    assert opened.run(lambda b: b.incr(k)) == 3  # and from another event loop


def test_many_tasks_on_one_key_end_exact(opened: Opened) -> None:
    k, tasks, each = opened.key("n"), 40, 25

    async def scenario(b: AsyncBackend) -> list[int]:
        async def worker() -> list[int]:
            return [await b.incr(k) for _ in range(each)]

        results = await asyncio.gather(*(worker() for _ in range(tasks)))
        return [value for result in results for value in result]

    values = opened.run(scenario)
    assert sorted(values) == list(range(1, tasks * each + 1))


def test_many_tasks_compare_and_set_loops_lose_nothing(opened: Opened) -> None:
    k, tasks, each = opened.key("n"), 20, 10

    async def scenario(b: AsyncBackend) -> int:
        async def add_one() -> None:
            while True:
                entry = await b.get(k)
                current = 0 if entry is None else as_int(entry.value)
                value = str(current + 1).encode()
                if (await b.compare_and_set(k, None if entry is None else entry.version, value)).stored:
                    return
                await asyncio.sleep(0)

        async def worker() -> None:
            for _ in range(each):
                await add_one()

        await asyncio.gather(*(worker() for _ in range(tasks)))
        entry = await b.get(k)
        assert entry is not None
        return as_int(entry.value)

    assert opened.run(scenario) == tasks * each


# -- fork safety -----------------------------------------------------------------------------------


def _child_after_fork(backend: AsyncBackend, key: str, results: Any) -> None:
    """In a forked child: use the inherited backend from a new event loop."""
    try:
        value = asyncio.run(backend.incr(key))
        results.put(("ok", value))
    except NotSupportedError as exc:
        results.put(("not supported", str(exc)))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_fork_safety(opened: Opened) -> None:
    k = opened.key("n")
    assert opened.run(lambda b: b.incr(k)) == 1  # the parent's connections (and threads) exist
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_child_after_fork, args=(opened.backend, k, results))
    child.start()
    outcome = results.get(timeout=60)
    child.join(60)
    if opened.name == "memory":
        # memory:// serves one process: the child is refused instead of getting its own copy.
        assert outcome[0] == "not supported" and "sqlite://" in outcome[1]
        assert opened.run(lambda b: b.incr(k)) == 2
        return
    assert outcome == ("ok", 2)  # the child opened its own connection to the same data
    assert opened.run(lambda b: b.incr(k)) == 3  # the parent's are intact


# -- sqlite:// waits for the write lock without blocking the loop -----------------------------------


def _holding_the_write_lock(path: Path) -> sqlite3.Connection:
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    return raw


def test_sqlite_wait_for_the_write_lock_is_awaited_and_times_out_unapplied(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    backend = async_backend_from_url(f"sqlite:///{path}?timeout=0.4")

    async def scenario() -> None:
        assert await backend.incr("n") == 1
        raw = _holding_the_write_lock(path)
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            await backend.incr("n")
        assert 0.4 <= time.monotonic() - started < 2.0
        assert info.value.applied is False
        raw.execute("ROLLBACK")
        raw.close()
        assert await backend.incr("n") == 2  # the one that timed out was not applied

    worst, worst_wall, _ = asyncio.run(_probe_while(scenario()))
    assert worst < LAG_BOUND, f"the loop was blocked {worst * 1000:.1f} ms (wall {worst_wall * 1000:.1f} ms)"


def test_sqlite_cancelled_while_waiting_leaves_nothing_half_done(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    backend = async_backend_from_url(f"sqlite:///{path}")

    async def scenario() -> None:
        assert await backend.incr("n") == 1
        raw = _holding_the_write_lock(path)
        waiting = asyncio.create_task(backend.incr("n"))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # waiting for the lock, without holding up this task
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        raw.execute("ROLLBACK")
        raw.close()
        # The loop's connection is not left inside a transaction, and nothing was applied.
        assert await backend.incr("n") == 2
        assert await backend.compare_and_set("other", None, b"x") is not None

    asyncio.run(scenario())


# -- a frozen server -------------------------------------------------------------------------------


Frozen = tuple[AsyncBackend, FreezeProxy]


@pytest.fixture(params=["redis", "postgresql", "memcached"])
def frozen_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Frozen]:
    url = servers.backend_url(request.param, tmp_path)
    parts = urlsplit(url)
    default_port = {"redis": 6379, "postgresql": 5432, "memcached": 11211}[request.param]
    proxy = FreezeProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        proxied = through_proxy(url, proxy)
        yield open_async(request.param, proxied), proxy
    finally:
        proxy.close()


@pytest.mark.timeout(60)
def test_a_frozen_server_fails_in_time_with_applied_and_never_blocks_the_loop(
    frozen_setup: Frozen, namespace: str
) -> None:
    backend, proxy = frozen_setup
    key = f"{namespace}/n"

    async def scenario() -> None:
        assert await backend.incr(key) == 1  # a pooled connection is open and idle
        with proxy.frozen():
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                await backend.get(key)
            elapsed = time.monotonic() - started
            assert elapsed < FROZEN_TIMEOUT + FROZEN_MARGIN, f"{elapsed:.1f}s on a frozen server"
            assert info.value.applied is None  # sent, no reply: unknown
            assert isinstance(info.value.__cause__, Exception)
        await asyncio.sleep(0.5)  # the held request is answered late, on a connection now closed
        assert await backend.incr(key) == 2
        await backend.aclose()

    worst, worst_wall, _ = asyncio.run(_probe_while(scenario()))
    assert worst < LAG_BOUND, f"the loop was blocked {worst * 1000:.1f} ms (wall {worst_wall * 1000:.1f} ms)"


# -- the registry ----------------------------------------------------------------------------------


def _scheme() -> str:
    return "t" + uuid.uuid4().hex[:12]


def test_registry_knows_every_builtin_scheme_from_the_classes() -> None:
    assert {"memory", "sqlite", "redis", "rediss", "postgresql", "postgres", "memcached", "lmdb"} <= set(
        known_schemes()
    )
    assert isinstance(async_backend_from_url("memory://"), AsyncMemoryBackend)


def test_register_backend_with_an_async_factory() -> None:
    scheme = _scheme()
    register_backend(scheme, lambda url: MemoryBackend(), lambda url: AsyncMemoryBackend(MemoryBackend()))
    assert isinstance(backend_from_url(f"{scheme}://"), MemoryBackend)
    backend = async_backend_from_url(f"{scheme}://")
    assert isinstance(backend, AsyncMemoryBackend)
    assert asyncio.run(backend.incr("n")) == 1
    assert scheme in known_schemes()


def test_register_backend_by_module_path_too() -> None:
    scheme = _scheme()
    register_backend(
        scheme, "sharedstate.backends.memory:MemoryBackend", "sharedstate.backends.memory:AsyncMemoryBackend"
    )
    assert isinstance(async_backend_from_url(f"{scheme}://"), AsyncMemoryBackend)


def test_a_scheme_without_an_async_backend_is_refused_clearly() -> None:
    scheme = _scheme()
    register_backend(scheme, lambda url: MemoryBackend())
    with pytest.raises(NotSupportedError, match="async_factory"):
        async_backend_from_url(f"{scheme}://")
    missing = _scheme()
    register_backend(
        missing, "sharedstate.backends.memory:MemoryBackend", "sharedstate.backends.memory:NoSuchBackend"
    )
    with pytest.raises(NotSupportedError, match="NoSuchBackend"):
        async_backend_from_url(f"{missing}://")
    assert isinstance(backend_from_url(f"{missing}://"), MemoryBackend)  # the sync one still opens


def test_a_scheme_clash_is_an_error() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backend("sqlite", lambda url: MemoryBackend())
    scheme = _scheme()
    register_backend(scheme, lambda url: MemoryBackend())
    with pytest.raises(ValueError, match="already registered"):
        register_backend(scheme, lambda url: MemoryBackend())
    assert isinstance(backend_from_url("sqlite:///x.db"), backend_from_url("sqlite:///y.db").__class__)


def test_a_backend_whose_driver_is_missing_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # makes 'import psycopg' raise ImportError
        "from sharedstate.backends import async_backend_from_url, backend_from_url\n"
        "for open_url in (backend_from_url, async_backend_from_url):\n"
        "    try:\n"
        "        open_url('postgresql://user:secret@localhost/db')\n"
        "    except ValueError as exc:\n"
        "        assert isinstance(exc.__cause__, ImportError), exc\n"
        "        print(exc)\n"
        "print(async_backend_from_url('memory://').describe())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[2] == "memory://"
    for line in lines[:2]:
        assert "pip install 'sharedstate[postgres]'" in line and "secret" not in line


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unknown store URL scheme"):
        async_backend_from_url("nosuchscheme://x")


# -- the event loop is never blocked ---------------------------------------------------------------

LAG_PERIOD = 0.005
LAG_BOUND = 0.050
HAMMERERS = 4
HAMMER_SECONDS = 2.5
# Each hammering process also holds the write lock for this long now and then, as a long
# transaction of another program (or a WAL checkpoint) does: a backend that waited for the lock
# by blocking the loop would then miss the bound by far.
HOLD_SECONDS = 0.15
HOLD_EVERY = 0.6


def _hammer(url: str, path: str, key: str, until: float) -> None:
    """A spawned process: incr and compare-and-set on one key as fast as it can, until ``until``;
    every ``HOLD_EVERY`` seconds it holds the write lock for ``HOLD_SECONDS``."""
    os.nice(5)  # the probe's lateness must come from its own loop, not from losing the CPU to us
    backend = backend_from_url(url)
    raw = sqlite3.connect(path, isolation_level=None, timeout=30)
    next_hold = time.monotonic() + HOLD_EVERY * (0.5 + os.getpid() % 4 / 4)
    while time.monotonic() < until:
        backend.incr(key)
        entry = backend.get(key)
        if entry is not None:
            backend.compare_and_set(key, entry.version, as_int(entry.value) + 1)
        if time.monotonic() >= next_hold:
            raw.execute("BEGIN IMMEDIATE")
            time.sleep(HOLD_SECONDS)
            raw.execute("COMMIT")
            next_hold = time.monotonic() + HOLD_EVERY
    backend.close()


def _waiting_for_cpu() -> float:
    """Seconds this thread has spent runnable but not running (Linux schedstat; 0 elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def _probe_while(work: Awaitable[T]) -> tuple[float, float, T]:
    """Run ``work`` next to a task that sleeps ``LAG_PERIOD`` at a time.

    Returns the worst lateness of a wake-up caused by the loop being busy (the wall-clock
    lateness less the time the thread waited for a CPU meanwhile: the machine is shared, and a
    process that is not scheduled is late through no fault of its loop), the worst wall-clock
    lateness, and ``work``'s result.
    """
    worst = worst_wall = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal worst, worst_wall
        while not done.is_set():
            before, queued = time.monotonic(), _waiting_for_cpu()
            await asyncio.sleep(LAG_PERIOD)
            late = time.monotonic() - before - LAG_PERIOD
            worst_wall = max(worst_wall, late)
            worst = max(worst, late - (_waiting_for_cpu() - queued))

    prober = asyncio.create_task(probe())
    await asyncio.sleep(LAG_PERIOD * 2)
    try:
        result = await work
    finally:
        done.set()
        await prober
    return worst, worst_wall, result


def _lag_under_contention(path: Path, key: str) -> tuple[float, float]:
    """One run of the probe next to 4 tasks and 4 spawned processes contending for ``key``."""
    url = f"sqlite:///{path}"
    backend = async_backend_from_url(url)
    assert asyncio.run(backend.incr(key)) == 1  # the file and table exist before the others start
    ctx = mp.get_context("spawn")
    until = time.monotonic() + HAMMER_SECONDS + 3.0  # spawning takes a while; the probe ends first
    hammerers = [ctx.Process(target=_hammer, args=(url, str(path), key, until)) for _ in range(HAMMERERS)]
    for p in hammerers:
        p.start()

    async def contend() -> int:
        async def incr_and_cas() -> int:
            done = 0
            stop = time.monotonic() + HAMMER_SECONDS
            while time.monotonic() < stop:
                await backend.incr(key)
                entry = await backend.get(key)
                if entry is not None:
                    await backend.compare_and_set(key, entry.version, as_int(entry.value) + 1)
                done += 1
            return done

        await asyncio.sleep(1.5)  # let the hammering start
        return sum(await asyncio.gather(*(incr_and_cas() for _ in range(4))))

    try:
        worst, worst_wall, operations = asyncio.run(_probe_while(contend()))
    finally:
        for p in hammerers:
            p.join(60)
    assert all(p.exitcode == 0 for p in hammerers)
    assert operations > 0
    return worst, worst_wall


def test_loop_lag_under_four_contending_processes_on_sqlite(tmp_path: Path, namespace: str) -> None:
    # A second run only if the first missed: the shared machine's disk can stall any process for
    # a moment (seen once in ~30 runs, under a load average of 7), while a backend that blocks its
    # loop on the lock misses every run by far (measured 659 ms with time.sleep for the waits).
    runs = []
    for attempt in range(2):
        worst, worst_wall = _lag_under_contention(tmp_path / f"lag{attempt}.sqlite3", f"{namespace}/n")
        runs.append(f"{worst * 1000:.1f} ms (wall clock, CPU waits included: {worst_wall * 1000:.1f} ms)")
        if worst < LAG_BOUND:
            return
    pytest.fail(f"the event loop was blocked: a 5 ms wake-up came late by {' then '.join(runs)}")
