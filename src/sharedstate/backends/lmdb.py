"""``lmdb://``: an LMDB environment (a directory) shared by every thread and process on a machine.

For the one-host user who wants the most speed: reads are a lookup in a memory map, a write is one
LMDB write transaction (get, put, commit), with no SQL and no server. ``sqlite://`` stays the
zero-dependency default; see ``docs/backends/lmdb.md`` for when to pick which. Needs the ``lmdb``
binding (``pip install 'sharedstate[lmdb]'``).

How it stays correct:

- Every write (``set`` included, which must drop the old entry's expiry index row) is one LMDB
  write transaction: LMDB's process-shared, robust write mutex serializes writers across threads
  and processes, so each operation is atomic per key. A process killed inside a write transaction
  commits nothing; the next writer takes the mutex over (LMDB recovers a dead owner's mutex).
  No two writers ever wait on LMDB's mutex at once: write transactions are serialized first by a
  lock per environment in each process, then by an ``flock`` on ``sharedstate-write.lock`` in the
  directory (see ``_Env.lock_writes``), because a writer waiting on that mutex when its owner is
  SIGKILLed is, rarely, never woken (a lost wake-up, reproduced with the binding alone).
- One ``lmdb.Environment`` per directory per process (LMDB forbids opening one twice in a process:
  closing the second would drop the first's file locks), shared by every backend and thread of the
  process, and never used across ``fork``: a child opens its own, and keeps the inherited one
  referenced, unused and unclosed (closing it would abort the parent's open transactions in
  the shared reader table, and measured, can hang the child; the binding itself skips it at
  garbage collection in another process). See ``_open_environment`` for how the child gets past
  the binding's "already open in this process" guard.
- The map grows: ``map_size`` is the initial size; a write that finds the map full has written
  nothing, and is run again after this process doubles its map (``growth``). Another process whose
  map is smaller than the data now gets ``MapResizedError`` on its next transaction and adopts the
  size recorded in the file. Resizing needs no transaction open in the process: every operation
  passes a gate (``_Env.enter``/``leave``, a counter under a lock) that resizing closes while it
  waits for the open ones to end.
- Entries carry a header: expiry (unix time, 0: never), version (random 62 bits, so a deleted and
  re-created key never gets an old version back) and flags (native int, long key). An expired entry
  is never returned and counts as absent for writes.
- Entries live in LMDB's main database (a named one would cost every commit one more page
  write: the main database's record of it). The expiry index is a named database keyed by
  (expires_at, key), recorded in the main database under ``0xFE`` + ``expiry`` (no UTF-8 text
  contains byte 0xFE, so no entry's key can collide with it), kept exact by every write, so a
  sweep reads only the expired part, oldest first. Sweeps are paced by writes as on ``sqlite://``
  (``proportional_sweep_limit``), in a transaction of their own after the write committed.
- Keys up to ``MAX_DIRECT_KEY`` UTF-8 bytes are stored as they are; longer ones (LMDB keys are at
  most 511 bytes, and the expiry index prefixes 8) under ``0xFF`` + their SHA-256 (no UTF-8 text
  starts with byte 0xFF), with the full key kept in the entry, so ``scan`` still yields it.

Durability (default ``sync=false``): a commit is safe against a crash of the app (a killed process
loses nothing it was told is committed), not against a crash of the OS or a power loss, which may
undo the commits of the last ``sync_interval`` seconds (a daemon thread per process flushes every
``sync_interval`` seconds while there are unflushed commits; no write waits for it) and, on a
filesystem that reorders writes, damage the file. ``sync=true`` syncs at every commit: durable and
intact across power loss, at the cost of a disk flush per write. The options of the first backend
a process opens on a directory apply to every backend of that process on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import random
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

from sharedstate._optional import require
from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
from sharedstate.backends.offload import ThreadedBackend
from sharedstate.backends.sweeping import proportional_sweep_limit
from sharedstate.errors import BackendUnavailableError
from sharedstate.urls import mask_url, query_options, split_url
from sharedstate.validation import seconds

T = TypeVar("T")

#: Keys longer than this (in UTF-8 bytes) are stored under a digest (see the module doc).
MAX_DIRECT_KEY = 500
DEFAULT_MAP_SIZE = 256 * 1024 * 1024
DEFAULT_MAX_READERS = 1024
DEFAULT_SYNC_INTERVAL = 1.0
_MIN_MAP_SIZE = 64 * 1024

_HEADER = struct.Struct("<dQB")  # expires_at (0.0: never), version, flags
_HEADER_SIZE = _HEADER.size
_INT = struct.Struct("<q")
_INT_RECORD = struct.Struct("<dQBq")  # the header and a native integer, packed at once
_KEYLEN = struct.Struct("<I")
_EXPIRY = struct.Struct(">d")  # big-endian positive doubles sort as the numbers do
_FLAG_INT = 1
_FLAG_LONG_KEY = 2
_LONG_KEY_MARK = b"\xff"
#: The expiry index's name in the main database, beside the entries: never a stored key (above).
_EXPIRY_DB = b"\xfeexpiry"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_LATER: Any = object()  # the hot path could not finish: the general path runs the operation

#: Our own lock file in the environment directory: write transactions are serialized on it.
WRITE_LOCK_FILE = "sharedstate-write.lock"

_SWEEP_EVERY_WRITES = 100
_SWEEP_EVERY_SECONDS = 30.0
_SWEEP_MAX_BATCH = 1000
_SCAN_BATCH = 500

# Environments by directory, in the process that opened them (see _environment).
_ENVS: dict[str, _Env] = {}
_ENVS_LOCK = threading.Lock()
_PID = os.getpid()
# Every backend of the process, for the fork handler (weakly: it keeps none alive).
_BACKENDS: weakref.WeakSet[LMDBBackend] = weakref.WeakSet()
# Environments inherited across fork, by directory: never used, never closed in the child (see
# _open_environment).
_INHERITED: dict[str, list[Any]] = {}


def _after_fork_in_child() -> None:
    global _PID, _ENVS_LOCK
    _PID = os.getpid()
    _ENVS_LOCK = threading.Lock()  # another thread may have held it at the fork
    for backend in list(_BACKENDS):  # and the lock each backend opens its environment under
        backend._open_lock = threading.Lock()
    for path, shared in _ENVS.items():
        _INHERITED.setdefault(path, []).append(shared.env)
        shared.drop_inherited_write_lock()
    _ENVS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _new_version() -> int:
    # Random, as on sqlite://: Python reseeds random in a forked child, so processes never share
    # a sequence, and a re-created key does not get an old version back. (The hot paths inline it.)
    return _getrandbits(62) + 1


_getrandbits = random.getrandbits


class _Env:
    """One process's environment on one directory, with the gate that map resizing closes.

    Every transaction of the process is bracketed by ``enter``/``leave`` (inlined on the hot
    paths): ``active.append`` then a look at ``resizing``, and ``active.pop``, each atomic under
    the GIL and costing tens of nanoseconds (a lock each way measured 0.65 us per operation).
    ``resize`` raises ``resizing`` first and then waits for ``active`` to empty; a transaction
    registers in ``active`` first and then looks at ``resizing``, backing off if it is raised. So
    either the resize sees the transaction and waits, or the transaction sees the resize and
    waits: LMDB's ``set_mapsize`` never runs while a transaction of the process is open.
    """

    def __init__(self, env: Any, path: str, flush_every: float | None) -> None:
        self.env = env
        self.path = path
        self.pid = _PID
        self.users = 0  # backends of this process that hold it (closed when the last lets go)
        self.main = env.open_db(None)  # the entries: LMDB's main database (see the module doc)
        self.expiry = env.open_db(_EXPIRY_DB)
        self.map_size: int = env.info()["map_size"]
        self.active: list[None] = []  # one item per open transaction of this process
        self.resizing = False
        self._resize_lock = threading.Lock()  # one resize at a time; waiters for it block here
        # Deferred syncing (sync=false): writers only raise ``dirty``; a daemon thread of this
        # process flushes every ``flush_every`` seconds while it is raised, so no write ever waits
        # for a disk flush and a commit is on disk at most about ``flush_every`` after it returned.
        self.dirty = False
        self._flush_every = flush_every
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        self._close_lock = threading.Lock()  # a flush and the close never overlap
        # The write lock (see lock_writes): this process's own file descriptor on the lock file.
        self._writers = threading.Lock()
        self._write_lock_fd = os.open(
            os.path.join(path, WRITE_LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )

    def lock_writes(self) -> None:
        """Take the host-wide write lock: first this process's lock (its threads take turns: an
        ``flock`` is held per open file description, which they share), then an exclusive
        ``flock`` on the lock file. Taken before ``begin(write=True)``, released after the commit
        or abort, so at most one process ever waits on LMDB's write mutex, never two.

        Why: a writer sleeping on LMDB's robust mutex when its owner is SIGKILLed is, rarely, never
        woken (a lost wake-up; the lock word is 0 and the waiter sleeps on). The kernel releases
        this flock reliably: on process death it first walks the robust-futex list in exit_mm
        (marking LMDB's mutex owner-dead), then closes files in exit_files (releasing the flock),
        so the next writer takes the flock and then finds the mutex owner-dead (EOWNERDEAD: LMDB
        recovers it) instead of sleeping on the futex.
        """
        self._writers.acquire()
        try:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX)
        except BaseException:
            self._writers.release()
            raise

    def unlock_writes(self) -> None:
        try:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)
        finally:
            self._writers.release()

    def drop_inherited_write_lock(self) -> None:
        """In a forked child: close the inherited descriptor (it shares the parent's open file
        description and so its flock; were the parent killed holding it, the child's copy would
        keep it held). The child's own environment opens its own."""
        fd, self._write_lock_fd = self._write_lock_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def wrote(self) -> None:
        """Note a commit to flush (``sync=false``), starting this process's flusher if needed."""
        self.dirty = True
        if self._flusher is None and self._flush_every is not None:
            with self._close_lock:
                if self._flusher is None and not self._closed.is_set():
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name=f"sharedstate-lmdb-flush {self.path}", daemon=True
                    )
                    self._flusher.start()

    def _flush_loop(self) -> None:
        assert self._flush_every is not None
        while not self._closed.wait(self._flush_every):
            if self.dirty:
                self.dirty = False  # before the flush: a commit during it is flushed next time
                self.flush()

    def flush(self) -> None:
        with self._close_lock:
            if not self._closed.is_set():
                with contextlib.suppress(Exception):  # best effort; the next round tries again
                    self.env.sync(True)

    def close(self) -> None:
        """Flush and close the environment; the flusher thread ends."""
        self.flush()
        with self._close_lock:
            self._closed.set()
            self.env.close()
            self.drop_inherited_write_lock()  # this process's own descriptor, here

    def enter(self) -> None:
        active = self.active
        active.append(None)
        while self.resizing:  # back off until the resize is done (rare: a map grew)
            active.pop()
            with self._resize_lock:
                pass
            active.append(None)

    def leave(self) -> None:
        self.active.pop()

    def resize(self, seen_size: int, new_size: int) -> None:
        """Set the map to ``new_size`` (0: the size recorded in the file) unless another thread
        already resized it since this one saw ``seen_size``. Called outside any transaction."""
        with self._resize_lock:
            if self.map_size != seen_size:
                return  # another thread got there first: retry with its map
            self.resizing = True
            try:
                while self.active:  # transactions end in microseconds (writers: one commit)
                    time.sleep(0.0002)
                self.env.set_mapsize(new_size)
                self.map_size = self.env.info()["map_size"]
            finally:
                self.resizing = False


