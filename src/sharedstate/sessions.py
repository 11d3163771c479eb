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

Settings are read from ``app.config`` on every request, so one interface object can serve any app and
a config change applies at once (they are checked and built again only when a value changed).
Timeouts are seconds or :class:`datetime.timedelta`. ``SHAREDSTATE_SESSION_LOCK_LEASE`` (default 30 s)
and ``SHAREDSTATE_SESSION_LOCK_TIMEOUT`` (default 30 s, then ``LockTimeout``) tune the lock.

The session is a ``dict`` subclass (see :class:`SharedStateSession`). A session object belongs to
one request and is not thread safe, like Flask's own.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flask import Flask, request_tearing_down
from flask.sessions import SessionInterface, SessionMixin

from sharedstate import _sessions
from sharedstate._appconfig import CookieSigners, SessionSettingsCache, read_session_settings
from sharedstate._sessiondict import FlaskStyleDict
from sharedstate._sessions import (
    LOCK_PREFIX,
    SESSION_PREFIX,
    CookieSigner,
    SaveAction,
    check_key,
    new_session_id,
)
from sharedstate._sync.sessions import SessionState
from sharedstate.store import Store

if TYPE_CHECKING:
    from flask.wrappers import Request, Response
    from itsdangerous import TimestampSigner

__all__ = [
    "LOCK_PREFIX",
    "SESSION_PREFIX",
    "SessionSettings",
    "SharedStateSession",
    "SharedStateSessionInterface",
    "entry_key",
    "new_session_id",
]

_UNLOADED = object()  # the only key an unloaded session's dict storage holds (see SharedStateSession)

# The session whose lock is held in this request, released at teardown if save_session never ran
# (an exception propagated with PROPAGATE_EXCEPTIONS, e.g. in debug or testing mode).
_HELD: contextvars.ContextVar[SharedStateSession | None] = contextvars.ContextVar(
    "sharedstate_session_lock", default=None
)


class SessionSettings(_sessions.SessionSettings):
    """The session settings of one app, from its config (made again when the config changes)."""

    @classmethod
    def from_app(cls, app: Flask) -> SessionSettings:
        """Read and check the settings; a bad one raises ``TypeError``/``ValueError`` naming it."""
        settings = read_session_settings(app.config, app.permanent_session_lifetime)
        return cls(**{f: getattr(settings, f) for f in settings.__dataclass_fields__})


def entry_key(store: Store, sid: str) -> str:
    """The full store key of session ``sid``: a SHA-256 of the id, so the store holds no tokens."""
    return _sessions.entry_key(store._keyspace, sid)


class SharedStateSession(FlaskStyleDict, SessionMixin):
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

    The store side (load, merge-save, incr, lock, moves) is the framework-free engine,
    ``sharedstate._sync.sessions.SessionState``; this class is the Flask-facing dict.
    """

    _state: SessionState

    def __init__(self, store: Store, settings: SessionSettings, sid: str | None, issued_at: float | None):
        super().__init__()
        # Until loaded, the dict's own storage holds one private, non-str key. C code that reads a
        # dict's storage directly, bypassing the methods below, then never mistakes an unloaded
        # session for an empty one: json.dumps sees a non-empty dict and asks items() (which
        # loads); orjson and the like refuse the non-str key instead of writing "{}".
        dict.__setitem__(self, _UNLOADED, None)  # type: ignore[misc]
        self._store = store
        self._settings = settings
        self._state = SessionState(store._keyspace, settings, sid, issued_at, data=self, tracked=True)
        self.accessed = False

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        state = self._state
        if state.loaded:
            return
        self.accessed = True  # Flask >= 3.1.3 also sets it; older versions rely on this
        try:
            state.load()  # on LockTimeout, nothing is loaded (a later use retries)
        finally:
            if state.lock is not None:
                _watch_teardown()
                _HELD.set(self)

    def _data(self) -> dict[str, Any]:
        """The data as a plain dict (a shallow copy; no load: callers load first)."""
        return dict.copy(self)

    @property
    def _destroyed(self) -> bool:
        return self._state.destroyed

    def _release_lock(self) -> None:
        self._state.release_lock()
        if _HELD.get() is self:
            _HELD.set(None)

    # -- the dict (sharedstate._sessiondict): every method loads first; every mutating one is
    # tracked. Only what differs from Quart's and Starlette's sessions is here.

    _access = _load

    def __reversed__(self) -> Iterator[str]:
        self._load()
        return iter(list(dict.keys(self))[::-1])

    def __repr__(self) -> str:
        st = self._state
        state = "unloaded" if not st.loaded else ("new" if not st.existed else "stored")
        return f"<SharedStateSession {state} keys={list(self._data()) if st.loaded else '?'}>"

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Whether no stored session backs this one (yet)."""
        self._load()
        return not self._state.existed

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
        check_key(key)
        self._load()
        return self._state.incr(key, by)

    def regenerate(self) -> None:
        """Move this session to a new id when the response is saved, and kill the old id (login).

        The move is atomic for clients: the new id is sent only after the old entry was deleted by
        compare-and-set, and any write to the old id made meanwhile is carried over. Nothing moves
        if the response is a 5xx. On a new session this changes nothing (its id is fresh anyway).
        """
        self._load()
        self._state.regenerate()

    def destroy(self) -> None:
        """End this session now (logout): its entry is deleted at once and the cookie removed.

        A request still in flight with this session can never write it back. Keys set after
        ``destroy`` start a new session under a new id.
        """
        self._state.destroy()

    # -- saving ------------------------------------------------------------------------------

    def save(self, now: float) -> SaveAction:
        """Write this request's changes. Returns the cookie action: ``("set", sid, ttl)``,
        ``("delete", None, None)`` or ``("keep", None, None)``."""
        return self._state.save(now)


