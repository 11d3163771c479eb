"""``postgresql://`` (and ``postgres://``): one PostgreSQL table shared by every process and machine.

URL: ``postgresql://user:password@host:5432/dbname?table=sharedstate&timeout=4``. Options of our own
(``table``, ``create_table``, ``timeout``, ``pool_size``) are stripped before the rest of the query
string (``sslmode``, ``application_name``, ``options``, ... any libpq connection parameter) goes to
libpq. Needs ``pip install 'sharedstate[postgres]'`` (psycopg 3 and psycopg_pool).

How it stays correct:

- Every operation takes effect in one statement in autocommit mode, so it is atomic by itself:
  upserts are ``INSERT ... ON CONFLICT ... RETURNING``, compare-and-set is ``UPDATE ... WHERE
  version = ...``, ``incr`` is ``UPDATE ... RETURNING`` of a live integer and, only when there is
  none (absent, expired, not an integer), the upsert. Row locks taken by the statement serialize
  writers of one key, across machines. A second statement (that upsert, or the read after a
  refused compare-and-set) runs only when the first changed nothing, and sees every commit since.
- Expiry is judged by the *server's* clock (``now()``), never the app's, so machines whose clocks
  disagree still agree on what has expired. Every query treats expired rows as absent; they are
  deleted lazily in small batches (``FOR UPDATE SKIP LOCKED``, so sweepers never wait on each other
  or on writers) and by :meth:`PostgresBackend.sweep`.
- Versions are random 62-bit integers drawn per write, so a deleted and re-created key never gets
  an old version back (a sequence would do too, but would be one more object for migrations).
- One connection pool per process. After ``fork`` the child opens a pool of its own; see
  :meth:`PostgresBackend._pool_slot` for why it must never touch the parent's.
- Failures are bounded: every call takes at most ``timeout`` seconds (default 4), waiting for a
  connection and for the reply alike (see :class:`DeadlineConnection`: a frozen server that keeps
  the connection open is noticed too), then raises
  :class:`~sharedstate.errors.BackendUnavailableError` naming the URL with its password masked,
  ``applied`` None if the statement was sent (outcome unknown) and False otherwise, psycopg's
  exception as its cause. A connection attempt that waiting cannot fix (no such database or role,
  bad password, connection refused) fails the call at once. The pool reconnects when the server
  is back.

:class:`AsyncPostgresBackend` is the same backend for asyncio (psycopg's ``AsyncConnection`` and
psycopg_pool's ``AsyncConnectionPool``, one pool per event loop): URL parsing, statements, errors
and sweep pacing are shared with :class:`PostgresBackend` through :func:`parse_postgres_url` and
:class:`_PostgresShared`, and :class:`AsyncDeadlineConnection` bounds every wait the same way.

The table is created on first use unless ``?create_table=false``; :func:`ddl` returns the SQL for
migrations, and ``python -m sharedstate.backends.postgres URL [--run]`` prints (or runs) it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import inspect
import logging
import math
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode

from sharedstate._optional import require

# The registry imports this module only for postgresql:// URLs; these raise an ImportError that
# names the extra to install. The plain imports below give the type checker the real names.
require("psycopg", "postgres")
require("psycopg_pool", "postgres")
import psycopg  # noqa: E402
import psycopg_pool  # noqa: E402
from psycopg.abc import PQGen  # noqa: E402

if "timeout" not in inspect.signature(psycopg.Connection.wait).parameters:
    raise ImportError(
        f"sharedstate's postgresql:// backend needs psycopg 3.3 or newer, which can bound the wait "
        f"for a statement's reply (psycopg {psycopg.__version__} is installed): "
        "pip install -U 'sharedstate[postgres]'"
    )

from sharedstate.backends._failures import driver_text, unavailable  # noqa: E402
from sharedstate.backends.base import AsyncBackend, Backend, CasResult, Entry, RawValue, Version  # noqa: E402
from sharedstate.backends.kit import (  # noqa: E402
    INT64_MAX,
    INT64_MIN,
    PerProcess,
    fits_int64,
    has_pending_input,
    inherit,
    not_an_integer,
    overflows,
    proportional_sweep_limit,
    random_version,
    successor,
)
from sharedstate.errors import BackendUnavailableError  # noqa: E402
from sharedstate.urls import mask_url, query_options, split_url  # noqa: E402
from sharedstate.validation import seconds  # noqa: E402

T = TypeVar("T")
RV = TypeVar("RV")

logger = logging.getLogger(__name__)

#: Every pool this module opens is named with this prefix (see _QuietOwnPools).
_POOL_PREFIX = "sharedstate-pg-"

# A connection attempt that failed with one of these will not succeed within the caller's timeout
# (the server refused the credentials or the database, or nothing listens there): the call fails
# at once instead of waiting out psycopg_pool's retry loop (and its log line per attempt). The
# next call tries again, on a new pool.
_PERMANENT_CONNECT_ERRORS = (
    "Connection refused",
    "could not translate host name",
    "does not exist",  # database or role
    "authentication failed",
    "no pg_hba.conf entry",
    "no password supplied",
    "permission denied",
    "invalid connection option",
    "invalid integer value",
    "invalid sslmode value",
)


class DeadlineConnection(psycopg.Connection[tuple[Any, ...]]):
    """A psycopg connection whose every wait for the server ends at ``deadline`` (monotonic).

    psycopg bounds connecting (``connect_timeout``) but waits for a statement's reply forever,
    and neither TCP keepalives nor ``tcp_user_timeout`` notice a server that is frozen (stopped,
    swapping, stuck) while its kernel still acknowledges every packet; ``statement_timeout`` is
    enforced by the very server that is not running. So the wait itself is bounded: psycopg 3.3's
    ``Connection.wait`` takes a timeout, and every statement goes through it. A connection whose
    wait timed out is in the middle of the protocol: :attr:`timed_out` marks it, and its owner
    closes it so its late reply can never answer a later statement.
    """

    deadline: float | None = None
    timed_out = False

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        deadline = self.deadline
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        try:
            return super().wait(gen, interval=interval, timeout=timeout)
        except psycopg.OperationalError:
            if deadline is not None and time.monotonic() >= deadline:
                self.timed_out = True
            raise


Conn = DeadlineConnection


class AsyncDeadlineConnection(psycopg.AsyncConnection[tuple[Any, ...]]):
    """The asyncio counterpart of :class:`DeadlineConnection`: every wait ends at ``deadline``.

    psycopg's ``AsyncConnection.wait`` takes the same timeout (its wait on the socket is an
    awaited ``select`` on the event loop), so the bound is the same and the loop never blocks.
    """

    deadline: float | None = None
    timed_out = False

    async def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        deadline = self.deadline
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        try:
            return await super().wait(gen, interval=interval, timeout=timeout)
        except psycopg.OperationalError:
            if deadline is not None and time.monotonic() >= deadline:
                self.timed_out = True
            raise


AConn = AsyncDeadlineConnection


class _QuietOwnPools(logging.Filter):
    """Drop psycopg_pool's log records about this module's pools; the backend reports instead.

    psycopg_pool logs a warning on every failed connection attempt of its retry loop (six lines
    while one call waits 4 s for a database that does not exist) and on every connection it
    discards. The backend logs one masked line per pool and raises errors that say the rest.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, (DeadlineConnection, AsyncDeadlineConnection)):
                return False
            if isinstance(arg, str) and arg.startswith(_POOL_PREFIX):
                return False
            if not isinstance(arg, (str, int, float)) and f"'{_POOL_PREFIX}" in repr(arg):
                return False  # a pool task, whose repr names its pool
        return True