class LMDBBackend(Backend):
    """LMDB storage. URL: ``lmdb:///relative/dir`` or ``lmdb:////absolute/dir`` (a directory).

    Options: ``map_size`` (initial map size in bytes, default 256 MiB; grown by doubling when
    full), ``max_readers`` (reader slots shared by every thread and process with a transaction open
    at once, default 1024), ``sync`` (sync every commit to disk, default false), ``sync_interval``
    (with ``sync=false``: a process syncs at most this many seconds after a write, default 1).
    Every thread and process may share one backend; each operation is one LMDB transaction.
    """

    schemes = ("lmdb",)

    def __init__(
        self,
        path: str,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = DEFAULT_MAX_READERS,
        sync: bool = False,
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
    ) -> None:
        self._lmdb = require("lmdb", "lmdb")
        if map_size < _MIN_MAP_SIZE:
            raise ValueError(f"map_size must be at least {_MIN_MAP_SIZE} bytes, got {map_size}")
        if max_readers < 1:
            raise ValueError(f"max_readers must be at least 1, got {max_readers}")
        self.path = os.path.abspath(path)
        self.map_size = map_size
        self.max_readers = max_readers
        self.sync = sync
        self.sync_interval = seconds("sync_interval", sync_interval)
        self._shared: _Env | None = None
        self._open_lock = threading.Lock()
        _BACKENDS.add(self)
        self._writes = 0  # since the last sweep, in this process
        self._last_sweep = time.monotonic()

    @classmethod
    def from_url(cls, url: str) -> LMDBBackend:
        parts = split_url(url)
        if "#" in url:
            raise ValueError(
                f"lmdb URL {mask_url(url)!r} contains '#', which would start a URL fragment: write '#' "
                "in a directory name as %23 (and '?' as %3F, '%' as %25)"
            )
        if parts.netloc:
            raise ValueError(
                f"malformed lmdb URL {mask_url(url)!r}: use lmdb:///relative/dir (three slashes) or "
                "lmdb:////absolute/dir (four)"
            )
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path, errors="strict")
        if "\0" in path:
            raise ValueError(f"lmdb URL {mask_url(url)!r}: the path contains a NUL character (%00)")
        if not path.strip("/"):
            raise ValueError(f"lmdb URL {mask_url(url)!r} names no directory, e.g. lmdb:///state.lmdb")
        known = {"map_size": int, "max_readers": int, "sync": bool, "sync_interval": float}
        options = query_options(parts, known, url)
        return cls(path, **options)  # type: ignore[arg-type]

    def describe(self) -> str:
        quoted = self.path.replace("%", "%25").replace("#", "%23").replace("?", "%3F")
        return f"lmdb:///{quoted}"

    # -- the environment ---------------------------------------------------------------------

    def _env(self) -> _Env:
        shared = self._shared
        if shared is not None and shared.pid == _PID:
            return shared
        return self._open()

    def _open(self) -> _Env:
        with self._open_lock:
            shared = self._shared
            if shared is not None and shared.pid == _PID:
                return shared
            self._shared = _acquire(self)
            return self._shared

    def _unavailable(self, what: str, exc: BaseException, applied: bool | None) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"LMDB environment {self.path!r}: {what}: {type(exc).__name__}: {exc}", applied=applied
        )

    def _read(self, op: Callable[[Any, _Env], T]) -> T:
        """Run ``op(txn, env)`` in a read transaction (after a resize by another process: again)."""
        lmdb = self._lmdb
        while True:
            shared = self._env()
            shared.enter()
            try:
                with shared.env.begin(db=shared.main, buffers=False) as txn:
                    return op(txn, shared)
            except lmdb.MapResizedError:
                resized = shared.map_size
            except lmdb.ReadersFullError as exc:
                raise self._readers_full(exc) from exc
            except lmdb.Error as exc:
                raise self._unavailable("read failed", exc, applied=False) from exc
            finally:
                shared.leave()
            shared.resize(resized, 0)

    def _write(self, op: Callable[[Any, _Env], T]) -> T:
        """Run ``op(txn, env)`` in a write transaction and commit it; a full map is grown and the
        operation run again (it wrote nothing). After the commit: a sweep and a sync when due."""
        lmdb = self._lmdb
        while True:
            shared = self._shared
            if shared is None or shared.pid != _PID:
                shared = self._open()
            self._lock_writes(shared)
            shared.enter()
            committing = False
            try:
                txn = shared.env.begin(db=shared.main, write=True)
                try:
                    result = op(txn, shared)
                except BaseException:
                    txn.abort()
                    raise
                committing = True
                txn.commit()
                break
            except lmdb.MapFullError:
                seen, grow_to = shared.map_size, 2 * shared.map_size
            except lmdb.MapResizedError:
                seen, grow_to = shared.map_size, 0
            except lmdb.ReadersFullError as exc:
                raise self._readers_full(exc) from exc
            except lmdb.Error as exc:
                what = "commit failed" if committing else "write failed"
                raise self._unavailable(what, exc, applied=None if committing else False) from exc
            finally:
                shared.leave()
                shared.unlock_writes()
            self._grow(shared, seen, grow_to)
        self._after_write(shared)
        return result

    def _lock_writes(self, shared: _Env) -> None:
        try:
            shared.lock_writes()
        except OSError as exc:
            raise self._unavailable("could not take the write lock", exc, applied=False) from exc

    def _grow(self, shared: _Env, seen: int, new_size: int) -> None:
        try:
            shared.resize(seen, new_size)
        except self._lmdb.Error as exc:
            raise BackendUnavailableError(
                f"LMDB environment {self.path!r}: the map ({seen} bytes) is full and could not grow "
                f"to {new_size} bytes: {type(exc).__name__}: {exc} (nothing was written; free disk "
                "space or address space, or start with a larger map_size)",
                applied=False,
            ) from exc

    def _readers_full(self, exc: BaseException) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"LMDB environment {self.path!r}: all {self.max_readers} reader slots are taken (one per "
            "transaction open at once, over every thread and process); open it with a larger "
            f"?max_readers= (nothing was applied): {exc}",
            applied=False,
        )

    def _after_write(self, shared: _Env) -> None:
        self._writes += 1  # racy across threads on purpose: it only paces the sweeps
        if not shared.dirty:
            shared.wrote()
        now = time.monotonic()
        if self._writes >= _SWEEP_EVERY_WRITES or now - self._last_sweep >= _SWEEP_EVERY_SECONDS:
            limit = proportional_sweep_limit(self._writes, _SWEEP_EVERY_WRITES, _SWEEP_MAX_BATCH)
            self._writes, self._last_sweep = 0, now
            # The write has committed: a sweep that fails now must not turn it into an error.
            with contextlib.suppress(BackendUnavailableError):
                self._sweep_now(limit)

    # -- the contract ------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        stored = _stored_key(key)
        shared = self._shared
        if shared is None or shared.pid != _PID:
            shared = self._open()
        # The hot path of _read, inline: one transaction, no closure, the gate inline (see _Env).
        # Any LMDB error (a resize by another process, full reader slots) goes through _read.
        active = shared.active
        active.append(None)
        try:
            if shared.resizing:
                raw = _LATER
            else:
                with shared.env.begin(db=shared.main) as txn:
                    raw = txn.get(stored)
        except self._lmdb.Error:
            raw = _LATER
        finally:
            active.pop()
        if raw is _LATER:
            return self._read(lambda txn, _: _live_entry(txn.get(stored), time.time()))
        return _live_entry(raw, time.time())

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        stored = _stored_key(key)
        record, expires = _record(key, stored, value, ttl, time.time(), _getrandbits(62) + 1)
        shared = self._shared
        if (
            shared is not None
            and shared.pid == _PID
            and self._write_now(shared, _put_record, stored, record, expires) is not _LATER
        ):
            self._after_write(shared)
            return
        self._write(lambda txn, shared: _put_record(txn, shared, stored, record, expires))

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        return self.compare_and_set(key, None, value, ttl).stored

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        stored = _stored_key(key)
        now = time.time()
        version = _new_version()
        record, expires = _record(key, stored, value, ttl, now, version)

        def op(txn: Any, shared: _Env) -> CasResult:
            old = txn.get(stored)
            current = _live_entry(old, now)
            if (None if current is None else current.version) != expected:
                return CasResult(False, current)
            if old is not None:
                _unindex(txn, shared, stored, old)
            txn.put(stored, record)
            if expires:
                txn.put(_EXPIRY.pack(expires) + stored, b"", db=shared.expiry)
            return CasResult(True, Entry(value, version))

        return self._write(op)

    def delete(self, key: str) -> bool:
        return self._delete(key, None)

    def delete_if_version(self, key: str, version: Version) -> bool:
        return self._delete(key, version)

    def _delete(self, key: str, version: Version | None) -> bool:
        stored = _stored_key(key)
        now = time.time()

        def op(txn: Any, shared: _Env) -> bool:
            old = txn.get(stored)
            if old is None:
                return False
            expires, current, _ = _HEADER.unpack_from(old)
            live = not expires or expires > now
            if live and version is not None and current != version:
                return False
            _unindex(txn, shared, stored, old)
            txn.delete(stored)
            return live  # an expired entry is removed on the way, and was not there

        return self._write(op)

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        stored = _stored_key(key)
        shared = self._shared
        if shared is not None and shared.pid == _PID:
            total = self._write_now(shared, _incr_step, stored, by, _getrandbits(62) + 1)
            if total is not _LATER:
                self._after_write(shared)
                return total  # type: ignore[no-any-return]
        return self._incr(key, stored, by, ttl)

    def _write_now(self, shared: _Env, step: Callable[..., Any], *args: Any) -> Any:
        """The hot path of a write: ``step(txn, shared, *args)`` in one write transaction, with
        the write lock and the gate inline and no closure (``set`` and ``incr``; measured: 4
        processes incrementing one key, about 1.2x ``_write``). Returns what ``step`` returns,
        or ``_LATER`` having written nothing: if ``step`` returns it, on a resize under way, on
        any LMDB error before the commit, or a full map at the commit. The caller then runs its
        general path, which raises the errors and grows the map.
        """
        lmdb = self._lmdb
        writers = shared._writers
        writers.acquire()  # shared.lock_writes(), inline
        fd = shared._write_lock_fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            writers.release()
            return _LATER  # the general path raises it
        active = shared.active
        active.append(None)  # the gate, inline (see _Env)
        try:
            if shared.resizing:
                return _LATER
            try:
                txn = shared.env.begin(db=shared.main, write=True)
            except lmdb.Error:
                return _LATER
            try:
                result = step(txn, shared, *args)
            except lmdb.Error:
                result = _LATER
            except BaseException:
                txn.abort()
                raise
            if result is _LATER:
                txn.abort()
                return _LATER
            try:
                txn.commit()
            except lmdb.MapFullError:
                return _LATER  # the commit wrote nothing: the general path grows the map
            except lmdb.Error as exc:
                raise self._unavailable("commit failed", exc, applied=None) from exc
            return result
        finally:
            active.pop()
            try:  # shared.unlock_writes(), inline
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                writers.release()

    def _incr(self, key: str, stored: bytes, by: int, ttl: float | None) -> int:
        now = time.time()
        expires_new = 0.0 if ttl is None else now + ttl
        version = _new_version()

        def op(txn: Any, shared: _Env) -> int:
            old = txn.get(stored)
            expires, total, created = expires_new, by, True
            if old is not None:
                old_expires, _, flags = _HEADER.unpack_from(old)
                if old_expires and old_expires <= now:  # expired: starts again at 0
                    _unindex(txn, shared, stored, old)
                else:
                    if not flags & _FLAG_INT:
                        raise TypeError(f"cannot incr key {key!r}: it holds a value that is not an integer")
                    total = _INT.unpack_from(old, len(old) - 8)[0] + by
                    expires, created = old_expires, False
            if not _INT64_MIN <= total <= _INT64_MAX:
                raise OverflowError(f"incr of key {key!r} overflows a signed 64-bit integer")
            if stored[:1] != _LONG_KEY_MARK:
                txn.put(stored, _INT_RECORD.pack(expires, version, _FLAG_INT, total))
            else:
                txn.put(stored, _encode(key, stored, total, expires, version))
            if expires and created:  # an existing entry keeps its expiry and its index row
                txn.put(_EXPIRY.pack(expires) + stored, b"", db=shared.expiry)
            return total

        return self._write(op)

    def expiry(self, key: str) -> float | None:
        stored = _stored_key(key)
        now = time.time()
        raw = self._read(lambda txn, _: txn.get(stored))
        if raw is None:
            raise KeyError(key)
        expires: float = _HEADER.unpack_from(raw)[0]
        if not expires:
            return None
        if expires <= now:
            raise KeyError(key)
        return expires - now

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """Every key read in one read transaction (one snapshot)."""
        stored = [_stored_key(key) for key in keys]

        def op(txn: Any, _: _Env) -> dict[str, Entry]:
            now = time.time()
            found = {}
            for key, raw in zip(keys, [txn.get(s) for s in stored], strict=True):
                entry = _live_entry(raw, now)
                if entry is not None:
                    found[key] = entry
            return found

        return self._read(op)

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        """Every item in one write transaction: all or nothing."""
        now = time.time()
        records = []
        for key, value in items.items():
            stored = _stored_key(key)
            records.append((stored, *_record(key, stored, value, ttl, now, _new_version())))

        def op(txn: Any, shared: _Env) -> None:
            for stored, record, expires in records:
                _put_record(txn, shared, stored, record, expires)

        self._writes += max(0, len(records) - 1)  # paces sweeps by entries written
        self._write(op)

    def delete_many(self, keys: Sequence[str]) -> int:
        """Every key in one write transaction: all or nothing."""
        stored = [_stored_key(key) for key in keys]
        now = time.time()

        def op(txn: Any, shared: _Env) -> int:
            removed = 0
            for s in stored:
                old = txn.get(s)
                if old is None:
                    continue
                expires = _HEADER.unpack_from(old)[0]
                _unindex(txn, shared, s, old)
                txn.delete(s)
                removed += not expires or expires > now  # an expired entry goes, uncounted
            return removed

        self._writes += max(0, len(stored) - 1)
        return self._write(op)

    def ping(self) -> None:
        """Open the environment (if this process has not) and read in it."""
        self._read(lambda txn, _: txn.stat())

    def touch(self, key: str, ttl: float | None) -> bool:
        stored = _stored_key(key)
        now = time.time()
        expires = 0.0 if ttl is None else now + ttl

        def op(txn: Any, shared: _Env) -> bool:
            old = txn.get(stored)
            if old is None or _live_entry(old, now) is None:
                return False
            _unindex(txn, shared, stored, old)
            _, version, flags = _HEADER.unpack_from(old)
            txn.put(stored, _HEADER.pack(expires, version, flags) + old[_HEADER_SIZE:])
            if expires:
                txn.put(_EXPIRY.pack(expires) + stored, b"", db=shared.expiry)
            return True

        return self._write(op)

    def scan(self, prefix: str = "") -> Iterator[str]:
        """Live keys starting with ``prefix``, in batches: no transaction stays open between yields."""
        wanted = prefix.encode("utf-8")
        start: bytes | None = wanted
        while start is not None:  # keys stored as they are: one sorted range
            batch, start = self._read(functools.partial(_scan_direct, start=start, prefix=wanted))
            yield from batch
        start = _LONG_KEY_MARK
        while start is not None:  # long keys, under their digests: every one is checked
            batch, start = self._read(functools.partial(_scan_long, start=start, prefix=prefix))
            yield from batch

    def sweep(self, limit: int = 1000) -> int:
        if limit <= 0:
            return 0
        return self._sweep_now(limit)

    def _sweep_now(self, limit: int) -> int:
        """Remove up to ``limit`` expired entries, oldest expiry first, reading only the expired
        part of the expiry index; also free reader slots left by processes that died."""
        now = time.time()

        def op(txn: Any, shared: _Env) -> int:
            removed = 0
            cursor = txn.cursor(db=shared.expiry)
            if not cursor.first():
                return 0
            while removed < limit:
                index_key = cursor.key()
                if not index_key or _EXPIRY.unpack_from(index_key)[0] > now:
                    break  # the index is exhausted, or the rest expires later
                txn.delete(index_key[8:])
                cursor.delete()  # and moves to the next row
                removed += 1
            return removed

        removed = self._write_no_pacing(op)
        with contextlib.suppress(self._lmdb.Error):
            self._env().env.reader_check()
        return removed

    def _write_no_pacing(self, op: Callable[[Any, _Env], int]) -> int:
        writes, last = self._writes, self._last_sweep
        self._writes, self._last_sweep = -(10**9), time.monotonic()  # no sweep from this sweep
        try:
            return self._write(op)
        finally:
            self._writes, self._last_sweep = writes, last

    def close(self) -> None:
        """Let go of this backend's hold on the process's environment (closed, and synced, when
        the last backend of the process on that directory lets go). It reopens on next use.

        Closing while other threads still run operations on this backend is the caller's error.
        """
        with self._open_lock:
            shared, self._shared = self._shared, None
        if shared is not None and shared.pid == _PID:
            _release(shared)


