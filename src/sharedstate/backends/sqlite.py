"""``sqlite://``: one SQLite file shared by every thread and process on a machine. The default.

How it stays correct and fast under contention:

- WAL journal, ``synchronous=NORMAL``: readers never block the writer; a commit is durable against
  a crash of the app (not of the OS, which NORMAL trades for speed, like diskcache does).
- Every write takes the write lock before it reads: ``BEGIN IMMEDIATE``, or a single statement
  that SQLite runs in its own transaction (when the file is not due a check, see ``_check_due``),
  so a read-then-write can never fail half way with "database is locked". The sync class waits for
  the lock in SQLite's busy handler, the async class in an awaited retry loop (see
  ``_run_steps``); only after ``timeout`` seconds does either raise ``BackendUnavailableError``
  (never a raw "database is locked").
- Both APIs run the same code: every operation that may wait is a generator of steps that yields
  each wait (``Steps``); ``SQLiteBackend`` sleeps through them, ``AsyncSQLiteBackend`` awaits
  them, so an event loop is never blocked on the write lock (see that class).
- One connection per thread and process: each thread's slot remembers the pid that opened it.
  After ``fork`` the child never touches the parent's connection (sharing an SQLite connection
  across fork corrupts locks); it keeps it referenced, unused and unclosed, so garbage collection
  cannot close file descriptors whose POSIX locks the child's own connections rely on, and opens
  its own.
- The file is the one at the path: a connection records the identity (device, inode) of the file
  it opened, and writes compare it with the file at the path (one ``stat``; a file that looks
  replaced is confirmed under the write lock) at most every ``_CHECK_FILE_EVERY_WRITE`` (1 ms),
  reads at most every ``_CHECK_FILE_EVERY`` (0.1 s). A file deleted or replaced (``mv``) under a
  running process is then never written again through the old connection: the write, which has
  written nothing, runs on the file now at the path (created if it was deleted), so processes
  never go on counting in two copies. The old file's ``-wal`` and ``-shm`` names are removed first (see
  ``_leave_replaced_file``): SQLite finds them by name, and would otherwise apply the old file's
  log to the new file.
- Expired rows are invisible to every query and swept lazily, in proportion to writes: every
  ``_SWEEP_EVERY_WRITES`` writes a process removes up to twice as many expired rows as it wrote
  since its last sweep (bounded by ``_SWEEP_MAX_BATCH``), so a load of new keys with short TTLs
  cannot pile up expired rows. The WAL is kept bounded too (see ``_reset_large_wal``).

Integers are stored as SQLite INTEGERs, so ``incr`` is one ``UPSERT ... RETURNING`` statement, which
refuses to leave the 64-bit range (nothing to roll back).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from sharedstate.backends.base import AsyncBackend, Backend, CasResult, Entry, RawValue, Version
from sharedstate.backends.kit import (
    chunks,
    fits_int64,
    inherit,
    not_an_integer,
    overflows,
    partial_sum_bounds,
    proportional_sweep_limit,
    random_version,
    results_as_alone,
    successor,
    version_bits,
)
from sharedstate.errors import BackendUnavailableError
from sharedstate.urls import mask_url, query_options, split_url
from sharedstate.validation import seconds

if TYPE_CHECKING:
    from sharedstate.backends.coalesce import IncrGroup

T = TypeVar("T")

#: An operation written once for both APIs: a generator that yields each wait (in seconds) and
#: returns the result. ``SQLiteBackend`` sleeps through the waits (``_wait_in_thread``),
#: ``AsyncSQLiteBackend`` awaits them (``_wait_in_loop``); nothing else differs.
Steps = Generator[float, None, T]
Op = Callable[["_Connection"], T]
Params = Mapping[str, object] | tuple[object, ...]  # by name or, on the hot paths, by position

_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_SWEEP_EVERY_WRITES = 100
_SWEEP_EVERY_SECONDS = 30.0
_SWEEP_MAX_BATCH = 1000
_SCAN_BATCH = 500
# Keys per statement of a batched operation: well under SQLite's limit on bound variables (999
# before SQLite 3.32, 32766 since). A larger batch runs several statements in one transaction.
_MANY_BATCH = 500
# The WAL is truncated to this size whenever it is reset (SQLite's default keeps it at its peak).
_JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
# A WAL larger than this (checked at each sweep) is checkpointed and emptied (_reset_large_wal);
# SQLite's own automatic checkpoints start at 1000 pages (4 MiB).
_WAL_RESET_SIZE = 16 * 1024 * 1024
_WAL_RESET_WAIT = 0.25  # seconds
# SQLite's automatic checkpoint threshold (1000 pages of 4 KiB), for connections that turn it off.
_AUTOCHECKPOINT_SIZE = 4 * 1024 * 1024
# How often a thread compares the file at the path with its connection's (seconds): writes under
# the write lock, at most every millisecond (a stat on every write measured +4 us, 18% of a set);
# reads at most every 0.1 s.
_CHECK_FILE_EVERY_WRITE = 0.001
_CHECK_FILE_EVERY = 0.1
# Connections of ended threads kept for new threads (a server starting a thread per request, as
# werkzeug's does, would otherwise open one per request: ~200 µs, against ~5 µs for a read).
_MAX_SPARE_CONNECTIONS = 8
_JOURNAL_SUFFIXES = ("-wal", "-shm")
_LOOP_TIMER_RESOLUTION = 0.001  # seconds: asyncio's selector (epoll) waits whole milliseconds
# How long SQLite's busy handler waits for a lock before the statement fails "locked" and
# _run_steps runs it again, until ``timeout`` (seconds). The handler sleeps 1, 2, 5, 10, 15, 20,
# 25... ms, so a process that has waited a while sleeps 25 to 100 ms at a time and can miss the
# lock freed meanwhile (4 processes on one key: the first finished in a third of the time of the
# last). In slices of 8 ms, it sleeps 1, 2, 5 ms, again and again (see _run_steps).
_BUSY_SLICE = 0.008

FileIdentity = tuple[int, int]  # (st_dev, st_ino)
#: A connection an ended thread left: (connection, pid that opened it, file identity, journal's).
_Spare = tuple["_Connection", int, FileIdentity | None, dict[str, FileIdentity | None]]


class SQLiteBackend(Backend):
    """SQLite file storage. URL: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

    Options in the query string: ``timeout`` (seconds to wait for the write lock before
    ``BackendUnavailableError``, default 30), ``table`` (default ``sharedstate``).

    The path is percent-decoded: write ``#`` as ``%23``, ``?`` as ``%3F`` and ``%`` as ``%25``.
    A raw ``#`` is refused (it would start a URL fragment and cut the path short).
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
        self.path = os.path.abspath(path)
        self.timeout = seconds("timeout", timeout)
        self.table = table
        self._local = _ThreadConnection()
        #: Connections of threads that ended, for the next new thread: (conn, pid, identity, journal).
        self._spares: list[_Spare] = []
        #: Whether a commit that finds the WAL over 1000 pages checkpoints it there and then
        #: (SQLite's default). ``AsyncSQLiteBackend`` turns it off: see ``_bound_wal``.
        self.checkpoint_on_commit = True
        #: Whether a write waits for the write lock in SQLite's busy handler (``busy_timeout``)
        #: rather than in the retry loop of ``_retry_steps``. ``AsyncSQLiteBackend`` turns it off:
        #: the busy handler sleeps in the calling thread, which there is the event loop's.
        self.wait_in_sqlite = True
        self._schema_ready = False
        self._writes = 0  # since the last sweep, in this process
        self._last_sweep = time.monotonic()
        self._prepare_sql()

    @classmethod
    def from_url(cls, url: str) -> SQLiteBackend:
        parts = split_url(url)
        if "#" in url:
            raise ValueError(
                f"sqlite URL {mask_url(url)!r} contains '#', which would start a URL fragment and cut the "
                "path short: write '#' in a file name as %23 (and '?' as %3F, '%' as %25)"
            )
        if parts.netloc:
            raise ValueError(
                f"malformed sqlite URL {mask_url(url)!r}: use sqlite:///relative/path.db (three slashes) or "
                "sqlite:////absolute/path.db (four)"
            )
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path, errors="strict")
        if "\0" in path:
            raise ValueError(f"sqlite URL {mask_url(url)!r}: the path contains a NUL character (%00)")
        if not path or path.endswith("/"):
            raise ValueError(f"sqlite URL {mask_url(url)!r} names no database file, e.g. sqlite:///state.db")
        if path == ":memory:":
            raise ValueError(
                "sqlite:///:memory: would give every connection its own empty database; "
                "use memory:// for one process or a file path to share state"
            )
        options = query_options(parts, {"timeout": float, "table": str}, url)
        return cls(path, **options)  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"sqlite:///{_quote_path(self.path)}"

    # -- connections -------------------------------------------------------------------------

    def _connect_steps(self) -> Steps[_Connection]:
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
            conn: _Connection | None = None
            try:
                # timeout=0: no busy handler; _run waits for the write lock itself (see there).
                conn = sqlite3.connect(
                    self.path, timeout=0, isolation_level=None, check_same_thread=False, factory=_Connection
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA mmap_size=67108864")  # reads straight from the page cache
                conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
                if not self.checkpoint_on_commit:  # see _bound_wal
                    conn.execute("PRAGMA wal_autocheckpoint=0")
                if not self._schema_ready:
                    self._create_schema(conn)
                    self._schema_ready = True
                if self.wait_in_sqlite:
                    _set_busy_timeout(conn, self._busy_slice())
                return conn
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                message = str(exc)
                if ("locked" in message or "busy" in message) and time.monotonic() < deadline:
                    yield random.uniform(delay / 2, delay)
                    delay = min(delay * 2, 0.05)
                    continue
                writable = os.access(directory, os.W_OK)
                hint = "" if writable else f" (directory {directory!r} is not writable)"
                raise BackendUnavailableError(
                    f"cannot open SQLite database {self.path!r}: {exc}{hint}", applied=False
                ) from exc

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

    def _ready_conn(self) -> _Connection | None:
        """This thread's connection if it needs nothing done first (the hot path), else ``None``."""
        local = self._local
        conn = local.conn
        if conn is None or local.pid != os.getpid():
            return None
        return conn if time.monotonic() - local.checked_at < _CHECK_FILE_EVERY else None

    def _conn_steps(self) -> Steps[_Connection]:
        """This thread's connection in this process; a fresh one after ``fork``, or when the file
        at the path is no longer the one it opened (checked at most every ``_CHECK_FILE_EVERY``)."""
        local = self._local
        conn = local.conn
        if conn is not None and local.pid == os.getpid():
            if time.monotonic() - local.checked_at < _CHECK_FILE_EVERY:
                return conn
            return (yield from self._checked_conn_steps(conn))
        if conn is not None:
            inherit(conn)  # opened by the parent before fork: never use, never close
        spare = self._take_spare()
        if spare is not None:  # an ended thread's: checked against the file at the path first
            conn, local.pid, local.identity, local.journal = spare
            local.conn, local.hot, local.checked_at = conn, _hot(conn), 0.0
            local.recycler = _Recycler(self._spares, conn, local.pid, local.identity, local.journal)
            return (yield from self._checked_conn_steps(conn))
        conn = yield from self._connect_steps()
        local.conn, local.hot, local.pid, local.checked_at = conn, _hot(conn), os.getpid(), time.monotonic()
        # After the first statement (journal_mode), so the -wal and -shm files exist.
        local.identity = _identity(self.path)
        local.journal = {suffix: _identity(self.path + suffix) for suffix in _JOURNAL_SUFFIXES}
        local.recycler = _Recycler(self._spares, conn, local.pid, local.identity, local.journal)
        return conn

    def _take_spare(
        self,
    ) -> _Spare | None:
        """A connection an ended thread of this process left, if any (each goes to one thread)."""
        while self._spares:
            try:
                spare = self._spares.pop()
            except IndexError:  # another thread took the last one
                return None
            if spare[1] == os.getpid():
                return spare
            inherit(spare[0])  # the parent's, left before fork: never use, never close
        return None

    def _checked_conn_steps(self, conn: _Connection) -> Steps[_Connection]:
        local = self._local
        local.checked_at = time.monotonic()
        if _identity(self.path) == local.identity:
            return conn
        # Looks replaced: confirm it under the write lock, as a write does, which also moves this
        # thread to the file now at the path (see _begin and _run).
        yield from self._run_steps(self._confirm_file)
        current = local.conn
        assert current is not None
        return current

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, then check, holding the write lock, that ``conn``'s file is still
        the one at the path (unless this thread checked less than ``_CHECK_FILE_EVERY_WRITE``
        ago). If not, nothing has been written: leave the old file (see ``_leave_replaced_file``),
        roll back and raise ``_FileReplaced``.

        A write that comes within that millisecond after the change may still commit to the old
        file: as if it had come just before the change, which it may as well have (the rename or
        unlink is not synchronized with SQLite's locks, whatever the interval).
        """
        conn.execute("BEGIN IMMEDIATE")
        local = self._local
        now = time.monotonic()
        if now - local.checked_at < _CHECK_FILE_EVERY_WRITE:
            return
        if self._is_our_file():
            local.checked_at = now  # only now: a retry after a failed _leave_replaced_file checks again
            return
        conn.execute("ROLLBACK")
        self._leave_replaced_file(conn)
        raise _FileReplaced

    def _check_due(self) -> bool:
        """Whether the next write must run in ``BEGIN IMMEDIATE`` to check its file (``_begin``).

        Not when this thread compared the file at the path with its connection's less than
        ``_CHECK_FILE_EVERY_WRITE`` ago, or does so now (one ``stat``) and finds it unchanged.
        Then the write is one statement in autocommit (``_write_op``): SQLite runs it in a
        transaction of its own that takes the write lock as ``BEGIN IMMEDIATE`` would (waiting in
        the busy handler, or failing "locked" for the retry loop), and holds it for one statement
        instead of three. A file that looks replaced is confirmed under the write lock by
        ``_begin``, which moves this thread to the file now at the path.

        Measured (4 processes incrementing one key): taking the write lock for the check, every
        millisecond, cost a quarter of the increments per second.
        """
        now = time.monotonic()
        return now - self._local.checked_at >= _CHECK_FILE_EVERY_WRITE and not self._file_unchanged(now)

    def _file_unchanged(self, now: float) -> bool:
        """Compare the file at the path with this thread's connection's now (one ``stat``, read at
        ``now``, a ``time.monotonic()`` reading); whether it is unchanged."""
        if self._is_our_file():
            self._local.checked_at = now
            return True
        return False

    def _confirm_file(self, conn: sqlite3.Connection) -> None:
        self._local.checked_at = 0.0  # check now, whenever the last check was
        self._begin(conn)
        conn.execute("ROLLBACK")

    def _is_our_file(self) -> bool:
        """Whether the file at the path is the one this thread's connection opened."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:  # cannot tell: never act as if it had been replaced
            raise BackendUnavailableError(f"cannot stat SQLite database {self.path!r}: {exc}") from exc
        return (st.st_dev, st.st_ino) == self._local.identity

    def _leave_replaced_file(self, conn: sqlite3.Connection) -> None:
        """The file ``conn`` opened was deleted or replaced (``mv``): make its log harmless.

        Its ``-wal`` and ``-shm`` files are found by name, so a connection to the file now at the
        path would read the old file's pages from them and write into the same log. First a
        best-effort checkpoint copies the old log into the old file (moved away: it keeps its last
        commits; deleted: harmless). Then, holding the old log's write lock (which every connection
        to the old file shares, so only one of them can do it), the ``-wal`` and ``-shm`` names are
        removed if they are still the old file's, and connections to the new file create their own.
        "database is locked" here goes to the caller's retry loop, which comes back.
        """
        with contextlib.suppress(sqlite3.Error), self._no_busy_wait(conn):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no busy handler: returns at once
        conn.execute("BEGIN IMMEDIATE")
        try:
            for suffix, recorded in self._local.journal.items():
                if recorded is not None and _identity(self.path + suffix) == recorded:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path + suffix)
        finally:
            conn.execute("ROLLBACK")

    def _retire_connection(self) -> None:
        """Close this thread's connection to a file that is no longer at the path.

        Closing is safe after ``_leave_replaced_file``: SQLite itself neither checkpoints nor
        deletes the log of a moved file when its last connection closes.
        """
        local = self._local
        _forget_recycler(local)
        conn, local.conn, local.hot, local.identity, local.journal = local.conn, None, None, None, {}
        self._schema_ready = False  # the file now at the path may have no table (deleted: a new file)
        if conn is not None:
            conn.close()

    def _run(self, op: Op[T], *, write: bool, started: float | None = None) -> T:
        """Run ``op`` (see ``_run_steps``); after a write, sweep when due (see ``_sweep_due``).
        ``timeout`` counts from ``started`` (``time.monotonic()``; default: now)."""
        if started is None:
            started = time.monotonic()  # the busy handler may have waited in _try_now already
        result = self._try_now(op)
        if isinstance(result, _Later):
            result = _wait_in_thread(self._run_steps(op, started))
        if write:
            self._after_write(started)
        return result

    def _after_write(self, started: float) -> None:
        """Count a write; sweep when due (see ``_sweep_due``)."""
        limit = self._sweep_due(started)
        if limit:
            _wait_in_thread(self._sweep_after_write_steps(limit))
            self._bound_wal()

    def _try_now(self, op: Op[T]) -> T | _Later:
        """The hot path of ``_run``, shared by both classes, with no generator: ``op`` on a ready
        connection. ``_LATER`` when it needs ``_run_steps`` (no ready connection, the write lock
        taken, the file replaced); ``op`` then has written nothing and is run there again."""
        conn = self._ready_conn()
        if conn is None:
            return _LATER
        try:
            return op(conn)
        except sqlite3.OperationalError:
            self._rollback(conn)
            return _LATER
        except _FileReplaced:
            self._retire_connection()
            return _LATER
        except sqlite3.DatabaseError as exc:
            self._rollback(conn)
            raise self._failed(exc) from exc
        except BaseException:
            self._rollback(conn)
            raise

    def _failed(self, exc: sqlite3.DatabaseError) -> BackendUnavailableError:
        # Rolled back: SQLite commits a transaction whole or not at all.
        return BackendUnavailableError(f"SQLite database {self.path!r}: {exc}", applied=False)

    def _run_steps(self, op: Op[T], started: float | None = None) -> Steps[T]:
        """Run ``op`` on this thread's connection, waiting out "locked"/"busy" until ``timeout``
        (counted from ``started``, a ``time.monotonic()`` reading; default: now).

        Who waits: with ``wait_in_sqlite`` (the sync class), SQLite's busy handler, inside the
        statement that needs the lock (``busy_timeout``: sleeps of 1, 2, 5, 10... ms). Measured
        against this loop's retries (benchmarks/bench_sqlite_wait.py, 2 and 4 processes on one
        key), it gives more increments per second for less CPU: a retry costs a Python round trip,
        a rollback and a context switch, and on a busy machine the waiters' CPU is the writers'.
        The handler waits in slices of ``_BUSY_SLICE`` (its first sleeps, 1, 2 and 5 ms, never its
        later 25 to 100 ms ones); a statement that fails "locked" at the end of a slice is run
        again here, until the time left to each attempt runs out. Without it (the async class,
        whose thread is the event loop's), the statement fails at once and this loop waits:
        jittered, from tens of microseconds growing to 5 ms, yielding each wait to the caller.

        A write that finds its file deleted or replaced (``_begin``) has written nothing: it runs
        again on the file now at the path (created if it was deleted). Twice in a row is an error.
        """
        deadline = (time.monotonic() if started is None else started) + self.timeout
        for attempt in (1, 2):
            try:
                conn = self._ready_conn() or (yield from self._conn_steps())
                try:
                    with self._busy_wait_until(conn, deadline):
                        result = op(conn)
                except sqlite3.OperationalError as exc:
                    result = yield from self._retry_steps(conn, op, exc, deadline)
                except sqlite3.DatabaseError as exc:
                    self._rollback(conn)
                    raise self._failed(exc) from exc
                except BaseException:
                    self._rollback(conn)
                    raise
                break
            except _FileReplaced as exc:
                self._retire_connection()
                if attempt == 2:
                    raise BackendUnavailableError(
                        f"SQLite database {self.path!r} was replaced twice during one operation",
                        applied=False,
                    ) from exc
        return result

    def _retry_steps(self, conn: _Connection, op: Op[T], exc: sqlite3.Error, deadline: float) -> Steps[T]:
        delay = 0.00005
        while True:
            self._rollback(conn)  # before waiting: another task of this thread may use conn meanwhile
            message = str(exc)
            transient = "locked" in message or "busy" in message
            if not transient or time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"SQLite database {self.path!r}: {message}"
                    + (f" (waited {self.timeout}s for the write lock)" if transient else ""),
                    applied=False,  # rolled back: SQLite commits whole or not at all
                ) from exc
            yield random.uniform(delay / 2, delay)
            delay = min(delay * 2, 0.005)
            # The thread's connection may have changed while waiting (another task of this thread
            # found the file replaced); a check due after a long wait is made now.
            conn = self._ready_conn() or (yield from self._conn_steps())
            try:
                with self._busy_wait_until(conn, deadline):
                    return op(conn)
            except sqlite3.OperationalError as again:
                exc = again

    @contextlib.contextmanager
    def _busy_wait_until(self, conn: sqlite3.Connection, deadline: float) -> Iterator[None]:
        """With ``wait_in_sqlite``: let SQLite's busy handler wait only until ``deadline`` in the
        statements run meanwhile (a retry must not wait past the timeout). The connection's busy
        timeout, ``_busy_slice``, is changed only when less than that is left."""
        left = deadline - time.monotonic()
        if not self.wait_in_sqlite or left >= self._busy_slice():
            yield
            return
        _set_busy_timeout(conn, max(0.0, left))
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                _set_busy_timeout(conn, self._busy_slice())

    def _busy_slice(self) -> float:
        """The busy timeout of this backend's connections (seconds): ``_BUSY_SLICE``, or less if
        ``timeout`` is shorter."""
        return min(self.timeout, _BUSY_SLICE)

    @contextlib.contextmanager
    def _no_busy_wait(self, conn: sqlite3.Connection) -> Iterator[None]:
        """No busy handler meanwhile: a TRUNCATE checkpoint would wait in it for readers."""
        if not self.wait_in_sqlite:
            yield
            return
        _set_busy_timeout(conn, 0.0)
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                _set_busy_timeout(conn, self._busy_slice())

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _hot_conn(self) -> _Connection | None:
        """The connection for a write run inline, without ``_run`` (``incr`` and ``_write``):
        this thread's, opened in this process, once the file check passes (``_check_due``: under
        contention it is due after every wait for the lock, and going through ``_run`` for it
        cost several µs more). ``None``: the write goes through ``_run`` (no connection yet, a
        fork, or a file that looks replaced, which ``_run`` confirms under the write lock).
        """
        local = self._local
        conn = local.conn
        if conn is None or local.pid != os.getpid() or self._check_due():
            return None
        return conn

    def _write(self, statement: str, params: Params) -> int:
        """Run one write statement (``_write_op``); return the number of rows it changed.

        The hot path, inline as in ``incr`` (see ``_hot_conn``): the statement alone, with no
        closure and no ``_run``; an error goes through the retries (the statement, alone in its
        transaction, has written nothing).
        """
        started = time.monotonic()
        conn = self._hot_conn()
        if conn is None:
            return self._run(self._write_op(statement, params), write=True, started=started)
        try:
            changed: int = conn.execute(statement, params).rowcount
        except sqlite3.Error:
            # Nothing written. The busy handler may have waited already: straight to the
            # retries, which count the timeout from started.
            changed = _wait_in_thread(self._run_steps(self._write_op(statement, params), started))
        self._after_write(started)
        return changed

    def _write_op(self, statement: str, params: Params) -> Op[int]:
        """Run one statement, in ``BEGIN IMMEDIATE`` when the file is due a check (else alone,
        see ``_check_due``); return the number of rows it changed."""

        def op(conn: sqlite3.Connection) -> int:
            if not self._check_due():
                return conn.execute(statement, params).rowcount
            self._begin(conn)
            changed = conn.execute(statement, params).rowcount
            conn.execute("COMMIT")
            return changed

        return op

    # -- sweeping ----------------------------------------------------------------------------

    def _sweep_due(self, now: float | None = None) -> int:
        """Count a write; every ``_SWEEP_EVERY_WRITES`` writes (or ``_SWEEP_EVERY_SECONDS``), the
        number of expired rows to sweep now, in proportion to the writes since the last sweep (see
        ``proportional_sweep_limit``); else 0."""
        self._writes += 1  # racy across threads on purpose: it only paces the sweeps
        if now is None:
            now = time.monotonic()
        if self._writes < _SWEEP_EVERY_WRITES and now - self._last_sweep < _SWEEP_EVERY_SECONDS:
            return 0
        limit = proportional_sweep_limit(self._writes, _SWEEP_EVERY_WRITES, _SWEEP_MAX_BATCH)
        self._writes, self._last_sweep = 0, now
        return limit

    def _sweep_after_write_steps(self, limit: int) -> Steps[None]:
        # The write that got us here has committed: a sweep that cannot run now (the file
        # busy past timeout) must not turn it into an error. The next one will catch up.
        with contextlib.suppress(BackendUnavailableError):
            yield from self._sweep_steps(limit)

    def _bound_wal(self) -> None:
        """Keep the WAL bounded, after a sweep (best effort: the next sweep tries again).

        Where this process's commits do not checkpoint (``checkpoint_on_commit`` False: the async
        class, whose commits run on the event loop), this also runs the PASSIVE checkpoint that
        SQLite's automatic one would have, once the WAL passes ``_AUTOCHECKPOINT_SIZE``. It
        copies pages and syncs the file, so the async class runs this in a thread.
        """
        with contextlib.suppress(BackendUnavailableError, sqlite3.Error):
            _wait_in_thread(self._reset_large_wal_steps())

    def _reset_large_wal_steps(self) -> Steps[None]:
        """Empty the WAL when it has grown past ``_WAL_RESET_SIZE``.

        SQLite's automatic checkpoints are PASSIVE: they copy what they can without stopping
        writers, and the log starts over only once a checkpoint has caught up with every frame. With
        several processes writing without pause, that never happens and the WAL grows without bound
        (hundreds of MB in seconds under a load of new keys). A ``TRUNCATE`` checkpoint takes the
        write lock, waits (at most ``_WAL_RESET_WAIT``) for readers of old snapshots, copies the log
        and empties it. Writers wait for it like for any writer, through their retry loop.
        Best effort: if it cannot finish within the wait, the next sweep tries again.
        """
        try:
            size = os.stat(self.path + "-wal").st_size
        except OSError:
            return
        if size <= _WAL_RESET_SIZE:
            if not self.checkpoint_on_commit and size > _AUTOCHECKPOINT_SIZE:
                conn = self._ready_conn() or (yield from self._conn_steps())
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return
        conn = self._ready_conn() or (yield from self._conn_steps())
        # Retried like the write lock in _retry_steps: SQLite's busy handler sleeps milliseconds at a
        # time and would lose the write lock to writers that retry every few microseconds.
        deadline = time.monotonic() + _WAL_RESET_WAIT
        delay = 0.00005
        while True:
            try:
                with self._no_busy_wait(conn):
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError:  # "locked": another checkpoint or writer
                busy = 1
            if not busy or time.monotonic() >= deadline:
                return
            yield random.uniform(delay / 2, delay)
            delay = min(delay * 2, 0.005)

    def sweep(self, limit: int = 1000) -> int:
        return _wait_in_thread(self._sweep_steps(limit))

    def _sweep_steps(self, limit: int) -> Steps[int]:
        if limit <= 0:
            return 0
        # Nothing expired, the common case, told by one read on a ready connection: no write
        # lock, and none of _run_steps's setting up (two statements setting the busy timeout).
        # Measured with 4 processes incrementing one key: a sweep cost ~100 µs of CPU that way,
        # about 1 µs per write.
        conn = self._ready_conn()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # then the full way below
                if conn.execute(self._sql_any_expired, (time.time(),)).fetchone() is None:
                    return 0

        def op(conn: _Connection) -> int:
            now = time.time()
            # A read first (the partial index on expires_at): with nothing expired, which is the
            # common case, no write lock is taken at all.
            if conn.execute(self._sql_any_expired, (now,)).fetchone() is None:
                return 0
            return self._write_op(self._sql_sweep, {"now": now, "limit": limit})(conn)

        return (yield from self._run_steps(op))

    # -- the contract ------------------------------------------------------------------------

    def _prepare_sql(self) -> None:
        t = self.table
        self._sql_get = (
            f"SELECT value, version FROM {t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
        )
        upsert = (
            f"INSERT INTO {t} (key, value, version, expires_at)"
            " VALUES ({}) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " version = excluded.version, expires_at = excluded.expires_at"
        )
        # set binds by position (_set_params): measurably cheaper than by name on the hot path.
        self._sql_set = upsert.format("?, ?, ?, ?")
        self._sql_add = upsert.format(":key, :value, :version, :expires_at") + (
            f" WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at <= :now"
        )
        self._sql_replace = (
            f"UPDATE {t} SET value = :value, version = :new_version, expires_at = :expires_at"
            f" WHERE key = :key AND version = :version AND {_LIVE}"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE key = :key AND {_LIVE}"
        self._sql_expiry = (
            f"SELECT expires_at FROM {t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
        )
        self._sql_delete_if = f"DELETE FROM {t} WHERE key = :key AND version = :version AND {_LIVE}"
        # Numbered parameters, bound by position (_incr_op): ?1 key, ?2 by, ?3 version, ?4 expiry,
        # ?5 now. Cheaper than by name on the hot path.
        expired_now = f"({t}.expires_at IS NOT NULL AND {t}.expires_at <= ?5)"
        incr = (
            f"INSERT INTO {t} (key, value, version, expires_at)"
            " VALUES (?1, ?2, ?3, ?4)"
            " ON CONFLICT (key) DO UPDATE SET"
            f" value = CASE WHEN {expired_now} THEN ?2 ELSE {{}} END,"
            " version = ?3,"
            f" expires_at = CASE WHEN {expired_now} THEN ?4 ELSE {t}.expires_at END"
            # Integer + integer outside 64 bits gives a REAL in SQLite: refused like a non-integer.
            f" WHERE (typeof({t}.value) = 'integer' AND typeof({t}.value + ?2) = 'integer') OR {expired_now}"
        )
        # The increment run alone (_incr_op, incr): it writes one row (rowcount 1) or none
        # (refused); the sum it adds to a live integer goes through _INCR_RESULT, which keeps it
        # in the connection's incr_result, else the row written holds ?2. Measured against
        # RETURNING (which collects its rows in a temporary table): 1.8 µs less of a 15 µs write.
        self._sql_incr_counted = incr.format(f"{_INCR_RESULT}({t}.value + ?2)")
        # The same with RETURNING, for the increments of a group (AsyncSQLiteBackend).
        self._sql_incr = incr.format(f"{t}.value + ?2") + " RETURNING value"
        self._sql_touch = f"UPDATE {t} SET expires_at = :expires_at WHERE key = :key AND {_LIVE}"
        self._sql_scan = (
            f"SELECT key FROM {t} WHERE key >= :start AND key < :before AND {_LIVE}"
            f" ORDER BY key LIMIT {_SCAN_BATCH}"
        )
        self._sql_scan_open = (
            f"SELECT key FROM {t} WHERE key >= :start AND {_LIVE} ORDER BY key LIMIT {_SCAN_BATCH}"
        )
        self._sql_any_expired = f"SELECT 1 FROM {t} WHERE expires_at <= ? LIMIT 1"
        self._sql_sweep = (
            f"DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at <= :now LIMIT :limit)"
        )

    # Each operation is built once (``_*_op``, plus ``_incr_result``) and run by both classes:
    # SQLiteBackend through _run (waits slept), AsyncSQLiteBackend through its own (awaited).

    def _get_now(self, params: tuple[str, float]) -> Any:
        """The hot path of ``get``, without _run's bookkeeping: the row (or None), or ``_LATER``
        if it needs _run (no ready connection, or an error; reads in WAL mode almost never wait)."""
        conn = self._ready_conn()
        if conn is None:
            return _LATER
        try:
            return conn.execute(self._sql_get, params).fetchone()
        except sqlite3.Error:
            return _LATER

    def _get_op(self, params: tuple[str, float]) -> Op[Any]:
        return lambda c: c.execute(self._sql_get, params).fetchone()

    def get(self, key: str) -> Entry | None:
        params = (key, time.time())
        row = self._get_now(params)
        if row is _LATER:
            row = self._run(self._get_op(params), write=False)
        return None if row is None else Entry(row[0], row[1])

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        self._write(self._sql_set, _set_params(key, value, ttl))

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return self._write(self._sql_add, _row(key, value, ttl)) == 1

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        return self._run(self._cas_op(key, expected, value, ttl), write=True)

    def _cas_op(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None
    ) -> Op[CasResult]:
        params = _row(key, value, ttl)
        new_version = params["version"]
        assert isinstance(new_version, int)
        statement = self._sql_add
        if expected is not None:
            statement = self._sql_replace
            params["new_version"], params["version"] = params["version"], expected

        def op(conn: sqlite3.Connection) -> CasResult:
            self._begin(conn)
            if conn.execute(statement, params).rowcount == 1:
                result = CasResult(True, Entry(value, new_version))
            else:  # refused: read what refused it inside the same write lock, so it is current
                row = conn.execute(self._sql_get, (key, params["now"])).fetchone()
                result = CasResult(False, None if row is None else Entry(row[0], row[1]))
            conn.execute("COMMIT")
            return result

        return op

    def delete(self, key: str) -> bool:
        return self._write(self._sql_delete, {"key": key, "now": time.time()}) == 1

    def delete_if_version(self, key: str, version: Version) -> bool:
        params = {"key": key, "version": version, "now": time.time()}
        return self._write(self._sql_delete_if, params) == 1

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        # The hot path, inline, with no call of our own in between unless the 1 ms file check is
        # due (the checks of _hot_conn, on this thread's reused cursor, see _ThreadConnection.hot):
        # measured, every frame and clock reading here shows about twice as large under
        # contention. An error goes through the retries: the statement, alone in its
        # transaction, has written nothing.
        local = self._local
        hot = local.hot
        started = time.monotonic()
        if (
            hot is not None
            and local.pid == os.getpid()
            and (started - local.checked_at < _CHECK_FILE_EVERY_WRITE or self._file_unchanged(started))
        ):
            cursor, kept = hot
            now = time.time()
            params = (key, by, version_bits(62) + 1, None if ttl is None else now + ttl, now)
            kept.value = None
            try:
                written = cursor.execute(self._sql_incr_counted, params).rowcount
            except sqlite3.Error:
                # Nothing written. The busy handler may have waited already: straight to the
                # retries, which count the timeout from started.
                result = _wait_in_thread(self._run_steps(self._incr_op(key, by, ttl), started))
                self._after_write(started)
                return _incr_result(key, result)
            if written == 1:
                if self._writes < _SWEEP_EVERY_WRITES - 1:
                    self._writes += 1  # what _sweep_due counts; it runs at the last of them
                else:
                    self._after_write(started)
                value = kept.value
                return by if value is None else value  # None: it wrote ?2 (a new or expired key)
        return _incr_result(key, self._run(self._incr_op(key, by, ttl), write=True))

    def _incr_op(self, key: str, by: int, ttl: float | None) -> Op[object]:
        now = time.time()
        params = (key, by, random_version(), None if ttl is None else now + ttl, now)

        def op(conn: _Connection) -> object:
            # The statement refuses to leave an integer or the 64-bit range (no row written), so
            # it may run alone (see _check_due): there is never anything to roll back.
            kept = conn.incr_result
            kept.value = None
            if self._check_due():
                self._begin(conn)
                written = conn.execute(self._sql_incr_counted, params).rowcount
                conn.execute("COMMIT")
            else:
                written = conn.execute(self._sql_incr_counted, params).rowcount
            if written == 1:
                return by if kept.value is None else kept.value  # None: it wrote ?2
            # Refused: tell why from the value now (at the refusal it was live and not an integer,
            # or an integer that would overflow; either way nothing was applied).
            value = conn.execute(self._sql_get, (key, now)).fetchone()
            return OverflowError if value is not None and type(value[0]) is int else None

        return op

    def expiry(self, key: str) -> float | None:
        return _expiry_result(key, *self._run(self._expiry_op(key), write=False))

    def _expiry_op(self, key: str) -> Op[tuple[Any, float]]:
        now = time.time()
        sql = self._sql_expiry
        return lambda c: (c.execute(sql, (key, now)).fetchone(), now)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        return self._run(self._get_many_op(keys), write=False)

    def _get_many_op(self, keys: Sequence[str]) -> Op[dict[str, Entry]]:
        """One ``SELECT ... IN`` per ``_MANY_BATCH`` keys; several in one read transaction (one
        snapshot)."""
        now = time.time()
        t = self.table
        batches = chunks(keys, _MANY_BATCH)

        def op(conn: sqlite3.Connection) -> dict[str, Entry]:
            found: dict[str, Entry] = {}
            several = len(batches) > 1
            if several:
                conn.execute("BEGIN")
            for chunk in batches:
                sql = (
                    f"SELECT key, value, version FROM {t} WHERE key IN ({','.join('?' * len(chunk))})"
                    " AND (expires_at IS NULL OR expires_at > ?)"
                )
                for key, value, version in conn.execute(sql, (*chunk, now)):
                    found[key] = Entry(value, version)
            if several:
                conn.execute("COMMIT")
            return {key: found[key] for key in keys if key in found}

        return op

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        self._count_writes(len(items))
        self._run(self._set_many_op(items, ttl), write=True)

    def _set_many_op(self, items: Mapping[str, RawValue], ttl: float | None) -> Op[None]:
        """Every item in one write transaction (``executemany`` of the upsert): all or nothing."""
        rows = [_set_params(key, value, ttl) for key, value in items.items()]
        sql = self._sql_set

        def op(conn: sqlite3.Connection) -> None:
            self._begin(conn)
            conn.executemany(sql, rows)
            conn.execute("COMMIT")

        return op

    def delete_many(self, keys: Sequence[str]) -> int:
        self._count_writes(len(keys))
        return self._run(self._delete_many_op(keys), write=True)

    def _delete_many_op(self, keys: Sequence[str]) -> Op[int]:
        """One ``DELETE ... IN`` per ``_MANY_BATCH`` keys, all in one write transaction."""
        now = time.time()
        t = self.table
        batches = chunks(keys, _MANY_BATCH)

        def op(conn: sqlite3.Connection) -> int:
            self._begin(conn)
            removed = 0
            for chunk in batches:
                sql = (
                    f"DELETE FROM {t} WHERE key IN ({','.join('?' * len(chunk))})"
                    " AND (expires_at IS NULL OR expires_at > ?)"
                )
                removed += conn.execute(sql, (*chunk, now)).rowcount
            conn.execute("COMMIT")
            return removed

        return op

    def _count_writes(self, count: int) -> None:
        """A batch of ``count`` writes counts as ``count`` for the pace of sweeps (``_run`` counts one)."""
        self._writes += max(0, count - 1)

    def ping(self) -> None:
        self._run(_ping_op, write=False)

    def touch(self, key: str, ttl: float | None) -> bool:
        return self._write(self._sql_touch, _touch_params(key, ttl)) == 1

    def scan(self, prefix: str = "") -> Iterator[str]:
        batches = _ScanBatches(self, prefix)
        while (op := batches.next_op()) is not None:  # in batches: no read stays open between yields
            yield from batches.took(self._run(op, write=False))

    def close(self) -> None:
        """Close the calling thread's connection and those ended threads left (other threads'
        close when those threads end)."""
        local = self._local
        _forget_recycler(local)
        conn, local.conn, local.hot, local.identity, local.journal = local.conn, None, None, None, {}
        if conn is not None and local.pid == os.getpid():
            conn.close()
        elif conn is not None:
            inherit(conn)
        while (spare := self._take_spare()) is not None:
            spare[0].close()


class AsyncSQLiteBackend(AsyncBackend):
    """``sqlite://`` for ``asyncio``: every statement runs on the event loop, and never waits there.

    The operations, the file-identity check, sweeping, the WAL bound and fork safety are those of
    a :class:`SQLiteBackend` this backend holds (``self.sync``): the same code. SQLite's busy
    timeout is 0, so a statement returns at once; only when the write lock is taken
    ("database is locked") does an operation wait, and that wait (the sync class's retry schedule:
    jittered, from tens of microseconds growing to 5 ms, up to ``timeout``) is an
    ``await asyncio.sleep``: other tasks run meanwhile. A transaction never spans an ``await``, so
    the tasks of one loop share the thread's connection.

    Statements themselves run on the loop: microseconds each, and with ``synchronous=NORMAL`` a
    commit does not sync the file. What does sync it, a checkpoint, never runs on the loop: this
    backend's connections do not checkpoint at commit (``wal_autocheckpoint=0``); after the
    sweeps that follow writes, the checkpoint SQLite would have run and the WAL bound run in a
    thread (``SQLiteBackend._bound_wal``). Measured (``benchmarks/bench_async.py``) against running
    each call in a thread, which was slower by far (4 processes, one key: 0.26x to 0.47x of the
    sync backend's incr, against 0.83x to 1.07x here).

    ``incr`` that finds the write lock taken is a group commit: the increments of the same key
    and ``ttl`` that come in this loop while it waits are written with it in one transaction, each
    caller getting its own value and error as if the calls had run one after another (see
    :mod:`sharedstate.backends.coalesce`; the SQL is ``_incr_group_op``).
    """

    schemes = SQLiteBackend.schemes

    def __init__(self, backend: SQLiteBackend) -> None:
        from sharedstate.backends.coalesce import IncrCoalescer  # imports asyncio: not for sync users

        self.sync = backend
        backend.checkpoint_on_commit = False  # checkpoints run in a thread (see SQLiteBackend._bound_wal)
        backend.wait_in_sqlite = False  # never sleep on the loop: _run_steps's waits are awaited
        self._coalescer = IncrCoalescer(self._apply_incr_group, self._after_writes)
        t = backend.table
        expired = f"({t}.expires_at IS NOT NULL AND {t}.expires_at <= :now)"
        # incr of a group: the sum, applied only if the stored integer is within [:low, :high],
        # where no partial sum of the group leaves the signed 64-bit range (see _incr_group_op).
        self._sql_incr_group = (
            f"INSERT INTO {t} (key, value, version, expires_at)"
            " VALUES (:key, :by, :version, :expires_at)"
            " ON CONFLICT (key) DO UPDATE SET"
            f" value = CASE WHEN {expired} THEN :by ELSE {t}.value + :by END,"
            " version = :version,"
            f" expires_at = CASE WHEN {expired} THEN :expires_at ELSE {t}.expires_at END"
            f" WHERE (typeof({t}.value) = 'integer' AND {t}.value BETWEEN :low AND :high) OR {expired}"
            " RETURNING value"
        )

    @classmethod
    def from_url(cls, url: str) -> AsyncSQLiteBackend:
        return cls(SQLiteBackend.from_url(url))

    def describe(self) -> str:
        return self.sync.describe()

    async def _run(self, op: Op[T], *, write: bool) -> T:
        sync = self.sync
        result = sync._try_now(op)
        if isinstance(result, _Later):
            result = await _wait_in_loop(sync._run_steps(op))
        if write:
            limit = sync._sweep_due()
            if limit:
                await _wait_in_loop(sync._sweep_after_write_steps(limit))
                # Checkpoints copy pages and sync the file: never on the loop.
                await _in_thread(sync._bound_wal)
        return result

    async def _write(self, statement: str, params: Params) -> int:
        return await self._run(self.sync._write_op(statement, params), write=True)

    async def get(self, key: str) -> Entry | None:
        params = (key, time.time())
        row = self.sync._get_now(params)
        if row is _LATER:
            row = await self._run(self.sync._get_op(params), write=False)
        return None if row is None else Entry(row[0], row[1])

    async def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        await self._write(self.sync._sql_set, _set_params(key, value, ttl))

    async def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return await self._write(self.sync._sql_add, _row(key, value, ttl)) == 1

    async def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        return await self._run(self.sync._cas_op(key, expected, value, ttl), write=True)

    async def delete(self, key: str) -> bool:
        return await self._write(self.sync._sql_delete, {"key": key, "now": time.time()}) == 1

    async def delete_if_version(self, key: str, version: Version) -> bool:
        params = {"key": key, "version": version, "now": time.time()}
        return await self._write(self.sync._sql_delete_if, params) == 1

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Add ``by`` (see the backend contract). An increment that has to wait for the write lock
        is written together with the others of the same key and ``ttl`` that come meanwhile in
        this event loop: one transaction, each caller getting its own value and error exactly as
        had the calls run one after another (see :mod:`sharedstate.backends.coalesce`)."""
        coalescer = self._coalescer
        group = coalescer.pending(key, ttl)
        if group is not None and fits_int64(by):
            return _incr_result(key, await coalescer.join(group, by))
        sync = self.sync
        op = sync._incr_op(key, by, ttl)
        result = sync._try_now(op)
        if isinstance(result, _Later):
            if not fits_int64(by):  # refused by SQLite as alone: never part of a group
                return _incr_result(key, await self._run(op, write=True))
            return _incr_result(key, await coalescer.start(key, by, ttl))
        limit = sync._sweep_due()  # as _run does after a write
        if limit:
            await self._sweep_after_writes(limit)
        return _incr_result(key, result)

    async def _after_writes(self, count: int) -> None:
        """What ``_run`` does after a write, for ``count`` writes: sweep when due."""
        self.sync._count_writes(count)
        limit = self.sync._sweep_due()
        if limit:
            await self._sweep_after_writes(limit)

    async def _sweep_after_writes(self, limit: int) -> None:
        await _wait_in_loop(self.sync._sweep_after_write_steps(limit))
        await _in_thread(self.sync._bound_wal)  # checkpoints copy pages and sync the file: not on the loop

    async def _apply_incr_group(self, group: IncrGroup) -> list[object]:
        return await _wait_in_loop(self.sync._run_steps(self._incr_group_op(group)))

    def _incr_group_op(self, group: IncrGroup) -> Op[list[object]]:
        """Write a group's increments in one transaction; one outcome per member (see
        ``_incr_result``), in arrival order.

        The sum is applied with one upsert when no partial sum, added to the stored integer (or
        to 0 if the key is absent or expired), leaves the signed 64-bit range: the statement's
        ``BETWEEN :low AND :high``. Otherwise (near the bounds) the members are applied one by one
        in the same transaction, each in a savepoint, so each succeeds or overflows exactly as
        alone. A non-integer value refuses every member, writing nothing.
        """
        sync = self.sync
        key, ttl = group.key, group.ttl
        now = time.time()
        expires_at = None if ttl is None else now + ttl

        def op(conn: sqlite3.Connection) -> list[object]:
            members = group.take()
            if not members:  # all cancelled while waiting
                return []
            bys = [m.by for m in members]
            sync._begin(conn)
            low, high = partial_sum_bounds(bys)
            if low <= 0 <= high:  # the partial sums fit when starting from 0
                params = {
                    "key": key,
                    "by": sum(bys),
                    "version": random_version(),
                    "expires_at": expires_at,
                    "now": now,
                    "low": low,
                    "high": high,
                }
                row = conn.execute(self._sql_incr_group, params).fetchone()
                if row is not None:
                    conn.execute("COMMIT")
                    return list(results_as_alone(row[0], bys))
                # Refused: not an integer, or too near a bound for the sum.
            stored = conn.execute(sync._sql_get, (key, now)).fetchone()
            if stored is not None and type(stored[0]) is not int:
                conn.execute("ROLLBACK")
                return [None] * len(members)
            outcomes: list[object] = []
            for by in bys:
                conn.execute("SAVEPOINT incr")
                # _sql_incr's numbered parameters: key, by, version, expiry, now. The stored value
                # is an integer (checked above), so a refusal is an overflow.
                row = conn.execute(sync._sql_incr, (key, by, random_version(), expires_at, now)).fetchone()
                if row is None or type(row[0]) is not int:
                    conn.execute("ROLLBACK TO incr")
                    outcomes.append(OverflowError)
                else:
                    outcomes.append(row[0])
                conn.execute("RELEASE incr")
            conn.execute("COMMIT")
            return outcomes

        return op

    async def expiry(self, key: str) -> float | None:
        return _expiry_result(key, *await self._run(self.sync._expiry_op(key), write=False))

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        return await self._run(self.sync._get_many_op(keys), write=False)

    async def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        self.sync._count_writes(len(items))
        await self._run(self.sync._set_many_op(items, ttl), write=True)

    async def delete_many(self, keys: Sequence[str]) -> int:
        self.sync._count_writes(len(keys))
        return await self._run(self.sync._delete_many_op(keys), write=True)

    async def ping(self) -> None:
        await self._run(_ping_op, write=False)

    async def touch(self, key: str, ttl: float | None) -> bool:
        return await self._write(self.sync._sql_touch, _touch_params(key, ttl)) == 1

    def scan(self, prefix: str = "") -> AsyncIterator[str]:
        return self._scan(prefix)

    async def _scan(self, prefix: str) -> AsyncIterator[str]:
        batches = _ScanBatches(self.sync, prefix)
        while (op := batches.next_op()) is not None:
            for key in batches.took(await self._run(op, write=False)):
                yield key

    async def sweep(self, limit: int = 1000) -> int:
        return await _wait_in_loop(self.sync._sweep_steps(limit))

    async def aclose(self) -> None:
        """Close this thread's connection (the loop's); the backend may be used again afterwards."""
        self.sync.close()


def _wait_in_thread(steps: Steps[T]) -> T:
    """Run ``steps``, sleeping this thread through each wait it yields."""
    try:
        while True:
            time.sleep(next(steps))
    except StopIteration as done:
        result: T = done.value
        return result


async def _in_thread(fn: Callable[[], None]) -> None:
    import asyncio  # here, not at the top: sync users do not pay for importing asyncio

    await asyncio.get_running_loop().run_in_executor(None, fn)


async def _wait_in_loop(steps: Steps[T]) -> T:
    """Run ``steps`` on the event loop, awaiting each wait it yields (other tasks run meanwhile).

    Cancelled while waiting, the steps are closed where they wait: they have rolled back first.
    """
    import asyncio  # here, not at the top: sync users do not pay for importing asyncio

    try:
        delay = next(steps)
        while True:
            try:
                # The loop's timers wake in whole milliseconds (epoll): asyncio.sleep(50 µs)
                # sleeps over 1 ms. A shorter wait yields to the other tasks once instead, so the
                # first retries come sooner than asked rather than 20 times later.
                await asyncio.sleep(delay if delay >= _LOOP_TIMER_RESOLUTION else 0)
            except BaseException:
                steps.close()
                raise
            delay = next(steps)
    except StopIteration as done:
        result: T = done.value
        return result


def _incr_result(key: str, result: object) -> int:
    """What ``_incr_op`` returned, as ``incr``'s result or error."""
    if result is None:
        raise not_an_integer(key)
    if result is OverflowError:
        raise overflows(key)
    assert isinstance(result, int)
    return result


