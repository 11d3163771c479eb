"""Server-side Flask sessions that lose no writes under concurrent requests of one user.

``app.session_interface = SharedStateSessionInterface(store)``, or ``SHAREDSTATE_SESSIONS = True``
with :class:`sharedstate.flask.SharedState`. The store's codec is used, so session values are what
a store can hold (JSON data plus datetime, date, UUID, Decimal, bytes, tuple, set).

What the cookie holds: a random 256-bit id, signed (HMAC-SHA256, :mod:`itsdangerous`) with
``SECRET_KEY``; ``SECRET_KEY_FALLBACKS`` are accepted when reading. The entry lives at
``_ss:session:{sha256(id)}``, so a leaked store or backup holds no live tokens. A tampered, forged,
malformed, unknown or expired id gets a fresh empty session under a new id: an id is never adopted.

Concurrency contract (several requests of one user at once, on any threads, processes, machines):

- Lazy. Nothing is read until the session is used; a request that only reads writes nothing (except a
  throttled expiry refresh, below); an empty session is never stored; nothing is saved on a 5xx.
- Merge, not overwrite. Saving writes only the top-level keys this request changed (nested changes
  are found by comparing each value's encoding with the one read), by compare-and-set against the
  stored entry; on conflict it re-reads and re-applies just those keys. Requests that change
  *different* keys all persist. Two requests that change the *same* key: the last save wins.
- ``session.incr(key)`` is atomic: it is applied to the stored entry at once by compare-and-set (not
  at the end of the request, so it cannot be merged away) and returns the new value. It stays
  applied even if the request later fails.
- ``SHAREDSTATE_SESSION_LOCK = True`` makes any read-then-write (``session["n"] = session["n"] + 1``)
  safe: the first use of the session takes a per-session lease lock that is released after saving,
  so requests of one session that use it run one at a time. Requests that never use the session do
  not wait.
- ``session.destroy()`` (logout) deletes the entry at once. ``session.regenerate()`` (login) moves
  the data to a new id when the response is saved, and deletes the old entry by compare-and-set, so
  no write to the old id is lost in the move. A request still in flight with a destroyed or replaced
  id can never write it back: a save whose entry existed when read and is gone now is dropped, and
  new entries are only ever created under fresh ids (``add``).
- Expiry: an idle lifetime (``SHAREDSTATE_SESSION_IDLE_TIMEOUT``, default
  ``PERMANENT_SESSION_LIFETIME``) and an optional absolute one (``SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT``,
  counted from creation or the last ``regenerate``). A read-only request that uses the session renews
  the idle expiry with ``touch`` (it never rewrites data it read earlier, so it cannot undo a
  concurrent logout or change), and only once ``SHAREDSTATE_SESSION_REFRESH_FRACTION`` (default 0.1)
  of the idle lifetime has passed since the cookie was issued; then the cookie is issued again.
  ``SESSION_REFRESH_EACH_REQUEST = False`` turns this renewal off (only writes renew). Expired entries
  are never returned and are swept lazily by the backend.

- ``session.modified = False`` (say in ``after_request``) skips saving the request's changes, as
  Flask's ``should_set_cookie`` does.
- ``session.permanent`` (default: ``SESSION_PERMANENT``, else ``False``) gives the cookie an
  ``Expires``; the server-side lifetimes apply either way. A session holding only the
  ``_permanent`` flag is empty: never stored.

Settings are read from ``app.config`` on every request, so one interface object can serve any app.
Timeouts are seconds or :class:`datetime.timedelta`. ``SHAREDSTATE_SESSION_LOCK_LEASE`` (default 30 s)
and ``SHAREDSTATE_SESSION_LOCK_TIMEOUT`` (default 30 s, then ``LockTimeout``) tune the lock.

The session is a ``dict`` subclass (see :class:`SharedStateSession`). A session object belongs to
one request and is not thread safe, like Flask's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
import secrets
import time
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, SupportsIndex

from flask import Flask, request_tearing_down
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadData, TimestampSigner, want_bytes

from sharedstate._sync.objects import internal_lock
from sharedstate.backends.base import Entry, Version
from sharedstate.engine import RESERVED_PREFIX, backoff_delays
from sharedstate.errors import LockNotOwnedError, LockTimeout
from sharedstate.store import Store
from sharedstate.validation import MIN_LEASE, seconds

if TYPE_CHECKING:
    from flask.wrappers import Request, Response

    from sharedstate.objects import Lock

SESSION_PREFIX = f"{RESERVED_PREFIX}session:"
LOCK_PREFIX = f"{RESERVED_PREFIX}session-lock:"
_ID_BYTES = 32  # 256 bits
_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_FORMAT = 1
_UNLOADED = object()  # the only key an unloaded session's dict storage holds (see SharedStateSession)

# The session whose lock is held in this request, released at teardown if save_session never ran
# (an exception propagated with PROPAGATE_EXCEPTIONS, e.g. in debug or testing mode).
_HELD: contextvars.ContextVar[SharedStateSession | None] = contextvars.ContextVar(
    "sharedstate_session_lock", default=None
)


@dataclass(frozen=True)
class SessionSettings:
    """The session settings of one app, read from its config for each request."""

    idle: float
    absolute: float | None
    refresh: bool
    refresh_fraction: float
    lock: bool
    lock_lease: float
    lock_timeout: float
    permanent: bool

    @classmethod
    def from_app(cls, app: Flask) -> SessionSettings:
        """Read and check the settings; a bad one raises ``TypeError``/``ValueError`` naming it."""
        cfg = app.config
        if cfg.get("SHAREDSTATE_SESSION_IDLE_TIMEOUT") is not None:
            idle = seconds("SHAREDSTATE_SESSION_IDLE_TIMEOUT", cfg["SHAREDSTATE_SESSION_IDLE_TIMEOUT"])
        else:
            idle = seconds("PERMANENT_SESSION_LIFETIME", app.permanent_session_lifetime)
        fraction = cfg.get("SHAREDSTATE_SESSION_REFRESH_FRACTION", 0.1)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
            raise ValueError(f"SHAREDSTATE_SESSION_REFRESH_FRACTION must be in [0, 1], got {fraction!r}")
        permanent = cfg.get("SESSION_PERMANENT", False)
        if not isinstance(permanent, bool):  # "False" from an environment variable is truthy
            raise TypeError(f"SESSION_PERMANENT must be True or False, got {permanent!r}")
        return cls(
            idle=idle,
            absolute=seconds(
                "SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT",
                cfg.get("SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT"),
                optional=True,
            ),
            refresh=bool(cfg.get("SESSION_REFRESH_EACH_REQUEST", True)),
            refresh_fraction=float(fraction),
            lock=bool(cfg.get("SHAREDSTATE_SESSION_LOCK", False)),
            lock_lease=seconds(
                "SHAREDSTATE_SESSION_LOCK_LEASE",
                cfg.get("SHAREDSTATE_SESSION_LOCK_LEASE", 30.0),
                minimum=MIN_LEASE,
            ),
            lock_timeout=seconds(
                "SHAREDSTATE_SESSION_LOCK_TIMEOUT", cfg.get("SHAREDSTATE_SESSION_LOCK_TIMEOUT", 30.0)
            ),
            permanent=permanent,
        )

    def ttl(self, created: float, now: float) -> float | None:
        """Seconds the entry may live from ``now``; ``None`` if its absolute lifetime is over."""
        if self.absolute is None:
            return self.idle
        left = created + self.absolute - now
        return None if left <= 0 else min(self.idle, left)


class _Signer(TimestampSigner):
    """itsdangerous' timestamp signer, deriving each key once rather than on every request."""

    def __init__(self, keys: list[bytes], salt: str) -> None:
        super().__init__(keys, salt=salt, key_derivation="hmac", digest_method=hashlib.sha256)
        self._derived: dict[bytes, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        raw = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        key = self._derived.get(raw)
        if key is None:
            key = self._derived[raw] = super().derive_key(raw)
        return key


def new_session_id() -> str:
    """A fresh random 256-bit session id (URL-safe text)."""
    return secrets.token_urlsafe(_ID_BYTES)


def entry_key(store: Store, sid: str) -> str:
    """The full store key of session ``sid``: a SHA-256 of the id, so the store holds no tokens."""
    digest = hashlib.sha256(sid.encode("ascii")).hexdigest()
    return store._keyspace.full_key(SESSION_PREFIX + digest, internal=True)


class SharedStateSession(dict[str, Any], SessionMixin):
    """The ``session`` of one request: a ``dict`` of str keys, loaded on first use. See the module doc.

    A real ``dict`` subclass, as Flask's and Flask-Session's sessions are: ``isinstance(session,
    dict)``, ``dict(session)``, ``session.copy()`` (a plain ``dict``), ``session | {...}``, ``==``,
    ``json.dumps`` (of the session object; Flask's ``session`` proxy is not a dict to ``json``, with
    any session interface) and every dict method work. Every method, reading or writing, first
    loads the stored session (see ``_load``); every mutating method is tracked. Copies and
    pickles are plain dicts.

    Besides the dict methods: :meth:`incr`, :meth:`regenerate`, :meth:`destroy`, and ``new``
    (no stored session yet). ``modified`` tells whether a mutating method was called; it is not
    needed for nested changes, which are detected at save time. Setting ``modified = False`` (say in
    an ``after_request`` hook) makes the save skip this request's changes, as with Flask's own
    session; a change made after that is saved again, with the earlier ones.
    """

    def __init__(self, store: Store, settings: SessionSettings, sid: str | None, issued_at: float | None):
        super().__init__()
        self._store = store
        self._settings = settings
        self._sid = sid  # the id from the cookie until loaded; None: none yet (a fresh one at save)
        self._issued_at = issued_at  # when the cookie was signed
        self._loaded = False
        # Until loaded, the dict's own storage holds one private, non-str key. C code that reads a
        # dict's storage directly, bypassing the methods below, then never mistakes an unloaded
        # session for an empty one: json.dumps sees a non-empty dict and asks items() (which
        # loads); orjson and the like refuse the non-str key instead of writing "{}".
        dict.__setitem__(self, _UNLOADED, None)  # type: ignore[misc]
        self._existed = False  # an entry was found (or created by incr)
        self._base_version: Version | None = None  # version matching the data read, if known
        # For change detection: the entry's encoding as read (a read-only request re-encodes once and
        # compares), and, computed only when something changed, each key's encoding as read.
        self._raw: bytes | int | None = None
        self._snapshot: dict[str, bytes | int] | None = {}
        self._created = time.time()
        self._regenerate = False
        self._destroyed = False
        self._issue_cookie = False  # incr created the entry: send its cookie at save
        self._mutated = False
        self._discard = False  # the app set modified = False after its last change: save nothing
        self._lock: Lock | None = None
        self.accessed = False

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self.accessed = True  # Flask >= 3.1.3 also sets it; older versions rely on this
        if self._sid is not None and self._settings.lock:
            self._acquire_lock(self._sid)  # on LockTimeout, nothing is loaded (a later use retries)
        self._loaded = True
        self._set_data({})
        if self._sid is None:
            return
        key = entry_key(self._store, self._sid)
        entry = self._store.backend.get(key)
        stored = None if entry is None else _parse(self._store, key, entry.value)
        now = time.time()
        if entry is None or stored is None or self._settings.ttl(stored[0], now) is None:
            self._sid = None  # unknown, unreadable or past its absolute lifetime: never adopt the id
            self._release_lock()
            return
        self._existed = True
        self._base_version = entry.version
        self._created, data = stored
        self._set_data(data)
        self._raw, self._snapshot = entry.value, None

    def _set_data(self, data: dict[str, Any]) -> None:
        """Replace the dict's own storage (no load, no change tracking)."""
        dict.clear(self)
        dict.update(self, data)

    def _data(self) -> dict[str, Any]:
        """The data as a plain dict (a shallow copy; no load: callers load first)."""
        return dict.copy(self)

    def _changed(self) -> None:
        self._mutated = True
        self._discard = False

    def _encode(self, item: str, value: Any) -> bytes | int:
        # Encoded for change detection only; the label, not a stored key, names it in errors.
        return self._store._keyspace.encode("session", value, shown_as=f"session[{item!r}]")

    def _reset_fresh(self) -> None:
        """Forget the stored session: from here on this is a new, empty session."""
        self._sid = None
        self._existed = False
        self._base_version = None
        self._set_data({})
        self._raw, self._snapshot = None, {}
        self._created = time.time()
        self._regenerate = False
        self._issue_cookie = False

    # -- the lock ----------------------------------------------------------------------------

    def _acquire_lock(self, sid: str) -> None:
        digest = hashlib.sha256(sid.encode("ascii")).hexdigest()
        # No fencing token: saves are compare-and-set merges, safe even after the lease ran out.
        settings = self._settings
        lock = internal_lock(
            self._store._keyspace, LOCK_PREFIX + digest, settings.lock_lease, settings.lock_timeout
        )
        try:
            lock.acquire()
        except LockTimeout:
            raise LockTimeout(
                f"session lock not acquired within {self._settings.lock_timeout}s "
                "(SHAREDSTATE_SESSION_LOCK_TIMEOUT)"
            ) from None
        self._lock = lock
        _HELD.set(self)

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            # Not owned any more when the lease ran out; the save was still safe (CAS merge).
            with contextlib.suppress(LockNotOwnedError):
                lock.release()
            if _HELD.get() is self:
                _HELD.set(None)

    # -- the dict: every method loads first; every mutating one is tracked ---------------------

    def __getitem__(self, key: str) -> Any:
        self._load()
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        _check_key(key)
        self._load()
        self._changed()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._load()
        dict.__delitem__(self, key)
        self._changed()

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(dict.keys(self)))  # a snapshot: deleting keys while iterating is fine

    def __reversed__(self) -> Iterator[str]:
        self._load()
        return iter(list(dict.keys(self))[::-1])

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def __eq__(self, other: object) -> bool:
        self._load()
        if isinstance(other, SharedStateSession):
            other._load()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        self._load()
        return {**self._data(), **other}

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        self._load()
        return {**other, **self._data()}

    def __ior__(self, other: Any) -> SharedStateSession:  # type: ignore[override]
        self.update(other)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return dict.get(self, key, default)

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        self._load()
        return dict.keys(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._load()
        return dict.values(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._load()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A shallow copy, as a plain ``dict`` (like ``dict.copy`` of Flask's session)."""
        self._load()
        return self._data()

    @classmethod
    def fromkeys(cls, iterable: Iterable[str], value: Any = None) -> dict[str, Any]:  # type: ignore[override]
        """A plain ``dict``: a session only comes from the session interface."""
        return dict.fromkeys(iterable, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._load()
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    def pop(self, key: str, *default: Any) -> Any:
        self._load()
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        if dict.__contains__(self, key):
            self._changed()
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._load()
        item = dict.popitem(self)  # KeyError if empty: nothing changed
        self._changed()
        return item

    def update(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 positional argument, got {len(args)}")
        new = dict(*args, **kwargs)
        for key in new:
            _check_key(key)
        self._load()
        self._changed()
        dict.update(self, new)

    def clear(self) -> None:
        """Delete every key this request sees (keys added meanwhile by other requests stay)."""
        self._load()
        self._changed()
        dict.clear(self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # copy.copy, copy.deepcopy and pickle give a plain dict: the store, lock and request
        # state of a session belong to its request.
        self._load()
        return (dict, (self._data(),))

    def __repr__(self) -> str:
        state = "unloaded" if not self._loaded else ("new" if not self._existed else "stored")
        return f"<SharedStateSession {state} keys={list(self._data()) if self._loaded else '?'}>"

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Whether no stored session backs this one (yet)."""
        self._load()
        return not self._existed

    @property
    def permanent(self) -> bool:
        """``session["_permanent"]`` if set, else the app's ``SESSION_PERMANENT`` (default False).

        A permanent session's cookie expires with the server-side idle lifetime; any other is a
        browser-session cookie. The server-side lifetimes apply to both.
        """
        return bool(self.get("_permanent", self._settings.permanent))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self["_permanent"] = bool(value)

    @property
    def modified(self) -> bool:
        """Whether a mutating method was called (nested changes are found at save time anyway).

        Set it to ``False`` to skip saving this request's changes (Flask's ``should_set_cookie``
        behaves so); ``session.incr`` and ``destroy`` were applied at once and stay applied.
        """
        return self._mutated

    @modified.setter
    def modified(self, value: bool) -> None:
        self._mutated = bool(value)
        self._discard = not value

    # -- atomic operations -------------------------------------------------------------------

    def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0) and return the new value.

        Applied to the stored session at once by compare-and-set, so concurrent increments of one
        session are never lost, and it stays applied if the request fails later. It replaces any
        change of ``key`` made earlier in this request. A new session is stored (under a fresh id)
        right away. Raises ``TypeError`` if ``key`` holds something other than an int.
        """
        if type(by) is not int:
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        _check_key(key)
        self._load()
        self._changed()
        backend = self._store.backend
        delays = backoff_delays()
        entry: Entry | None = None
        read = True
        while True:
            now = time.time()
            if not self._existed:
                sid = new_session_id()
                full = entry_key(self._store, sid)
                ttl = self._settings.ttl(now, now)
                raw = _encoded_entry(self._store, full, now, {key: by})
                if backend.add(full, raw, ttl):
                    self._sid, self._existed, self._created = sid, True, now
                    self._base_version, self._issue_cookie = None, True
                    new = by
                    break
                continue  # a 256-bit id collision: draw another
            assert self._sid is not None
            full = entry_key(self._store, self._sid)
            if read:
                entry = backend.get(full)
            stored = None if entry is None else _parse(self._store, full, entry.value)
            ttl = None if stored is None else self._settings.ttl(stored[0], now)
            if entry is None or stored is None or ttl is None:
                self._reset_fresh()  # destroyed or expired meanwhile: never write it back
                continue
            created, data = stored
            current = data.get(key, 0)
            if type(current) is not int:
                raise TypeError(f"session[{key!r}] holds a {type(current).__name__}, not an int")
            new = current + by
            data[key] = new
            raw = _encoded_entry(self._store, full, created, data)
            written, entry = backend.compare_and_set(full, entry.version, raw, ttl)
            if written:
                self._base_version = None  # the save re-reads rather than trust a version here
                break
            read = False  # the refusal carried the entry stored now
            time.sleep(next(delays))
        snapshot = self._snap()
        self._raw = None  # no longer what is stored
        dict.__setitem__(self, key, new)
        snapshot[key] = self._encode(key, new)
        return new

    def regenerate(self) -> None:
        """Move this session to a new id when the response is saved, and kill the old id (login).

        The move is atomic for clients: the new id is sent only after the old entry was deleted by
        compare-and-set, and any write to the old id made meanwhile is carried over. Nothing moves
        if the response is a 5xx. On a new session this changes nothing (its id is fresh anyway).
        """
        self._load()
        self._changed()
        self._regenerate = True

    def destroy(self) -> None:
        """End this session now (logout): its entry is deleted at once and the cookie removed.

        A request still in flight with this session can never write it back. Keys set after
        ``destroy`` start a new session under a new id.
        """
        if self._sid is not None:
            self._store.backend.delete(entry_key(self._store, self._sid))
        self._loaded = True
        self._reset_fresh()
        self._changed()
        self._destroyed = True

    # -- saving ------------------------------------------------------------------------------

    def _changes(self) -> tuple[dict[str, Any], set[str]]:
        data = self._data()
        if self._raw is not None and self._sid is not None:
            full = entry_key(self._store, self._sid)
            if _encoded_entry(self._store, full, self._created, data) == self._raw:
                return {}, set()  # the common read-only request: one encode, no per-key work
        snapshot = self._snap()
        # Encodings keep types (a tuple is not a list, Markup is not str), so a value replaced by an
        # equal one of another type counts as changed.
        changed = {k: v for k, v in data.items() if snapshot.get(k) != self._encode(k, v)}
        deleted = {k for k in snapshot if k not in data}
        return changed, deleted

    def _snap(self) -> dict[str, bytes | int]:
        """Each key's encoding as read (decoded again from the raw entry, so nested values the
        request mutated in place do not leak in)."""
        if self._snapshot is None:
            assert self._raw is not None and self._sid is not None
            parsed = _parse(self._store, entry_key(self._store, self._sid), self._raw)
            assert parsed is not None
            self._snapshot = {k: self._encode(k, v) for k, v in parsed[1].items()}
        return self._snapshot

    def _merged(
        self, full: str, entry: Entry | None, changed: dict[str, Any], deleted: set[str]
    ) -> tuple[Version, float, dict[str, Any]] | None:
        """``entry`` (as stored at ``full``) with this request's changes applied; ``None`` if the
        session is gone."""
        stored = None if entry is None else _parse(self._store, full, entry.value)
        if entry is None or stored is None:
            return None
        created, data = stored
        data.update(changed)
        for k in deleted:
            data.pop(k, None)
        return entry.version, created, data

    def save(self, now: float) -> tuple[str, str | None, float | None]:
        """Write this request's changes. Returns the cookie action: ``("set", sid, ttl)``,
        ``("delete", None, None)`` or ``("keep", None, None)``."""
        keep = ("keep", None, None)
        if not self._loaded:
            return keep
        if self._discard:  # the app set modified = False: save nothing, as if only read
            if self._existed:
                assert self._sid is not None
                return self._refresh(entry_key(self._store, self._sid), now)
            return ("delete", None, None) if self._destroyed else keep
        changed, deleted = self._changes()
        if not self._existed:
            if not _has_content(self._data()):
                return ("delete", None, None) if self._destroyed else keep
            return self._save_new(now)
        assert self._sid is not None
        if self._regenerate:
            return self._move(now, changed, deleted)
        full = entry_key(self._store, self._sid)
        if not changed and not deleted:
            return self._refresh(full, now)
        backend = self._store.backend
        delays = backoff_delays()
        version, created, data = self._base_version, self._created, self._data()
        while True:
            if version is None:
                merged = self._merged(full, backend.get(full), changed, deleted)
                if merged is None:
                    return keep  # destroyed or expired since it was read: drop this write
                version, created, data = merged
            ttl = self._settings.ttl(created, now)
            if ttl is None:
                return keep
            if not _has_content(data):
                if backend.delete_if_version(full, version):
                    return ("delete", None, None)
                version = None
            else:
                raw = _encoded_entry(self._store, full, created, data)
                written, current = backend.compare_and_set(full, version, raw, ttl)
                if written:
                    return ("set", self._sid, ttl)
                # Refused: merge into the entry that refused it, without reading it again.
                merged = self._merged(full, current, changed, deleted)
                if merged is None:
                    return keep
                version, created, data = merged
            time.sleep(next(delays))

    def _save_new(self, now: float) -> tuple[str, str | None, float | None]:
        ttl = self._settings.ttl(now, now)
        assert ttl is not None
        while True:
            sid = new_session_id()
            full = entry_key(self._store, sid)
            if self._store.backend.add(full, _encoded_entry(self._store, full, now, self._data()), ttl):
                return ("set", sid, ttl)

    def _refresh(self, full: str, now: float) -> tuple[str, str | None, float | None]:
        ttl = self._settings.ttl(self._created, now)
        if ttl is None:
            return ("keep", None, None)
        if self._issue_cookie:
            return ("set", self._sid, ttl)
        s = self._settings
        due = self._issued_at is None or now - self._issued_at >= s.refresh_fraction * s.idle
        # touch, never a rewrite of the data read earlier: a concurrent logout or change stays.
        if s.refresh and due and self._store.backend.touch(full, ttl):
            return ("set", self._sid, ttl)
        return ("keep", None, None)

    def _move(
        self, now: float, changed: dict[str, Any], deleted: set[str]
    ) -> tuple[str, str | None, float | None]:
        assert self._sid is not None
        backend = self._store.backend
        old = entry_key(self._store, self._sid)
        new_sid = new_session_id()
        new = entry_key(self._store, new_sid)
        written = False
        delays = backoff_delays()
        version, data = self._base_version, self._data()
        ttl = self._settings.ttl(now, now)  # a regenerated session starts its absolute lifetime anew
        assert ttl is not None
        while True:
            if version is None:
                merged = self._merged(old, backend.get(old), changed, deleted)
                if merged is None:  # the old session was destroyed meanwhile: so is the move
                    if written:
                        backend.delete(new)
                    return ("keep", None, None)
                version, _, data = merged
            if not _has_content(data):
                if backend.delete_if_version(old, version):
                    if written:
                        backend.delete(new)
                    return ("delete", None, None)
            else:
                raw = _encoded_entry(self._store, new, now, data)
                if not written:
                    if not backend.add(new, raw, ttl):  # a 256-bit id collision: draw another
                        new_sid = new_session_id()
                        new = entry_key(self._store, new_sid)
                        continue
                    written = True
                else:
                    backend.set(new, raw, ttl)  # nobody else knows the new id yet
                if backend.delete_if_version(old, version):
                    return ("set", new_sid, ttl)
            version = None
            time.sleep(next(delays))


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"session keys must be str, got {type(key).__name__}: {key!r}")


def _has_content(data: dict[str, Any]) -> bool:
    """Whether ``data`` holds more than the ``_permanent`` flag. A session holding only that is
    empty: not stored (so ``session.permanent = True`` in a ``before_request`` hook stores
    nothing for visitors who never get a session), and deleted with its cookie when emptied."""
    return any(key != "_permanent" for key in data)


def _entry(created: float, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": _FORMAT, "c": created, "d": data}


def _encoded_entry(store: Store, full: str, created: float, data: dict[str, Any]) -> bytes | int:
    """The stored form of a session; an error names the path inside the session
    (``session['cart'][2]``), not inside the envelope around it."""
    return store._keyspace.encode(full, _entry(created, data), shown_as="session", inside=("d",))


def _parse(store: Store, key: str, raw: bytes | int) -> tuple[float, dict[str, Any]] | None:
    """``(created, data)`` of a stored entry, or ``None`` if it is not a session entry."""
    try:
        value = store._keyspace.decode(key, raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("v") != _FORMAT:
        return None
    created, data = value.get("c"), value.get("d")
    if not isinstance(created, (int, float)) or not isinstance(data, dict):
        return None
    return float(created), data


class SharedStateSessionInterface(SessionInterface):
    """Flask session interface keeping sessions in a :class:`~sharedstate.store.Store`.

    ``SharedStateSessionInterface(store)``; construct it once, with or without an app: every setting
    is read from ``app.config`` per request. See :mod:`sharedstate.sessions` for the contract.
    """

    session_class = SharedStateSession
    salt = "sharedstate.session"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._signers: dict[tuple[bytes, ...], TimestampSigner] = {}
        store._keyspace.warn_if_evictable("Flask sessions")
        request_tearing_down.connect(_release_at_teardown, weak=False)  # idempotent

    def get_signer(self, app: Flask) -> TimestampSigner:
        keys = [
            k.encode() if isinstance(k, str) else k
            for k in [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key]
        ]
        signer = self._signers.get(tuple(keys))
        if signer is None:
            if len(self._signers) > 16:  # keys rotated many times: start over
                self._signers.clear()
            # itsdangerous signs with the last key and accepts any of them.
            signer = _Signer(keys, self.salt)
            self._signers[tuple(keys)] = signer
        return signer

    def open_session(self, app: Flask, request: Request) -> SharedStateSession | None:
        """Check the cookie's signature only; the store is read when the session is first used."""
        if not app.secret_key:
            return None  # Flask's null session explains that SECRET_KEY is missing
        settings = SessionSettings.from_app(app)
        sid = issued = None
        cookie = request.cookies.get(self.get_cookie_name(app))
        if cookie:
            try:
                value, stamp = self.get_signer(app).unsign(cookie, return_timestamp=True)
                text = value.decode("ascii")
                if _ID_RE.fullmatch(text):
                    sid, issued = text, stamp.timestamp()
            except (BadData, UnicodeError, ValueError):
                pass  # tampered, forged or malformed: a fresh session
        return SharedStateSession(self.store, settings, sid, issued)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save the changes (nothing on a 5xx), then release the session lock if held."""
        assert isinstance(session, SharedStateSession)
        try:
            if session.accessed:
                response.vary.add("Cookie")
            if response.status_code >= 500:
                action: tuple[str, str | None, float | None] = (
                    ("delete", None, None) if session._destroyed else ("keep", None, None)
                )
            else:
                action = session.save(time.time())
            kind, sid, ttl = action
            if kind == "set":
                assert sid is not None and ttl is not None
                self._set_cookie(app, response, session, sid, ttl)
            elif kind == "delete":
                self._delete_cookie(app, response)
        finally:
            session._release_lock()

    def _set_cookie(
        self, app: Flask, response: Response, session: SessionMixin, sid: str, ttl: float
    ) -> None:
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl) if session.permanent else None
        response.set_cookie(
            self.get_cookie_name(app),
            self.get_signer(app).sign(sid).decode("ascii"),
            expires=expires,
            httponly=self.get_cookie_httponly(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            partitioned=self.get_cookie_partitioned(app),
            samesite=self.get_cookie_samesite(app),
        )
        response.vary.add("Cookie")

    def _delete_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.get_cookie_name(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            partitioned=self.get_cookie_partitioned(app),
            samesite=self.get_cookie_samesite(app),
            httponly=self.get_cookie_httponly(app),
        )
        response.vary.add("Cookie")


def _release_at_teardown(sender: Flask, **extra: Any) -> None:
    session = _HELD.get()
    if session is not None:
        session._release_lock()
