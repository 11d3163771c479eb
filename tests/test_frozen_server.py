"""A frozen server (stopped, not closed) makes every server backend fail within its timeout.

Each test talks to the real server through :class:`~tests.freeze_proxy.FreezeProxy`, which keeps
connections open but stops relaying, as a ``SIGSTOP``-ed server does. A call made while frozen
raises ``BackendUnavailableError`` within ``timeout`` plus a margin, saying ``applied=None`` when
its request had been sent. After the thaw the same store works again, and the reply to the call
made while frozen, delivered late, is never taken for the reply to a later call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sharedstate import Store
from sharedstate.errors import BackendUnavailableError
from tests import servers
from tests.freeze_proxy import FreezeProxy

TIMEOUT = 1.0
# The machine is shared by several test runs: only a gross overrun (a call that blocks) fails.
MARGIN = 1.5
SERVER_BACKENDS = ["redis", "postgresql", "memcached"]


def _through(url: str, proxy: FreezeProxy) -> str:
    """``url`` with its host and port replaced by the proxy's, and ``timeout`` set."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    query = f"{parts.query}&timeout={TIMEOUT}" if parts.query else f"timeout={TIMEOUT}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@pytest.fixture(params=SERVER_BACKENDS)
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, FreezeProxy]]:
    url = servers.backend_url(request.param, tmp_path)
    parts = urlsplit(url)
    default_port = {"redis": 6379, "postgresql": 5432, "memcached": 11211}[request.param]
    proxy = FreezeProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        yield _through(url, proxy), proxy
    finally:
        proxy.close()


def _frozen_call_fails_in_time(call: object) -> BackendUnavailableError:
    assert callable(call)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + MARGIN, f"a call on a frozen server took {elapsed:.1f}s (timeout={TIMEOUT}s)"
    return info.value


@pytest.mark.timeout(60)
@pytest.mark.timing
def test_frozen_server_fails_within_the_timeout_and_recovers(proxied: tuple[str, FreezeProxy]) -> None:
    url, proxy = proxied
    with Store(url, namespace=f"frozen{servers.RUN_ID}{uuid.uuid4().hex[:8]}") as store:
        store.set("a", "value-a")
        store.set("b", "value-b")
        assert store.incr("n") == 1  # a pooled connection is open and idle

        with proxy.frozen():
            # Sent on the idle pooled connection; the reply never comes.
            error = _frozen_call_fails_in_time(lambda: store.get("a"))
            assert error.applied is None
            assert isinstance(error.__cause__, Exception)
            # A write while frozen: unknown if it was sent, not applied if connecting hung.
            error = _frozen_call_fails_in_time(lambda: store.incr("n"))
            assert error.applied is not True

        time.sleep(0.5)  # the held requests reach the server now, and their late replies come back
        # The reply to get("a") must not be read as the reply to get("b"), nor the frozen incr's
        # as the reply to incr("m"): the connections they were sent on were closed.
        assert store.get("b") == "value-b"
        assert store.incr("m") == 1
        assert store.get("a") == "value-a"
        assert store.get("n") in (1, 2)  # the frozen incr: applied late, or never sent


@pytest.mark.timeout(60)
@pytest.mark.timing
def test_every_call_fails_in_time_during_a_long_freeze(proxied: tuple[str, FreezeProxy]) -> None:
    """Calls keep failing within the timeout while frozen (new connections hang too)."""
    url, proxy = proxied
    with Store(url, namespace=f"frozen{servers.RUN_ID}{uuid.uuid4().hex[:8]}") as store:
        store.set("k", 1)
        with proxy.frozen():
            for call in (lambda: store.get("k"), lambda: store.set("k", 2), lambda: store.get("k")):
                _frozen_call_fails_in_time(call)
        assert store.get("k") in (1, 2)
        store.set("k", 3)
        assert store.get("k") == 3


@pytest.mark.timeout(60)
def test_ping_and_batches_fail_in_time_while_frozen(proxied: tuple[str, FreezeProxy]) -> None:
    """A batch sent to a frozen server: unknown whether (or how much of) it was applied."""
    url, proxy = proxied
    with Store(url, namespace=f"frozen{servers.RUN_ID}{uuid.uuid4().hex[:8]}") as store:
        store.set_many({"a": 1, "b": 2})
        store.ping()
        with proxy.frozen():
            assert _frozen_call_fails_in_time(store.ping).applied is not True
            error = _frozen_call_fails_in_time(lambda: store.set_many({"a": 3, "b": 4}))
            assert error.applied is not True  # None if the batch was sent, False if not
        store.ping()
        assert store.get_many(["a", "b"]) in ({"a": 1, "b": 2}, {"a": 3, "b": 4})
        assert store.delete_many(["a", "b"]) == 2