logging.getLogger("psycopg.pool").addFilter(_QuietOwnPools())

DEFAULT_TABLE = "sharedstate"
DEFAULT_TIMEOUT = 4.0  # under the 5 s bound with room for the first connection attempt
DEFAULT_POOL_SIZE = 10

#: Our URL options and their types; every other query parameter must be a libpq keyword.
OPTIONS: dict[str, type] = {"table": str, "create_table": bool, "timeout": float, "pool_size": int}

# Lowercase only: quoted and unquoted spellings of the name are then the same table.
_TABLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,49}")
_SCAN_BATCH = 500

_BACKENDS: weakref.WeakSet[PostgresBackend] = weakref.WeakSet()


def check_table_name(table: str) -> str:
    """Return ``table`` if it is a valid table name (lowercase identifier), else raise ValueError."""
    if not isinstance(table, str) or not _TABLE_RE.fullmatch(table):
        raise ValueError(
            f"table name must be 1-50 lowercase letters, digits or underscores, not starting with a "
            f"digit; got {table!r}"
        )
    return table


def ddl(table: str = DEFAULT_TABLE) -> str:
    """The SQL that creates the table (and its expiry index); idempotent (``IF NOT EXISTS``).

    Put it in your migrations (``op.execute(ddl("sharedstate"))`` in Alembic) and open the store
    with ``?create_table=false`` so the app never issues DDL itself.
    """
    return "".join(f"{statement};\n" for statement in _ddl_statements(table))


def _ddl_statements(table: str) -> list[str]:
    t = check_table_name(table)
    return [
        f'CREATE TABLE IF NOT EXISTS "{t}" (\n'
        '    key        text COLLATE "C" PRIMARY KEY,  -- byte order, so prefix scans use the index\n'
        "    value      bytea,                -- codec output; NULL when num holds the value\n"
        "    num        bigint,               -- native integers, what incr works on\n"
        "    version    bigint NOT NULL,      -- random 62-bit token, new on every write\n"
        "    expires_at timestamptz,          -- NULL: never; compared with the server's now()\n"
        f'    CONSTRAINT "{t}_one_value" CHECK ((value IS NULL) <> (num IS NULL))\n'
        ")",
        f'CREATE INDEX IF NOT EXISTS "{t}_expires_at" ON "{t}" (expires_at) WHERE expires_at IS NOT NULL',
    ]


class _Statements:
    """The SQL of every operation on one table (the name is validated, so it is safe to format)."""

    def __init__(self, table: str) -> None:
        t = f'"{check_table_name(table)}"'
        live = "(t.expires_at IS NULL OR t.expires_at > now())"
        expired = "(t.expires_at IS NOT NULL AND t.expires_at <= now())"
        expires = "now() + %(ttl)s::float8 * interval '1 second'"  # NULL ttl gives NULL: never
        upsert = (
            f"INSERT INTO {t} AS t (key, value, num, version, expires_at)"
            f" VALUES (%(key)s, %(value)s, %(num)s, %(version)s, {expires})"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, num = excluded.num,"
            " version = excluded.version, expires_at = excluded.expires_at"
        )
        self.get = f"SELECT value, num, version FROM {t} AS t WHERE key = %(key)s AND {live}"
        self.set = upsert
        self.add = f"{upsert} WHERE {expired}"
        self.replace = (
            f"UPDATE {t} AS t SET value = %(value)s, num = %(num)s, version = %(version)s,"
            f" expires_at = {expires} WHERE key = %(key)s AND version = %(old)s AND {live}"
        )
        # Removes an expired row too (it is garbage anyway) but reports only a live one.
        self.delete = f"DELETE FROM {t} AS t WHERE key = %(key)s RETURNING {live}"
        self.delete_if = f"DELETE FROM {t} AS t WHERE key = %(key)s AND version = %(old)s AND {live}"
        # incr's common case, a live integer: a plain UPDATE, as cheap as a hand-written counter
        # (the upsert below costs a speculative-insert check and a row-lock record more). No row
        # back (absent, expired, not an integer): nothing changed, and incr runs the upsert.
        self.incr_live = (
            f"UPDATE {t} AS t SET num = t.num + %(by)s, version = %(version)s"
            f" WHERE key = %(key)s AND t.num IS NOT NULL AND {live} RETURNING num"
        )
        # A missing or expired row starts at 0 and takes the ttl; a live integer keeps its expiry;
        # a live non-integer fails the WHERE, so no row comes back and nothing changes.
        self.incr = (
            f"INSERT INTO {t} AS t (key, value, num, version, expires_at)"
            f" VALUES (%(key)s, NULL, %(by)s, %(version)s, {expires})"
            " ON CONFLICT (key) DO UPDATE SET"
            f" num = CASE WHEN {expired} THEN excluded.num ELSE t.num + excluded.num END,"
            " value = NULL, version = excluded.version,"
            f" expires_at = CASE WHEN {expired} THEN excluded.expires_at ELSE t.expires_at END"
            f" WHERE t.num IS NOT NULL OR {expired}"
            " RETURNING num"
        )
        self.touch = f"UPDATE {t} AS t SET expires_at = {expires} WHERE key = %(key)s AND {live}"
        # Seconds left by the server's clock; NULL when the row never expires.
        self.expiry = (
            f"SELECT extract(epoch FROM t.expires_at - now())::float8 FROM {t} AS t"
            f" WHERE key = %(key)s AND {live}"
        )
        # The batches: one statement each, the keys as one array parameter (no limit on their
        # number). Writes lock rows in key order (the caller sorts), so two batches that share
        # keys never deadlock on each other.
        self.get_many = (
            f"SELECT key, value, num, version FROM {t} AS t WHERE key = ANY(%(keys)s::text[]) AND {live}"
        )
        self.set_many = (
            f"INSERT INTO {t} AS t (key, value, num, version, expires_at)"
            f" SELECT u.key, u.value, u.num, u.version, {expires} FROM unnest("
            "%(keys)s::text[], %(values)s::bytea[], %(nums)s::int8[], %(versions)s::int8[]"
            ") AS u(key, value, num, version)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, num = excluded.num,"
            " version = excluded.version, expires_at = excluded.expires_at"
        )
        # The subquery locks the rows in key order before the DELETE (which on its own locks them
        # in the order of its scan: heap order for a bitmap scan) so it cannot deadlock either.
        self.delete_many = (
            f"DELETE FROM {t} AS t WHERE key IN (SELECT key FROM {t} WHERE key = ANY(%(keys)s::text[])"
            f' ORDER BY key COLLATE "C" FOR UPDATE) RETURNING {live}'
        )
        # SKIP LOCKED: rows a writer (or another sweeper) holds are left for later, nobody waits.
        # The outer condition re-checks expiry on the row as it is when the DELETE locks it.
        self.sweep = (
            f"DELETE FROM {t} AS t WHERE key IN (SELECT key FROM {t}"
            " WHERE expires_at <= now() LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            f" AND {expired}"
        )
        # COLLATE "C": prefix ranges are byte ranges whatever the database's collation; with the
        # column declared COLLATE "C" (see ddl) this is the primary key's order.
        self.scan: dict[tuple[bool, bool], str] = {}
        for first in (True, False):
            for bounded in (True, False):
                where = ['key COLLATE "C" >= %(start)s' if first else 'key COLLATE "C" > %(start)s']
                if bounded:
                    where.append('key COLLATE "C" < %(before)s')
                self.scan[first, bounded] = (
                    f"SELECT key FROM {t} AS t WHERE {' AND '.join(where)} AND {live}"
                    f' ORDER BY key COLLATE "C" LIMIT {_SCAN_BATCH}'
                )


