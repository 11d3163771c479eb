"""What is specific to ``redis://`` / ``rediss://`` (the shared suites cover the contract).

Most tests start a ``redis-server`` of their own on a free port, so they can stop, restart, pause,
require a password or speak TLS without disturbing the shared server on 6379.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sharedstate import Store
from sharedstate.backends import backend_from_url
from sharedstate.errors import BackendUnavailableError
from tests import servers
from tests.freeze_proxy import FreezeProxy

redis = pytest.importorskip("redis")
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from sharedstate.backends.redis import RedisBackend, version_of  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PASSWORD = "s3cret-pw"


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port (no persistence)."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        if not os.path.exists(REDIS_SERVER):
            servers.unavailable("redis-server is not installed")
        self.dir = tmp_path
        self.extra = extra
        self.port = servers.free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(
            [*args, "--dir", str(self.dir), *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        servers.wait_for_port(self.port)

    def command(self, *args: str) -> None:
        """Send one command on a fresh plain connection (used to shut down or pause)."""
        client = redis.Redis(
            port=self.port, password=self._password(), socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )
        try:
            client.execute_command(*args)
        finally:
            client.close()

    def _password(self) -> str | None:
        return PASSWORD if "--requirepass" in self.extra else None

    def shutdown(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(redis.ConnectionError):  # the server hangs up as it exits
            self.command("SHUTDOWN", "NOSAVE")
        self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def _namespace() -> str:
    return f"t{servers.RUN_ID}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def shared_redis_url() -> Iterator[str]:
    """The shared server's URL; keys the test leaves under this run's namespaces are removed."""
    if not servers.reachable(servers.REDIS_URL, 6379):
        servers.unavailable(f"Redis is not reachable at {servers.REDIS_URL}")
    yield servers.REDIS_URL
    raw = redis.Redis.from_url(servers.REDIS_URL)
    try:
        for key in raw.scan_iter(match=f"t{servers.RUN_ID}*", count=1000):
            raw.delete(key)
    finally:
        raw.close()


# -- URL parsing -----------------------------------------------------------------------------


def test_url_forms_reach_redis_py_settings() -> None:
    backend = RedisBackend.from_url("redis://user:p%40ss@db.example:6380/3?timeout=2")
    kwargs = backend._pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("db.example", 6380, 3)
    assert (kwargs["username"], kwargs["password"]) == ("user", "p@ss")
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 2.0
    assert backend._pool.connection_class is redis.Connection

    plain = RedisBackend.from_url("redis://localhost")
    assert plain._pool.connection_kwargs["db"] == 0
    assert plain._pool.connection_kwargs["socket_timeout"] == 5.0  # the bounded default
    assert RedisBackend.from_url("redis://localhost?db=4")._pool.connection_kwargs["db"] == 4

    tls = RedisBackend.from_url("rediss://localhost:6380/1?ssl_cert_reqs=none")
    assert tls._pool.connection_class is redis.SSLConnection
    assert tls._pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert isinstance(backend_from_url("rediss://localhost/0"), RedisBackend)


def test_password_is_masked_in_describe_and_repr() -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:6379/2"
    with Store(url) as store:  # opening does not connect
        assert store.backend.describe() == "redis://user:***@127.0.0.1:6379/2"
        assert PASSWORD not in repr(store)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis://:{PASSWORD}@localhost/0?tiemout=2", "known options: db, max_connections, timeout"),
        (f"redis://:{PASSWORD}@localhost/0?ssl_ca_certs=/ca.pem", "unknown option 'ssl_ca_certs'"),
        (f"redis://:{PASSWORD}@localhost/0?timeout=soon", "not a valid float"),
        (f"redis://:{PASSWORD}@localhost/0?timeout=0", "positive"),
        (f"redis://:{PASSWORD}@localhost/zero", "must be a database number"),
        (f"redis://:{PASSWORD}@localhost/1?db=2", "two databases"),
        (f"redis://:{PASSWORD}@localhost/0?max_connections=0", "at least 1"),
        (f"rediss://:{PASSWORD}@localhost/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        (f"redis://:{PASSWORD}@/0", "names no host"),
    ],
)
def test_bad_urls_are_refused_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        RedisBackend.from_url(url)
    assert PASSWORD not in str(info.value)


def test_db_number_selects_the_database(own_server: RedisServer) -> None:
    base = f"redis://127.0.0.1:{own_server.port}"
    with Store(f"{base}/3") as db3, Store(f"{base}/0") as db0, Store(f"{base}?db=3") as db3_too:
        db3.set("where", "db3")
        assert db0.get("where") is None
        assert db3_too.get("where") == "db3"
    raw = redis.Redis(port=own_server.port, db=3)
    assert raw.get("where") == b'"db3"'
    raw.close()


@pytest.mark.timeout(60)
def test_password_and_username_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--requirepass", PASSWORD)
    server.start()
    try:
        for url in (
            f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
            f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0",
        ):
            with Store(url, namespace=_namespace()) as store:
                assert store.incr("n") == 1
        wrong = f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0"
        with Store(wrong) as store, pytest.raises(BackendUnavailableError) as info:
            store.get("n")
        assert PASSWORD not in str(info.value)
        assert f"redis://:***@127.0.0.1:{server.port}/0" in str(info.value)
    finally:
        server.kill()


# -- failure behaviour -----------------------------------------------------------------------


def test_closed_port_fails_fast_with_masked_url() -> None:
    port = servers.free_port()  # nothing listens here
    url = f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"
    with Store(url) as store:
        for op in (lambda: store.get("k"), lambda: store.set("k", 1), lambda: store.incr("k")):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                op()
            assert time.monotonic() - started < 5
            message = str(info.value)
            assert PASSWORD not in message
            assert f"redis://user:***@127.0.0.1:{port}/0" in message
            assert info.value.applied is False
            assert isinstance(info.value.__cause__, redis.ConnectionError)


@pytest.mark.timeout(30)
def test_silent_server_fails_within_the_timeout() -> None:
    # A socket that accepts connections (the kernel completes the handshake) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        with Store(f"redis://127.0.0.1:{port}/0?timeout=1") as store:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                store.incr("k")
            assert time.monotonic() - started < 4  # 1 s timeout, generous slack for a busy machine
            # redis-py's connection setup (CLIENT SETINFO) got no reply, so INCRBY was never sent.
            assert info.value.applied is False


@pytest.mark.timeout(60)
def test_same_store_works_again_after_server_restart(own_server: RedisServer) -> None:
    with Store(own_server.url, namespace=_namespace()) as store:
        assert store.incr("hits") == 1
        store.set("greeting", "hello")
        assert store.get("greeting") == "hello"

        own_server.shutdown()
        for op in (lambda: store.incr("hits"), lambda: store.get("greeting"), lambda: store.keys()):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                op()
            assert time.monotonic() - started < 5

        own_server.start()  # same port; no persistence, so the data is gone
        assert store.get("greeting") is None
        assert store.incr("hits") == 1
        store.set("greeting", "back")
        assert store.get("greeting") == "back"
        entry = store.backend.get(store._keyspace.full_key("greeting"))
        assert entry is not None
        full = store._keyspace.full_key("greeting")
        assert store.backend.compare_and_set(full, entry.version, b'"again"').stored
        assert store.get("greeting") == "again"


@pytest.mark.timeout(60)
def test_lost_reply_is_reported_as_unknown_and_never_applied_twice(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--enable-debug-command", "local")
    server.start()
    try:
        with Store(f"{server.url}?timeout=0.5", namespace=_namespace()) as store:
            assert store.incr("n") == 1
            # Block the whole server for 1.5 s: our INCRBY waits in its socket, no reply comes.
            sleeper = threading.Thread(target=server.command, args=("DEBUG", "SLEEP", "1.5"))
            sleeper.start()
            time.sleep(0.2)
            with pytest.raises(BackendUnavailableError) as info:
                store.incr("n")
            assert info.value.applied is None
            assert "no reply within 0.5s" in str(info.value)
            assert isinstance(info.value.__cause__, redis.TimeoutError)
            sleeper.join(10)
            # The server ran the INCRBY it had received once it woke up: applied exactly once,
            # because nothing was retried behind the caller's back.
            assert store.get("n") == 2
            assert store.incr("n") == 3
    finally:
        server.kill()


@pytest.mark.timeout(60)
def test_script_cache_flush_is_survived(own_server: RedisServer) -> None:
    with Store(own_server.url, namespace=_namespace()) as store:
        full = store._keyspace.full_key("k")
        store.set("k", "a")
        entry = store.backend.get(full)
        assert entry is not None
        own_server.command("SCRIPT", "FLUSH")
        assert store.backend.compare_and_set(full, entry.version, b'"b"').stored
        assert store.get("k") == "b"


# -- TLS -------------------------------------------------------------------------------------


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        servers.unavailable("openssl is not installed")
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: object) -> None:
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
        "-subj", "/CN=sharedstate test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "1", "-extfile", ext)  # fmt: skip
    return ca, cert, key


@pytest.mark.timeout(60)
def test_rediss_speaks_tls_and_verifies_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = _make_certificates(tmp_path)
    tls_port = servers.free_port()
    server = RedisServer(tmp_path, "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                         "--tls-auth-clients", "no")  # fmt: skip
    server.start()
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        with Store(f"{url}?ssl_ca_certs={ca}", namespace=_namespace()) as store:
            assert store.incr("n") == 1
            assert store.incr("n") == 2
        with Store(f"{url}?ssl_cert_reqs=none", namespace=_namespace()) as unverified:
            assert unverified.incr("n") == 1  # encrypted, certificate not checked: opt-in only
        # Without our CA the server's certificate is not trusted: refused, not silently accepted.
        with Store(url) as untrusted, pytest.raises(BackendUnavailableError) as info:
            untrusted.get("n")
        assert info.value.applied is False
        # Plain redis:// to the TLS port is no substitute either.
        plain_url = f"redis://127.0.0.1:{tls_port}/0?timeout=2"
        with Store(plain_url) as plain, pytest.raises(BackendUnavailableError):
            plain.get("n")
    finally:
        server.kill()


# -- how values and versions live in Redis ---------------------------------------------------


def test_counters_are_native_redis_integers(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        raw = redis.Redis.from_url(shared_redis_url)
        try:
            store.set("n", 41)
            full = store._keyspace.full_key("n")
            assert raw.get(full) == b"41"
            assert raw.object("encoding", full) == b"int"
            assert raw.incr(full) == 42  # other Redis clients can count on it too
            assert store.incr("n") == 43
            assert store.get("n") == 43
            raw.set(store._keyspace.full_key("from_cli"), "7")
            assert store.get("from_cli") == 7
            assert store.counter("from_cli").incr() == 8
        finally:
            raw.close()


def test_versions_are_value_digests_with_documented_aba(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        backend, full = store.backend, store._keyspace.full_key("k")
        backend.set(full, b'"a"')
        entry = backend.get(full)
        assert entry is not None and entry.version == version_of(b'"a"')
        assert backend.touch(full, 60)
        assert backend.get(full) == entry  # touch keeps the version
        backend.set(full, b'"b"')
        assert not backend.compare_and_set(full, entry.version, b'"c"').stored
        # ABA, as the module docstring says: equal bytes, equal version.
        backend.set(full, b'"a"')
        assert backend.compare_and_set(full, entry.version, b'"c"').stored
        assert not backend.delete_if_version(full, entry.version)
        assert not backend.compare_and_set(full, 12345, b'"d"').stored  # not a digest: never matches
        assert store.get("k") == "c"


def test_incr_ttl_applies_only_when_created(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        raw = redis.Redis.from_url(shared_redis_url)
        try:
            assert store.incr("fresh", 5, ttl=100) == 5
            first = raw.pttl(store._keyspace.full_key("fresh"))
            assert 0 < first <= 100_000
            assert store.incr("fresh", 1, ttl=1000) == 6
            assert 0 < raw.pttl(store._keyspace.full_key("fresh")) <= first  # expiry not moved
            store.set("kept", 1)
            assert store.incr("kept", 1, ttl=100) == 2
            assert raw.pttl(store._keyspace.full_key("kept")) == -1  # an existing key keeps "no expiry"
            store.set("text", "x")
            with pytest.raises(TypeError, match="not an integer"):
                store.incr("text", 1, ttl=100)
            assert store.get("text") == "x" and raw.pttl(store._keyspace.full_key("text")) == -1
        finally:
            raw.close()


def test_touch_none_reports_keys_that_had_no_expiry(shared_redis_url: str) -> None:
    # Plain PERSIST answers 0 for a key without an expiry; touch must still say it exists.
    with Store(shared_redis_url, namespace=_namespace()) as store:
        store.set("forever", 1)
        assert store.touch("forever", None) is True
        assert store.touch("absent", None) is False
        assert store.get("absent") is None


def test_large_counters_keep_every_digit(shared_redis_url: str) -> None:
    # Lua numbers are doubles; incr must not pass through them (2**53 + 1 is not a double).
    with Store(shared_redis_url, namespace=_namespace()) as store:
        assert store.incr("big", 2**53, ttl=60) == 2**53
        assert store.incr("big", 1, ttl=60) == 2**53 + 1
        assert store.incr("big", 2**63 - 2**53 - 2) == 2**63 - 1
        with pytest.raises(OverflowError):
            store.incr("big")
        assert store.get("big") == 2**63 - 1


def test_scan_treats_glob_characters_literally(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        for key in ("a*b", "a*c", "axb", "a?", "ab", "[x]1", "x1", "back\\slash", "backxslash"):
            store.set(key, 1)
        assert store.keys("a*") == ["a*b", "a*c"]
        assert store.keys("a?") == ["a?"]
        assert store.keys("[x]") == ["[x]1"]
        assert store.keys("back\\") == ["back\\slash"]
        assert len(store.keys()) == 9


def test_scan_walks_many_keys_in_batches_once_each(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        raw = redis.Redis.from_url(shared_redis_url)
        try:
            pipe = raw.pipeline(transaction=False)
            for i in range(1200):  # more than one SCAN batch
                pipe.set(store._keyspace.full_key(f"item:{i}"), i)
            pipe.execute()
            keys = list(store.backend.scan(store._keyspace.full_key("item:")))
            assert len(keys) == len(set(keys)) == 1200
        finally:
            raw.close()


def test_foreign_value_types_raise_type_error(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        raw = redis.Redis.from_url(shared_redis_url)
        try:
            raw.hset(store._keyspace.full_key("h"), "field", "1")
            with pytest.raises(TypeError, match="another type"):
                store.get("h")
            with pytest.raises(TypeError):
                store.incr("h")
            assert store.delete("h")
        finally:
            raw.close()


# -- processes and threads -------------------------------------------------------------------


def _use_inherited(store: Store, queue: multiprocessing.Queue[int]) -> None:
    queue.put(store.incr("n"))


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_connection(shared_redis_url: str) -> None:
    with Store(shared_redis_url, namespace=_namespace()) as store:
        assert store.incr("n") == 1  # the parent's pool now holds an open connection
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[int] = ctx.Queue()
        children = [ctx.Process(target=_use_inherited, args=(store, queue)) for _ in range(4)]
        for child in children:
            child.start()
        values = sorted(queue.get(timeout=30) for _ in children)
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert values == [2, 3, 4, 5]
        assert store.incr("n") == 6  # the parent's connection survived the children


@pytest.mark.timeout(60)
def test_bounded_pool_serves_many_threads(shared_redis_url: str) -> None:
    with Store(f"{shared_redis_url}?max_connections=2", namespace=_namespace()) as store:
        results: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            got = [store.incr("n") for _ in range(100)]
            with lock:
                results.extend(got)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        assert sorted(results) == list(range(1, 801))


# -- the direct path: plain sockets, kernel timeouts ----------------------------------------


def _idle_link(store: Store) -> object:
    """The connection the store's backend lends next (its pool's most recently used idle one)."""
    idle, _slots = store.backend._pool._state.get()  # type: ignore[attr-defined]
    return idle[-1]


def test_plain_connections_are_blocking_with_kernel_timeouts(shared_redis_url: str) -> None:
    with Store(f"{shared_redis_url}?timeout=2.5", namespace=_namespace()) as store:
        store.set("k", 1)
        link: Any = _idle_link(store)
        assert link.reader is not None  # the direct path
        sock = link.conn._sock
        assert sock is link.sock
        assert sock.gettimeout() is None  # no poll before each send and receive
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            seconds, micros = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
            assert (seconds, micros) == (2, 500_000)


def test_large_values_and_batches_cross_the_direct_path(shared_redis_url: str) -> None:
    backend = RedisBackend(shared_redis_url, timeout=5)
    prefix = _namespace()
    try:
        big = os.urandom(3 * 1024 * 1024)  # written under a deadline, read in many receives
        backend.set(f"{prefix}/big", big)
        entry = backend.get(f"{prefix}/big")
        assert entry is not None and entry.value == big
        assert backend.compare_and_set(f"{prefix}/big", entry.version, big[::-1]).stored
        items = {f"{prefix}/{i}": b"v%d" % i for i in range(2500)}  # several MSETs in one write
        backend.set_many(items)
        assert backend.get_many(list(items)) == {k: (v, version_of(v)) for k, v in items.items()}
        assert backend.delete_many([*items, f"{prefix}/big"]) == 2501
    finally:
        backend.close()


def test_resp3_push_messages_are_not_taken_for_replies(shared_redis_url: str) -> None:
    """redis-py speaks RESP3: an out-of-band push (here a client-tracking invalidation the
    connection gets for its own SET) is skipped, and the replies stay in step."""
    backend = RedisBackend(shared_redis_url, timeout=5)
    key = f"{_namespace()}/tracked"
    try:
        tracking = ("CLIENT", "TRACKING", "ON")
        replies = backend._execute(tracking, ("GET", key), ("SET", key, b"v"), ("GET", key))
        assert replies[1:] == [None, b"OK", b"v"]
        assert backend.get(key) == (b"v", version_of(b"v"))  # an invalidation may wait: reconnected
        assert backend.delete(key)
    finally:
        backend.close()


def test_the_driver_path_still_serves_without_hiredis(
    shared_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without hiredis (or over TLS) every command goes through redis-py's connection."""
    monkeypatch.setattr("sharedstate.backends.redis._hiredis", None)
    with Store(shared_redis_url, namespace=_namespace()) as store:
        store.set("k", {"a": 1})
        assert store.update("k", lambda v: {**v, "a": v["a"] + 1}) == {"a": 2}
        assert store.incr("n", ttl=30) == 1
        assert store.get_many(["k", "missing"]) == {"k": {"a": 2}}
        assert store.keys() == ["k", "n"]
        link: Any = _idle_link(store)
        assert link.reader is None
        assert link.conn._sock.gettimeout() == 5.0  # redis-py's own socket timeout
        raw = redis.Redis.from_url(shared_redis_url)
        try:
            raw.lpush(store._keyspace.full_key("list"), "x")
        finally:
            raw.close()
        with pytest.raises(TypeError):
            store.incr("list")


