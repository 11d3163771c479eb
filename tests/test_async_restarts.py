"""Server restarts under the async API: one ``AsyncStore`` (one event loop) outlives its server.

The sync twins live in test_redis.py, test_postgres.py and test_memcached.py; these use the same
throwaway servers (their own process on a free port, never the shared ones), stop them under a
live ``AsyncStore`` and start them again on the same port, off the loop (``asyncio.to_thread``),
as a real restart happens while the app's loop runs. While the server is down every call raises
``BackendUnavailableError`` within its timeout, saying whether it was applied and chaining the
driver's error; once it is back, the same store works again (the pool replaces the connections
the server closed), including after a restart between two calls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharedstate import AsyncStore
from sharedstate.errors import BackendUnavailableError
from tests import servers

# Generous for a shared 2-core machine: a call that hangs (no timeout) fails, a slow one does not.
BOUND = 10.0


@dataclass
class Restartable:
    """One of the throwaway servers, seen through what these tests need."""

    url: str
    stop: Callable[[], None]
    start: Callable[[], None]
    keeps_data: bool  # PostgreSQL persists across a restart; redis (no persistence) and memcached do not
    lists_keys: bool


def _redis(tmp_path: Path) -> Iterator[Restartable]:
    pytest.importorskip("redis")
    from tests.test_redis import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield Restartable(server.url, server.shutdown, server.start, keeps_data=False, lists_keys=True)
    finally:
        server.kill()


def _postgresql(tmp_path: Path) -> Iterator[Restartable]:
    pytest.importorskip("psycopg")
    from tests.test_postgres import OwnPostgres

    server = OwnPostgres()
    try:
        server.init()
        server.start()
        url = f"{server.url}?timeout=2"
        yield Restartable(url, server.stop, server.start, keeps_data=True, lists_keys=True)
    finally:
        server.cleanup()


def _memcached(tmp_path: Path) -> Iterator[Restartable]:
    pytest.importorskip("pymemcache")
    from tests.test_memcached import OwnMemcached

    server = OwnMemcached()
    server.start()
    try:
        yield Restartable(server.url, server.stop, server.start, keeps_data=False, lists_keys=False)
    finally:
        server.stop()


@pytest.fixture(params=["redis", "postgresql", "memcached"])
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Restartable]:
    makers = {"redis": _redis, "postgresql": _postgresql, "memcached": _memcached}
    yield from makers[request.param](tmp_path)


def _namespace() -> str:
    return f"t{servers.RUN_ID}{uuid.uuid4().hex[:8]}"


async def _fails_in_time(call: Callable[[], Awaitable[object]]) -> BackendUnavailableError:
    """Await ``call()``: it must raise ``BackendUnavailableError`` within ``BOUND`` seconds."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        await asyncio.wait_for(call(), BOUND + 5)  # a hang fails here, not at the suite's timeout
    assert time.monotonic() - started < BOUND
    assert info.value.__cause__ is not None, "the driver's error is chained as the cause"
    return info.value


@pytest.mark.timeout(180)
def test_same_async_store_works_again_after_server_restart(own_server: Restartable) -> None:
    async def main() -> None:
        async with AsyncStore(own_server.url, namespace=_namespace()) as store:
            assert await store.incr("n") == 1
            await store.set("k", "v")
            counter = store.counter("c")
            assert await counter.incr() == 1

            await asyncio.to_thread(own_server.stop)
            reads: list[Callable[[], Awaitable[object]]] = [lambda: store.get("k"), counter.get]
            if own_server.lists_keys:
                reads.append(store.keys)
            writes: list[Callable[[], Awaitable[object]]] = [
                lambda: store.incr("n"),
                lambda: store.set("k", "w"),
                counter.incr,
                lambda: store.update("k", lambda v: v + "!", default=""),
                lambda: store.lock("L", ttl=5).acquire(timeout=1),
            ]
            for read in reads:
                assert (await _fails_in_time(read)).applied is False
            for write in writes:
                # Nothing listens: the connection is refused before anything is sent.
                assert (await _fails_in_time(write)).applied is False

            await asyncio.to_thread(own_server.start)
            # The same store, no restart of the app: the pool replaces the dead connections.
            if own_server.keeps_data:
                assert await store.get("k") == "v"
                assert await store.incr("n") == 2  # the failed incr above was not applied
                assert await counter.incr() == 2
            else:
                assert await store.get("k") is None
                assert await store.incr("n") == 1
                assert await counter.incr() == 1
            await store.set("k", "after")
            assert await store.get("k") == "after"
            async with store.lock("L", ttl=5, timeout=5):
                pass

            # A restart between two calls: the idle connections the server closed are noticed
            # and replaced, so the next calls succeed at their first attempt.
            n = await store.get("n")
            await asyncio.to_thread(own_server.stop)
            await asyncio.to_thread(own_server.start)
            if own_server.keeps_data:
                assert await store.incr("n") == n + 1
            else:
                assert await store.incr("n") == 1
            await store.set("k", "again")
            assert await store.get("k") == "again"

    asyncio.run(main())