class _ConnectErrors:
    """What the pool's background connection attempts ran into (for errors and pool replacement).

    The first failure is logged once, masked; a permanent one (see ``_PERMANENT_CONNECT_ERRORS``)
    also calls ``on_permanent``, which closes the pool so that waiting callers fail at once.
    """

    def __init__(self, url: str) -> None:
        self.url = url  # unmasked: masked and scrubbed where it is shown
        self.count = 0
        self.last = ""
        self.last_error: BaseException | None = None
        self.failing = False  # whether the latest attempt failed
        self.permanent: BaseException | None = None
        self.on_permanent: Callable[[], None] = lambda: None

    def record(self, exc: BaseException) -> None:
        self.count += 1
        self.last = driver_text(self.url, exc)
        self.last_error = exc
        self.failing = True
        if self.count == 1:
            logger.warning("PostgreSQL at %s: cannot connect: %s", mask_url(self.url), self.last)
        if self.permanent is None and _is_permanent(exc):
            self.permanent = exc
            self.on_permanent()

    def record_ok(self) -> None:
        self.failing = False


def _is_permanent(exc: BaseException) -> bool:
    """Whether a failed connection attempt would fail again the same way (no use retrying)."""
    if isinstance(exc, psycopg.ProgrammingError):
        return True  # a malformed connection string
    message = str(exc)
    return any(text in message for text in _PERMANENT_CONNECT_ERRORS)


def _recording_connection_class(sink: _ConnectErrors) -> type[Conn]:
    """A Connection class whose failed ``connect`` calls are recorded in ``sink``."""

    class RecordingConnection(DeadlineConnection):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> RecordingConnection:
            try:
                conn = super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                sink.record(exc)
                raise
            sink.record_ok()
            return conn

    return RecordingConnection


class _PoolSlot:
    """One process's pool, the connection errors it has seen and how many connections are lent."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Conn], errors: _ConnectErrors) -> None:
        self.pool = pool
        self.errors = errors
        self.pid = os.getpid()
        self.in_use = 0
        self._lock = threading.Lock()

    def lend(self, conn: Conn) -> Conn:
        with self._lock:
            self.in_use += 1
        return conn

    def give_back(self, conn: Conn) -> None:
        with self._lock:
            self.in_use -= 1
        conn.deadline = None
        if conn.timed_out:
            # Its statement's reply may still arrive: never let another statement read it.
            conn.close()
        self.pool.putconn(conn)  # the pool discards a broken or closed connection


def _async_recording_connection_class(sink: _ConnectErrors) -> type[AConn]:
    """An AsyncConnection class whose failed ``connect`` calls are recorded in ``sink``."""

    class RecordingAsyncConnection(AsyncDeadlineConnection):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> RecordingAsyncConnection:
            try:
                conn = await super().connect(conninfo, **kwargs)
            except psycopg.Error as exc:
                sink.record(exc)
                raise
            sink.record_ok()
            return conn

    return RecordingAsyncConnection


class _AsyncPool(psycopg_pool.AsyncConnectionPool[AConn]):
    """psycopg_pool's ``AsyncConnectionPool``, whose workers end when their task is cancelled.

    A pool worker catches ``CancelledError`` along with every other exception while it opens a
    connection (so a caller's cancellation cannot lose one), and goes back to waiting for work:
    a cancellation that lands then is swallowed. ``asyncio.run`` cancels every task when its
    main coroutine returns and waits for them, so a pool still growing at that moment (an app
    that ended its loop without ``aclose()``) would hang the program's exit forever. This worker
    runs the same jobs and then honours a cancellation that arrived meanwhile.
    """

    @classmethod
    async def worker(cls, q: Any) -> None:
        me = asyncio.current_task()
        while True:
            job = await q.get()
            if isinstance(job, psycopg_pool.pool_async.StopWorker):
                return
            try:
                await job.run()
            except (Exception, asyncio.CancelledError) as exc:  # as the pool's own worker does
                logger.debug("sharedstate-pg pool task %s failed: %s", job, type(exc).__name__)
            cancelling = getattr(me, "cancelling", None)  # Python 3.11+
            if cancelling is not None and cancelling():
                raise asyncio.CancelledError  # the job swallowed our cancellation


class _AsyncPoolSlot:
    """One event loop's pool in one process, its connection errors and how many are lent.

    Used only from its loop's thread, so it needs no lock.
    """

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[AConn],
        errors: _ConnectErrors,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.pool = pool
        self.errors = errors
        self.loop = loop
        self.in_use = 0

    def lend(self, conn: AConn) -> AConn:
        self.in_use += 1
        return conn

    async def give_back(self, conn: AConn) -> None:
        self.in_use -= 1
        conn.deadline = None
        if conn.timed_out:
            # Its statement's reply may still arrive: never let another statement read it.
            await conn.close()
        await self.pool.putconn(conn)  # the pool discards a broken or closed connection

    def abandon(self) -> None:
        """Close the idle connections of a pool whose event loop has ended, without the loop.

        Its worker tasks died with the loop, so ``close()`` cannot run; closing a libpq
        connection needs no loop. Marked closed, the pool's finalizer then does nothing.
        """
        for conn in list(getattr(self.pool, "_pool", ())):
            with contextlib.suppress(Exception):
                conn.pgconn.finish()
        with contextlib.suppress(Exception):
            self.pool._closed = True


def parse_postgres_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a ``postgresql://`` URL into the conninfo for libpq and our own options (validated).

    Shared by :class:`PostgresBackend` and :class:`AsyncPostgresBackend`, so both accept and
    refuse the same URLs with the same messages.
    """
    parts = split_url(url)
    known: dict[str, type] = dict.fromkeys(_libpq_keywords(), str)
    known.update(OPTIONS)
    options = query_options(parts, known, url)
    ours = {k: v for k, v in options.items() if k in OPTIONS}
    rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in OPTIONS]
    # libpq ends the user info at its first "@", every other parser at the last, and it
    # refuses spaces: the user name and password reach it percent-encoded, read as users
    # mean them (split_url accepted them).
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        userinfo = _encoded(user) + colon + _encoded(password)
    netloc = userinfo + at + hostport
    # Built by hand: urlunsplit drops the "//" of an empty host ("postgresql://", libpq's
    # defaults), which libpq then takes for a key=value string. quote, not quote_plus:
    # libpq does not read '+' as a space.
    query = urlencode(rest, quote_via=quote)
    conninfo = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return conninfo, ours