class AsyncLMDBBackend(ThreadedBackend):
    """``lmdb://`` for ``asyncio``: each operation of an :class:`LMDBBackend` runs in a thread.

    Not inline on the loop: a write transaction begins by taking LMDB's write mutex, which another
    process may hold (for a commit that syncs, or a map resize), and a resize waits for the
    process's open transactions; either wait would block the loop. Results, errors and atomicity
    are those of :class:`LMDBBackend`.
    """

    schemes = LMDBBackend.schemes
    sync_class = LMDBBackend


# -- the shared environments ---------------------------------------------------------------------


def _acquire(backend: LMDBBackend) -> _Env:
    """The process's environment on ``backend.path`` (opened now if it is not open yet)."""
    lmdb = backend._lmdb
    with _ENVS_LOCK:
        shared = _ENVS.get(backend.path)
        if shared is None:
            parent = os.path.dirname(backend.path)
            if not os.path.isdir(parent):
                raise BackendUnavailableError(
                    f"cannot open LMDB environment {backend.path!r}: directory {parent!r} does not exist"
                )
            try:
                env = _open_environment(lmdb, backend)
            except lmdb.Error as exc:
                writable = os.access(parent, os.W_OK)
                hint = "" if writable else f" (directory {parent!r} is not writable)"
                raise BackendUnavailableError(
                    f"cannot open LMDB environment {backend.path!r}: {type(exc).__name__}: {exc}{hint}"
                ) from exc
            flush_every = None if backend.sync else backend.sync_interval
            try:
                shared = _Env(env, backend.path, flush_every)
            except OSError as exc:  # the write lock file (see _Env.lock_writes)
                env.close()
                raise BackendUnavailableError(
                    f"cannot open LMDB environment {backend.path!r}: its write lock file "
                    f"{WRITE_LOCK_FILE!r}: {type(exc).__name__}: {exc}"
                ) from exc
            _ENVS[backend.path] = shared
        shared.users += 1
        return shared


