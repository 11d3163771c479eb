"""``AsyncSessionState``: the framework-free server-side session engine (one session, one request).

The Flask, Starlette and Quart adapters keep the session's data in a ``dict`` (the adapter's own
session object may be that dict, a ``dict`` subclass: the state only touches it through ``dict.``
methods, never through overridden ones) and call this for everything that reads or writes the
store: :meth:`~AsyncSessionState.load`, :meth:`~AsyncSessionState.incr`,
:meth:`~AsyncSessionState.destroy`, :meth:`~AsyncSessionState.save` and the lock. The id's
signing and the settings are in :mod:`sharedstate._sessions`.

Concurrency contract (several requests of one user at once, on any tasks, threads, processes,
machines):

- Merge, not overwrite. :meth:`save` writes only the top-level keys this request changed (nested
  changes are found by comparing each value's encoding with the one read), by compare-and-set
  against the stored entry; on conflict it re-applies just those keys to the entry that refused
  it. Requests that change *different* keys all persist; for the *same* key the last save wins.
- :meth:`incr` is applied to the stored entry at once by compare-and-set and returns the new value.
- ``settings.lock``: :meth:`load` first takes a per-session lease lock, released by
  :meth:`release_lock` (after saving), so requests of one session run one at a time.
- :meth:`destroy` deletes the entry at once; :meth:`regenerate` moves the data to a new id at
  :meth:`save`, deleting the old entry by compare-and-set so no write to it is lost in the move.
  A save whose entry existed when read and is gone now is dropped, and new entries are only ever
  created under fresh ids (``add``): a request in flight can never bring back a destroyed or
  replaced session.
- Expiry: idle and absolute lifetimes (``SessionSettings``); a read-only use renews the idle
  expiry with a throttled ``touch``, never a rewrite of the data it read.

One state object belongs to one request and is not safe to share between tasks or threads.

An adapter, per request (``sharedstate.starlette`` is one, ``sharedstate.sessions`` the sync one):

1. ``CookieSigner(keys, salt).unsign(cookie)`` gives ``(sid, issued_at)`` or ``None`` (no cookie,
   or a bad one: start with ``None, None``, never with the presented id).
2. ``state = AsyncSessionState(store._keyspace, settings, sid, issued_at, data=...)``, then
   ``await state.load()`` before the first read or write of ``data`` (no I/O without an id).
3. Mutate ``data`` and call ``state.changed()``; ``await state.incr(k)``, ``state.regenerate()``,
   ``await state.destroy()``; ``state.discard = True`` to skip saving the changes. An adapter
   made with ``tracked=True`` also calls ``state.touch(key)`` before it hands out, replaces or
   removes ``data[key]`` (``state.touch_all()`` before handing out every value: ``items()``,
   copies): the save then compares only those keys, and a read-only request encodes nothing
   (keys never touched cannot have changed). Untracked, the save compares every key.
4. When the response starts: ``action = state.unsaved()`` for a 5xx, else
   ``await state.save(time.time())``; then always ``await state.release_lock()`` (also when the
   app raised). ``action.kind`` ``"set"``: send ``signer.sign(action.sid)`` (``action.ttl``
   seconds left); ``"delete"``: delete the cookie; ``"keep"``: send nothing.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable
from typing import Any

from sharedstate import engine
from sharedstate._async import _io
from sharedstate._async.keyspace import AsyncKeyspace
from sharedstate._async.objects import AsyncLock, internal_lock
from sharedstate._sessions import (
    DELETE,
    IMMUTABLE_TYPES,
    KEEP,
    LOCK_PREFIX,
    SESSION_PREFIX,
    SaveAction,
    SessionSettings,
    check_key,
    encoded_entry,
    entry_key,
    has_content,
    new_session_id,
    parse,
    sid_digest,
)
from sharedstate.backends.base import Entry, Version
from sharedstate.errors import LockNotOwnedError, LockTimeout

__all__ = ["AsyncSessionState"]

_MISSING: Any = object()


class _Encoded:
    """The encoding of a mutable value as read (told apart from a kept immutable value)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes | int) -> None:
        self.raw = raw