@dataclasses.dataclass
class _Run:
    """One statement's attempts (``_run``): its kind, its deadline and what was tried already."""

    write: bool
    deadline: float
    retried_read: bool = False
    created: bool = False


class _PostgresShared:
    """What :class:`PostgresBackend` and :class:`AsyncPostgresBackend` share.

    Options and their validation, the statements, the errors, and the pacing of lazy sweeps:
    the two classes differ only in how they wait for the server.
    """

    sweep_every_writes = 100
    sweep_every_seconds = 30.0
    sweep_batch = 1000

    def _configure(
        self,
        conninfo: str,
        table: str,
        create_table: bool,
        timeout: float,
        pool_size: int,
        display_url: str | None,
    ) -> None:
        timeout = seconds("timeout", timeout)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError(f"pool_size must be an int, got {type(pool_size).__name__}: {pool_size!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size!r}")
        self.table = check_table_name(table)
        self.create_table = create_table
        self.timeout = float(timeout)
        self.pool_size = pool_size
        self._url = display_url if display_url is not None else conninfo  # masked where shown
        self.display_url = mask_url(self._url)
        self._conninfo = conninfo
        try:
            self._connect_kwargs = _connect_defaults(conninfo, self.timeout)
        except psycopg.Error as exc:
            # Not chained: libpq quotes the connection string, password and all, in its message.
            raise ValueError(
                f"malformed PostgreSQL connection string {self.display_url!r}: {driver_text(self._url, exc)}"
            ) from None
        self._sql = _Statements(self.table)
        self._writes = 0
        self._last_sweep = time.monotonic()

    def describe(self) -> str:
        return self.display_url

    # -- errors ------------------------------------------------------------------------------

    def _no_connection(self, errors: _ConnectErrors) -> BackendUnavailableError:
        if errors.count:
            why = f"last connection error: {errors.last}"
        else:
            why = f"all {self.pool_size} pooled connections were busy, or the server did not answer"
        return unavailable(
            self._url, f"no connection within {self.timeout:g}s (option timeout=); {why}", applied=False
        )

    def _cannot_connect(self, exc: BaseException) -> BackendUnavailableError:
        """A connection attempt the server refused for good (no such database, wrong password)."""
        return unavailable(self._url, "cannot connect", applied=False, cause=exc)

    def _failed(self, exc: psycopg.Error, what: str, *, applied: bool | None) -> BackendUnavailableError:
        return unavailable(self._url, what, applied=applied, cause=exc)

    def _timed_out(self, exc: psycopg.Error) -> BackendUnavailableError:
        return self._failed(exc, f"no reply within {self.timeout:g}s (option timeout=)", applied=None)

    def _missing_table(self) -> BackendUnavailableError:
        return unavailable(
            self._url,
            f'table "{self.table}" does not exist and create_table=false. Create it with `python -m '
            f"sharedstate.backends.postgres '{self.display_url}' --run`, or add the SQL printed "
            f'without --run (also sharedstate.backends.postgres.ddl("{self.table}")) to your migrations',
            applied=False,
        )

    def _create_failed(self, exc: BaseException) -> BackendUnavailableError:
        return unavailable(
            self._url,
            f'table "{self.table}" does not exist and creating it failed. Create it as a user who '
            f"may (`python -m sharedstate.backends.postgres '{self.display_url}' --run`), or add "
            f'sharedstate.backends.postgres.ddl("{self.table}") to your migrations and open the '
            "store with ?create_table=false",
            applied=False,
            cause=exc,
        )

    # -- the failure steps of _acquire and _run (IO-free; both classes follow them) ----------------

    def _discard_pool(self, slot: Any) -> None:
        """Replace ``slot``'s pool after a connection failure (each class has its own kind)."""
        raise NotImplementedError

    def _pool_failed(self, slot: _PoolSlot | _AsyncPoolSlot, exc: psycopg.Error) -> None:
        """The pool did not lend a connection: raise the error, or return to try again.

        A pool closed by another thread or task that replaced it (``PoolClosed`` without a
        permanent connect error) is the one case to try again: the caller takes the new pool.
        """
        if slot.errors.permanent is not None:  # closed, or timing out, because connecting cannot work
            raise self._cannot_connect(slot.errors.permanent) from slot.errors.permanent
        if isinstance(exc, psycopg_pool.PoolClosed):
            return
        error = self._no_connection(slot.errors)
        if slot.errors.failing and not slot.in_use:
            # The pool cannot make a single working connection: start afresh. (With some
            # connections lent out, it is saturated instead, e.g. "too many clients":
            # replacing it would only close working connections.)
            self._discard_pool(slot)
        raise error from (slot.errors.last_error or exc)

    def _statement_failed(
        self,
        exc: psycopg.Error,
        slot: _PoolSlot | _AsyncPoolSlot,
        run: _Run,
        *,
        timed_out: bool,
        broken: bool,
    ) -> bool:
        """After ``exc`` ended a statement of ``run`` (its connection given back): raise the error,
        or return whether to create the table before running the statement again.

        Reads are retried once on a fresh connection if theirs broke; writes are not (the server
        may have applied them), and say that their outcome is unknown.
        """
        if timed_out:
            raise self._timed_out(exc) from exc
        if broken:
            self._discard_pool(slot)
            if not run.write and not run.retried_read and time.monotonic() < run.deadline:
                run.retried_read = True  # a read is safe to repeat, within the same deadline
                return False
            raise self._failed(exc, "the connection broke", applied=None) from exc
        if isinstance(exc, psycopg.errors.UndefinedTable):
            if self.create_table and not run.created:
                run.created = True
                return True
            raise self._missing_table() from exc
        if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
            raise OverflowError(f"value out of PostgreSQL's bigint range: {exc}") from exc
        raise self._failed(exc, "the server refused the statement", applied=False) from exc

    # -- statements and their parameters ------------------------------------------------------

    def _sweep_due(self) -> int:
        """Count one write; return how many expired rows to sweep now (0: not yet).

        Every ``sweep_every_writes`` writes, or ``sweep_every_seconds`` after the last sweep.
        Racy across threads on purpose: it only paces.
        """
        self._writes += 1
        now = time.monotonic()
        if self._writes < self.sweep_every_writes and now - self._last_sweep < self.sweep_every_seconds:
            return 0
        limit = proportional_sweep_limit(self._writes, self.sweep_every_writes, self.sweep_batch)
        self._writes, self._last_sweep = 0, now
        return limit

    def _cas_plan(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None
    ) -> tuple[str | None, dict[str, Any]]:
        """The write statement of a compare-and-set (None: cannot match) and its parameters."""
        params = _row(key, value, ttl)
        if expected is None:
            return self._sql.add, params
        if _is_our_version(expected):
            params["old"] = expected
            return self._sql.replace, params
        return None, params  # a token this backend never hands out cannot match

    @staticmethod
    def _incr_params(key: str, by: int, ttl: float | None) -> dict[str, Any]:
        if not isinstance(by, int) or not INT64_MIN <= by <= INT64_MAX:
            raise OverflowError(f"incr of key {key!r}: by={by!r} is outside the signed 64-bit range")
        return {"key": _check_key(key), "by": int(by), "version": random_version(), "ttl": ttl}

    @staticmethod
    def _incr_result(row: tuple[Any, ...] | None, key: str) -> int:
        if row is None:
            raise not_an_integer(key)
        return int(row[0])

    @staticmethod
    def _expiry_result(row: tuple[Any, ...] | None, key: str) -> float | None:
        if row is None:
            raise KeyError(key)
        return None if row[0] is None else max(0.0, float(row[0]))

    @staticmethod
    def _get_many_result(rows: list[tuple[Any, ...]], keys: Sequence[str]) -> dict[str, Entry]:
        found = {row[0]: _entry(row[1:]) for row in rows}
        return {key: found[key] for key in keys if key in found}

    @staticmethod
    def _set_many_params(items: Mapping[str, RawValue], ttl: float | None) -> dict[str, Any]:
        """The arrays of ``set_many``, in key order (code point order is the column's "C" order)."""
        rows = [_row(key, items[key], ttl) for key in sorted(items)]
        return {
            "keys": [row["key"] for row in rows],
            "values": [row["value"] for row in rows],
            "nums": [row["num"] for row in rows],
            "versions": [row["version"] for row in rows],
            "ttl": ttl,
        }

    @staticmethod
    def _keys_param(keys: Sequence[str]) -> dict[str, Any]:
        return {"keys": sorted(_check_key(key) for key in keys)}


