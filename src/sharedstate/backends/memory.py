"""``memory://``: a dict behind a lock, for one process (tests, single-process development).

It serves the threads of the process that created it. Used from any other process it raises
instead of quietly giving each process its own copy, which is exactly the bug sharedstate exists
to prevent:

- After a fork (``gunicorn --preload``), the inherited store raises on every operation.
- Without a fork of the store (``gunicorn -w 4`` without ``--preload``: each worker imports the app
  and opens its own ``memory://``), the second worker to open one fails when its ``Store`` is
  created: each store takes an exclusive ``flock`` on a per-user runtime file keyed by the parent
  pid, the command line (``sys.argv``) and the namespace, so sibling processes of one server
  collide while the stores of one process share the lock (see ``_SiblingClaims``). The kernel
  releases the lock of a process that dies, so a respawned worker takes it over.
  ``memory://?check_siblings=false`` turns the check off for processes that are really meant to
  be independent (e.g. pytest-xdist workers, which share a parent and a command line).
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import heapq
import itertools
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress

from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
from sharedstate.backends.kit import INT64_MAX, INT64_MIN, not_an_integer, overflows
from sharedstate.backends.offload import InlineBackend
from sharedstate.errors import NotSupportedError
from sharedstate.urls import mask_url, query_options, split_url

_Row = tuple[RawValue, int, "float | None"]  # value, version, expires_at (time.monotonic)
# How long a store waits for a sibling's claim to go before it fails (seconds): long enough for the
# old worker of a graceful reload (gunicorn's HUP) to exit, short enough to fail a boot loudly.
_SIBLING_GRACE = 3.0


class MemoryBackend(Backend):
    """In-process storage. ``memory://?max_entries=N`` bounds the entries that have a TTL.

    When ``max_entries`` is reached, the TTL entry closest to expiry is evicted to make room; entries
    without a TTL (state) are never evicted. ``check_siblings=false`` lets sibling processes (same
    parent, same command line) each open their own ``memory://`` on the same namespace.
    """

    schemes = ("memory",)

    def __init__(self, max_entries: int | None = None, *, check_siblings: bool = True) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.check_siblings = check_siblings
        self._data: dict[str, _Row] = {}
        self._expiry_heap: list[tuple[float, int, str]] = []  # (expires_at, version, key)
        self._ttl_count = 0
        self._lock = threading.Lock()
        self._versions = itertools.count(1)
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        parts = split_url(url)
        if parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"memory:// takes no host or path, got {mask_url(url)!r}")
        options = query_options(parts, {"max_entries": int, "check_siblings": bool}, url)
        max_entries = options.get("max_entries")
        return cls(
            max_entries=int(max_entries) if max_entries is not None else None,
            check_siblings=bool(options.get("check_siblings", True)),
        )

    def attach(self, namespace: str) -> None:
        """Refuse to serve ``namespace`` if a sibling process of this server already does."""
        if self.check_siblings:
            _CLAIMS.claim(namespace)

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise NotSupportedError(
                "memory:// serves only the process that created it, and this is another process "
                "(a forked or spawned worker). Each process would see its own copy: use "
                "sqlite:///path/to/file.db on one machine, or redis:// / postgresql:// across machines"
            )

    def _live(self, key: str, now: float) -> _Row | None:
        row = self._data.get(key)
        if row is None:
            return None
        if row[2] is not None and row[2] <= now:
            self._remove(key)
            return None
        return row

    def _remove(self, key: str) -> None:
        row = self._data.pop(key, None)
        if row is not None and row[2] is not None:
            self._ttl_count -= 1

    def _put(self, key: str, value: RawValue, ttl: float | None, now: float) -> int:
        self._remove(key)
        expires = None if ttl is None else now + ttl
        version = next(self._versions)
        self._data[key] = (value, version, expires)
        if expires is not None:
            self._ttl_count += 1
            heapq.heappush(self._expiry_heap, (expires, version, key))
            self._evict(now)
        return version

    def _evict(self, now: float) -> None:
        """Drop expired TTL entries, then (over max_entries) those closest to expiry."""
        heap = self._expiry_heap
        while heap:
            expires, version, key = heap[0]
            row = self._data.get(key)
            stale = row is None or row[1] != version or row[2] != expires
            over = self.max_entries is not None and self._ttl_count > self.max_entries
            if not stale and expires > now and not over:
                break
            heapq.heappop(heap)
            if not stale:
                self._remove(key)

    def get(self, key: str) -> Entry | None:
        self._check_process()
        with self._lock:
            row = self._live(key, time.monotonic())
            return None if row is None else Entry(row[0], row[1])

    def set(self, key: str, value: RawValue, ttl: float | None = None) -> None:
        self._check_process()
        with self._lock:
            self._put(key, value, ttl, time.monotonic())

    def add(self, key: str, value: RawValue, ttl: float | None = None) -> bool:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            if self._live(key, now) is not None:
                return False
            self._put(key, value, ttl, now)
            return True

    def compare_and_set(
        self, key: str, expected: Version | None, value: RawValue, ttl: float | None = None
    ) -> CasResult:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            row = self._live(key, now)
            current = None if row is None else row[1]
            if current != expected:
                return CasResult(False, None if row is None else Entry(row[0], row[1]))
            return CasResult(True, Entry(value, self._put(key, value, ttl, now)))

    def delete(self, key: str) -> bool:
        self._check_process()
        with self._lock:
            if self._live(key, time.monotonic()) is None:
                return False
            self._remove(key)
            return True

    def delete_if_version(self, key: str, version: Version) -> bool:
        self._check_process()
        with self._lock:
            row = self._live(key, time.monotonic())
            if row is None or row[1] != version:
                return False
            self._remove(key)
            return True

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            row = self._live(key, now)
            if row is None:
                self._put(key, by, ttl, now)
                return by
            if not isinstance(row[0], int):
                raise not_an_integer(key)
            new = row[0] + by
            if not INT64_MIN <= new <= INT64_MAX:
                raise overflows(key)
            version = next(self._versions)
            self._data[key] = (new, version, row[2])
            if row[2] is not None:
                heapq.heappush(self._expiry_heap, (row[2], version, key))
            return new

    def touch(self, key: str, ttl: float | None) -> bool:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            row = self._live(key, now)
            if row is None:
                return False
            self._remove(key)
            expires = None if ttl is None else now + ttl
            self._data[key] = (row[0], row[1], expires)
            if expires is not None:
                self._ttl_count += 1
                heapq.heappush(self._expiry_heap, (expires, row[1], key))
            return True

    def expiry(self, key: str) -> float | None:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            row = self._live(key, now)
            if row is None:
                raise KeyError(key)
            return None if row[2] is None else max(0.0, row[2] - now)

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        self._check_process()
        with self._lock:  # one lock for the batch: atomic across its keys too, here
            now = time.monotonic()
            found = {}
            for key in keys:
                row = self._live(key, now)
                if row is not None:
                    found[key] = Entry(row[0], row[1])
            return found

    def set_many(self, items: Mapping[str, RawValue], ttl: float | None = None) -> None:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            for key, value in items.items():
                self._put(key, value, ttl, now)

    def delete_many(self, keys: Sequence[str]) -> int:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            removed = 0
            for key in keys:
                if self._live(key, now) is not None:
                    self._remove(key)
                    removed += 1
            return removed

    def ping(self) -> None:
        self._check_process()  # in this process the dict always answers

    def scan(self, prefix: str = "") -> Iterator[str]:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            keys = [
                k
                for k, row in self._data.items()
                if k.startswith(prefix) and (row[2] is None or row[2] > now)
            ]
        return iter(keys)

    def sweep(self, limit: int = 1000) -> int:
        self._check_process()
        with self._lock:
            now = time.monotonic()
            expired = [k for k, row in self._data.items() if row[2] is not None and row[2] <= now]
            for key in expired[:limit]:
                self._remove(key)
            return min(len(expired), limit)

    def close(self) -> None:
        pass  # nothing to release; the data lives as long as the backend object

    def describe(self) -> str:
        return "memory://"


class AsyncMemoryBackend(InlineBackend):
    """``memory://`` for ``asyncio``: the same data structure and code as :class:`MemoryBackend`,
    run inline on the event loop.

    Every operation takes the backend's ``threading.Lock`` only inside one call, for microseconds,
    and never waits for anything else, so running it on the loop never blocks the loop. It serves
    the process that created it, and refuses a sibling process on the same namespace (``attach``),
    exactly as :class:`MemoryBackend` does.
    """

    schemes = MemoryBackend.schemes
    sync_class = MemoryBackend


class _SiblingClaims:
    """The sibling locks this process holds: one open, ``flock``-ed file per (process, key).

    ``flock`` belongs to an open file description, so a second ``open`` + ``flock`` of the same
    file in the same process would conflict with the first: every store of one process on one key
    goes through this registry instead, which takes each lock once. A forked child drops the locks
    it inherited (closing its copies leaves the parent's locks in place) and takes its own, under a
    key of its own (its parent is another process). At exit the files are removed; a process that
    takes a lock checks afterwards that the file is still the one at the path, so removing a file
    never lets two processes hold "the same" lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # lock file path -> fd, in the process that took it
        self._pid = os.getpid()

    def claim(self, namespace: str) -> None:
        path = os.path.join(_runtime_dir(), f"memory-{_sibling_key(namespace)}.lock")
        with self._lock:
            if path not in self._held:
                self._held[path] = _take_lock(path, namespace)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        for fd in self._held.values():
            with suppress(OSError):
                os.close(fd)
        self._held.clear()
        self._pid = os.getpid()

    def release_at_exit(self) -> None:
        if os.getpid() != self._pid:  # inherited atexit handler in a child that never claimed
            return
        for path, fd in self._held.items():
            with suppress(OSError):
                os.unlink(path)  # still locked here: a process that opened it retries (see above)
            with suppress(OSError):
                os.close(fd)
        self._held.clear()


def _sibling_key(namespace: str) -> str:
    """What sibling processes of one server share: parent pid, command line, namespace."""
    material = "\0".join([str(os.getppid()), *getattr(sys, "argv", []), namespace])
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _take_lock(path: str, namespace: str) -> int:
    """Open and ``flock`` ``path`` (exclusive, non-blocking); return the fd.

    Raises ``NotSupportedError`` naming the holder if another process still holds it after
    ``_SIBLING_GRACE`` seconds (a graceful reload starts new workers while the old ones finish).
    """
    deadline = time.monotonic() + _SIBLING_GRACE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise _sibling_error(namespace, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)  # its holder removed it at exit between our open and flock: open anew


def _sibling_error(namespace: str, holder: str) -> NotSupportedError:
    return NotSupportedError(
        f"memory:// with namespace {namespace!r} is already open in process {holder}, a sibling of "
        f"this one (same parent process {os.getppid()}, same command line): a server's workers "
        "(gunicorn -w N without --preload, uvicorn --workers N) would each get their own copy of "
        "the data. Use sqlite:///path/to/file.db on one machine, or redis:// / postgresql:// across "
        "machines. If these processes are really meant to be independent (pytest-xdist workers, two "
        "runs of one script), open memory://?check_siblings=false"
    )


def _runtime_dir() -> str:
    """A directory only this user can write: ``$XDG_RUNTIME_DIR/sharedstate``, else
    ``<tmp>/sharedstate-<uid>``; created 0700, and refused unless owned by us and private."""
    uid = os.geteuid()
    candidates = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "sharedstate"))
    candidates.append(os.path.join(tempfile.gettempdir(), f"sharedstate-{uid}"))
    problems = []
    for directory in candidates:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        except OSError as exc:
            problems.append(f"{directory}: {exc}")
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077:
            return directory
        problems.append(f"{directory}: not a directory private to uid {uid}")
    raise NotSupportedError(
        "memory:// cannot check for sibling processes (no private directory for its lock files: "
        f"{'; '.join(problems)}); use sqlite://, or memory://?check_siblings=false to skip the check"
    )


_CLAIMS = _SiblingClaims()
os.register_at_fork(after_in_child=_CLAIMS.after_fork_in_child)
atexit.register(_CLAIMS.release_at_exit)