def _open_environment(lmdb: Any, backend: LMDBBackend) -> Any:
    """``lmdb.open`` with this backend's options.

    In a forked child that inherited an environment on the same directory, py-lmdb (3.x) refuses
    to open it again ("already open in this process"): its guard knows the files by the identities
    ``lmdb._envid.env_keys`` returns, and was inherited with the parent's entry in it. The inherited
    environment cannot be closed safely (see the module doc), and it is not open in the child in
    the sense the guard protects (the child holds no ``fcntl`` lock through it), so the child opens
    its own with that hook answering "no identity" for this one call: the child's environment is
    then unknown to the guard, which is what ``_ENVS`` (one environment per directory per
    process, for every backend of this module) makes up for.
    """
    options = {
        "map_size": backend.map_size,
        "max_dbs": 1,  # the expiry index
        "max_readers": backend.max_readers,
        "lock": True,
        "sync": backend.sync,
        "metasync": backend.sync,
        "readahead": False,  # random access: reading ahead only evicts useful pages
        "subdir": True,
        "create": True,
        # Not writemap (measured: a write transaction 1.3 us instead of 5): LMDB then truncates
        # data.mdb to the map size of each process that opens or resizes it, so a process with a
        # smaller map shrinks the file under a larger one, whose next write past the new end is
        # SIGBUS (reproduced); and a full disk is SIGBUS instead of an error.
    }
    inherited = _INHERITED.get(backend.path)
    envid: Any = sys.modules.get("lmdb._envid")
    if not inherited or envid is None or not hasattr(envid, "env_keys"):
        return lmdb.open(backend.path, **options)
    real = envid.env_keys
    envid.env_keys = lambda path, subdir: ()
    try:
        return lmdb.open(backend.path, **options)
    finally:
        envid.env_keys = real