def _strong(data: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: data


class AsyncSessionState:
    """The store side of one request's session: load, changes, merge-save, incr, lock, moves.

    ``AsyncSessionState(keyspace, settings, sid, issued_at, data=None)``: ``sid`` and
    ``issued_at`` come from a verified cookie (:meth:`sharedstate._sessions.CookieSigner.unsign`)
    or are ``None`` (no session yet: nothing is read). ``data`` is the dict that holds the
    session's keys (a new one if not given); the adapter's readers and writers use it directly
    after :meth:`load` and call :meth:`changed` on every mutation. ``tracked=True``: the adapter
    calls :meth:`touch` / :meth:`touch_all` before handing out, replacing or removing a value, so
    only those keys are compared at save (see the module doc). A ``data`` that is an adapter's
    session object (a ``dict`` subclass) is held by a weak reference, so that the session and its
    state make no reference cycle: the adapter keeps its session alive while it uses the state.
    """

    # The immutable defaults live here: one state is made per request, and sets only what changes.
    loaded = False
    existed = False  # an entry was found (or created by incr)
    base_version: Version | None = None  # version matching the data read, if known
    dirty = False  # changed() was called: keys may have been added or removed
    # Untracked: the entry's encoding as read (a read-only request re-encodes once and compares).
    raw: bytes | int | None = None
    _key_of: str | None = None  # the sid whose store key and digest are cached below
    _digest = ""
    _full = ""
    regenerating = False
    destroyed = False
    issue_cookie = False  # incr created the entry: send its cookie at save
    mutated = False
    discard = False  # the app said "do not save": save nothing after the last change
    lock: AsyncLock | None = None

    def __init__(
        self,
        keyspace: AsyncKeyspace,
        settings: SessionSettings,
        sid: str | None,
        issued_at: float | None,
        data: dict[str, Any] | None = None,
        *,
        tracked: bool = False,
    ) -> None:
        self.keyspace = keyspace
        self.tracked = tracked
        self.settings = settings
        self.sid = sid  # the id from the cookie until loaded; None: none yet (a fresh one at save)
        self.issued_at = issued_at  # when the cookie was signed
        # An adapter's session object is ``data`` and holds this state: a strong reference back
        # would make a reference cycle per request, freed only by the cyclic garbage collector
        # (more frequent young collections, and the objects they find alive promoted towards
        # full ones). Weak, the session is freed by reference counting when its request ends.
        # A plain dict cannot be weakly referenced, and holds no state: it is held strongly.
        self._data: Callable[[], dict[str, Any] | None]
        if data is None or type(data) is dict:
            self._data = _strong({} if data is None else data)
        else:
            try:
                self._data = weakref.ref(data)
            except TypeError:  # a subclass without weak references (__slots__): held strongly
                self._data = _strong(data)
        # Change detection, tracked: the stored keys not touched yet (unchanged by construction),
        # and for each touched stored key its value as read (immutable types) or its encoding as
        # read (_Encoded: a mutable value may be changed in place after it was handed out).
        self.untouched: set[str] = set()
        self.seen: dict[str, Any] = {}
        # Untracked: computed only when something changed, each key's encoding as read.
        self.snapshot: dict[str, bytes | int] | None = {}
        self.created = time.time()

    @property
    def data(self) -> dict[str, Any]:
        """The dict that holds the session's keys (the adapter's session object, if it gave one)."""
        data = self._data()
        if data is None:
            raise ReferenceError("the session object of this state no longer exists")
        return data

    # -- loading -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the stored session into ``data`` (once; taking the lock first if configured).

        An unknown, unreadable, or expired id is dropped: the session is then new and empty, and
        a save stores it under a fresh id. On ``LockTimeout`` nothing is loaded.
        """
        if self.loaded:
            return
        if self.sid is not None and self.settings.lock:
            await self._acquire_lock(self.sid)
        self.loaded = True
        if dict.__len__(self.data):
            dict.clear(self.data)
        if self.sid is None:
            return
        full = self.full_key()
        entry = await self.keyspace.backend.get(full)
        stored = None if entry is None else parse(self.keyspace, full, entry.value)
        if entry is None or stored is None or self.settings.ttl(stored[0], time.time()) is None:
            self.sid = None  # unknown, unreadable or past its absolute lifetime: never adopt the id
            await self.release_lock()
            return
        self.existed = True
        self.base_version = entry.version
        self.created, data = stored
        dict.update(self.data, data)
        if self.tracked:
            self.untouched = set(data)
        else:
            self.raw, self.snapshot = entry.value, None

    def full_key(self) -> str:
        """The store key of the current ``sid`` (computed once per id)."""
        sid = self.sid
        assert sid is not None
        if sid is not self._key_of:
            self._digest = sid_digest(sid)
            self._full = self.keyspace.prefix + SESSION_PREFIX + self._digest  # as entry_key()
            self._key_of = sid
        return self._full

    def _sid_digest(self, sid: str) -> str:
        if sid is not self.sid:
            return sid_digest(sid)
        self.full_key()
        return self._digest

    def _set_data(self, data: dict[str, Any]) -> None:
        """Replace the data's storage (through ``dict.``: no adapter hook runs)."""
        dict.clear(self.data)
        dict.update(self.data, data)

    def copy_data(self) -> dict[str, Any]:
        """The data as a plain dict (a shallow copy; callers load first)."""
        return dict.copy(self.data)

    def changed(self) -> None:
        """The adapter changed ``data``: save it (undoes an earlier ``discard``)."""
        self.mutated = True
        self.dirty = True
        self.discard = False

    def touch(self, key: str) -> None:
        """``data[key]`` is about to be handed out, replaced or removed (tracked adapters): note
        it as read, so the save compares it. Cheap when called again for the same key."""
        if key in self.untouched:
            value = dict.get(self.data, key, _MISSING)
            if value is _MISSING:
                return  # removed behind the adapter's back: the save sees it gone
            self.untouched.discard(key)
            # A value of an immutable type cannot change in place: keep the object itself and
            # encode only if it was replaced. Anything else: its encoding now, before any change.
            self.seen[key] = (
                value if type(value) in IMMUTABLE_TYPES else _Encoded(self.encode_value(key, value))
            )

    def touch_all(self) -> None:
        """Every value is about to be handed out (``items()``, ``values()``, copies)."""
        for key in list(self.untouched):
            self.touch(key)

    def encode_value(self, item: str, value: Any) -> bytes | int:
        # Encoded for change detection only; the label, not a stored key, names it in errors.
        return self.keyspace.encode("session", value, shown_as=f"session[{item!r}]")

    def _reset_fresh(self) -> None:
        """Forget the stored session: from here on this is a new, empty session."""
        self.sid = None
        self.existed = False
        self.base_version = None
        self._set_data({})
        self.raw, self.snapshot = None, {}
        self.untouched, self.seen = set(), {}
        self.created = time.time()
        self.regenerating = False
        self.issue_cookie = False

    # -- the lock ------------------------------------------------------------------------------

    async def _acquire_lock(self, sid: str) -> None:
        # No fencing token: saves are compare-and-set merges, safe even after the lease ran out.
        settings = self.settings
        lock = internal_lock(
            self.keyspace, LOCK_PREFIX + self._sid_digest(sid), settings.lock_lease, settings.lock_timeout
        )
        try:
            await lock.acquire()
        except LockTimeout:
            raise LockTimeout(
                f"session lock not acquired within {settings.lock_timeout}s ({settings.lock_timeout_name})"
            ) from None
        self.lock = lock

    async def release_lock(self) -> None:
        """Release the session lock if this request holds it (idempotent)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            # Not owned any more when the lease ran out; the save was still safe (CAS merge).
            with contextlib.suppress(LockNotOwnedError):
                await lock.release()

    # -- atomic operations ---------------------------------------------------------------------

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0), in the store at once.

        Returns the new value. Replaces any change of ``key`` made earlier in this request. A new
        session is stored (under a fresh id) right away. ``TypeError`` if ``key`` holds a non-int.
        """
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        check_key(key)
        await self.load()
        self.changed()
        backend = self.keyspace.backend
        step = engine.UpdateStep(guessed=False)
        entry: Entry | None = None
        read = True
        while True:
            now = time.time()
            if not self.existed:
                sid = new_session_id()
                full = entry_key(self.keyspace, sid)
                ttl = self.settings.ttl(now, now)
                raw = encoded_entry(self.keyspace, full, now, {key: by})
                if await backend.add(full, raw, ttl):
                    self.sid, self.existed, self.created = sid, True, now
                    self.base_version, self.issue_cookie = None, True
                    new = by
                    break
                continue  # a 256-bit id collision: draw another
            full = self.full_key()
            if read:
                entry = await backend.get(full)
            stored = None if entry is None else parse(self.keyspace, full, entry.value)
            ttl = None if stored is None else self.settings.ttl(stored[0], now)
            if entry is None or stored is None or ttl is None:
                self._reset_fresh()  # destroyed or expired meanwhile: never write it back
                continue
            created, data = stored
            current = data.get(key, 0)
            if type(current) is not int:
                raise TypeError(f"session[{key!r}] holds a {type(current).__name__}, not an int")
            new = current + by
            data[key] = new
            raw = encoded_entry(self.keyspace, full, created, data)
            written, entry = await backend.compare_and_set(full, entry.version, raw, ttl)
            if written:
                self.base_version = None  # the save re-reads rather than trust a version here
                break
            read = False  # the refusal carried the entry stored now
            await _io.sleep(step.refused())
        if self.tracked:
            self.untouched.discard(key)
            self.seen[key] = new  # what is stored now
        else:
            snapshot = self._snap()
            self.raw = None  # no longer what is stored
            snapshot[key] = self.encode_value(key, new)
        dict.__setitem__(self.data, key, new)
        return new

    def regenerate(self) -> None:
        """Move the session to a new id at :meth:`save` (login); call after :meth:`load`.

        Nothing moves if the save does not happen (a 5xx). A new session is unaffected.
        """
        self.changed()
        self.regenerating = True

    async def destroy(self) -> None:
        """End the session now (logout): its entry is deleted at once; the save deletes the cookie.

        A request in flight with this session can never write it back. Keys set afterwards start
        a new session under a new id.
        """
        if self.sid is not None:
            await self.keyspace.backend.delete(self.full_key())
        self.loaded = True
        self._reset_fresh()
        self.changed()
        self.destroyed = True

    # -- saving --------------------------------------------------------------------------------

    def changes(self) -> tuple[dict[str, Any], set[str]]:
        """``(changed keys with their values, deleted keys)`` against the data as read."""
        if self.tracked:
            return self._tracked_changes()
        data = self.copy_data()
        if self.raw is not None and self.sid is not None:
            full = self.full_key()
            if encoded_entry(self.keyspace, full, self.created, data) == self.raw:
                return {}, set()  # the common read-only request: one encode, no per-key work
        snapshot = self._snap()
        # Encodings keep types (a tuple is not a list, Markup is not str), so a value replaced by
        # an equal one of another type counts as changed.
        changed = {k: v for k, v in data.items() if snapshot.get(k) != self.encode_value(k, v)}
        deleted = {k for k in snapshot if k not in data}
        return changed, deleted

    def _tracked_changes(self) -> tuple[dict[str, Any], set[str]]:
        """:meth:`changes` for a tracked adapter: only touched and new keys can differ."""
        data, seen = self.data, self.seen
        changed: dict[str, Any] = {}
        deleted: set[str] = set()
        if self.dirty:  # keys may have been added or removed: look at each (no encoding if untouched)
            untouched = self.untouched
            for k, v in dict.items(data):
                if k in untouched:
                    continue
                if k not in seen or self._differs(k, v, seen[k]):
                    changed[k] = v
            deleted = {k for k in seen if not dict.__contains__(data, k)}
            deleted.update(k for k in untouched if not dict.__contains__(data, k))
        else:  # only values changed in place, or replaced through dict. methods: the touched ones
            for k, old in seen.items():
                v = dict.get(data, k, _MISSING)
                if v is _MISSING:
                    deleted.add(k)
                elif self._differs(k, v, old):
                    changed[k] = v
        return changed, deleted

    def _differs(self, key: str, value: Any, old: Any) -> bool:
        # Encodings keep types (a tuple is not a list, Markup is not str), so a value replaced by
        # an equal one of another type counts as changed.
        if type(old) is _Encoded:
            return self.encode_value(key, value) != old.raw
        if value is old:
            return False  # an immutable value, still the one read
        return self.encode_value(key, value) != self.encode_value(key, old)

    def _snap(self) -> dict[str, bytes | int]:
        """Each key's encoding as read (decoded again from the raw entry, so nested values the
        request mutated in place do not leak in)."""
        if self.snapshot is None:
            assert self.raw is not None and self.sid is not None
            parsed = parse(self.keyspace, self.full_key(), self.raw)
            assert parsed is not None
            self.snapshot = {k: self.encode_value(k, v) for k, v in parsed[1].items()}
        return self.snapshot

    def _merged(
        self, full: str, entry: Entry | None, changed: dict[str, Any], deleted: set[str]
    ) -> tuple[Version, float, dict[str, Any]] | None:
        """``entry`` (as stored at ``full``) with this request's changes applied; ``None`` if the
        session is gone."""
        stored = None if entry is None else parse(self.keyspace, full, entry.value)
        if entry is None or stored is None:
            return None
        created, data = stored
        data.update(changed)
        for k in deleted:
            data.pop(k, None)
        return entry.version, created, data

    async def save(self, now: float) -> SaveAction:
        """Write this request's changes (merged by compare-and-set) and say what the cookie does.

        Call it once, when the response starts, unless the response is a 5xx (then only a
        ``destroy`` stands: see :meth:`unsaved`). Does not release the lock.
        """
        if not self.loaded:
            return KEEP
        if self.discard:  # the app said "do not save": as if only read
            if self.existed:
                return await self._refresh(self.full_key(), now)
            return DELETE if self.destroyed else KEEP
        if not self.existed:
            if not has_content(self.copy_data()):
                return DELETE if self.destroyed else KEEP
            return await self._save_new(now)
        changed, deleted = self.changes()
        if self.regenerating:
            return await self._move(now, changed, deleted)
        full = self.full_key()
        if not changed and not deleted:
            return await self._refresh(full, now)
        backend = self.keyspace.backend
        step = engine.UpdateStep(guessed=False)
        version, created, data = self.base_version, self.created, self.copy_data()
        while True:
            if version is None:
                merged = self._merged(full, await backend.get(full), changed, deleted)
                if merged is None:
                    return KEEP  # destroyed or expired since it was read: drop this write
                version, created, data = merged
            ttl = self.settings.ttl(created, now)
            if ttl is None:
                return KEEP
            if not has_content(data):
                if await backend.delete_if_version(full, version):
                    return DELETE
                version = None
            else:
                raw = encoded_entry(self.keyspace, full, created, data)
                written, current = await backend.compare_and_set(full, version, raw, ttl)
                if written:
                    return SaveAction("set", self.sid, ttl)
                # Refused: merge into the entry that refused it, without reading it again.
                merged = self._merged(full, current, changed, deleted)
                if merged is None:
                    return KEEP
                version, created, data = merged
            await _io.sleep(step.refused())

    def unsaved(self) -> SaveAction:
        """The cookie action when the response is not saved (a 5xx): only a ``destroy`` stands."""
        return DELETE if self.destroyed else KEEP

    async def _save_new(self, now: float) -> SaveAction:
        ttl = self.settings.ttl(now, now)
        assert ttl is not None
        while True:
            sid = new_session_id()
            full = entry_key(self.keyspace, sid)
            raw = encoded_entry(self.keyspace, full, now, self.copy_data())
            if await self.keyspace.backend.add(full, raw, ttl):
                return SaveAction("set", sid, ttl)

    async def _refresh(self, full: str, now: float) -> SaveAction:
        ttl = self.settings.ttl(self.created, now)
        if ttl is None:
            return KEEP
        if self.issue_cookie:
            return SaveAction("set", self.sid, ttl)
        s = self.settings
        due = self.issued_at is None or now - self.issued_at >= s.refresh_fraction * s.idle
        # touch, never a rewrite of the data read earlier: a concurrent logout or change stays.
        if s.refresh and due and await self.keyspace.backend.touch(full, ttl):
            return SaveAction("set", self.sid, ttl)
        return KEEP

    async def _move(self, now: float, changed: dict[str, Any], deleted: set[str]) -> SaveAction:
        backend = self.keyspace.backend
        old = self.full_key()
        new_sid = new_session_id()
        new = entry_key(self.keyspace, new_sid)
        written = False
        step = engine.UpdateStep(guessed=False)
        version, data = self.base_version, self.copy_data()
        ttl = self.settings.ttl(now, now)  # a regenerated session starts its absolute lifetime anew
        assert ttl is not None
        while True:
            if version is None:
                merged = self._merged(old, await backend.get(old), changed, deleted)
                if merged is None:  # the old session was destroyed meanwhile: so is the move
                    if written:
                        await backend.delete(new)
                    return KEEP
                version, _, data = merged
            if not has_content(data):
                if await backend.delete_if_version(old, version):
                    if written:
                        await backend.delete(new)
                    return DELETE
            else:
                raw = encoded_entry(self.keyspace, new, now, data)
                if not written:
                    if not await backend.add(new, raw, ttl):  # a 256-bit id collision: draw another
                        new_sid = new_session_id()
                        new = entry_key(self.keyspace, new_sid)
                        continue
                    written = True
                else:
                    await backend.set(new, raw, ttl)  # nobody else knows the new id yet
                if await backend.delete_if_version(old, version):
                    return SaveAction("set", new_sid, ttl)
            version = None
            await _io.sleep(step.refused())
