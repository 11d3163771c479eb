"""``AsyncRedisBackend`` and ``AsyncPostgresBackend``: the backend contract for asyncio, on real servers.

Each test builds its backend outside any event loop (as an app does at import time) and drives it
with ``asyncio.run``, so every test also checks that the backend connects lazily. Keys carry a
prefix of the test's own (Redis, deleted afterwards); PostgreSQL tests get a table of their own
(dropped afterwards). Processes are spawned, as uvicorn and gunicorn workers are, or forked where
fork safety is the point.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from sharedstate.backends.base import AsyncBackend
from sharedstate.errors import BackendUnavailableError
from tests import servers
from tests.freeze_proxy import FreezeProxy
from tests.test_frozen_server import MARGIN, TIMEOUT, _through

redis = pytest.importorskip("redis")
psycopg = pytest.importorskip("psycopg")
from sharedstate.backends.postgres import AsyncPostgresBackend, PostgresBackend  # noqa: E402
from sharedstate.backends.redis import AsyncRedisBackend, RedisBackend  # noqa: E402

T = TypeVar("T")
SERVERS = ["redis", "postgresql"]
INT64_MAX = 2**63 - 1


def _open(url: str) -> AsyncBackend:
    """The async backend for ``url`` (until the async registry lands: by scheme, directly)."""
    if url.startswith(("redis://", "rediss://")):
        return AsyncRedisBackend.from_url(url)
    return AsyncPostgresBackend.from_url(url)


def _sync_twin(url: str) -> RedisBackend | PostgresBackend:
    if url.startswith(("redis://", "rediss://")):
        return RedisBackend.from_url(url)
    return PostgresBackend.from_url(url)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of the server with a table of this test's own (PostgreSQL); cleaned up afterwards."""
    url = servers.backend_url(request.param, tmp_path)
    if request.param == "redis":
        yield url
        return
    table = f"sharedstate_a{servers.RUN_ID}_{uuid.uuid4().hex[:8]}"
    base = url.split("?", 1)[0]
    yield f"{base}?table={table}"
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.fixture
def prefix(server_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its Redis keys are deleted afterwards."""
    name = f"a{servers.RUN_ID}{uuid.uuid4().hex[:8]}/"
    yield name
    if server_url.startswith("redis"):
        twin = _sync_twin(server_url)
        for key in list(twin.scan(name)):
            twin.delete(key)
        twin.close()


# -- the contract ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_contract(server_url: str, prefix: str) -> None:
    backend = _open(server_url)  # no loop here: must not connect yet
    k = prefix + "k"

    async def check() -> None:
        assert await backend.get(k) is None
        await backend.set(k, b"one")
        entry = await backend.get(k)
        assert entry is not None and entry.value == b"one"
        assert not await backend.add(k, b"two")
        assert await backend.add(prefix + "new", b"x", ttl=30)

        # compare-and-set: a refusal carries the live entry, a success the entry written
        refused = await backend.compare_and_set(k, None, b"no")
        assert not refused.stored and refused.entry == entry
        stored = await backend.compare_and_set(k, entry.version, b"three", ttl=30)
        assert stored.stored and stored.entry is not None and stored.entry.value == b"three"
        stale = await backend.compare_and_set(k, entry.version, b"four")
        assert not stale.stored and stale.entry == stored.entry
        created = await backend.compare_and_set(prefix + "absent", None, b"v")
        assert created.stored
        live = await backend.get(k)
        assert live == stored.entry

        # delete_if_version refuses an old version, accepts the live one
        assert not await backend.delete_if_version(k, entry.version)
        assert await backend.delete_if_version(k, live.version)
        assert await backend.get(k) is None
        assert not await backend.delete(k)
        await backend.set(k, b"x")
        assert await backend.delete(k)

        # incr: starts at 0, int64 bounds, TypeError on a non-integer (left unchanged)
        n = prefix + "n"
        assert await backend.incr(n) == 1
        assert await backend.incr(n, 41, ttl=30) == 42
        assert await backend.incr(n, -2) == 40
        await backend.set(n, INT64_MAX)
        with pytest.raises(OverflowError):
            await backend.incr(n)
        with pytest.raises(OverflowError):
            await backend.incr(prefix + "m", 2**63)
        got = await backend.get(n)
        assert got is not None and int(got.value) == INT64_MAX
        await backend.set(k, b"text")
        with pytest.raises(TypeError):
            await backend.incr(k)
        got = await backend.get(k)
        assert got is not None and got.value == b"text"

        # touch: new expiry, or none; False for an absent key
        assert await backend.touch(k, 0.2)
        assert await backend.touch(prefix + "new", None)
        assert not await backend.touch(prefix + "nothing", 5)
        await asyncio.sleep(0.5)
        assert await backend.get(k) is None
        assert await backend.get(prefix + "new") is not None

        # an expired entry is absent for every operation
        await backend.set(prefix + "e", b"x", ttl=0.05)
        await asyncio.sleep(0.2)
        assert await backend.add(prefix + "e", b"y")
        await backend.set(prefix + "c", 5, ttl=0.05)
        await asyncio.sleep(0.2)
        assert await backend.incr(prefix + "c") == 1

        # scan: the live keys under a prefix, each once, prefix characters taken literally
        await backend.set(prefix + "s*[x]/1", b"1")
        await backend.set(prefix + "s*[x]/2", b"2")
        await backend.set(prefix + "sa/3", b"3")
        assert sorted([key async for key in backend.scan(prefix + "s*[x]/")]) == [
            prefix + "s*[x]/1",
            prefix + "s*[x]/2",
        ]
        assert await backend.sweep() >= 0
        await backend.aclose()

    asyncio.run(check())


@pytest.mark.timeout(60)
def test_async_and_sync_classes_share_the_same_data(server_url: str, prefix: str) -> None:
    """The same URL, keys and versions: a sync app and an async app can share one store."""
    backend, twin = _open(server_url), _sync_twin(server_url)
    twin.set(prefix + "k", b"from sync")
    entry = _run(lambda: backend.get(prefix + "k"))
    assert entry == twin.get(prefix + "k")
    assert entry is not None
    result = _run(lambda: backend.compare_and_set(prefix + "k", entry.version, b"from async"))
    assert result.stored and twin.get(prefix + "k") == result.entry
    twin.incr(prefix + "n", 5)
    assert _run(lambda: backend.incr(prefix + "n")) == 6
    twin.close()


@pytest.mark.timeout(60)
def test_scan_sees_more_than_one_batch(server_url: str, prefix: str) -> None:
    backend = _open(server_url)

    async def fill_and_scan() -> list[str]:
        for start in range(0, 1200, 100):
            await asyncio.gather(*(backend.set(f"{prefix}{i:04}", b"x") for i in range(start, start + 100)))
        keys = [key async for key in backend.scan(prefix)]
        await backend.aclose()
        return keys

    keys = asyncio.run(fill_and_scan())
    assert sorted(keys) == [f"{prefix}{i:04}" for i in range(1200)]


# -- event loops, fork, processes ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_one_instance_serves_event_loops_in_turn(server_url: str, prefix: str) -> None:
    """Two ``asyncio.run`` calls with one instance: with and without ``aclose`` in between."""
    backend = _open(server_url)

    async def one() -> int:  # returns at once, while the new pool may still be connecting
        return await backend.incr(prefix + "n")

    # Each loop ends without aclose; the next one gets a pool of its own. asyncio.run cancels
    # the pool's tasks when its loop ends: it must not hang on one that is connecting.
    assert [asyncio.run(one()) for _ in range(8)] == list(range(1, 9))

    async def many() -> list[int]:
        return list(await asyncio.gather(*(backend.incr(prefix + "n") for _ in range(20))))

    assert sorted(asyncio.run(many()) + asyncio.run(many())) == list(range(9, 49))

    async def use_and_close() -> int:
        value = await backend.incr(prefix + "n")
        await backend.aclose()
        return value

    assert asyncio.run(use_and_close()) == 49
    assert asyncio.run(use_and_close()) == 50  # aclose, then reuse


@pytest.mark.timeout(60)
@pytest.mark.timing
def test_two_loops_at_once_in_two_threads(server_url: str, prefix: str) -> None:
    """Loops running at the same time never get each other's connections."""
    import threading

    backend = _open(server_url)
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        async def many() -> list[int]:
            values = await asyncio.gather(*(backend.incr(prefix + "n") for _ in range(50)))
            await backend.aclose()
            return values

        try:
            results.extend(asyncio.run(many()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert not errors
    assert sorted(results) == list(range(1, 101))


def _count_in_tasks(url: str, key: str, tasks: int, times: int, queue: Any) -> None:
    """A worker process: ``tasks`` asyncio tasks, each incrementing ``key`` ``times`` times."""
    backend = _open(url)

    async def main() -> list[int]:
        async def one() -> list[int]:
            return [await backend.incr(key) for _ in range(times)]

        batches = await asyncio.gather(*(one() for _ in range(tasks)))
        await backend.aclose()
        return [value for batch in batches for value in batch]

    queue.put(asyncio.run(main()))


@pytest.mark.timeout(180)
def test_exact_counts_from_tasks_in_several_processes(server_url: str, prefix: str) -> None:
    processes, tasks, times = 4, 16, 10
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_count_in_tasks, args=(server_url, prefix + "n", tasks, times, queue))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    values = [value for _ in workers for value in queue.get(timeout=150)]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    total = processes * tasks * times
    assert sorted(values) == list(range(1, total + 1))  # every value returned once: none lost
    final = _run(lambda: _open(server_url).get(prefix + "n"))
    assert final is not None and int(final.value) == total


def _incr_in_child(backend: AsyncBackend, key: str, times: int, queue: Any) -> None:
    async def main() -> list[int]:
        values = [await backend.incr(key) for _ in range(times)]
        await backend.aclose()
        return values

    queue.put(asyncio.run(main()))


@pytest.mark.timeout(90)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_never_uses_the_parents_connections(server_url: str, prefix: str) -> None:
    """The parent keeps its loop and an open connection; a forked child uses the same instance."""
    backend = _open(server_url)
    key = prefix + "n"
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(backend.incr(key)) == 1  # the parent's pool holds a connection
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            children = [ctx.Process(target=_incr_in_child, args=(backend, key, 100, queue)) for _ in range(2)]
            for child in children:
                child.start()

        async def parent_side() -> list[int]:
            return [await backend.incr(key) for _ in range(100)]

        mine = loop.run_until_complete(parent_side())
        theirs = [value for _ in children for value in queue.get(timeout=60)]
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert sorted([1, *mine, *theirs]) == list(range(1, 302))
        assert loop.run_until_complete(backend.incr(key)) == 302  # the parent's connection still works
        loop.run_until_complete(backend.aclose())
    finally:
        loop.close()


# -- a server that stops answering ---------------------------------------------------------------


@pytest.fixture
def proxied(server_url: str) -> Iterator[tuple[str, FreezeProxy]]:
    parts = urlsplit(server_url)
    default_port = 6379 if server_url.startswith("redis") else 5432
    proxy = FreezeProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        yield _through(server_url, proxy), proxy
    finally:
        proxy.close()


async def _fails_in_time(call: Callable[[], Awaitable[object]]) -> BackendUnavailableError:
    """Await ``call`` on a frozen server: it must raise in time, and the loop keep running."""
    lags: list[float] = []

    async def probe() -> None:  # wakes every 5 ms; a blocked loop shows as a late wake-up
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    ticker = asyncio.create_task(probe())
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailableError) as info:
            await call()
    finally:
        ticker.cancel()
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + MARGIN, f"a call on a frozen server took {elapsed:.1f}s (timeout={TIMEOUT}s)"
    assert lags and max(lags) < 0.5, f"the event loop was blocked for {max(lags or [0]):.2f}s"
    return info.value


@pytest.mark.timeout(60)
@pytest.mark.timing
def test_frozen_server_fails_within_the_timeout_and_recovers(
    proxied: tuple[str, FreezeProxy], prefix: str
) -> None:
    url, proxy = proxied
    backend = _open(url)

    async def scenario() -> None:
        await backend.set(prefix + "a", b"value-a")
        await backend.set(prefix + "b", b"value-b")
        assert await backend.incr(prefix + "n") == 1  # a pooled connection is open and idle

        with proxy.frozen():
            error = await _fails_in_time(lambda: backend.get(prefix + "a"))
            assert error.applied is None  # sent on the idle connection; no reply
            assert isinstance(error.__cause__, Exception)
            error = await _fails_in_time(lambda: backend.incr(prefix + "n"))
            assert error.applied is not True

        await asyncio.sleep(0.5)  # the held requests reach the server; their late replies come back
        # A late reply is never read as the reply to a later call: those connections were closed.
        got = await backend.get(prefix + "b")
        assert got is not None and got.value == b"value-b"
        assert await backend.incr(prefix + "m") == 1
        got = await backend.get(prefix + "a")
        assert got is not None and got.value == b"value-a"
        got = await backend.get(prefix + "n")
        assert got is not None and int(got.value) in (1, 2)
        await backend.aclose()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
@pytest.mark.timing
def test_every_call_fails_in_time_during_a_long_freeze(proxied: tuple[str, FreezeProxy], prefix: str) -> None:
    url, proxy = proxied
    backend = _open(url)

    async def scenario() -> None:
        await backend.set(prefix + "k", 1)
        with proxy.frozen():
            for call in (
                lambda: backend.get(prefix + "k"),
                lambda: backend.set(prefix + "k", 2),
                lambda: backend.get(prefix + "k"),
            ):
                await _fails_in_time(call)
        await backend.set(prefix + "k", 3)
        got = await backend.get(prefix + "k")
        assert got is not None and int(got.value) == 3
        await backend.aclose()

    asyncio.run(scenario())


# -- errors say whether the operation was applied ------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheme", SERVERS)
def test_nothing_listening_fails_fast_with_applied_false(scheme: str) -> None:
    port = servers.free_port()
    url = (
        f"redis://127.0.0.1:{port}/0?timeout=2"
        if scheme == "redis"
        else f"postgresql://postgres@127.0.0.1:{port}/test?timeout=2"
    )
    backend = _open(url)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        _run(lambda: backend.get("k"))
    assert time.monotonic() - started < 2 + MARGIN
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, (redis.RedisError, OSError, psycopg.Error))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server_url", ["redis"], indirect=True)
def test_redis_connection_the_server_closed_is_replaced(prefix: str, server_url: str) -> None:
    backend = _open(server_url)
    raw = redis.Redis.from_url(server_url)

    async def scenario() -> None:
        await backend.set(prefix + "k", b"v")
        # Have the server close our idle pooled connection (only ours: the server is shared).
        assert isinstance(backend, AsyncRedisBackend)
        (pool,) = backend._pools.values()
        host, port = pool._idle[-1]._writer.get_extra_info("sockname")[:2]
        assert raw.client_kill(f"{host}:{port}")
        await asyncio.sleep(0.2)  # the loop reads the end of stream
        got = await backend.get(prefix + "k")  # on a new connection, not an error
        assert got is not None and got.value == b"v"
        await backend.aclose()

    try:
        asyncio.run(scenario())
    finally:
        raw.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server_url", ["redis"], indirect=True)
