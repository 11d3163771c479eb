"""``sqlite://``: one SQLite file shared by every thread and process on a machine. The default.

How it stays correct and fast under contention:

- WAL journal, ``synchronous=NORMAL``: readers never block the writer; a commit is durable against
  a crash of the app (not of the OS, which NORMAL trades for speed, like diskcache does).
- Every write runs in ``BEGIN IMMEDIATE``, which takes the write lock before reading, so a
  read-then-write can never fail half way with "database is locked"; waiting for the lock is a
  retry loop here (see ``_run``), and only after ``timeout`` seconds does it raise
  ``BackendUnavailableError`` (never a raw "database is locked").
- One connection per thread and process: each thread's slot remembers the pid that opened it.
  After ``fork`` the child never touches the parent's connection (sharing an SQLite connection
  across fork corrupts locks); it keeps it referenced, unused and unclosed, so garbage collection
  cannot close file descriptors whose POSIX locks the child's own connections rely on, and opens
  its own.
- Expired rows are invisible to every query and swept lazily: a bounded batch now and then.

Integers are stored as SQLite INTEGERs, so ``incr`` is one ``UPSERT ... RETURNING`` statement.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
from sharedstate.errors import BackendUnavailableError
from sharedstate.urls import query_options, split_url

T = TypeVar("T")

# Connections inherited across fork: kept alive and never used or closed in the child (see above).
_INHERITED: list[sqlite3.Connection] = []

_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_SWEEP_EVERY_WRITES = 500
_SWEEP_EVERY_SECONDS = 30.0
_SWEEP_BATCH = 200
_SCAN_BATCH = 500


def _new_version() -> int:
    # Random, not sequential: a deleted and re-created key must not get an old version back.
    # random's global generator is seeded from os.urandom and reseeded in a forked child by
    # Python itself, so processes never share a sequence; secrets would cost a syscall per write.
    return random.getrandbits(62) + 1


class SQLiteBackend(Backend):
    """SQLite file storage. URL: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

    Options in the query string: ``timeout`` (seconds to wait for the write lock before
    ``BackendUnavailableError``, default 30), ``table`` (default ``sharedstate``).
    """

    schemes = ("sqlite",)

    def __init__(self, path: str, *, timeout: float = 30.0, table: str = "sharedstate") -> None:
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise BackendUnavailableError(
                f"sqlite:// needs SQLite 3.35 or newer (UPSERT ... RETURNING); this Python links "
                f"SQLite {sqlite3.sqlite_version}"
            )
        if not table.isidentifier():
            raise ValueError(f"table name must be an identifier, got {table!r}")
        if not 0 <= timeout < float("inf"):  # also refuses NaN
            raise ValueError(f"sqlite timeout must be a finite number of seconds >= 0, got {timeout!r}")
        self.path = os.path.abspath(path)
        self.timeout = timeout
        self.table = table
        self._local = _ThreadConnection()
        self._schema_ready = False
        self._writes = 0
        self._last_sweep = time.time()
        self._prepare_sql()

    @classmethod
    def from_url(cls, url: str) -> SQLiteBackend:
        parts = split_url(url)
        if parts.netloc:
            raise ValueError(
                f"malformed sqlite URL {url!r}: use sqlite:///relative/path.db (three slashes) or "
                "sqlite:////absolute/path.db (four)"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path or path.endswith("/"):
            raise ValueError(f"sqlite URL {url!r} names no database file, e.g. sqlite:///state.db")
        if path == ":memory:":
            raise ValueError(
                "sqlite:///:memory: would give every connection its own empty database; "
                "use memory:// for one process or a file path to share state"
            )
        options = query_options(parts, {"timeout": float, "table": str}, url)
        return cls(path, **options)  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise BackendUnavailableError(
                f"cannot open SQLite database {self.path!r}: directory {directory!r} does not exist"
            )
        # Processes opening a new file at once contend for it (switching to WAL, creating the
        # table): "locked"/"busy" here is waited out like in _run, not reported as unavailable.
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            conn: sqlite3.Connection | None = None
            try:
                # timeout=0: no busy handler; _run waits for the write lock itself (see there).
                conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA mmap_size=67108864")  # reads straight from the page cache
                if not self._schema_ready:
                    self._create_schema(conn)
                    self._schema_ready = True
                return conn
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                message = str(exc)
                if ("locked" in message or "busy" in message) and time.monotonic() < deadline:
                    time.sleep(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, 0.05)
                    continue
                writable = os.access(directory, os.W_OK)
                hint = "" if writable else f" (directory {directory!r} is not writable)"
                raise BackendUnavailableError(
                    f"cannot open SQLite database {self.path!r}: {exc}{hint}"
                ) from None

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " key TEXT PRIMARY KEY NOT NULL,"
                " value NOT NULL,"  # INTEGER for native ints (what incr works on), else BLOB
                " version INTEGER NOT NULL,"
                " expires_at REAL)"  # unix time; NULL: never
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_expires_at ON {self.table}(expires_at)"
                " WHERE expires_at IS NOT NULL"
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # BEGIN itself may be what failed ("locked")
                conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection in this process; a fresh one after ``fork``."""
        local = self._local
        conn = local.conn
        if conn is not None and local.pid == os.getpid():
            return conn
        if conn is not None:
            _INHERITED.append(conn)  # opened by the parent before fork: never use, never close
        conn = self._connect()
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _run(self, op: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``op`` on this thread's connection, waiting out "locked"/"busy" until ``timeout``.

        SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, leaving the write lock
        idle under contention; this loop retries after tens of microseconds instead (jittered,
        growing to 5 ms), which is most of why concurrent writers here outpace diskcache's.
        """
        conn = self._conn()
        try:
            result = op(conn)
        except sqlite3.OperationalError as exc:
            result = self._retry(conn, op, exc)
        except sqlite3.DatabaseError as exc:
            self._rollback(conn)
            raise BackendUnavailableError(f"SQLite database {self.path!r}: {exc}") from None
        except BaseException:
            self._rollback(conn)
            raise
        if write:
            self._maybe_sweep()
        return result

    def _retry(
        self, conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], T], exc: sqlite3.Error
    ) -> T:
        deadline = time.monotonic() + self.timeout
        delay = 0.00005
        while True:
            self._rollback(conn)
            message = str(exc)
            transient = "locked" in message or "busy" in message
            if not transient or time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"SQLite database {self.path!r}: {message}"
                    + (f" (waited {self.timeout}s for the write lock)" if transient else "")
                ) from None
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 0.005)
            try:
                return op(conn)
            except sqlite3.OperationalError as again:
                exc = again

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _write(self, statement: str, params: Mapping[str, object]) -> int:
        """Run one statement in ``BEGIN IMMEDIATE``; return the number of rows it changed."""

        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            changed = conn.execute(statement, params).rowcount
            conn.execute("COMMIT")
            return changed

        return self._run(op, write=True)

    # -- sweeping ----------------------------------------------------------------------------

    def _maybe_sweep(self) -> None:
        self._writes += 1
        now = time.time()
        if self._writes % _SWEEP_EVERY_WRITES == 0 or now - self._last_sweep > _SWEEP_EVERY_SECONDS:
            self._last_sweep = now
            # The write that got us here has committed: a sweep that cannot run now (the file
            # busy past timeout) must not turn it into an error. The next one will catch up.
            with contextlib.suppress(BackendUnavailableError):
                self.sweep(_SWEEP_BATCH)

    def sweep(self, limit: int = 1000) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            removed = conn.execute(self._sql_sweep, {"now": time.time(), "limit": limit}).rowcount
            conn.execute("COMMIT")
            return removed

        return self._run(op, write=False)

    # -- the contract ------------------------------------------------------------------------

    def _prepare_sql(self) -> None:
        t = self.table
        self._sql_get = (
            f"SELECT value, version FROM {t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
        )
        self._sql_set = (
            f"INSERT INTO {t} (key, value, version, expires_at)"
            " VALUES (:key, :value, :version, :expires_at)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " version = excluded.version, expires_at = excluded.expires_at"
        )
        self._sql_add = self._sql_set + f" WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at <= :now"
        self._sql_replace = (
            f"UPDATE {t} SET value = :value, version = :new_version, expires_at = :expires_at"
            f" WHERE key = :key AND version = :version AND {_LIVE}"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE key = :key AND {_LIVE}"
        self._sql_delete_if = f"DELETE FROM {t} WHERE key = :key AND version = :version AND {_LIVE}"
        expired = f"({t}.expires_at IS NOT NULL AND {t}.expires_at <= :now)"
        self._sql_incr = (
            f"INSERT INTO {t} (key, value, version, expires_at)"
            " VALUES (:key, :by, :version, :expires_at)"
            " ON CONFLICT (key) DO UPDATE SET"
            f" value = CASE WHEN {expired} THEN :by ELSE {t}.value + :by END,"
            " version = :version,"
            f" expires_at = CASE WHEN {expired} THEN :expires_at ELSE {t}.expires_at END"
            f" WHERE typeof({t}.value) = 'integer' OR {expired}"
            " RETURNING value"
        )
        self._sql_touch = f"UPDATE {t} SET expires_at = :expires_at WHERE key = :key AND {_LIVE}"
        self._sql_scan = (
            f"SELECT key FROM {t} WHERE key >= :start AND key < :before AND {_LIVE}"
            f" ORDER BY key LIMIT {_SCAN_BATCH}"
        )
        self._sql_scan_open = (
            f"SELECT key FROM {t} WHERE key >= :start AND {_LIVE} ORDER BY key LIMIT {_SCAN_BATCH}"
        )
        self._sql_sweep = (
            f"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at <= :now LIMIT :limit)"
        )

    def get(self, key: str) -> Entry | None:
        params = (key, time.time())
        try:  # the hot path, without _run's bookkeeping; reads in WAL mode almost never wait
            row = self._conn().execute(self._sql_get, params).fetchone()
        except sqlite3.Error:
            row = self._run(lambda c: c.execute(self._sql_get, params).fetchone(), write=False)
        return None if row is None else Entry(row[0], row[1])

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        self._write(self._sql_set, _row(key, value, ttl))

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return self._write(self._sql_add, _row(key, value, ttl)) == 1

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        params = _row(key, value, ttl)
        new_version = params["version"]
        assert isinstance(new_version, int)
        statement = self._sql_add
        if expected is not None:
            statement = self._sql_replace
            params["new_version"], params["version"] = params["version"], expected

        def op(conn: sqlite3.Connection) -> CasResult:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute(statement, params).rowcount == 1:
                result = CasResult(True, Entry(value, new_version))
            else:  # refused: read what refused it inside the same write lock, so it is current
                row = conn.execute(self._sql_get, (key, params["now"])).fetchone()
                result = CasResult(False, None if row is None else Entry(row[0], row[1]))
            conn.execute("COMMIT")
            return result

        return self._run(op, write=True)

    def delete(self, key: str) -> bool:
        return self._write(self._sql_delete, {"key": key, "now": time.time()}) == 1

    def delete_if_version(self, key: str, version: Version) -> bool:
        params = {"key": key, "version": version, "now": time.time()}
        return self._write(self._sql_delete_if, params) == 1

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        now = time.time()
        params = {
            "key": key,
            "by": by,
            "version": _new_version(),
            "expires_at": None if ttl is None else now + ttl,
            "now": now,
        }

        def op(conn: sqlite3.Connection) -> object:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(self._sql_incr, params).fetchone()
            if row is None or type(row[0]) is not int:  # not an integer, or overflowed to REAL
                conn.execute("ROLLBACK")
                return None if row is None else OverflowError
            conn.execute("COMMIT")
            return row[0]

        result = self._run(op, write=True)
        if result is None:
            raise TypeError(f"cannot incr key {key!r}: it holds a value that is not an integer")
        if result is OverflowError:
            raise OverflowError(f"incr of key {key!r} overflows a signed 64-bit integer")
        assert isinstance(result, int)
        return result

    def touch(self, key: str, ttl: float | None) -> bool:
        now = time.time()
        params = {"key": key, "now": now, "expires_at": None if ttl is None else now + ttl}
        return self._write(self._sql_touch, params) == 1

    def scan(self, prefix: str = "") -> Iterator[str]:
        before = _successor(prefix)
        sql = self._sql_scan if before is not None else self._sql_scan_open
        start = prefix
        while True:  # in batches, so no read transaction stays open between yields
            params = {"start": start, "before": before, "now": time.time()}

            def op(conn: sqlite3.Connection, p: Mapping[str, object] = params) -> list[tuple[str]]:
                return conn.execute(sql, p).fetchall()

            batch = self._run(op, write=False)
            for (key,) in batch:
                yield key
            if len(batch) < _SCAN_BATCH:
                return
            start = batch[-1][0] + "\0"  # the smallest key after the last one seen

    def close(self) -> None:
        """Close the calling thread's connection (other threads' close when those threads end)."""
        local = self._local
        conn, local.conn = local.conn, None
        if conn is not None and local.pid == os.getpid():
            conn.close()
        elif conn is not None:
            _INHERITED.append(conn)


class _ThreadConnection(threading.local):
    """Per-thread slot: the connection and the pid that opened it (checked on every use)."""

    conn: sqlite3.Connection | None = None
    pid: int = 0


def _row(key: str, value: RawValue, ttl: float | None) -> dict[str, object]:
    now = time.time()
    return {
        "key": key,
        "value": value,
        "version": _new_version(),
        "expires_at": None if ttl is None else now + ttl,
        "now": now,
    }


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: none)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            # Skip the surrogates (U+D800..U+DFFF): not UTF-8, so no key holds one and SQLite
            # cannot be handed one (the successor of U+D7FF is U+E000).
            following = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None
