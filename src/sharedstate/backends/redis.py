"""``redis://`` and ``rediss://``: state on a Redis server, shared by every machine that reaches it.

Every contract operation is one round trip and atomic on the server: plain commands where Redis has
one (``GET``, ``SET ... PX``, ``SET ... NX PX``, ``DEL``, ``INCRBY``, ``PEXPIRE``, ``PTTL``,
``PING``), a ``MULTI`` block sent in one write for ``incr`` with a ttl, and Lua scripts
(``EVALSHA``) for compare-and-set. Batches are one round trip too: ``MGET``, ``MSET`` (no ttl) or
pipelined ``SET ... PX`` (with one), and ``DEL`` of many keys, each command of up to
``_MANY_BATCH`` keys, all sent in one write. Atomic per key, not across keys.

**Versions are value digests.** A value is stored as a plain Redis string (``SET key value``), so
counters are native Redis integers that ``INCRBY`` (and ``redis-cli INCR``) work on, and other
tools can read what sharedstate writes. The version of an entry is the SHA-1 hex digest of its
stored bytes: computed by ``hashlib`` when reading, and by ``redis.sha1hex`` inside the scripts that
compare. Keeping a separate version would mean a hash per key (no native ``INCRBY`` on a plain
key, and every write a script); a digest costs nothing on writes and one hash on reads.

The consequence is ABA: ``compare_and_set``/``delete_if_version`` succeed when the value is still
*equal* to the one that was read, even if it was changed and changed back, or deleted and
re-created with the same bytes, meanwhile. For the read-modify-write loops built on them this is
still linearizable: the new value was computed from a value equal to the current one. Code that
needs "nobody wrote since I read" must make values unique (locks do: each holds a random token).

**Failures.** Connecting and each socket read or write are bounded by ``timeout`` (default 5 s),
also against a server that keeps the connection open but stops answering (frozen, overloaded);
a command larger than ``_DIRECT_SEND_MAX`` is written under one deadline for the whole write. (A
kernel timeout restarts when a signal handler that does not raise interrupts the wait.)
A server that is down, unreachable, silent, refuses the connection's setup (wrong password, a
database number it does not have) or does not speak Redis's protocol raises
``BackendUnavailableError`` naming the URL with its password masked, with ``applied`` False when
the command was not sent and None when it was sent with no reply (outcome unknown); the driver's
exception is its ``__cause__``. Nothing is ever retried automatically, so no command is applied
twice. A connection whose reply did not come is closed, never reused, so a late reply cannot be
read as the answer to a later command. The pool reconnects on the next call, so the same backend
works again when the server is back.

**Connections.** Each backend keeps its own small pool of redis-py connections (:class:`_Pool`),
not redis-py's ``ConnectionPool``: before lending a connection, that pool checks that the server
has sent nothing unasked by switching the socket to non-blocking, trying a read and switching it
back, three system calls per command, which on a loopback server cost more than a tenth of the
round trip. ``_Pool`` checks the same with one ``poll``. redis-py connects and sets up the session
(AUTH, SELECT, CLIENT SETINFO); after that, on a plain socket, commands are packed by hiredis and
replies parsed by a hiredis reader on the socket directly (:meth:`RedisBackend._exchange`), and the
socket is blocking, its ``timeout`` enforced by the kernel (``SO_RCVTIMEO``, ``SO_SNDTIMEO``):
Python's own socket timeout costs a ``poll`` before every send and every receive. A round trip is
then one ``sendto`` and one ``recvfrom``. TLS sockets, and installs without hiredis, go through
redis-py's connection as before.

**Fork.** The pool remembers the pid that filled it. In a forked child it starts empty, so the
child never uses the parent's sockets; it drops the inherited connections without closing them
(redis-py's ``Connection.disconnect`` would not shut down a socket of another process anyway).

**Async.** :class:`AsyncRedisBackend` is the same backend on ``redis.asyncio``: the URL parsing,
commands, Lua scripts, reply reading and errors are :class:`RedisBackend`'s own (shared through
:func:`parse_redis_url` and :class:`_RedisShared`, not copied); only sending and waiting differ.
Its pools (:class:`_AsyncPool`) are per event loop as well as per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import select
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from sharedstate._optional import require
from sharedstate.backends.base import AsyncBackend, Backend, CasResult, Entry, RawValue, Version
from sharedstate.backends.kit import (
    INT64_MAX,
    INT64_MIN,
    PerProcess,
    chunks,
    has_pending_input,
    not_an_integer,
    overflows,
    unavailable,
)
from sharedstate.errors import BackendUnavailableError
from sharedstate.urls import mask_url, query_options, split_url
from sharedstate.validation import seconds

DEFAULT_TIMEOUT = 5.0
_SCAN_COUNT = 500
# Keys per MGET / MSET / DEL of a batch: a larger batch sends several, still in one write (one
# round trip), so no single command holds the server for long.
_MANY_BATCH = 1000
# Redis rejects expiry times past the year 292 million; cap far below (about 3,000 years).
_MAX_TTL_MS = 10**14

_OPTIONS: dict[str, type] = {"timeout": float, "max_connections": int, "db": int}
_TLS_OPTIONS: dict[str, type] = {
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
}
_CERT_REQS = ("none", "optional", "required")


class _Script:
    """A Lua script run with ``EVALSHA``; sent with ``EVAL`` once if the server lacks it.

    The counterpart of redis-py's ``register_script``, which runs through ``redis.Redis``: that
    client retries commands after a connection error by default (a lost reply to a script could
    then run it twice) and cannot say whether a failed command was sent. ``_execute`` can.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