def test_redis_connection_closed_while_the_loop_was_busy_is_replaced(prefix: str, server_url: str) -> None:
    """The server closes an idle connection while the loop runs no callbacks (a restart during a
    blocking call): the end of stream is still in the kernel, not yet read by the loop, and the
    next call must still get a fresh connection, not a "connection broke" error."""
    backend = _open(server_url)
    raw = redis.Redis.from_url(server_url)

    async def scenario() -> None:
        await backend.set(prefix + "k", b"v")
        assert isinstance(backend, AsyncRedisBackend)
        (pool,) = backend._pools.values()
        host, port = pool._idle[-1]._writer.get_extra_info("sockname")[:2]
        assert raw.client_kill(f"{host}:{port}")
        time.sleep(0.2)  # blocks the loop: the FIN arrives, the loop does not read it
        got = await backend.get(prefix + "k")
        assert got is not None and got.value == b"v"
        await backend.aclose()

    try:
        asyncio.run(scenario())
    finally:
        raw.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server_url", ["redis"], indirect=True)
def test_redis_errors_carry_the_outcome(prefix: str, server_url: str) -> None:
    backend = _open(server_url.rsplit("/", 1)[0] + "/99")  # the server has 16 databases
    with pytest.raises(BackendUnavailableError) as info:
        _run(lambda: backend.get("k"))
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, redis.ResponseError)

    good = _open(server_url)
    raw = redis.Redis.from_url(server_url)
    try:
        raw.lpush(prefix + "list", b"x")  # a Redis type sharedstate never writes
        for call in (lambda: good.get(prefix + "list"), lambda: good.incr(prefix + "list")):
            with pytest.raises(TypeError):
                _run(call)
        raw.script_flush()  # a lost script cache: the scripts are sent again, once
        result = _run(lambda: good.compare_and_set(prefix + "c", None, b"v"))
        assert result.stored
    finally:
        raw.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server_url", ["redis"], indirect=True)