class SharedStateSessionInterface(SessionInterface):
    """Flask session interface keeping sessions in a :class:`~sharedstate.store.Store`.

    ``SharedStateSessionInterface(store)``; construct it once, with or without an app: every setting
    is read from ``app.config`` per request (checked and built again only when one changed). See
    :mod:`sharedstate.sessions` for the contract.
    """

    session_class = SharedStateSession
    salt = "sharedstate.session"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._signers = CookieSigners(self.salt)
        self._settings: SessionSettingsCache[SessionSettings] = SessionSettingsCache()
        store._keyspace.warn_if_evictable("Flask sessions")

    def cookie_signer(self, app: Flask) -> CookieSigner:
        """The signer of ``app``'s session cookies: signs with ``SECRET_KEY``, also accepts
        ``SECRET_KEY_FALLBACKS``."""
        return self._signers.for_app(app.config, app.secret_key)

    def get_signer(self, app: Flask) -> TimestampSigner:
        """The :class:`itsdangerous.TimestampSigner` behind :meth:`cookie_signer`."""
        signer: TimestampSigner = self.cookie_signer(app).timestamp_signer
        return signer

    def open_session(self, app: Flask, request: Request) -> SharedStateSession | None:
        """Check the cookie's signature only; the store is read when the session is first used."""
        if not app.secret_key:
            return None  # Flask's null session explains that SECRET_KEY is missing
        settings = self._settings.get(app.config, lambda: SessionSettings.from_app(app))
        sid = issued = None
        cookie = request.cookies.get(self.get_cookie_name(app))
        if cookie:
            verified = self.cookie_signer(app).unsign(cookie)
            if verified is not None:  # else tampered, forged or malformed: a fresh session
                sid, issued = verified
        return SharedStateSession(self.store, settings, sid, issued)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save the changes (nothing on a 5xx), then release the session lock if held."""
        assert isinstance(session, SharedStateSession)
        try:
            if session.accessed:
                response.vary.add("Cookie")
            # Nothing saved on a 5xx: only a destroy (applied at once) stands.
            failed = response.status_code >= 500
            kind, sid, ttl = session._state.unsaved() if failed else session.save(time.time())
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
            self.cookie_signer(app).sign(sid),
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


_watching = False


def _watch_teardown() -> None:
    """Connect :func:`_release_at_teardown` once, when a session lock is first taken (before the
    request that took it tears down). Until then no request pays for the signal's dispatch (~2 µs),
    nor do the other apps of the process, whatever their session interface: the receiver is global.
    """
    global _watching
    if not _watching:
        request_tearing_down.connect(_release_at_teardown, weak=False)  # idempotent (threads racing)
        _watching = True


def _release_at_teardown(sender: Flask, **extra: Any) -> None:
    session = _HELD.get()
    if session is not None:
        session._release_lock()