# KEYS[1]: the key. ARGV[1]: the expected version (SHA-1 hex of the current value), or "" for
# "only if absent". ARGV[2]: the new value. ARGV[3]: the new ttl in milliseconds, or "" for none.
# Returns {1} if the value was stored; {0, current} if refused, current being the value now at the
# key or false if absent, so the caller can retry without another GET.
_COMPARE_AND_SET = _Script(
    """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
    if current then
        return {0, current}
    end
elseif not current or redis.sha1hex(current) ~= ARGV[1] then
    return {0, current}
end
if ARGV[3] == '' then
    redis.call('SET', KEYS[1], ARGV[2])
else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return {1}
"""
)

# KEYS[1]: the key. ARGV[1]: the expected version (SHA-1 hex of the current value).
# Returns 1 if the key was deleted, 0 if it is absent or holds another value.
_DELETE_IF_VERSION = _Script(
    """
local current = redis.call('GET', KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[1] then
    return 0
end
return redis.call('DEL', KEYS[1])
"""
)

# KEYS[1]: the key. No ARGV.
# Removes the key's expiry. Returns 1 if the key exists (with or without an expiry before), else 0;
# plain PERSIST returns 0 for a key that exists without an expiry, which touch must report as 1.
_PERSIST = _Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
redis.call('PERSIST', KEYS[1])
return 1
"""
)


def version_of(value: bytes) -> str:
    """The version of a stored value: its SHA-1 hex digest, as ``redis.sha1hex`` computes it."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


def _ttl_ms(ttl: float) -> int:
    # Round up: an entry may live a fraction of a millisecond longer, never shorter.
    return min(max(1, math.ceil(ttl * 1000)), _MAX_TTL_MS)


def _glob_escape(prefix: bytes) -> bytes:
    """Escape ``prefix`` so SCAN's MATCH treats every byte literally."""
    out = bytearray()
    for byte in prefix:
        if byte in b"\\*?[]":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _parse_db(path: str, url: str) -> int | None:
    text = unquote(path).strip("/")
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(
            f"malformed Redis URL {mask_url(url)!r}: the path must be a database number, e.g. "
            "redis://HOST:6379/0"
        )
    return int(text)