def _expiry_result(key: str, row: Any, now: float) -> float | None:
    """What ``_expiry_op`` read, as ``expiry``'s result: ``KeyError`` if absent or expired."""
    if row is None:
        raise KeyError(key)
    return None if row[0] is None else max(0.0, row[0] - now)


def _ping_op(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _touch_params(key: str, ttl: float | None) -> dict[str, object]:
    now = time.time()
    return {"key": key, "now": now, "expires_at": None if ttl is None else now + ttl}


class _ScanBatches:
    """``scan`` in batches of ``_SCAN_BATCH`` keys, so no read transaction stays open between
    yields: ``next_op`` gives the query for the next batch (``None``: done), ``took`` its keys."""

    def __init__(self, backend: SQLiteBackend, prefix: str) -> None:
        self._before = successor(prefix)
        self._sql = backend._sql_scan if self._before is not None else backend._sql_scan_open
        self._start: str | None = prefix

    def next_op(self) -> Op[list[tuple[str]]] | None:
        if self._start is None:
            return None
        params = {"start": self._start, "before": self._before, "now": time.time()}
        sql = self._sql
        return lambda conn: conn.execute(sql, params).fetchall()

    def took(self, batch: list[tuple[str]]) -> list[str]:
        # The smallest key after the last one seen; a short batch was the last.
        self._start = batch[-1][0] + "\0" if len(batch) == _SCAN_BATCH else None
        return [key for (key,) in batch]


class _Later:
    """The hot path could not finish the operation: it goes through ``_run_steps``."""


_LATER = _Later()


class _FileReplaced(Exception):
    """The file at the path is not the one this thread's connection opened (nothing written)."""


class _ThreadConnection(threading.local):
    """Per-thread slot: the connection, the pid that opened it (checked on every use), the
    identity of the file it opened and when that was last compared with the file at the path."""

    conn: _Connection | None = None
    pid: int = 0
    identity: FileIdentity | None = None
    journal: dict[str, FileIdentity | None]  # identities of its -wal and -shm files
    checked_at: float = 0.0
    recycler: _Recycler | None = None  # gives the connection to a new thread when this one ends
    #: What ``incr``'s hot path runs on, set and cleared with ``conn`` (see ``_hot``).
    hot: tuple[sqlite3.Cursor, _IncrResult] | None = None

    def __init__(self) -> None:
        self.journal = {}


def _hot(conn: _Connection) -> tuple[sqlite3.Cursor, _IncrResult]:
    """A thread's cursor on its connection, reused by ``incr`` (measured: a new cursor per
    statement, what ``conn.execute`` makes, cost ~0.1 µs), and the connection's ``incr_result``.
    Only the thread that owns the slot uses them, one statement at a time, like the connection."""
    return conn.cursor(), conn.incr_result


def _set_busy_timeout(conn: sqlite3.Connection, timeout: float) -> None:
    """How long SQLite's busy handler waits for a lock, in seconds (its limit: 2**31-1 ms)."""
    conn.execute(f"PRAGMA busy_timeout={min(int(timeout * 1000), 2**31 - 1)}")


#: The SQL function through which ``_sql_incr_counted`` hands the sum it writes to Python.
_INCR_RESULT = "sharedstate_incr_result"


class _IncrResult:
    """The value ``_INCR_RESULT`` was last called with on one connection (``None``: reset)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None

    def keep(self, value: int) -> int:
        self.value = value
        return value


class _Connection(sqlite3.Connection):
    """A connection with ``_INCR_RESULT``: an increment keeps its sum in ``incr_result``.

    Used by one thread at a time (like every connection here), which reads ``incr_result``
    right after the statement: no other statement can call the function in between.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.incr_result = _IncrResult()
        # The function holds the _IncrResult, not the connection: no reference cycle.
        self.create_function(_INCR_RESULT, 1, self.incr_result.keep)


class _Recycler:
    """Held in a thread's slot: when the thread ends (its slot is freed), its connection goes to
    the backend's spares for the next new thread, unless that thread was forked away, the
    connection is in a transaction, or enough are spare already (then it is closed, as before)."""

    __slots__ = ("conn", "identity", "journal", "pid", "spares")

    def __init__(
        self,
        spares: list[_Spare],
        conn: _Connection | None,
        pid: int,
        identity: FileIdentity | None,
        journal: dict[str, FileIdentity | None],
    ) -> None:
        self.spares, self.conn, self.pid, self.identity, self.journal = spares, conn, pid, identity, journal

    def __del__(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            if (
                self.pid == os.getpid()
                and not conn.in_transaction
                and len(self.spares) < _MAX_SPARE_CONNECTIONS
            ):
                self.spares.append((conn, self.pid, self.identity, self.journal))
        except Exception:  # interpreter shutdown, a closed connection: let it go
            pass


def _forget_recycler(local: _ThreadConnection) -> None:
    """The thread's connection is being closed or replaced: it must not become a spare."""
    recycler = local.recycler
    if recycler is not None:
        recycler.conn = None
        local.recycler = None


def _identity(path: str) -> FileIdentity | None:
    """(device, inode) of the file at ``path``; ``None`` if there is none (or it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _quote_path(path: str) -> str:
    """``path`` as it is written in an ``sqlite://`` URL: ``%``, ``#`` and ``?`` percent-encoded."""
    return path.replace("%", "%25").replace("#", "%23").replace("?", "%3F")


def _set_params(key: str, value: RawValue, ttl: float | None) -> tuple[object, ...]:
    """``_sql_set``'s parameters: key, value, version, expiry."""
    return (key, value, random_version(), None if ttl is None else time.time() + ttl)


def _row(key: str, value: RawValue, ttl: float | None) -> dict[str, object]:
    now = time.time()
    return {
        "key": key,
        "value": value,
        "version": random_version(),
        "expires_at": None if ttl is None else now + ttl,
        "now": now,
    }