class PostgresBackend(_PostgresShared, Backend):
    """PostgreSQL storage; see the module docstring. Safe to share between threads; fork-safe.

    Concurrency contract: each method takes effect in one autocommit statement, atomic and
    linearizable per key across every process and machine using the same table (see the module
    docstring for the second statement of ``incr`` and of a refused compare-and-set). Expiry
    follows the server's clock.

    Lazy sweeping: after every ``sweep_every_writes`` writes in a process, or ``sweep_every_seconds``
    after the last sweep, the writing thread deletes expired rows in proportion to its writes: up to
    twice the writes since its last sweep, at most ``sweep_batch`` (see
    :func:`~sharedstate.backends.sweeping.proportional_sweep_limit`).
    """

    schemes = ("postgresql", "postgres")

    def __init__(
        self,
        conninfo: str,
        *,
        table: str = DEFAULT_TABLE,
        create_table: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        display_url: str | None = None,
    ) -> None:
        """``conninfo``: a libpq URL or ``key=value`` string without our own options."""
        self._configure(conninfo, table, create_table, timeout, pool_size, display_url)
        self._lock = threading.Lock()
        self._slot: _PoolSlot | None = None
        _BACKENDS.add(self)

    @classmethod
    def from_url(cls, url: str) -> PostgresBackend:
        conninfo, options = parse_postgres_url(url)
        return cls(conninfo, display_url=url, **options)

    # -- connections -------------------------------------------------------------------------

    def _pool_slot(self) -> _PoolSlot:
        """This process's pool, opened on first use (and afresh in a child after ``fork``).

        A child must never use the parent's pool: its connections are sockets the parent is using
        too, so two processes would interleave protocol messages on one session. Nor may it close
        them (closing sends a Terminate message on the parent's session) or let the pool be
        garbage-collected (its finalizer signals worker threads that do not exist in the child,
        through locks a parent thread may have held at fork time). So the child keeps the parent's
        pool referenced and untouched (``kit.inherit``) and opens its own. psycopg itself skips
        closing a connection that another process opened when one is collected.
        """
        slot = self._slot
        if slot is not None and slot.pid == os.getpid():
            return slot
        with self._lock:
            slot = self._slot
            if slot is not None and slot.pid == os.getpid():
                return slot
            if slot is not None:  # opened by the parent before fork (the fork hook missed it)
                inherit(slot)
            slot = self._slot = self._open_pool()
            return slot

    def _open_pool(self) -> _PoolSlot:
        errors = _ConnectErrors(self._url)
        pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            self._conninfo,
            connection_class=_recording_connection_class(errors),
            kwargs=self._connect_kwargs,
            min_size=1,
            max_size=self.pool_size,
            timeout=self.timeout,
            max_idle=300.0,
            name=f"{_POOL_PREFIX}{self.table}-{os.getpid()}",
            open=False,
        )
        slot = _PoolSlot(pool, errors)
        errors.on_permanent = lambda: self._discard_pool(slot)
        pool.open(wait=False)
        return slot

    def _discard_pool(self, slot: _PoolSlot) -> None:
        """Replace ``slot``'s pool after a connection failure (no-op if already replaced).

        psycopg_pool would retry its lost connections with a growing backoff, so after an outage
        it could take many seconds to notice the server is back; a fresh pool connects at once.
        The old pool closes in the background: its idle connections are dead, ones still in use
        by other threads are closed when returned, and its waiting clients retry on the new pool.
        """
        with self._lock:
            if self._slot is not slot:
                return
            self._slot = None
        threading.Thread(
            target=slot.pool.close, kwargs={"timeout": self.timeout}, name="sharedstate-pg-close", daemon=True
        ).start()

    def _acquire(self, deadline: float) -> tuple[_PoolSlot, Conn]:
        """A working connection from this process's pool, or BackendUnavailableError at ``deadline``."""
        while True:
            slot = self._pool_slot()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._no_connection(slot.errors)
            try:
                conn = slot.lend(slot.pool.getconn(timeout=remaining))
            except (psycopg_pool.PoolClosed, psycopg_pool.PoolTimeout) as exc:
                self._pool_failed(slot, exc)
                continue  # another thread replaced the pool meanwhile: use the new one
            conn.deadline = deadline
            if not _has_pending_input(conn):
                return slot, conn
            # An idle connection has nothing to read unless the server said something, which is
            # almost always that it closed the session (restart, crash, idle timeout). Check it
            # before sending the operation, whose outcome would otherwise be unknown.
            try:
                conn.execute("")
            except psycopg.Error:
                slot.give_back(conn)
                self._discard_pool(slot)
                continue
            return slot, conn

    def _run(self, op: Callable[[Conn], T], *, write: bool) -> T:
        """Run ``op`` (its statements, each autocommit) on a pooled connection, mapping failures.

        Reads are retried once on a fresh connection if theirs broke; writes are not (the server
        may have applied them), and say that their outcome is unknown.
        """
        run = _Run(write, deadline=time.monotonic() + self.timeout)
        while True:
            slot, conn = self._acquire(run.deadline)
            try:
                result = op(conn)
            except psycopg.Error as exc:
                timed_out = conn.timed_out
                broken = conn.closed or conn.broken
                slot.give_back(conn)  # closes a connection that timed out
                if self._statement_failed(exc, slot, run, timed_out=timed_out, broken=broken):
                    self._create_table()
                continue  # the statement failed, so nothing was applied: safe to rerun
            except BaseException:
                slot.give_back(conn)  # interrupted mid-statement: the pool resets or discards it
                raise
            slot.give_back(conn)
            return result

    def _create_table(self) -> None:
        """Create the table if missing, serialized across processes by an advisory lock.

        Concurrent ``CREATE TABLE IF NOT EXISTS`` can still fail on PostgreSQL's catalog unique
        index; the transaction-scoped advisory lock makes creators take turns.
        """
        deadline = time.monotonic() + self.timeout
        slot, conn = self._acquire(deadline)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sharedstate:{self.table}",))
                for statement in _ddl_statements(self.table):
                    conn.execute(statement)
        except psycopg.Error as exc:
            broken = conn.closed or conn.broken
            slot.give_back(conn)
            if broken:
                self._discard_pool(slot)
            raise self._create_failed(exc) from exc
        except BaseException:
            slot.give_back(conn)
            raise
        slot.give_back(conn)

    def _rowcount(self, sql: str, params: dict[str, Any]) -> int:
        """Run one write statement; return the number of rows it changed."""

        def op(conn: Conn) -> int:
            return conn.execute(sql, params).rowcount

        changed = self._run(op, write=True)
        self._maybe_sweep()
        return changed

    # -- sweeping ----------------------------------------------------------------------------

    def _maybe_sweep(self) -> None:
        """Every so many writes (or seconds), delete one small batch of expired rows.

        Runs after the caller's write has been applied, so a failure here must not turn that
        write into an error: it is ignored and the rows are swept another time.
        """
        limit = self._sweep_due()
        if limit:
            with contextlib.suppress(BackendUnavailableError, psycopg.Error):
                self.sweep(limit)

    def sweep(self, limit: int = 1000) -> int:
        if limit <= 0:
            return 0
        sql = self._sql.sweep
        return self._run(lambda c: c.execute(sql, {"limit": limit}).rowcount, write=True)

    # -- the contract ------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        params = {"key": _check_key(key)}
        sql = self._sql.get
        row = self._run(lambda c: c.execute(sql, params).fetchone(), write=False)
        return None if row is None else _entry(row)

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        self._rowcount(self._sql.set, _row(key, value, ttl))

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return self._rowcount(self._sql.add, _row(key, value, ttl)) == 1

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        write, params = self._cas_plan(key, expected, value, ttl)
        read = self._sql.get

        def op(conn: Conn) -> CasResult:
            if write is not None and conn.execute(write, params).rowcount == 1:
                return CasResult(True, Entry(value, params["version"]))
            # Refused. A new statement sees every commit up to now (READ COMMITTED), so this is
            # the entry that refused the write or a newer one; one more round trip, only here.
            row = conn.execute(read, params).fetchone()
            return CasResult(False, None if row is None else _entry(row))

        result = self._run(op, write=True)
        self._maybe_sweep()
        return result

    def delete(self, key: str) -> bool:
        params = {"key": _check_key(key)}
        sql = self._sql.delete
        row = self._run(lambda c: c.execute(sql, params).fetchone(), write=True)
        self._maybe_sweep()
        return row is not None and bool(row[0])

    def delete_if_version(self, key: str, version: Version) -> bool:
        params = {"key": _check_key(key), "old": version}
        if not _is_our_version(version):
            return False
        return self._rowcount(self._sql.delete_if, params) == 1

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        params = self._incr_params(key, by, ttl)
        live, upsert = self._sql.incr_live, self._sql.incr

        def op(conn: Conn) -> tuple[Any, ...] | None:
            # Each statement is atomic; the first changes nothing unless it returns the row, so
            # the upsert sees (and handles) whatever a concurrent writer left in between.
            row = conn.execute(live, params).fetchone()
            return row if row is not None else conn.execute(upsert, params).fetchone()

        try:
            row = self._run(op, write=True)
        except OverflowError as exc:
            raise overflows(key) from exc
        self._maybe_sweep()
        return self._incr_result(row, key)

    def touch(self, key: str, ttl: float | None) -> bool:
        return self._rowcount(self._sql.touch, {"key": _check_key(key), "ttl": ttl}) == 1

    def expiry(self, key: str) -> float | None:
        params = {"key": _check_key(key)}
        sql = self._sql.expiry
        return self._expiry_result(self._run(lambda c: c.execute(sql, params).fetchone(), write=False), key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        params = self._keys_param(keys)
        sql = self._sql.get_many
        return self._get_many_result(
            self._run(lambda c: c.execute(sql, params).fetchall(), write=False), keys
        )

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        self._rowcount(self._sql.set_many, self._set_many_params(items, ttl))

    def delete_many(self, keys: Sequence[str]) -> int:
        params = self._keys_param(keys)
        sql = self._sql.delete_many
        rows = self._run(lambda c: c.execute(sql, params).fetchall(), write=True)
        self._maybe_sweep()
        return sum(1 for (live,) in rows if live)

    def ping(self) -> None:
        self._run(lambda c: c.execute("SELECT 1").fetchone(), write=False)

    def scan(self, prefix: str = "") -> Iterator[str]:
        if "\x00" in prefix:
            return  # PostgreSQL text cannot hold NUL, so no key starts with this prefix
        before = successor(prefix)
        start, first = prefix, True
        while True:  # in batches, each its own statement, so nothing stays open between yields
            sql = self._sql.scan[first, before is not None]
            params = {"start": start, "before": before}

            def op(conn: Conn, sql: str = sql, params: dict[str, Any] = params) -> list[Any]:
                return conn.execute(sql, params).fetchall()

            batch = self._run(op, write=False)
            for (key,) in batch:
                yield key
            if len(batch) < _SCAN_BATCH:
                return
            start, first = batch[-1][0], False

    def close(self) -> None:
        """Close this process's pool; the backend opens a new one if used again."""
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None and slot.pid == os.getpid():
            slot.pool.close(timeout=self.timeout)
        elif slot is not None:
            inherit(slot)

    def _forget_parent_pool(self) -> None:
        """In a fork child: set the parent's pool aside unused, and drop a lock it may hold."""
        self._lock = threading.Lock()
        if self._slot is not None:
            inherit(self._slot)
            self._slot = None


def _after_fork_in_child() -> None:
    for backend in list(_BACKENDS):
        backend._forget_parent_pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class AsyncPostgresBackend(_PostgresShared, AsyncBackend):
    """PostgreSQL storage for ``asyncio``: psycopg's ``AsyncConnection`` and ``AsyncConnectionPool``.

    The same URLs, table, statements, errors and lazy sweeping as :class:`PostgresBackend`; the two
    can share one table. Concurrency contract: each method takes effect in one autocommit
    statement, atomic and linearizable per key across every process and machine using the table
    (as :class:`PostgresBackend`). No call blocks the event loop: waiting for a connection and
    for every reply is awaited, and every call ends within ``timeout``
    (:class:`AsyncDeadlineConnection`), also against a frozen server.

    Pools are bound to an event loop, so the backend keeps one per running loop, opened on first
    use there: an instance made at import time (no loop yet) works under any loop, e.g. two
    ``asyncio.run`` calls in turn. A forked child never uses the parent's pools (it sets them
    aside untouched, as :meth:`PostgresBackend._pool_slot` explains, and opens its own).
    :meth:`aclose` closes the running loop's pool; the backend may be used again afterwards.
    """

    schemes = ("postgresql", "postgres")

    def __init__(
        self,
        conninfo: str,
        *,
        table: str = DEFAULT_TABLE,
        create_table: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
        display_url: str | None = None,
    ) -> None:
        """``conninfo``: a libpq URL or ``key=value`` string without our own options. Connects lazily."""
        self._configure(conninfo, table, create_table, timeout, pool_size, display_url)
        # A forked child never uses the parent's pools: it sets them aside untouched (see
        # PostgresBackend._pool_slot) and opens pools of its own.
        self._process_slots: PerProcess[dict[asyncio.AbstractEventLoop, _AsyncPoolSlot]] = PerProcess(dict)
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str) -> AsyncPostgresBackend:
        conninfo, options = parse_postgres_url(url)
        return cls(conninfo, display_url=url, **options)

    # -- connections -------------------------------------------------------------------------

    @property
    def _slots(self) -> dict[asyncio.AbstractEventLoop, _AsyncPoolSlot]:
        """This process's pools, one per event loop."""
        return self._process_slots.get()

    async def _pool_slot(self) -> _AsyncPoolSlot:
        """The running loop's pool in this process, opened on first use."""
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is not None:
            return slot
        self._forget_ended_loops()
        slot = self._new_pool(loop)
        await slot.pool.open(wait=False)
        current = self._slots.get(loop)
        if current is not None:  # another task opened one meanwhile: use it, close ours
            self._close_later(slot)
            return current
        self._slots[loop] = slot
        return slot

    def _new_pool(self, loop: asyncio.AbstractEventLoop) -> _AsyncPoolSlot:
        errors = _ConnectErrors(self._url)
        pool: psycopg_pool.AsyncConnectionPool[AConn] = _AsyncPool(
            self._conninfo,
            connection_class=_async_recording_connection_class(errors),
            kwargs=self._connect_kwargs,
            min_size=1,
            max_size=self.pool_size,
            timeout=self.timeout,
            max_idle=300.0,
            name=f"{_POOL_PREFIX}{self.table}-{os.getpid()}-async",
            open=False,
        )
        slot = _AsyncPoolSlot(pool, errors, loop)
        errors.on_permanent = lambda: self._discard_pool(slot)
        return slot

    def _forget_ended_loops(self) -> None:
        """Drop the pools of event loops that have closed, closing their idle connections."""
        for loop in [loop for loop in list(self._slots) if loop.is_closed()]:  # list(): atomic copy
            slot = self._slots.pop(loop, None)  # None: another thread's loop dropped it first
            if slot is not None:
                slot.abandon()

    def _close_later(self, slot: _AsyncPoolSlot) -> None:
        """Close ``slot``'s pool in a task of its loop (referenced until done)."""
        task = slot.loop.create_task(slot.pool.close(timeout=self.timeout))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _discard_pool(self, slot: _AsyncPoolSlot) -> None:
        """Replace ``slot``'s pool after a connection failure (no-op if already replaced).

        As :meth:`PostgresBackend._discard_pool`: a fresh pool reconnects at once, where
        psycopg_pool would back off; the old one closes in the background.
        """
        if self._slots.get(slot.loop) is not slot:
            return
        self._slots.pop(slot.loop, None)
        self._close_later(slot)

    async def _acquire(self, deadline: float) -> tuple[_AsyncPoolSlot, AConn]:
        """A working connection from this loop's pool, or BackendUnavailableError at ``deadline``."""
        while True:
            slot = await self._pool_slot()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._no_connection(slot.errors)
            try:
                conn = slot.lend(await slot.pool.getconn(timeout=remaining))
            except (psycopg_pool.PoolClosed, psycopg_pool.PoolTimeout) as exc:
                self._pool_failed(slot, exc)
                await asyncio.sleep(0)  # let the replacement pool start
                continue  # another task replaced the pool meanwhile: use the new one
            conn.deadline = deadline
            if not _has_pending_input(conn):
                return slot, conn
            # The server said something on an idle connection: almost always that it closed
            # the session. Check before sending the operation (see PostgresBackend._acquire).
            try:
                await conn.execute("")
            except psycopg.Error:
                await slot.give_back(conn)
                self._discard_pool(slot)
                continue
            return slot, conn

    async def _run(self, op: Callable[[AConn], Awaitable[T]], *, write: bool) -> T:
        """Run ``op`` (its statements, each autocommit) on a pooled connection, mapping failures.

        As :meth:`PostgresBackend._run`: reads are retried once on a fresh connection if theirs
        broke; writes are not, and say that their outcome is unknown.
        """
        run = _Run(write, deadline=time.monotonic() + self.timeout)
        while True:
            slot, conn = await self._acquire(run.deadline)
            try:
                result = await op(conn)
            except psycopg.Error as exc:
                timed_out = conn.timed_out
                broken = conn.closed or conn.broken
                await slot.give_back(conn)  # closes a connection that timed out
                if self._statement_failed(exc, slot, run, timed_out=timed_out, broken=broken):
                    await self._create_table()
                continue  # the statement failed, so nothing was applied: safe to rerun
            except BaseException:
                # Cancelled or interrupted mid-statement: the pool resets or discards it. Shielded,
                # so a second cancellation cannot leave the connection lent forever.
                await asyncio.shield(slot.give_back(conn))
                raise
            await slot.give_back(conn)
            return result

    async def _create_table(self) -> None:
        """Create the table if missing, serialized across processes by an advisory lock."""
        deadline = time.monotonic() + self.timeout
        slot, conn = await self._acquire(deadline)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sharedstate:{self.table}",)
                )
                for statement in _ddl_statements(self.table):
                    await conn.execute(statement)
        except psycopg.Error as exc:
            broken = conn.closed or conn.broken
            await slot.give_back(conn)
            if broken:
                self._discard_pool(slot)
            raise self._create_failed(exc) from exc
        except BaseException:
            await asyncio.shield(slot.give_back(conn))
            raise
        await slot.give_back(conn)

    async def _rowcount(self, sql: str, params: dict[str, Any]) -> int:
        """Run one write statement; return the number of rows it changed."""

        async def op(conn: AConn) -> int:
            return (await conn.execute(sql, params)).rowcount

        changed = await self._run(op, write=True)
        await self._maybe_sweep()
        return changed

    async def _fetchone(self, sql: str, params: dict[str, Any], *, write: bool) -> tuple[Any, ...] | None:
        async def op(conn: AConn) -> tuple[Any, ...] | None:
            return await (await conn.execute(sql, params)).fetchone()

        return await self._run(op, write=write)

    # -- sweeping ----------------------------------------------------------------------------

    async def _maybe_sweep(self) -> None:
        """As :meth:`PostgresBackend._maybe_sweep`: paced, after the write, failures ignored."""
        limit = self._sweep_due()
        if limit:
            with contextlib.suppress(BackendUnavailableError, psycopg.Error):
                await self.sweep(limit)

    async def sweep(self, limit: int = 1000) -> int:
        if limit <= 0:
            return 0
        sql = self._sql.sweep

        async def op(conn: AConn) -> int:
            return (await conn.execute(sql, {"limit": limit})).rowcount

        return await self._run(op, write=True)

    # -- the contract ------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        row = await self._fetchone(self._sql.get, {"key": _check_key(key)}, write=False)
        return None if row is None else _entry(row)

    async def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        await self._rowcount(self._sql.set, _row(key, value, ttl))

    async def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return await self._rowcount(self._sql.add, _row(key, value, ttl)) == 1

    async def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        write, params = self._cas_plan(key, expected, value, ttl)
        read = self._sql.get

        async def op(conn: AConn) -> CasResult:
            if write is not None and (await conn.execute(write, params)).rowcount == 1:
                return CasResult(True, Entry(value, params["version"]))
            # Refused: the entry that refused it or a newer one (see PostgresBackend).
            row = await (await conn.execute(read, params)).fetchone()
            return CasResult(False, None if row is None else _entry(row))

        result = await self._run(op, write=True)
        await self._maybe_sweep()
        return result

    async def delete(self, key: str) -> bool:
        row = await self._fetchone(self._sql.delete, {"key": _check_key(key)}, write=True)
        await self._maybe_sweep()
        return row is not None and bool(row[0])

    async def delete_if_version(self, key: str, version: Version) -> bool:
        params = {"key": _check_key(key), "old": version}
        if not _is_our_version(version):
            return False
        return await self._rowcount(self._sql.delete_if, params) == 1

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        params = self._incr_params(key, by, ttl)
        live, upsert = self._sql.incr_live, self._sql.incr

        async def op(conn: AConn) -> tuple[Any, ...] | None:
            # As PostgresBackend.incr: the UPDATE of a live integer, else the upsert.
            row = await (await conn.execute(live, params)).fetchone()
            return row if row is not None else await (await conn.execute(upsert, params)).fetchone()

        try:
            row = await self._run(op, write=True)
        except OverflowError as exc:
            raise overflows(key) from exc
        await self._maybe_sweep()
        return self._incr_result(row, key)

    async def touch(self, key: str, ttl: float | None) -> bool:
        return await self._rowcount(self._sql.touch, {"key": _check_key(key), "ttl": ttl}) == 1

    async def expiry(self, key: str) -> float | None:
        row = await self._fetchone(self._sql.expiry, {"key": _check_key(key)}, write=False)
        return self._expiry_result(row, key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        params = self._keys_param(keys)
        sql = self._sql.get_many

        async def op(conn: AConn) -> list[Any]:
            return await (await conn.execute(sql, params)).fetchall()

        return self._get_many_result(await self._run(op, write=False), keys)

    async def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        await self._rowcount(self._sql.set_many, self._set_many_params(items, ttl))

    async def delete_many(self, keys: Sequence[str]) -> int:
        params = self._keys_param(keys)
        sql = self._sql.delete_many

        async def op(conn: AConn) -> list[Any]:
            return await (await conn.execute(sql, params)).fetchall()

        rows = await self._run(op, write=True)
        await self._maybe_sweep()
        return sum(1 for (live,) in rows if live)

    async def ping(self) -> None:
        await self._fetchone("SELECT 1", {}, write=False)

    async def scan(self, prefix: str = "") -> AsyncIterator[str]:
        if "\x00" in prefix:
            return  # PostgreSQL text cannot hold NUL, so no key starts with this prefix
        before = successor(prefix)
        start, first = prefix, True
        while True:  # in batches, each its own statement, so nothing stays open between yields
            sql = self._sql.scan[first, before is not None]
            params = {"start": start, "before": before}

            async def op(conn: AConn, sql: str = sql, params: dict[str, Any] = params) -> list[Any]:
                return await (await conn.execute(sql, params)).fetchall()

            batch = await self._run(op, write=False)
            for (key,) in batch:
                yield key
            if len(batch) < _SCAN_BATCH:
                return
            start, first = batch[-1][0], False

    async def aclose(self) -> None:
        """Close the running loop's pool (and forget those of ended loops); reusable afterwards."""
        if self._process_slots.current() is None:
            self._process_slots.take()  # none opened in this process (a forked child's start)
            return
        loop = asyncio.get_running_loop()
        self._forget_ended_loops()
        slot = self._slots.pop(loop, None)
        if slot is not None:
            await slot.pool.close(timeout=self.timeout)
        pending = [task for task in self._closing if task.get_loop() is loop]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


# -- helpers ---------------------------------------------------------------------------------


def _libpq_keywords() -> list[str]:
    """Every connection parameter the installed libpq knows (sslmode, application_name, ...)."""
    return [opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()]


def _connect_defaults(conninfo: str, timeout: float) -> dict[str, Any]:
    """Connection parameters that bound every wait by ``timeout``, unless the URL sets them.

    ``connect_timeout`` bounds connecting; keepalives and ``tcp_user_timeout`` make a connection
    whose server vanished (no FIN, no RST) fail instead of hanging forever.
    """
    given = psycopg.conninfo.conninfo_to_dict(conninfo)
    defaults: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(timeout)),
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(timeout)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1000, math.ceil(timeout * 1000)),
        "application_name": "sharedstate",
    }
    kwargs = {k: v for k, v in defaults.items() if k not in given}
    kwargs["autocommit"] = True
    return kwargs