@pytest.mark.timeout(60)
@pytest.mark.timing
def test_a_large_write_to_a_frozen_server_fails_within_the_timeout(shared_redis_url: str) -> None:
    """A command too large for the socket's buffers blocks on a frozen server: the whole write
    is bounded by ``timeout`` (not each ``send``), and the partial command is never applied."""
    parts = urlsplit(shared_redis_url)
    proxy = FreezeProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    backend = RedisBackend(f"redis://127.0.0.1:{proxy.port}{parts.path}", timeout=1)
    key = f"{_namespace()}/big"
    try:
        backend.set(key, b"before")
        with proxy.frozen():
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                backend.set(key, b"x" * (64 * 1024 * 1024))
            assert time.monotonic() - started < 2.5
            assert info.value.applied is False
            assert isinstance(info.value.__cause__, redis.TimeoutError)
        time.sleep(0.3)  # the held part reaches the server, then the end of the closed connection
        entry = backend.get(key)
        assert entry is not None and entry.value == b"before"
        backend.delete(key)
    finally:
        backend.close()
        proxy.close()


# -- errors from outside the hierarchy are wrapped -------------------------------------------


def test_database_number_the_server_lacks_is_unavailable(shared_redis_url: str) -> None:
    url = shared_redis_url.rsplit("/", 1)[0] + "/99"  # the default server has 16 databases
    with Store(url) as store, pytest.raises(BackendUnavailableError) as info:
        store.get("k")
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, redis.ResponseError)
    assert "/99" in str(info.value) and "out of range" in str(info.value)


class GarbageServer:
    """A TCP server on a free loopback port that answers every connection with non-Redis bytes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(self.answer)
                time.sleep(0.5)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.timeout(30)
def test_a_server_that_does_not_speak_redis_is_unavailable() -> None:
    server = GarbageServer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        with Store(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0?timeout=2") as store:
            for op in (lambda: store.get("k"), lambda: store.incr("n")):
                with pytest.raises(BackendUnavailableError) as info:
                    op()
                assert info.value.applied is False  # the garbage came during the connection's setup
                assert isinstance(info.value.__cause__, redis.RedisError)
                assert "protocol" in str(info.value)
                assert PASSWORD not in str(info.value)
    finally:
        server.close()


@pytest.mark.timeout(30)
def test_redis_url_at_the_postgresql_port_is_unavailable() -> None:
    if not servers.reachable(servers.POSTGRES_URL, 5432):
        servers.unavailable(f"PostgreSQL is not reachable at {servers.POSTGRES_URL}")
    port = urlsplit(servers.POSTGRES_URL).port or 5432
    url = f"redis://127.0.0.1:{port}/0?timeout=2"
    with Store(url) as store, pytest.raises(BackendUnavailableError) as info:
        store.get("k")
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, redis.RedisError)