def test_redis_bounded_pool_serves_many_tasks(prefix: str, server_url: str) -> None:
    backend = _open(f"{server_url}?max_connections=2")

    async def scenario() -> list[int]:
        values = await asyncio.gather(*(backend.incr(prefix + "n") for _ in range(200)))
        await backend.aclose()
        return list(values)

    assert sorted(asyncio.run(scenario())) == list(range(1, 201))


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1/x",
        "redis://127.0.0.1/0?db=1",
        "redis://127.0.0.1/0?max_connections=0",
        "redis://127.0.0.1/0?timeout=-1",
        "redis://127.0.0.1/0?nonsense=1",
        "rediss://127.0.0.1/0?ssl_cert_reqs=maybe",
        "postgresql://u@h/db?table=Bad-Name",
        "postgresql://u@h/db?pool_size=0",
        "postgresql://u@h/db?timeout=abc",
        "postgresql://u@h/db?nonsense=1",
    ],
)
def test_urls_are_validated_as_the_sync_class_does(url: str) -> None:
    with pytest.raises((ValueError, TypeError)) as sync_error:
        _sync_twin(url)
    with pytest.raises(type(sync_error.value)) as async_error:
        _open(url)
    assert str(async_error.value) == str(sync_error.value)


# -- PostgreSQL specifics --------------------------------------------------------------------------


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    return servers.backend_url("postgresql", tmp_path).split("?", 1)[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["database", "role"])
def test_postgres_missing_database_or_role_fails_at_once_with_one_log_line(
    pg_url: str, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg_url)
    if what == "database":
        url = parts._replace(path=f"/nodb_{servers.RUN_ID}").geturl()
    else:
        netloc = f"norole_{servers.RUN_ID}:s3cret-pw@{parts.hostname}:{parts.port or 5432}"
        url = parts._replace(netloc=netloc).geturl()
    caplog.set_level(logging.DEBUG)
    backend = _open(f"{url}?timeout=4")

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            await backend.get("k")
        elapsed = time.monotonic() - started
        assert info.value.applied is False
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        await asyncio.sleep(0.5)  # anything the pool's tasks would still log
        await backend.aclose()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 1.5, f"took {elapsed:.1f}s: waited out the timeout instead of failing at once"
    warnings_logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings_logged) <= 1, [r.getMessage() for r in warnings_logged]
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]
    assert "s3cret-pw" not in caplog.text