def _has_pending_input(conn: Conn | AConn) -> bool:
    """Whether the server sent anything on an idle connection (a free check: no round trip)."""
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True
    return has_pending_input(fd)


def _encoded(text: str) -> str:
    """``text`` percent-encoded throughout; an ``%xx`` already in it is decoded first, never encoded twice."""
    return quote(unquote(text), safe="")


def _check_key(key: str) -> str:
    if "\x00" in key:
        raise ValueError(f"key {key!r}: PostgreSQL text cannot contain NUL characters")
    return key


def _is_our_version(version: Version) -> bool:
    return fits_int64(version)


def _entry(row: tuple[Any, ...]) -> Entry:
    value, num, version = row  # the columns of the "get" statement
    return Entry(num if num is not None else bytes(value), version)


def _row(key: str, value: RawValue, ttl: float | None) -> dict[str, Any]:
    params: dict[str, Any] = {"key": _check_key(key), "version": random_version(), "ttl": ttl}
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(f"integer for key {key!r} is outside the signed 64-bit range")
        params["value"], params["num"] = None, int(value)
    else:
        params["value"], params["num"] = bytes(value), None
    return params


# -- command line: print or run the DDL ------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sharedstate.backends.postgres URL [--run]``: print (or run) the table's DDL."""
    parser = argparse.ArgumentParser(
        prog="python -m sharedstate.backends.postgres",
        description="Print the SQL that creates sharedstate's table (for migrations), or run it.",
    )
    parser.add_argument("url", help="postgresql://user:password@host/dbname[?table=NAME]")
    parser.add_argument("--run", action="store_true", help="create the table now instead of printing")
    args = parser.parse_args(argv)
    try:
        backend = PostgresBackend.from_url(args.url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.run:
        print(ddl(backend.table), end="")
        return 0
    try:
        backend._create_table()
    except BackendUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    print(f'table "{backend.table}" is ready in {backend.display_url}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