def _release(shared: _Env) -> None:
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users > 0 or _ENVS.get(shared.path) is not shared:
            return
        del _ENVS[shared.path]
    shared.close()


# -- entries -------------------------------------------------------------------------------------


def _stored_key(key: str) -> bytes:
    encoded = key.encode("utf-8")
    if len(encoded) <= MAX_DIRECT_KEY:
        return encoded
    return _LONG_KEY_MARK + hashlib.sha256(encoded).digest()


def _record(
    key: str, stored: bytes, value: RawValue, ttl: float | None, now: float, version: int
) -> tuple[bytes, float]:
    expires = 0.0 if ttl is None else now + ttl
    return _encode(key, stored, value, expires, version), expires


def _encode(key: str, stored: bytes, value: RawValue, expires: float, version: int) -> bytes:
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise OverflowError(f"the integer stored at key {key!r} does not fit a signed 64-bit integer")
        flags, payload = _FLAG_INT, _INT.pack(value)
    else:
        flags, payload = 0, value
    if stored[:1] == _LONG_KEY_MARK:
        full = key.encode("utf-8")
        header = _HEADER.pack(expires, version, flags | _FLAG_LONG_KEY)
        return header + _KEYLEN.pack(len(full)) + full + payload
    return _HEADER.pack(expires, version, flags) + payload


