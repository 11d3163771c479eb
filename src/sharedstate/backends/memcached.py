"""``memcached://host:port``: one memcached server, for caches. Memcached may evict anything.

How the contract maps onto memcached (text protocol plus two meta commands, memcached >= 1.6):

- Versions are memcached's CAS unique tokens: ``get`` is ``gets``; ``compare_and_set`` is ``cas``
  (or ``add`` when the key must be absent), then ``gets`` to report what refused it;
  ``delete_if_version`` is the meta delete ``md <key> C<token>`` (the text protocol has no
  delete-with-CAS). ``touch`` keeps the token, as the contract asks.
- ``incr`` by ``by >= 0`` is memcached's native ``incr`` (``add`` creates a missing key; losing
  that race to another creator just means incrementing again). Memcached's counters are unsigned:
  ``decr`` floors at 0 and ``incr`` wraps at 2**64, so a negative ``by``, or a counter that holds a
  negative number, goes through a ``gets``/``cas`` loop instead, which keeps the entry's expiry
  (read with the meta get ``mg <key> c t``). Both paths are atomic against each other: every
  native ``incr`` changes the CAS token. A native ``incr`` that carries the counter past the
  signed 64-bit range is undone by a CAS loop and raises ``OverflowError``; until it is undone,
  other clients may read the out-of-range value.
- TTLs: memcached counts whole seconds on a clock that ticks once a second, so an exptime of ``n``
  lives between ``n - 1`` and ``n`` seconds. A TTL is sent as ``ceil(ttl) + 1`` so that nothing
  ever expires early; an entry lives up to two seconds past its TTL. Exptimes over 30 days are
  sent as absolute unix times, which is how memcached reads them. memcached's clock is 32-bit, so
  a TTL that would end after 2038-01-19 03:14:07 UTC raises ``ValueError`` before anything is sent
  (memcached would store the item already expired, or never expiring).
- Keys: memcached keys are at most 250 bytes of printable ASCII without spaces. Other keys (and
  keys starting with ``~``) are stored as ``~`` + base64url(SHA-256(key)) + ``~`` + a readable
  prefix, a deterministic one-to-one form (see :func:`memcached_key`).
- Values are bytes; native integers are sent as decimal ASCII (so ``incr`` works) and read back as
  bytes (``b"42"``), which the codec decodes. A value too large for the server's item size
  (``item_size_max``, 1 MiB by default, less the item header) raises ``ValueTooLargeError``
  before anything is sent: a failed ``set`` of an oversized item makes memcached drop the old one.
- ``expiry`` (``Store.ttl``) is the meta get ``mg <key> t``: the whole seconds memcached says
  remain, less the tick added when the ttl was set, so the entry never expires before the answer
  (and may outlive it by up to two seconds).
- Batches: ``get_many`` is ``gets k1 k2 ...`` (``GET_MANY_BATCH`` keys per command, one round trip
  each); ``set_many`` and ``delete_many`` pipeline their ``set``/``delete`` commands
  (``WRITE_MANY_BATCH`` per write, one round trip each), every size checked before anything is
  sent. Atomic per key only: a failure part way raises ``BackendUnavailableError(applied=None)``.
- ``scan`` is impossible (memcached cannot list keys) and raises ``NotSupportedError``. Nothing to
  sweep: the server expires entries itself.
- Every command waits for the server's reply (``noreply`` is never used), so a method that
  returns was applied. Failures raise ``BackendUnavailableError`` within ``connect_timeout`` +
  ``timeout`` seconds, also when the server keeps the connection open but stops answering:
  ``applied`` is False when no connection could be made or the server refused the command, None
  when the command was sent and no reply came. The connection is then closed, never reused (a
  late reply must not answer a later command); the next call reconnects.

Connections: a small per-process pool of pymemcache clients, one client used by one thread at a
time. After ``fork`` the child never touches the parent's sockets (replies would interleave); it
keeps them referenced and unused and opens its own. An idle pooled connection that the server
closed (restart) is noticed before use and replaced, so a restart costs no failed call.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from sharedstate._optional import require
from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
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
from sharedstate.backends.offload import ThreadedBackend
from sharedstate.errors import BackendUnavailableError, NotSupportedError, ValueTooLargeError
from sharedstate.urls import mask_url, query_options, split_url
from sharedstate.validation import seconds

T = TypeVar("T")

DEFAULT_PORT = 11211
DEFAULT_TIMEOUT = 2.0
#: memcached reads an exptime above 30 days as an absolute unix time.
RELATIVE_TTL_MAX = 30 * 24 * 3600
#: The last absolute exptime memcached holds (2038-01-19 03:14:07 UTC): its clock is 32-bit. Past
#: it an item is stored already expired, or (from 2**32 on) wraps to never expiring.
EXPTIME_MAX = 2**31 - 1
#: memcached's per-item header on 64-bit builds is 59 bytes plus the key (measured on 1.6); the rest
#: is margin for other builds.
ITEM_OVERHEAD = 96
DEFAULT_ITEM_SIZE_MAX = 1024 * 1024
MAX_KEY_BYTES = 250

_UINT64 = 2**64
_MAX_IDLE_CONNECTIONS = 16
#: Keys per ``gets`` command of ``get_many`` (each its own round trip): its line stays a few
#: tens of kilobytes even with 250-byte keys.
GET_MANY_BATCH = 100
#: Commands per write of ``set_many`` and ``delete_many`` (each write one round trip).
WRITE_MANY_BATCH = 500

_SAFE_KEY = re.compile(r"[\x21-\x7d][\x21-\x7e]{0,249}")  # printable ASCII, no space; not "~..."
_UNSAFE_CHAR = re.compile(r"[^\x21-\x7e]")
# A JSON integer; memcached pads a number that got shorter in place with trailing spaces.
_INT_TEXT = re.compile(rb"(-?(?:0|[1-9][0-9]*)) *")
_UNSIGNED_TEXT = re.compile(rb"([0-9]+) *")


def memcached_key(key: str) -> str:
    """The memcached key for ``key``: itself if it is safe, else a deterministic hashed form.

    Safe means 1-250 printable ASCII characters without spaces, not starting with ``~``. Anything
    else becomes ``~<43 chars of base64url SHA-256 of the UTF-8 key>~<readable prefix>``; the
    prefix (unsafe characters shown as ``?``) only helps people reading server dumps.
    """
    if _SAFE_KEY.fullmatch(key):
        return key
    digest = base64.urlsafe_b64encode(hashlib.sha256(key.encode("utf-8")).digest()).rstrip(b"=")
    readable = _UNSAFE_CHAR.sub("?", key)
    return f"~{digest.decode('ascii')}~{readable}"[:MAX_KEY_BYTES]


def exptime(ttl: float | None) -> int:
    """memcached's exptime for a TTL in seconds: rounded up, plus one tick, never early.

    0 means no expiry; above 30 days the exptime is an absolute unix time.
    """
    if ttl is None:
        return 0
    if not ttl < EXPTIME_MAX:  # also nan; Store validates ttl before it gets here
        raise ValueError(_too_far(ttl))
    return _exptime_seconds(math.ceil(ttl) + 1, ttl)


def _exptime_seconds(count: int, ttl: float | None = None) -> int:
    count = max(count, 1)  # 0 would mean "never expires"
    if count <= RELATIVE_TTL_MAX:
        return count
    absolute = math.ceil(time.time()) + count
    if absolute > EXPTIME_MAX:
        raise ValueError(_too_far(count if ttl is None else ttl))
    return absolute


def _too_far(ttl: float) -> str:
    left = max(0, EXPTIME_MAX - math.ceil(time.time()) - 1)
    return (
        f"ttl={ttl!r} seconds is past what memcached can hold: its expiry clock ends at "
        f"2038-01-19 03:14:07 UTC ({left} seconds from now); use a shorter ttl, or ttl=None for "
        "no expiry"
    )


class _IdleClients:
    """One process's idle connections (most recently returned last), under their own lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: list[Any] = []


