"""``memory://``: a dict behind a lock, for one process (tests, single-process development).

It serves the threads of the process that created it. Used from any other process (after a fork,
under a multi-worker server) it raises instead of quietly giving each process its own copy, which
is exactly the bug sharedstate exists to prevent.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Iterator

from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
from sharedstate.errors import NotSupportedError
from sharedstate.urls import query_options, split_url

_Row = tuple[RawValue, int, "float | None"]  # value, version, expires_at (time.monotonic)


class MemoryBackend(Backend):
    """In-process storage. ``memory://?max_entries=N`` bounds the entries that have a TTL.

    When ``max_entries`` is reached, the TTL entry closest to expiry is evicted to make room; entries
    without a TTL (state) are never evicted.
    """

    schemes = ("memory",)

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
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
            raise ValueError(f"memory:// takes no host or path, got {url!r}")
        options = query_options(parts, {"max_entries": int}, url)
        max_entries = options.get("max_entries")
        return cls(max_entries=int(max_entries) if max_entries is not None else None)

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
                raise TypeError(f"cannot incr key {key!r}: it holds a value that is not an integer")
            new = row[0] + by
            if not -(2**63) <= new < 2**63:
                raise OverflowError(f"incr of key {key!r} overflows a signed 64-bit integer")
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