def _live_entry(raw: bytes | None, now: float) -> Entry | None:
    """The entry in ``raw`` (a stored record), or ``None`` if there is none or it has expired."""
    if raw is None:
        return None
    expires, version, flags = _HEADER.unpack_from(raw)
    if expires and expires <= now:
        return None
    start = _HEADER_SIZE
    if flags & _FLAG_LONG_KEY:
        start += _KEYLEN.size + _KEYLEN.unpack_from(raw, start)[0]
    if flags & _FLAG_INT:
        return Entry(_INT.unpack_from(raw, start)[0], version)
    return Entry(raw[start:], version)


def _full_key(stored: bytes, raw: bytes) -> str:
    if stored[:1] != _LONG_KEY_MARK:
        return stored.decode("utf-8")
    (length,) = _KEYLEN.unpack_from(raw, _HEADER_SIZE)
    start = _HEADER_SIZE + _KEYLEN.size
    return raw[start : start + length].decode("utf-8")


def _put_record(txn: Any, shared: _Env, stored: bytes, record: bytes, expires: float) -> None:
    """Replace whatever is at ``stored`` by ``record`` (expiring at ``expires``, 0: never),
    keeping the expiry index exact."""
    old = txn.replace(stored, record)  # the put and the old record in one call
    if old is not None:
        _unindex(txn, shared, stored, old)
    if expires:
        txn.put(_EXPIRY.pack(expires) + stored, b"", db=shared.expiry)