@pytest.mark.timeout(60)
def test_postgres_creates_its_table_or_says_how(pg_url: str) -> None:
    table = f"sharedstate_a{servers.RUN_ID}_{uuid.uuid4().hex[:8]}"
    refusing = _open(f"{pg_url}?table={table}&create_table=false")
    with pytest.raises(BackendUnavailableError) as info:
        _run(lambda: refusing.set("k", b"v"))
    assert info.value.applied is False
    assert "create_table=false" in str(info.value)
    creating = _open(f"{pg_url}?table={table}")
    try:
        _run(lambda: creating.set("k", b"v"))  # creates the table, then writes
        assert _run(lambda: refusing.get("k")) is not None
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.timeout(60)
def test_postgres_session_the_server_ended_is_replaced(pg_url: str) -> None:
    table = f"sharedstate_a{servers.RUN_ID}_{uuid.uuid4().hex[:8]}"
    backend = _open(f"{pg_url}?table={table}")

    async def scenario() -> None:
        await backend.set("k", b"v")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'sharedstate' AND pid <> pg_backend_pid()"
                " AND state = 'idle' AND query LIKE %s",
                (f'%"{table}"%',),
            )
        await asyncio.sleep(0.2)
        got = await backend.get("k")  # not an error: the dead session is noticed and replaced
        assert got is not None and got.value == b"v"
        assert await backend.incr("n") == 1
        await backend.aclose()

    try:
        asyncio.run(scenario())
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.timeout(60)
def test_postgres_lazy_sweep_is_proportional_to_writes(pg_url: str) -> None:
    table = f"sharedstate_a{servers.RUN_ID}_{uuid.uuid4().hex[:8]}"
    backend = _open(f"{pg_url}?table={table}")
    assert isinstance(backend, AsyncPostgresBackend)
    backend.sweep_every_writes = 10
    backend.sweep_batch = 1000

    def expired_rows() -> int:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(f'SELECT count(*) FROM "{table}" WHERE expires_at <= now()').fetchone()
            return int(row[0]) if row else 0

    async def write_expiring(count: int) -> None:
        for i in range(count):
            await backend.set(f"old{i}", b"x", ttl=0.01)

    try:
        _run(lambda: write_expiring(9))  # below the pace: no sweep yet
        time.sleep(0.1)
        assert expired_rows() == 9
        _run(lambda: backend.set("trigger", b"x"))  # the 10th write sweeps (up to 2 x 10 rows)
        assert expired_rows() == 0
        assert _run(lambda: write_expiring(5)) is None
        time.sleep(0.1)
        assert _run(lambda: backend.sweep(3)) == 3  # an explicit sweep, bounded by its limit
        assert expired_rows() == 2
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server_url", ["redis"], indirect=True)
def test_redis_call_cancelled_mid_reply_never_misreads_a_late_reply(
    proxied: tuple[str, FreezeProxy], prefix: str
) -> None:
    url, proxy = proxied
    backend = _open(url)

    async def scenario() -> None:
        await backend.set(prefix + "a", b"value-a")
        await backend.set(prefix + "b", b"value-b")
        with proxy.frozen():
            call = asyncio.create_task(backend.get(prefix + "a"))  # sent on the idle connection
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        await asyncio.sleep(0.3)  # the late reply to get(a) arrives
        got = await backend.get(prefix + "b")
        assert got is not None and got.value == b"value-b"
        await backend.aclose()

    asyncio.run(scenario())