def _is_stale(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (or it is out of step)."""
    try:
        return has_pending_input(sock)
    except (OSError, ValueError):
        return True


def _delays() -> Iterator[float]:
    """Jittered exponential back-off for CAS retry loops."""
    delay = 0.0005
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(0.02, delay * 2)


class MemcachedBackend(Backend):
    """One memcached server. URL: ``memcached://host[:port]`` (port 11211) or ``memcached:///path.sock``.

    Options in the query string: ``timeout`` (seconds to wait for a reply, default 2) and
    ``connect_timeout`` (seconds to wait for a connection, default ``timeout``). A single server by
    design: spreading keys over several servers would move keys to another server when one fails,
    so two processes could hold two different copies of one counter.

    Memcached may evict any entry when its memory runs short (``may_evict``): keep caches here,
    not state that must not be lost.
    """

    schemes = ("memcached",)
    may_evict = True

    def __init__(
        self,
        server: tuple[str, int] | str,
        *,
        url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
    ) -> None:
        timeout = seconds("timeout", timeout)
        connect_timeout = seconds("connect_timeout", connect_timeout, optional=True)
        self._mc = require("pymemcache.client.base", "memcached")
        self._errors = require("pymemcache.exceptions", "memcached")
        self.server = server
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout if connect_timeout is not None else timeout)
        if isinstance(server, tuple):
            host = f"[{server[0]}]" if ":" in server[0] else server[0]
            self._describe = f"memcached://{host}:{server[1]}"
        else:
            self._describe = f"memcached://{server}"
        self._url = url if url is not None else self._describe  # for messages, masked there
        self.url = mask_url(self._url)
        # A forked child never uses the parent's connections: it starts with none of its own.
        self._idle = PerProcess(_IdleClients)
        self._item_size_max: int | None = None

    @classmethod
    def from_url(cls, url: str) -> MemcachedBackend:
        if isinstance(url, str) and "," in urlsplit(url).netloc:
            raise ValueError(
                f"memcached URL {mask_url(url)!r} names several servers; sharedstate uses one "
                "memcached server (keys moving between servers on failure would split state)"
            )
        parts = split_url(url)
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"memcached URL {mask_url(url)!r} has credentials, but memcached's text protocol "
                "has no authentication: protect the server by network access instead"
            )
        options = query_options(parts, {"timeout": float, "connect_timeout": float}, url)
        server: tuple[str, int] | str
        if parts.hostname:
            if parts.path not in ("", "/"):
                raise ValueError(f"memcached URL {mask_url(url)!r}: expected memcached://host:port")
            server = (parts.hostname, parts.port or DEFAULT_PORT)
        elif parts.path not in ("", "/"):
            server = parts.path  # memcached:///path/to/memcached.sock
        else:
            raise ValueError(f"memcached URL {mask_url(url)!r} names no server, e.g. memcached://HOST:11211")
        return cls(server, url=url, **options)  # type: ignore[arg-type]

    def describe(self) -> str:
        return self._describe

    # -- connections -------------------------------------------------------------------------

    def _new_client(self) -> Any:
        return self._mc.Client(
            self.server,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            no_delay=True,
            default_noreply=False,  # a reply for every command: nothing reports success unapplied
        )

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        idle = self._idle.get()
        with idle.lock:
            client = idle.clients.pop() if idle.clients else None
        if client is None:
            client = self._new_client()
        elif client.sock is not None and _is_stale(client.sock):
            client.close()  # reconnect below
        if client.sock is None:
            try:
                client._connect()
            except BaseException as exc:
                client.close()
                raise _NotConnected(exc) from exc
        try:
            yield client
        except BaseException:
            client.close()  # its state is unknown after an error: never reuse it
            raise
        with idle.lock:
            if len(idle.clients) < _MAX_IDLE_CONNECTIONS:
                idle.clients.append(client)
                return
        client.close()

    def _call(
        self,
        what: str,
        op: Callable[[Any], T],
        *,
        passthrough: tuple[type[BaseException], ...] = (),
        unanswered: bool | None = None,
        batch: bool = False,
    ) -> T:
        """Run ``op(client)``, turning every failure of the server into ``BackendUnavailableError``.

        ``applied`` is False when no connection could be made (nothing was sent) or the server
        refused the command with an error reply, None when the command was sent and the reply
        did not come within ``timeout`` or the connection broke. The client is then closed, so
        a late reply is never read as the answer to a later command. ``passthrough``: driver
        errors the caller handles itself. ``unanswered``: ``applied`` for a request sent without
        a reply, when it is known (False for a question asked before the operation itself).
        ``batch``: ``op`` sends several commands (or several writes), so an error reply to one of
        them leaves the others' outcome open: ``applied`` is None for every failure once
        connected.
        """
        errors = self._errors
        failed_part_way: tuple[type[BaseException], ...] = (errors.MemcacheError,) if batch else ()
        try:
            with self._connection() as client:
                return op(client)
        except passthrough:
            raise
        except _NotConnected as failure:
            exc = failure.cause
            if not isinstance(exc, (OSError, errors.MemcacheError)):
                raise exc from None  # not a failure of the server (e.g. KeyboardInterrupt)
            timed_out = isinstance(exc, TimeoutError)
            why = "no connection within connect_timeout" if timed_out else "cannot connect"
            raise self._unavailable(f"{what}: {why}", exc, applied=False) from exc
        except TimeoutError as exc:
            why = f"no reply within {self.timeout:g}s"
            raise self._unavailable(f"{what}: {why}", exc, applied=unanswered) from exc
        except (OSError, errors.MemcacheUnexpectedCloseError, errors.MemcacheUnknownError) as exc:
            raise self._unavailable(f"{what}: the connection broke", exc, applied=unanswered) from exc
        except failed_part_way as exc:
            raise self._unavailable(f"{what}: the server failed part way", exc, applied=None) from exc
        except errors.MemcacheServerError as exc:
            message = bytes(exc.args[0] if exc.args else b"").decode("ascii", "replace")
            if "too large" in message:
                raise ValueTooLargeError(
                    f"{self.url}: memcached refused a value as too large during {what} ({message})"
                ) from exc
            raise self._unavailable(f"{what}: the server failed", exc, applied=False) from exc
        except errors.MemcacheError as exc:  # an error reply the server sent (CLIENT_ERROR ...)
            raise self._unavailable(f"{what}: the server refused the command", exc, applied=False) from exc

    def _unavailable(self, what: str, exc: BaseException, *, applied: bool | None) -> BackendUnavailableError:
        return unavailable(
            self._url,
            f"{what} [timeout={self.timeout:g}s, connect_timeout={self.connect_timeout:g}s]",
            applied=applied,
            cause=exc,
        )

    def _item_limit(self) -> int:
        """The server's ``item_size_max``, asked once (its own round trip, before any write)."""
        if self._item_size_max is None:
            # The write it precedes is not sent if this fails: nothing applied.
            self._call("asking item_size_max before a write", self._limit, unanswered=False)
        assert self._item_size_max is not None
        return self._item_size_max

    def _limit(self, client: Any) -> int:
        """The server's ``item_size_max`` (asked once; 1 MiB if it will not say)."""
        if self._item_size_max is None:
            try:
                size = client.stats("settings").get(b"item_size_max")
            except self._errors.MemcacheClientError:
                size = None
            self._item_size_max = size if isinstance(size, int) and size > 0 else DEFAULT_ITEM_SIZE_MAX
        return self._item_size_max

    def _payload(self, key: str, mkey: str, value: RawValue) -> bytes:
        """The bytes to send for ``value``; ``ValueTooLargeError`` before anything is sent."""
        data = str(value).encode("ascii") if isinstance(value, int) else bytes(value)
        limit = self._item_limit() - len(mkey) - ITEM_OVERHEAD
        if len(data) > limit:
            raise ValueTooLargeError(
                f"value for key {key!r} is {len(data)} bytes, over what memcached at {self.url} "
                f"stores under this key ({limit} bytes: item_size_max {self._item_size_max} less "
                "the item header); nothing was written"
            )
        return data

    # -- the contract ------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        mkey = memcached_key(key)
        value, cas = self._call("get", lambda c: c.gets(mkey))
        if value is None:
            return None
        token = int(cas)
        if token == 0:  # memcached -C: without CAS tokens there is no compare-and-set at all
            self._no_cas()
        return Entry(_strip_padding(value), token)

    def _no_cas(self) -> NoReturn:
        raise NotSupportedError(
            f"memcached at {self.url} runs with CAS disabled (-C), so compare-and-set, locks "
            "and update() cannot work: start memcached without -C"
        )

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        mkey = memcached_key(key)
        data, expire = self._payload(key, mkey, value), exptime(ttl)
        if not self._call("set", lambda c: c.set(mkey, data, expire=expire, noreply=False)):
            raise unavailable(self._url, f"the server did not store key {key!r}", applied=False)

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        mkey = memcached_key(key)
        data, expire = self._payload(key, mkey, value), exptime(ttl)
        return bool(self._call("add", lambda c: c.add(mkey, data, expire=expire, noreply=False)))

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        if expected is None:
            stored = self.add(key, value, ttl)
        else:
            token = _cas_token(expected)
            mkey = memcached_key(key)
            data, expire = self._payload(key, mkey, value), exptime(ttl)

            def op(c: Any) -> bool:
                return c.cas(mkey, data, token, expire=expire, noreply=False) is True

            # A token memcached never hands out cannot match.
            stored = token is not None and self._call("compare_and_set", op)
        if stored:
            # The text protocol's cas does not return the new token; learning it would cost a
            # round trip, so callers are not told (they read again if they need it).
            return CasResult(True, None)
        return CasResult(False, self.get(key))

    def delete(self, key: str) -> bool:
        mkey = memcached_key(key)
        return bool(self._call("delete", lambda c: c.delete(mkey, noreply=False)))

    def delete_if_version(self, key: str, version: Version) -> bool:
        token = _cas_token(version)
        if token is None:
            return False
        command = f"md {memcached_key(key)} C{token}".encode("ascii")
        try:
            reply = self._call(
                "delete_if_version",
                lambda c: c.raw_command(command),
                passthrough=(self._errors.MemcacheUnknownCommandError,),
            )
        except self._errors.MemcacheUnknownCommandError:
            raise NotSupportedError(
                f"memcached at {self.url} does not know the meta delete command (md), which "
                "delete_if_version needs (and with it locks and SharedDict.pop): use memcached 1.6 "
                "or newer, or redis://"
            ) from None
        if reply == b"HD":
            return True
        if reply in (b"NF", b"EX"):  # not found / token changed
            return False
        raise unavailable(self._url, f"unexpected reply {reply[:40]!r} to md", applied=None)

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        if not 0 <= by <= INT64_MAX:
            return self._incr_by_cas(key, by, ttl)
        mkey = memcached_key(key)
        exptime(ttl)  # refuses a ttl memcached cannot hold before anything is sent
        non_numeric = object()

        def op(c: Any) -> object:
            try:
                return c.incr(mkey, by, noreply=False)
            except self._errors.MemcacheClientError as exc:
                if b"non-numeric" not in bytes(exc.args[0] if exc.args else b""):
                    raise
                return non_numeric

        while True:
            result = self._call("incr", op)
            if result is non_numeric:
                # Not an unsigned number: a negative counter (CAS loop) or not an integer (TypeError).
                return self._incr_by_cas(key, by, ttl)
            assert result is None or isinstance(result, int)
            if result is None:  # missing: create it; if another creator won, increment theirs
                if self.add(key, by, ttl):
                    return by
                continue
            if result > INT64_MAX or result < by:  # past the signed range, or wrapped at 2**64
                self._undo_native_incr(key, by)
                raise overflows(key)
            return result

    def _incr_by_cas(self, key: str, by: int, ttl: float | None) -> int:
        """``incr`` as a ``gets``/``cas`` loop, for what memcached's unsigned incr cannot do."""
        mkey = memcached_key(key)
        delays = _delays()
        while True:
            entry = self.get(key)
            if entry is None:
                if not INT64_MIN <= by <= INT64_MAX:
                    raise overflows(key)
                if self.add(key, by, ttl):
                    return by
                continue
            assert isinstance(entry.value, bytes)
            match = _INT_TEXT.fullmatch(entry.value)
            if match is None:
                raise not_an_integer(key)
            new = int(match.group(1)) + by
            if not INT64_MIN <= new <= INT64_MAX:
                raise overflows(key)
            if self._cas_keeping_expiry(mkey, entry.version, str(new).encode("ascii")):
                return new
            time.sleep(next(delays))

    def _cas_keeping_expiry(self, mkey: str, version: Version, data: bytes) -> bool:
        """``cas`` that keeps the entry's expiry: read it with ``mg <key> c t``, then ``cas``.

        The expiry is re-sent as the seconds memcached says remain, so it can only move later by
        less than one of memcached's clock ticks, never earlier.
        """
        meta = f"mg {mkey} c t".encode("ascii")

        def op(c: Any) -> bool:
            reply: bytes = c.raw_command(meta)
            if not reply.startswith(b"HD"):
                return False  # gone since it was read
            flags = {f[:1]: f[1:] for f in reply.split()[1:]}
            if int(flags[b"c"]) != version:
                return False  # written since it was read
            remaining = int(flags[b"t"])
            expire = 0 if remaining < 0 else _exptime_seconds(remaining)
            return c.cas(mkey, data, version, expire=expire, noreply=False) is True

        return self._call("incr", op)

    def _undo_native_incr(self, key: str, by: int) -> None:
        """Subtract ``by`` (modulo 2**64, as memcached added it) after an overflowing native incr."""
        mkey = memcached_key(key)
        delays = _delays()
        while True:
            entry = self.get(key)
            if entry is None:
                return  # deleted or evicted meanwhile: nothing left to undo
            assert isinstance(entry.value, bytes)
            match = _UNSIGNED_TEXT.fullmatch(entry.value)
            if match is None:
                return  # overwritten meanwhile by a set: nothing left to undo
            old = (int(match.group(1)) - by) % _UINT64
            if self._cas_keeping_expiry(mkey, entry.version, str(old).encode("ascii")):
                return
            time.sleep(next(delays))

    def touch(self, key: str, ttl: float | None) -> bool:
        mkey = memcached_key(key)
        expire = exptime(ttl)
        return bool(self._call("touch", lambda c: c.touch(mkey, expire, noreply=False)))

    def expiry(self, key: str) -> float | None:
        """The whole seconds of the ttl that remain, by memcached's clock (meta get ``mg <key>
        t``, less the tick added when the ttl was set: see the module docstring). The entry may
        outlive the answer by up to two seconds, never expire before it."""
        command = f"mg {memcached_key(key)} t".encode("ascii")
        try:
            reply = self._call(
                "expiry",
                lambda c: c.raw_command(command),
                passthrough=(self._errors.MemcacheUnknownCommandError,),
            )
        except self._errors.MemcacheUnknownCommandError:
            raise NotSupportedError(
                f"memcached at {self.url} does not know the meta get command (mg), which reading "
                "a key's expiry needs: use memcached 1.6 or newer, or redis:// / postgresql://"
            ) from None
        if reply == b"EN":
            raise KeyError(key)
        if not reply.startswith(b"HD"):
            raise unavailable(self._url, f"unexpected reply {reply[:40]!r} to mg", applied=False)
        flags = {f[:1]: f[1:] for f in reply.split()[1:]}
        remaining = int(flags[b"t"])
        return None if remaining < 0 else float(max(0, remaining - 1))

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """``gets`` of up to ``GET_MANY_BATCH`` keys per round trip."""
        mkeys = {memcached_key(key): key for key in keys}
        ordered = list(mkeys)

        def op(c: Any) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for chunk in chunks(ordered, GET_MANY_BATCH):
                found.update(c.gets_many(chunk))
            return found

        found = self._call("get_many", op)
        entries: dict[str, Entry] = {}
        for mkey in ordered:
            if mkey not in found:
                continue
            value, cas = found[mkey]
            if int(cas) == 0:
                self._no_cas()
            entries[mkeys[mkey]] = Entry(_strip_padding(value), int(cas))
        return entries

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        """Pipelined ``set`` commands, up to ``WRITE_MANY_BATCH`` per round trip. Every size is
        checked before anything is sent (an oversized ``set`` makes memcached drop the old item)."""
        expire = exptime(ttl)
        payloads: dict[str, bytes] = {}
        for key, value in items.items():
            mkey = memcached_key(key)
            payloads[mkey] = self._payload(key, mkey, value)
        pairs = list(payloads.items())

        def op(c: Any) -> list[str]:
            failed: list[str] = []
            for chunk in chunks(pairs, WRITE_MANY_BATCH):
                failed += c.set_many(dict(chunk), expire=expire, noreply=False)
            return failed

        failed = self._call("set_many", op, batch=True)
        if failed:
            raise unavailable(
                self._url,
                f"the server did not store {len(failed)} of the {len(pairs)} keys of a set_many",
                applied=None,
            )

    def delete_many(self, keys: Sequence[str]) -> int:
        """Pipelined ``delete`` commands, up to ``WRITE_MANY_BATCH`` per round trip."""
        commands = [f"delete {memcached_key(key)}\r\n".encode("ascii") for key in keys]

        def op(c: Any) -> int:
            removed = 0
            for chunk in chunks(commands, WRITE_MANY_BATCH):
                replies = c._misc_cmd(chunk, b"delete", False)
                removed += sum(1 for reply in replies if reply == b"DELETED")
            return removed

        return self._call("delete_many", op, batch=True)

    def ping(self) -> None:
        self._call("ping", lambda c: c.version())

    def scan(self, prefix: str = "") -> Iterator[str]:
        raise NotSupportedError(
            f"memcached ({self.url}) cannot list keys, so keys(), iterating or sizing a "
            "SharedDict, and clear() are not available: keep the names you need in one value "
            "(store.update) or use sqlite://, redis:// or postgresql://"
        )

    def sweep(self, limit: int = 1000) -> int:
        return 0  # memcached expires entries itself

    def close(self) -> None:
        idle = self._idle.current()
        if idle is None:
            self._idle.take()  # none made in this process (a forked child's start)
            return
        with idle.lock:
            clients, idle.clients = idle.clients, []
        for client in clients:
            client.close()


class AsyncMemcachedBackend(ThreadedBackend):
    """``memcached://`` for ``asyncio``: each call of a :class:`MemcachedBackend` runs in a thread.

    pymemcache has no asyncio API, so every operation (its round trips and, for ``incr`` of a
    negative counter, its CAS retry loop with its back-off sleeps) runs in a thread pool of this
    backend's own, one thread per pooled connection at most: the event loop never waits. Each call
    is bounded as the sync one is (``connect_timeout`` + ``timeout`` per round trip) and fails the
    same way: ``BackendUnavailableError`` with ``applied`` False / None, the driver's exception
    chained. Fork-safe as :class:`MemcachedBackend` (the pool of threads is made anew in a child).
    """

    schemes = MemcachedBackend.schemes
    sync_class = MemcachedBackend
    may_evict = True
    max_threads = _MAX_IDLE_CONNECTIONS


class _NotConnected(Exception):
    """Opening the connection failed, so nothing was sent; carries the driver's exception."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _cas_token(version: Version) -> int | None:
    if isinstance(version, int):
        return version if version > 0 and not isinstance(version, bool) else None
    text = version.decode("ascii", "replace") if isinstance(version, bytes) else version
    return int(text) if text.isascii() and text.isdigit() else None


def _strip_padding(value: bytes) -> bytes:
    """Undo memcached's in-place incr padding (``b"9 "``) on numbers; other values are untouched."""
    if value.endswith(b" ") and _INT_TEXT.fullmatch(value):
        return value.rstrip(b" ")
    return value