def parse_redis_url(url: str) -> tuple[str, dict[str, Any]]:
    """Validate a ``redis://``/``rediss://`` URL: the base URL for redis-py and our options.

    Shared by :class:`RedisBackend` and :class:`AsyncRedisBackend`, so both accept and refuse the
    same URLs with the same messages.
    """
    parts = split_url(url)
    scheme = parts.scheme.lower()
    if scheme not in RedisBackend.schemes:
        raise ValueError(f"not a Redis URL: {mask_url(url)!r}")
    if not parts.hostname:
        raise ValueError(f"Redis URL {mask_url(url)!r} names no host, e.g. redis://HOST:6379/0")
    known = {**_OPTIONS, **_TLS_OPTIONS} if scheme == "rediss" else _OPTIONS
    options: dict[str, Any] = query_options(parts, known, url)
    db = _parse_db(parts.path, url)
    if "db" in options and db is not None and options["db"] != db:
        raise ValueError(f"Redis URL {mask_url(url)!r} names two databases (path and ?db=)")
    db = options.pop("db", db) or 0
    if db < 0:
        raise ValueError(f"Redis URL {mask_url(url)!r}: db must be >= 0")
    if options.get("max_connections", 1) < 1:
        raise ValueError(f"Redis URL {mask_url(url)!r}: max_connections must be at least 1")
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise ValueError(f"Redis URL {mask_url(url)!r}: ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    # redis-py reads host, port, username, password and TLS from the URL; our options (already
    # validated above) are passed as arguments instead of being left in its query string.
    base = parts._replace(scheme=scheme, path=f"/{db}", query="", fragment="").geturl()
    return base, options


class _RedisShared:
    """What :class:`RedisBackend` and :class:`AsyncRedisBackend` share: settings, commands, replies.

    Each contract operation is split into the command(s) it sends, built here, and the reading
    of the reply, done here too; the two classes differ only in how they send and wait.
    """

    url: str
    timeout: float
    _redis: Any

    # update() after a collision: waits from 0.5-1 ms up to 5 ms instead of 0.1 ms up to 10 ms. Every
    # update is a round trip, so a loser that comes back within a round trip or two only costs the
    # server and the CPUs a refused attempt and slows the writer that got in, and one that sleeps
    # long leaves the key idle when that writer stops. Measured, 4 processes on one key, against a
    # one-round-trip Lua read-modify-write, in three runs: 0.76x, 0.74x and 0.83x, against 0.53x,
    # 0.72x and 0.75x with the default in the same runs (benchmarks/README.md).
    update_backoff = (0.001, 0.005)

    def _settings(
        self, url: str, timeout: float, pool_options: dict[str, Any], driver: Any
    ) -> dict[str, Any]:
        """Connection arguments for ``driver`` (``redis`` or ``redis.asyncio``), for every connection."""
        timeout = seconds("timeout", timeout)
        self._redis = require("redis", "redis")
        self.url = url
        self.timeout = timeout
        return {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
            # Never retry: a command re-sent after a lost reply could be applied twice.
            "retry": driver.retry.Retry(require("redis.backoff", "redis").NoBackoff(), 0),
            **pool_options,
            **driver.connection.parse_url(url),  # host, port, db, user, password; TLS class
        }

    def describe(self) -> str:
        return mask_url(self.url)

    # -- errors ------------------------------------------------------------------------------

    def _unavailable(self, what: str, exc: BaseException, *, applied: bool | None) -> BackendUnavailableError:
        return unavailable(self.url, what, applied=applied, cause=exc)

    def _broken(self, exc: BaseException) -> BackendUnavailableError:
        """The error for a command that was sent and got no usable reply (outcome unknown)."""
        r = self._redis
        if isinstance(exc, r.TimeoutError):
            what = f"no reply within {self.timeout:g}s (option timeout=)"
        elif isinstance(exc, r.exceptions.InvalidResponse):
            what = "the reply is not in Redis's protocol (is a Redis server listening there?)"
        else:
            what = "the connection broke before the reply came"
        return self._unavailable(what, exc, applied=None)

    def _refused(self, exc: Exception, key: str) -> Exception:
        """The exception for an error reply: the server refused the command, so it was not applied."""
        message = str(exc)
        if message.startswith("WRONGTYPE"):
            return TypeError(
                f"key {key!r} holds a Redis value of another type (not a string), which sharedstate "
                "did not write"
            )
        return self._unavailable(f"the server refused the command for key {key!r}", exc, applied=False)

    def _checked(self, reply: object, key: str) -> object:
        """``reply``, or the exception for it if it is an error reply."""
        if isinstance(reply, Exception):
            raise self._refused(reply, key) from reply
        return reply

    # -- commands and their replies ----------------------------------------------------------

    @staticmethod
    def _entry(value: object) -> Entry | None:
        if value is None:
            return None
        assert isinstance(value, bytes)
        return Entry(value, version_of(value))

    @staticmethod
    def _set_command(key: str, value: RawValue, ttl: float | None, *flags: str) -> tuple[Any, ...]:
        # SET without PX also removes any expiry the key had.
        expiry = () if ttl is None else ("PX", _ttl_ms(ttl))
        return ("SET", key, value, *flags, *expiry)

    @staticmethod
    def _cas_args(expected: Version | None, value: RawValue, ttl: float | None) -> tuple[Any, ...]:
        """ARGV of ``_COMPARE_AND_SET``."""
        ttl_arg = "" if ttl is None else _ttl_ms(ttl)
        expected_arg = "" if expected is None else _version_arg(expected)
        return (expected_arg, value, ttl_arg)

    @staticmethod
    def _cas_result(reply: Any, value: RawValue) -> CasResult:
        if reply[0] == 1:
            stored = value if isinstance(value, bytes) else str(value).encode()  # as GET returns it
            return CasResult(True, Entry(stored, version_of(stored)))
        current = reply[1] if len(reply) > 1 else None  # Lua's false arrives as nil: absent
        return CasResult(False, None if current is None else Entry(current, version_of(current)))

    @staticmethod
    def _incr_commands(key: str, by: int, ttl: float | None) -> tuple[tuple[Any, ...], ...]:
        if not INT64_MIN <= by <= INT64_MAX:
            raise OverflowError(f"incr of key {key!r}: by={by} is outside the signed 64-bit range")
        if ttl is None:
            return (("INCRBY", key, by),)
        # Not a Lua script: Lua numbers are doubles and would round counters above 2**53.
        # MULTI runs both commands atomically; SET NX creates the key (with its ttl) only if
        # it is absent, so an existing counter keeps its expiry. Four commands, one write.
        return (("MULTI",), ("SET", key, 0, "NX", "PX", _ttl_ms(ttl)), ("INCRBY", key, by), ("EXEC",))

    def _incr_result(self, replies: list[Any], key: str) -> int:
        reply = replies[-1]
        if isinstance(reply, list):
            reply = reply[-1]  # EXEC's replies: INCRBY's is the last
        if isinstance(reply, Exception):
            message = str(reply)
            if "not an integer" in message:
                raise not_an_integer(key)
            if "overflow" in message:
                raise overflows(key)
            raise self._refused(reply, key) from reply
        assert isinstance(reply, int)
        return reply

    @staticmethod
    def _scan_command(prefix: str, cursor: Any) -> tuple[Any, ...]:
        return ("SCAN", cursor, "MATCH", _glob_escape(prefix.encode()) + b"*", "COUNT", _SCAN_COUNT)

    @staticmethod
    def _expiry_result(reply: object, key: str) -> float | None:
        """``PTTL``'s reply as ``expiry``'s result: -2 absent, -1 no expiry, else milliseconds."""
        assert isinstance(reply, int)
        if reply == -2:
            raise KeyError(key)
        return None if reply == -1 else reply / 1000

    @staticmethod
    def _get_many_commands(keys: Sequence[str]) -> tuple[tuple[Any, ...], ...]:
        return tuple(("MGET", *chunk) for chunk in chunks(keys, _MANY_BATCH))

    def _get_many_result(self, replies: list[Any], keys: Sequence[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        values = iter(self._batch_replies(replies, keys, "get_many", applied=False))
        for key in keys:
            entry = self._entry(next(values))
            if entry is not None:  # MGET answers nil for a key that holds another type too
                found[key] = entry
        return found

    @staticmethod
    def _set_many_commands(items: Mapping[str, RawValue], ttl: float | None) -> tuple[tuple[Any, ...], ...]:
        pairs = list(items.items())
        if ttl is None:  # MSET also removes any expiry the keys had, as SET does
            return tuple(
                ("MSET", *(part for pair in chunk for part in pair)) for chunk in chunks(pairs, _MANY_BATCH)
            )
        expiry = _ttl_ms(ttl)
        return tuple(("SET", key, value, "PX", expiry) for key, value in pairs)

    @staticmethod
    def _delete_many_commands(keys: Sequence[str]) -> tuple[tuple[Any, ...], ...]:
        return tuple(("DEL", *chunk) for chunk in chunks(keys, _MANY_BATCH))

    def _batch_replies(
        self, replies: list[Any], keys: Sequence[str], what: str, *, applied: bool | None
    ) -> list[Any]:
        """The replies of a batch's commands, flattened; an error reply raises.

        ``applied``: what an error reply means for the batch (False for reads; None for writes,
        whose other commands may have been applied).
        """
        flat: list[Any] = []
        for reply in replies:
            if isinstance(reply, Exception):
                if len(replies) == 1:  # the batch's only command was refused: nothing applied
                    raise self._refused(reply, keys[0]) from reply
                raise self._unavailable(
                    f"the server refused a command of a {what} of {len(keys)} keys", reply, applied=applied
                ) from reply
            flat.extend(reply if isinstance(reply, list) else [reply])
        return flat

    @staticmethod
    def _new_keys(keys: list[bytes], seen: set[bytes]) -> Iterator[str]:
        """The keys of one SCAN batch not seen before (SCAN may return a key more than once)."""
        for raw in keys:
            if raw in seen:
                continue
            seen.add(raw)
            try:
                yield raw.decode()
            except UnicodeDecodeError:  # not written by sharedstate (its keys are UTF-8)
                continue

    def _connect_error(self, exc: BaseException) -> BackendUnavailableError:
        # Connecting, or the setup commands (AUTH, SELECT db, HELLO) it sends, failed: the
        # operation itself was never sent.
        return self._unavailable(_connect_failure(self._redis, exc), exc, applied=False)


class RedisBackend(_RedisShared, Backend):
    """Redis storage. URL: ``redis://[[user]:password@]host[:port][/db][?options]``.

    ``rediss://`` connects with TLS. Options: ``timeout`` (seconds for connecting and for each
    socket read or write, default 5), ``max_connections`` (per process; waits up to ``timeout``
    for a free connection), ``db`` (instead of the path); with ``rediss://`` also ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (none, optional, required) and
    ``ssl_check_hostname``.

    Concurrency contract: every method is atomic per key on the server and is one round trip;
    an instance is safe to share between threads and survives fork (see the module docstring).
    """

    schemes = ("redis", "rediss")

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, **pool_options: Any) -> None:
        """Open a pool for ``url`` (no query string: use :meth:`from_url`, which validates options)."""
        max_connections = pool_options.pop("max_connections", None)
        settings = self._settings(url, timeout, pool_options, require("redis", "redis"))
        connection_class = settings.pop("connection_class", self._redis.Connection)
        self._pool = _Pool(connection_class, settings, max_connections, self.timeout)

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        base, options = parse_redis_url(url)
        return cls(base, **options)

    # -- talking to the server ---------------------------------------------------------------

    def _execute(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write and read one reply each: a single round trip.

        Error replies are returned in the list as ``ResponseError`` instances, after every reply
        has been read, so the connection stays in step. Every read waits at most ``timeout``, so a
        server that stops answering, even one that keeps the connection open, raises within
        ``timeout``; the connection is then closed, so its late reply can never be read as the
        answer to a later command.
        """
        try:
            link, state = self._pool.acquire()
        except (self._redis.RedisError, OSError) as exc:
            raise self._connect_error(exc) from exc
        try:
            if link.reader is not None:
                return self._exchange(link, commands)
            return self._exchange_through_driver(link.conn, commands)
        finally:
            self._pool.release(link, state)

    def _exchange(self, link: _Link, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        """:meth:`_execute` on a plain socket: packed by hiredis, written and read directly.

        The socket is blocking with the kernel enforcing ``timeout`` (``SO_RCVTIMEO``,
        ``SO_SNDTIMEO``), so a round trip is one ``sendto`` and one ``recvfrom``: no ``poll``
        before each, which Python's own socket timeouts add. A timeout surfaces as
        ``BlockingIOError`` (``EAGAIN``) and is reported as redis-py's ``TimeoutError``.
        """
        r = self._redis
        sock = link.sock
        count = len(commands)
        data = _packed(r, commands)
        try:
            if len(data) <= _DIRECT_SEND_MAX:
                sock.sendall(data)  # fits the empty send buffer: returns at once
            else:
                _send_within(sock, data, self.timeout)
        except BaseException as exc:
            # The server never got a complete command to execute: a partial one is discarded
            # with the connection.
            link.close()
            if isinstance(exc, OSError):
                cause = _network_error(r, exc, "writing to")
                raise self._unavailable("sending the command failed", cause, applied=False) from cause
            raise
        reader, buffer, not_enough = link.reader, link.buffer, link.not_enough
        replies: list[Any] = []
        try:
            while len(replies) < count:
                reply = reader.gets()
                if reply is not_enough:
                    received = sock.recv_into(buffer)
                    if not received:
                        raise r.ConnectionError("Connection closed by server.")
                    reader.feed(buffer, 0, received)
                elif isinstance(reply, r.ConnectionError):  # LOADING, max clients: redis-py raises these
                    raise reply
                elif type(reply) is not _PUSH:
                    replies.append(reply)  # error replies (ResponseError) included
        except r.exceptions.BusyLoadingError as exc:  # the server answered "not yet"
            link.close()
            raise self._unavailable("the server is loading its data", exc, applied=False) from exc
        except BaseException as exc:  # timeout, broken connection, garbage, KeyboardInterrupt
            link.close()
            if isinstance(exc, OSError):
                cause = _network_error(r, exc, "reading from")
                raise self._broken(cause) from cause
            if isinstance(exc, r.RedisError):
                raise self._broken(exc) from exc
            raise
        return replies

    def _exchange_through_driver(self, conn: Any, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        """:meth:`_execute` through redis-py's connection (TLS, or no hiredis)."""
        r = self._redis
        network_errors = (r.ConnectionError, r.TimeoutError, OSError)
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except network_errors as exc:
            # sendall() failed, so the server never got a complete command to execute.
            conn.disconnect()
            raise self._unavailable("sending the command failed", exc, applied=False) from exc
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except r.exceptions.BusyLoadingError as exc:  # the server answered "not yet"
                conn.disconnect()
                raise self._unavailable("the server is loading its data", exc, applied=False) from exc
            except r.ResponseError as exc:
                replies.append(exc)
            except (r.RedisError, OSError) as exc:  # timeout, broken connection, garbage
                conn.disconnect()
                raise self._broken(exc) from exc
            except BaseException:
                conn.disconnect()  # e.g. KeyboardInterrupt mid-reply: the stream is out of step
                raise
        return replies

    def _call(self, key: str, *args: Any) -> object:
        """Run one command about ``key`` and return its reply; error replies are raised."""
        (reply,) = self._execute(args)
        return self._checked(reply, key)

    def _eval(self, script: _Script, key: str, *args: Any) -> object:
        (reply,) = self._execute(("EVALSHA", script.sha, 1, key, *args))
        if isinstance(reply, self._redis.exceptions.NoScriptError):
            # The server lost its script cache (restart, SCRIPT FLUSH): the script did not run.
            # EVAL runs it and caches it again.
            (reply,) = self._execute(("EVAL", script.source, 1, key, *args))
        return self._checked(reply, key)

    # -- the contract ------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self._entry(self._call(key, "GET", key))

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        self._call(key, *self._set_command(key, value, ttl))

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return self._call(key, *self._set_command(key, value, ttl, "NX")) is not None

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        reply = self._eval(_COMPARE_AND_SET, key, *self._cas_args(expected, value, ttl))
        return self._cas_result(reply, value)

    def delete(self, key: str) -> bool:
        return self._call(key, "DEL", key) == 1

    def delete_if_version(self, key: str, version: Version) -> bool:
        return self._eval(_DELETE_IF_VERSION, key, _version_arg(version)) == 1

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        return self._incr_result(self._execute(*self._incr_commands(key, by, ttl)), key)

    def touch(self, key: str, ttl: float | None) -> bool:
        if ttl is None:
            return self._eval(_PERSIST, key) == 1
        return self._call(key, "PEXPIRE", key, _ttl_ms(ttl)) == 1

    def expiry(self, key: str) -> float | None:
        return self._expiry_result(self._call(key, "PTTL", key), key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        return self._get_many_result(self._execute(*self._get_many_commands(keys)), keys)

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        replies = self._execute(*self._set_many_commands(items, ttl))
        self._batch_replies(replies, list(items), "set_many", applied=None)

    def delete_many(self, keys: Sequence[str]) -> int:
        replies = self._execute(*self._delete_many_commands(keys))
        return sum(self._batch_replies(replies, keys, "delete_many", applied=None))

    def ping(self) -> None:
        self._call("", "PING")

    def scan(self, prefix: str = "") -> Iterator[str]:
        seen: set[bytes] = set()  # SCAN may return a key more than once; the contract says once
        cursor: Any = 0
        while True:
            reply: Any = self._call(prefix, *self._scan_command(prefix, cursor))
            cursor, keys = reply
            yield from self._new_keys(keys, seen)
            if int(cursor) == 0:
                return

    def sweep(self, limit: int = 1000) -> int:
        return 0  # Redis expires keys itself

    def close(self) -> None:
        self._pool.disconnect()


class AsyncRedisBackend(_RedisShared, AsyncBackend):
    """Redis storage for ``asyncio``, on ``redis.asyncio``: the same URLs, commands and scripts as
    :class:`RedisBackend`, so the two can share one server and one namespace.

    Concurrency contract: every method is one round trip, atomic per key on the server. No call
    blocks the event loop: connecting, waiting for a free connection (``max_connections``) and
    every reply are awaited, each bounded by ``timeout``.

    Connections belong to one event loop and one process. The backend keeps one small pool
    (:class:`_AsyncPool`) per running event loop, created on first use there, so an instance made
    at import time (no loop yet) works under any loop, e.g. two ``asyncio.run`` calls in turn; a
    forked child starts with no pools. :meth:`aclose` closes the current loop's pool (and drops
    the pools of loops that have ended); the backend may be used again afterwards.
    """

    schemes = ("redis", "rediss")

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, **pool_options: Any) -> None:
        """Prepare pools for ``url`` (no query string: use :meth:`from_url`); connects lazily."""
        self._max_connections: int | None = pool_options.pop("max_connections", None)
        driver = require("redis.asyncio", "redis")
        self._connection_kwargs = self._settings(url, timeout, pool_options, driver)
        self._connection_class = self._connection_kwargs.pop("connection_class", driver.Connection)
        # A forked child starts with no pools; the parent's are set aside, referenced and
        # untouched, forever: their connections are the parent's sockets, registered with the
        # parent's event loop, whose epoll instance the child shares. Closing one here (which
        # the connection's finalizer would do if it were collected) would unregister it from
        # that epoll and leave the parent's connection deaf.
        self._process_pools: PerProcess[dict[asyncio.AbstractEventLoop, _AsyncPool]] = PerProcess(dict)

    @classmethod
    def from_url(cls, url: str) -> AsyncRedisBackend:
        base, options = parse_redis_url(url)
        return cls(base, **options)

    # -- talking to the server ---------------------------------------------------------------

    @property
    def _pools(self) -> dict[asyncio.AbstractEventLoop, _AsyncPool]:
        """This process's pools, one per event loop."""
        return self._process_pools.get()

    def _pool(self) -> _AsyncPool:
        """The running loop's pool in this process (made on first use; a forked child starts empty)."""
        loop = asyncio.get_running_loop()
        pools = self._pools
        pool = pools.get(loop)
        if pool is None:
            # Pools of loops that have ended can never be used again (their sockets belong to
            # a closed loop); forget them.
            self._forget_ended_loops()
            pool = pools[loop] = _AsyncPool(
                self._connection_class, self._connection_kwargs, self._max_connections, self.timeout
            )
        return pool

    def _forget_ended_loops(self) -> None:
        """Drop the pools of event loops that have closed (their sockets belong to a dead loop)."""
        for loop in [loop for loop in list(self._pools) if loop.is_closed()]:  # list(): atomic copy
            pool = self._pools.pop(loop, None)  # None: another thread's loop dropped it first
            if pool is not None:
                pool.abandon()

    async def _execute(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one write and await one reply each: a single round trip.

        As :meth:`RedisBackend._execute`: error replies come back in the list; each read waits at
        most ``timeout``; a connection whose reply did not come (timeout, broken, cancelled
        mid-reply) is closed, so a late reply is never read as the answer to a later command.
        """
        r = self._redis
        pool = self._pool()
        try:
            conn = await pool.acquire()
        except (r.RedisError, OSError) as exc:
            raise self._connect_error(exc) from exc
        try:
            try:
                packed = conn.pack_commands(commands) if _pack_command is None else _packed(r, commands)
                await conn.send_packed_command(packed, check_health=False)
            except (r.ConnectionError, r.TimeoutError, OSError) as exc:
                # The write failed (redis-py closed the connection), so the server never got a
                # complete command to execute.
                raise self._unavailable("sending the command failed", exc, applied=False) from exc
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except r.exceptions.BusyLoadingError as exc:  # the server answered "not yet"
                    await conn.disconnect(nowait=True)
                    raise self._unavailable("the server is loading its data", exc, applied=False) from exc
                except r.ResponseError as exc:
                    replies.append(exc)
                except (r.RedisError, OSError) as exc:  # timeout, broken connection, garbage
                    await conn.disconnect(nowait=True)
                    raise self._broken(exc) from exc
                except BaseException:
                    # Cancelled mid-reply: the stream is out of step. redis-py has closed it
                    # already; make sure without awaiting (the task is being cancelled).
                    _drop(conn)
                    raise
            return replies
        finally:
            pool.release(conn)

    async def _call(self, key: str, *args: Any) -> object:
        """Run one command about ``key`` and return its reply; error replies are raised."""
        (reply,) = await self._execute(args)
        return self._checked(reply, key)

    async def _eval(self, script: _Script, key: str, *args: Any) -> object:
        (reply,) = await self._execute(("EVALSHA", script.sha, 1, key, *args))
        if isinstance(reply, self._redis.exceptions.NoScriptError):
            # The server lost its script cache: the script did not run. EVAL runs and caches it.
            (reply,) = await self._execute(("EVAL", script.source, 1, key, *args))
        return self._checked(reply, key)

    # -- the contract ------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        return self._entry(await self._call(key, "GET", key))

    async def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        await self._call(key, *self._set_command(key, value, ttl))

    async def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return await self._call(key, *self._set_command(key, value, ttl, "NX")) is not None

    async def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        reply = await self._eval(_COMPARE_AND_SET, key, *self._cas_args(expected, value, ttl))
        return self._cas_result(reply, value)

    async def delete(self, key: str) -> bool:
        return await self._call(key, "DEL", key) == 1

    async def delete_if_version(self, key: str, version: Version) -> bool:
        return await self._eval(_DELETE_IF_VERSION, key, _version_arg(version)) == 1

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        return self._incr_result(await self._execute(*self._incr_commands(key, by, ttl)), key)

    async def touch(self, key: str, ttl: float | None) -> bool:
        if ttl is None:
            return await self._eval(_PERSIST, key) == 1
        return await self._call(key, "PEXPIRE", key, _ttl_ms(ttl)) == 1

    async def expiry(self, key: str) -> float | None:
        return self._expiry_result(await self._call(key, "PTTL", key), key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        return self._get_many_result(await self._execute(*self._get_many_commands(keys)), keys)

    async def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        replies = await self._execute(*self._set_many_commands(items, ttl))
        self._batch_replies(replies, list(items), "set_many", applied=None)

    async def delete_many(self, keys: Sequence[str]) -> int:
        replies = await self._execute(*self._delete_many_commands(keys))
        return sum(self._batch_replies(replies, keys, "delete_many", applied=None))

    async def ping(self) -> None:
        await self._call("", "PING")

    async def scan(self, prefix: str = "") -> AsyncIterator[str]:
        seen: set[bytes] = set()
        cursor: Any = 0
        while True:
            reply: Any = await self._call(prefix, *self._scan_command(prefix, cursor))
            cursor, keys = reply
            for key in self._new_keys(keys, seen):
                yield key
            if int(cursor) == 0:
                return

    async def sweep(self, limit: int = 1000) -> int:
        return 0  # Redis expires keys itself

    async def aclose(self) -> None:
        """Close the running loop's idle connections and forget pools of ended loops."""
        if self._process_pools.current() is None:
            self._process_pools.take()  # none made in this process (a forked child's start)
            return
        loop = asyncio.get_running_loop()
        self._forget_ended_loops()
        pool = self._pools.pop(loop, None)
        if pool is not None:
            await pool.disconnect()


_PoolState = tuple["deque[Any]", "threading.Semaphore | None"]  # idle connections, free slots


class _PoolSettings:
    """What the sync and async pools share: how to open a connection, and their limit."""

    def __init__(
        self,
        connection_class: Any,
        connection_kwargs: dict[str, Any],
        max_connections: int | None,
        timeout: float,
    ) -> None:
        self.connection_class = connection_class
        self.connection_kwargs = connection_kwargs
        self.max_connections = max_connections
        self.timeout = timeout
        self._start()

    def _start(self) -> None:
        """Set up the pool's own state (each kind of pool has its own)."""

    def _new_connection(self) -> Any:
        return self.connection_class(**self.connection_kwargs)

    def _all_busy(self) -> Exception:
        """redis-py's ``ConnectionError`` for a caller that waited ``timeout`` for a free slot."""
        return require("redis", "redis").ConnectionError(  # type: ignore[no-any-return]
            f"all {self.max_connections} connections (max_connections) stayed busy for {self.timeout:g}s"
        )


class _Link:
    """One pooled connection: redis-py's ``Connection`` (which connects, sets the session up and
    closes) and, on a plain TCP or Unix socket with hiredis, what :meth:`RedisBackend._exchange`
    reads and writes with directly: the socket, a hiredis reader and its receive buffer.

    ``reader`` is None for a connection that goes through redis-py for each command (TLS, or
    hiredis missing) and while it is not connected.
    """

    __slots__ = ("buffer", "conn", "not_enough", "poll", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = None
        self.reader: Any = None
        self.buffer = bytearray()
        self.not_enough: object = False
        # poll(0): whether anything came on the idle connection (see _Pool.acquire), on a
        # poller made once per socket: half the cost of kit.has_pending_input's fresh one.
        self.poll: Callable[[int], object] | None = None

    def wire(self, timeout: float) -> None:
        """After ``conn`` has connected: take its socket for direct use if it is a plain one.

        The socket becomes blocking and the kernel enforces ``timeout`` on each read and write,
        so a round trip costs no ``poll``; a TLS socket keeps redis-py's path and its timeouts.
        """
        sock = self.conn._sock
        self.sock = self.reader = None
        self.poll = _poller(sock)
        if _hiredis is None or type(sock) is not socket.socket or not _KERNEL_TIMEOUTS:
            return
        timeval = _timeval(timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self.reader, self.not_enough = _new_reader(self.conn._parser.parse_error)
        if not self.buffer:
            self.buffer = bytearray(_RECEIVE_BUFFER)
        self.sock = sock

    def close(self) -> None:
        """Close the connection (reconnected when next lent): its stream may be out of step."""
        self.sock = self.reader = self.poll = None
        self.conn.disconnect()


class _Pool(_PoolSettings):
    """This process's connections to one server; the most recently used idle one is lent first.

    Safe to share between threads (``deque`` appends and pops are atomic). With
    ``max_connections``, at most that many are lent at once and a caller waits up to ``timeout``
    for one. See the module docstring for why this is not redis-py's ``ConnectionPool``.
    """

    def _start(self) -> None:
        # A forked child never touches the parent's connections: it starts an empty pool.
        self._state = PerProcess(self._new_state)

    def _new_state(self) -> _PoolState:
        slots = None if self.max_connections is None else threading.Semaphore(self.max_connections)
        return deque(), slots

    def acquire(self) -> tuple[_Link, _PoolState]:
        """A connected connection and the state to give it back to (:meth:`release`).

        Raises redis-py's ``ConnectionError`` (or ``OSError``) if none.
        """
        state = self._state.get()
        idle, slots = state
        if slots is not None and not slots.acquire(timeout=self.timeout):
            raise self._all_busy()
        try:
            try:
                link = idle.pop()
            except IndexError:
                link = _Link(self._new_connection())
            sock = link.conn._sock
            # A socket redis-py closed (the driver path's errors) reads as None here; one that
            # is not None is the one wire() saw, so its poller watches the right descriptor.
            if sock is not None and (link.poll is None or link.poll(0)):
                # The server closed it (restart, idle timeout) or sent something unasked:
                # start afresh rather than fail or misread the next reply.
                link.close()
                sock = None
            if sock is None:
                link.conn.connect()
                try:
                    link.wire(self.timeout)
                except BaseException:
                    link.close()
                    raise
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        return link, state

    def release(self, link: _Link, state: _PoolState) -> None:
        """Give ``link`` back to ``state``, the state :meth:`acquire` took it from.

        No fork check on the unbounded pool (``acquire`` made the one ``getpid``): a connection
        lent before a fork and given back in the child goes to the parent's deque, which the
        child has set aside and never lends from (:class:`~sharedstate.backends.kit.PerProcess`).
        A bounded pool checks: the parent's semaphore may have been locked at the fork.
        """
        idle, slots = state
        if slots is not None and self._state.current() is not state:
            return  # lent before a fork, given back in the child: not ours to keep
        idle.append(link)
        if slots is not None:
            slots.release()

    def disconnect(self) -> None:
        """Close the idle connections (ones in use now come back to the pool when done)."""
        state = self._state.current()
        if state is None:
            self._state.take()  # none made in this process (a forked child's start)
            return
        idle = state[0]
        while True:
            try:
                link = idle.pop()
            except IndexError:
                return
            link.close()


# The direct path (_Link.wire): hiredis packs commands and parses replies; the kernel bounds each
# socket read and write (SO_RCVTIMEO, SO_SNDTIMEO take a struct timeval on Linux and macOS).
def _load_hiredis() -> Any:
    """The hiredis module if redis-py parses with it too (the version it trusts for RESP3, which it
    speaks by default) and it can pack commands, else None."""
    try:
        import hiredis
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra
        return None
    return hiredis if HIREDIS_AVAILABLE and hasattr(hiredis, "pack_command") else None


_hiredis: Any = _load_hiredis()
_pack_command: Any = None if _hiredis is None else _hiredis.pack_command
# A RESP3 out-of-band message (client tracking, pub/sub; none of which sharedstate turns on): not
# the reply to a command, skipped as redis-py's parser does.
_PUSH: Any = getattr(_hiredis, "PushNotification", None)
_KERNEL_TIMEOUTS = sys.platform.startswith(("linux", "darwin")) and hasattr(socket, "SO_RCVTIMEO")
_RECEIVE_BUFFER = 65536  # as redis-py's socket_read_size
# Commands up to this size are written with one blocking sendall(): a connection's send buffer is
# empty between round trips and holds at least this much, so it returns at once and the send
# timeout never splits it. Larger ones are written under Python's deadline for the whole write.
_DIRECT_SEND_MAX = 8192


def _timeval(timeout: float) -> bytes:
    """``timeout`` as a ``struct timeval``, at least 1 µs (zero would mean "wait forever")."""
    micros = max(1, math.ceil(timeout * 1_000_000))
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)


def _new_reader(parse_error: Any) -> tuple[Any, object]:
    """A hiredis reader whose error replies are redis-py's exception classes, and its marker for
    "not enough data yet" (``False`` for a hiredis without ``notEnoughData``, a reply that none of
    sharedstate's commands gets)."""
    assert _hiredis is not None
    invalid = require("redis", "redis").exceptions.InvalidResponse
    marker = object()
    try:
        reader = _hiredis.Reader(protocolError=invalid, replyError=parse_error, notEnoughData=marker)
    except TypeError:  # pragma: no cover - hiredis < 3
        return _hiredis.Reader(protocolError=invalid, replyError=parse_error), False
    return reader, marker


def _poller(sock: Any) -> Callable[[int], object]:
    """``poll(0)`` for ``sock`` alone: truthy when anything (data or end of stream) waits on it,
    as :func:`~sharedstate.backends.kit.has_pending_input` answers, with the poller made once."""
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return lambda _timeout: has_pending_input(sock)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return poller.poll


def _packed(r: Any, commands: tuple[tuple[Any, ...], ...]) -> bytes:
    """``commands`` in Redis's protocol, each packed by hiredis in one C call.

    redis-py packs the same bytes with more Python around it (its asyncio connection in pure
    Python). An argument it cannot send raises redis-py's ``DataError``, as redis-py would.
    """
    try:
        if len(commands) == 1:
            return _pack_command(commands[0])  # type: ignore[no-any-return]
        return b"".join([_pack_command(command) for command in commands])
    except TypeError as exc:
        raise r.DataError(str(exc)) from exc


def _send_within(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Write ``data`` with Python's deadline for the whole write, not the kernel's per call."""
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
    finally:
        sock.settimeout(None)


def _network_error(r: Any, exc: OSError, doing: str) -> Exception:
    """redis-py's exception for a socket error of the direct path (the cause of ours)."""
    if isinstance(exc, (BlockingIOError, TimeoutError)):  # the kernel's or Python's timeout
        error: Exception = r.TimeoutError(f"Timeout {doing} socket")
    else:
        error = r.ConnectionError(f"Error while {doing} socket: {exc}")
    error.__cause__ = exc
    return error


def _connect_failure(r: Any, exc: BaseException) -> str:
    """What went wrong while opening a connection, in words."""
    if isinstance(exc, r.AuthenticationError) or "AUTH" in str(exc) or "WRONGPASS" in str(exc):
        return "authentication failed (check the user name and password in the URL)"
    if isinstance(exc, r.ResponseError):
        return "the server refused the connection's setup (AUTH, SELECT of the database, HELLO)"
    if "max_connections" in str(exc):
        return "no free connection (option max_connections=)"
    if isinstance(exc, r.TimeoutError):
        return "no connection within the timeout (option timeout=)"
    if isinstance(exc, r.exceptions.InvalidResponse):
        return "the server's answers are not in Redis's protocol (is a Redis server listening there?)"
    return "cannot connect"


def _version_arg(version: Version) -> str | bytes:
    # Versions from this backend are hex digests (str). Anything else can never match a digest.
    return version if isinstance(version, (str, bytes)) else f"not-a-digest:{version}"


class _AsyncPool(_PoolSettings):
    """One event loop's connections to one server, in one process: the async :class:`_Pool`.

    Used only from its loop's thread, so it needs no lock. The most recently used idle connection
    is lent first; one the server closed (restart, idle timeout) is noticed without a system call,
    from what the loop has already read for it, and reconnected before use. With
    ``max_connections``, at most that many are lent at once and a caller awaits one up to
    ``timeout``.
    """

    def _start(self) -> None:
        self._idle: deque[Any] = deque()
        self._slots = None if self.max_connections is None else asyncio.Semaphore(self.max_connections)

    async def acquire(self) -> Any:
        """A connected connection; raises redis-py's ``ConnectionError`` (or ``OSError``) if none."""
        slots = self._slots
        if slots is not None:
            if slots.locked():
                try:
                    await asyncio.wait_for(slots.acquire(), self.timeout)
                except asyncio.TimeoutError:
                    raise self._all_busy() from None
            else:
                await slots.acquire()  # free: returns at once
        try:
            try:
                conn = self._idle.pop()
            except IndexError:
                conn = self._new_connection()
            else:
                if _has_unread_data_async(conn):
                    # The server closed it or sent something unasked: start afresh.
                    _drop(conn)
            if not conn.is_connected:
                await conn.connect()
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        return conn

    def release(self, conn: Any) -> None:
        self._idle.append(conn)
        if self._slots is not None:
            self._slots.release()

    async def disconnect(self) -> None:
        """Close the idle connections (ones in use now come back to the pool when done)."""
        while self._idle:
            await self._idle.pop().disconnect(nowait=True)

    def abandon(self) -> None:
        """Close the connections of a pool whose event loop has ended, without that loop.

        Their transports cannot close through a closed loop; their sockets can, which is what
        collecting them would do anyway, with a warning. Best effort: it relies on asyncio's
        transport internals and leaves anything it does not recognise to the collector.
        """
        while self._idle:
            conn = self._idle.pop()
            writer = getattr(conn, "_writer", None)
            transport = getattr(writer, "transport", None)
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
                transport._sock, transport._closing = None, True  # type: ignore[union-attr]
            conn._reader = conn._writer = None


def _has_unread_data_async(conn: Any) -> bool:
    """Whether anything (data or end of stream) came for an idle connection.

    First what the loop has already read; then the socket itself, because a loop that ran no
    callbacks since the server closed the connection (a blocking call in the app while Redis
    restarted) has not read the end of stream yet, and the connection would look alive.
    """
    reader = getattr(conn, "_reader", None)
    if reader is None:
        return False  # not connected: connect() will open it
    if getattr(reader, "_eof", False) or getattr(reader, "_buffer", b""):
        return True
    sock = conn._writer.get_extra_info("socket") if conn._writer is not None else None
    try:
        return sock is not None and has_pending_input(sock.fileno())
    except (OSError, ValueError):
        return True  # a socket the OS no longer knows: start afresh


def _drop(conn: Any) -> None:
    """Close an async connection at once, without awaiting (usable while being cancelled)."""
    writer = getattr(conn, "_writer", None)
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()
    conn._reader = conn._writer = None