def _incr_step(txn: Any, shared: _Env, stored: bytes, by: int, version: int) -> Any:
    """``incr``'s hot path (see ``LMDBBackend._write_now``): a live native integer stored under
    its own key, incremented; anything else (absent, expired, not an integer, an overflow, a long
    key) is ``_LATER``, having written nothing, for the general path (which raises its errors)."""
    old = txn.get(stored)
    if old is None or len(old) != _INT_RECORD.size:
        return _LATER
    expires, _, flags, value = _INT_RECORD.unpack(old)
    total = value + by
    if flags != _FLAG_INT or (expires and expires <= time.time()) or not _INT64_MIN <= total <= _INT64_MAX:
        return _LATER
    txn.put(stored, _INT_RECORD.pack(expires, version, _FLAG_INT, total))
    return total


def _unindex(txn: Any, shared: _Env, stored: bytes, old: bytes) -> None:
    """Drop the expiry index row of the record ``old`` stored at ``stored`` (if it has one)."""
    expires = _HEADER.unpack_from(old)[0]
    if expires:
        txn.delete(_EXPIRY.pack(expires) + stored, db=shared.expiry)


def _scan_direct(txn: Any, _: _Env, *, start: bytes, prefix: bytes) -> tuple[list[str], bytes | None]:
    """Up to ``_SCAN_BATCH`` live keys (stored as they are) from ``start`` on that start with
    ``prefix``, and where the next batch starts (``None``: done)."""
    keys: list[str] = []
    now = time.time()
    cursor = txn.cursor()
    if not cursor.set_range(start):
        return keys, None
    for stored, raw in cursor:
        if not stored.startswith(prefix) or stored[:1] >= _EXPIRY_DB[:1]:  # the index, long keys
            return keys, None
        if _live_entry(raw, now) is not None:
            keys.append(stored.decode("utf-8"))
        if len(keys) >= _SCAN_BATCH:
            return keys, stored + b"\0"
    return keys, None


def _scan_long(txn: Any, _: _Env, *, start: bytes, prefix: str) -> tuple[list[str], bytes | None]:
    """As ``_scan_direct``, over the keys stored under a digest (the full key is in the entry)."""
    keys: list[str] = []
    now = time.time()
    cursor = txn.cursor()
    if not cursor.set_range(start):
        return keys, None
    for seen, (stored, raw) in enumerate(cursor, 1):
        key = _full_key(stored, raw)
        if key.startswith(prefix) and _live_entry(raw, now) is not None:
            keys.append(key)
        if seen >= _SCAN_BATCH:
            return keys, stored + b"\0"
    return keys, None
