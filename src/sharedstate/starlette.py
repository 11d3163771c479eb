"""Server-side sessions for Starlette and FastAPI that lose no writes under concurrent requests.

>>> from starlette.applications import Starlette
>>> from starlette.middleware import Middleware
>>> from sharedstate import AsyncStore
>>> from sharedstate.starlette import SessionMiddleware
>>> store = AsyncStore("sqlite:///state.db")
>>> app = Starlette(middleware=[Middleware(SessionMiddleware, store=store, secret_key="...")])

(FastAPI: ``app.add_middleware(SessionMiddleware, store=store, secret_key=...)``.) A drop-in for
Starlette's own cookie ``SessionMiddleware``, with the same arguments and cookie attributes:
``request.session`` is a ``dict`` (``scope["session"]``), but the cookie holds only a signed random
256-bit id and the data lives in the store, under a hash of the id.

When the store is read: before the app runs, only for a request that carries a validly signed
session cookie (one read; nothing is read for any other request). A request that does not change
the session writes nothing (but a throttled expiry ``touch``, below). Changes are saved when the
response starts (``http.response.start``), before its headers are sent, so the cookie goes out with
them; nothing is saved for a 5xx or when the app raises. Every error of the store propagates (the
request fails): a session is never silently empty because the store could not be read.

Concurrency contract (several requests of one user at once, on any tasks, processes, machines):

- Merge, not overwrite: a save writes only the top-level keys this request changed (nested
  changes are found by comparing encodings), by compare-and-set. Requests that change *different*
  keys all persist; for the *same* key the last save wins.
- ``await request.session.incr(key)`` is applied to the stored session at once, atomically, and
  returns the new value: concurrent increments are never lost.
- ``lock=True``: a per-session lease lock is taken before the session is loaded and released when
  the response starts, so requests carrying the same session cookie run one at a time and any
  read-then-write (``session["n"] = session["n"] + 1``) is safe. It serializes *every* request
  with that cookie (static files too, if they pass through the middleware): prefer ``incr`` or
  per-key writes, and mount a locking middleware only where needed.
- ``await request.session.regenerate()`` (login) moves the data to a new id when the response
  starts; ``await request.session.destroy()`` (logout) deletes the entry at once. A request still
  in flight with the old or destroyed id can never write it back.
- Lifetimes: ``idle_timeout`` (default ``max_age``, else 14 days) since the last write or renewal,
  and an optional ``absolute_timeout`` since creation or the last ``regenerate``. A read-only
  request renews the idle expiry with a ``touch`` (never a rewrite of what it read), only once
  ``refresh_fraction`` of the idle lifetime has passed since the cookie was issued; the cookie is
  then issued again. A cookie older than ``max_age`` is refused, as Starlette's is.

WebSockets: ``websocket.session`` is loaded the same way (without the lock) and readable; it is
read-only, since no cookie can be set after the handshake: a change raises ``RuntimeError``.

Misuse fails loudly: changing the session after the response started (in a background task, or
while streaming the body) raises ``RuntimeError``, since the change could not be saved any more.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from sharedstate._optional import require

require("starlette", "starlette")

from starlette.datastructures import MutableHeaders  # noqa: E402
from starlette.requests import HTTPConnection, cookie_parser  # noqa: E402

from sharedstate._async.sessions import AsyncSessionState  # noqa: E402
from sharedstate._async.store import AsyncStore  # noqa: E402
from sharedstate._sessiondict import TrackedDict  # noqa: E402
from sharedstate._sessions import CookieSigner, SaveAction, SessionSettings  # noqa: E402
from sharedstate.validation import seconds  # noqa: E402

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Session", "SessionMiddleware", "get_session"]

DEFAULT_MAX_AGE = 14 * 24 * 60 * 60  # 14 days, in seconds, as Starlette's
_SALT = "sharedstate.starlette.session"


class Session(TrackedDict):
    """``request.session``: a ``dict`` of str keys, loaded before the app runs, changes tracked.

    Every dict method works, with no I/O (``json.dumps(request.session)``, ``dict(...)``,
    ``|=``, ...). Mutating methods mark the session ``modified``; nested changes are found at save
    time anyway. Setting ``modified = False`` skips saving this request's changes. ``accessed`` is
    set by ``request.session`` (Starlette calls ``mark_accessed()``): the response then varies on
    ``Cookie``.

    The store operations are coroutines: :meth:`incr` (applied at once), :meth:`regenerate`
    (login) and :meth:`destroy` (logout). ``new``: no stored session backs this one. A session
    belongs to one request; it is not safe to share between tasks.
    """

    accessed: bool

    def __init__(self) -> None:  # made by SessionMiddleware only
        super().__init__()
        self.accessed = False
        self._state: AsyncSessionState | None = None
        self._closed: str | None = None  # why changes cannot be saved any more, if they cannot

    @classmethod
    def _create(
        cls,
        store: AsyncStore,
        settings: SessionSettings,
        sid: str | None,
        issued_at: float | None,
        closed: str | None = None,
    ) -> Session:
        session = cls()
        session._state = AsyncSessionState(
            store._keyspace, settings, sid, issued_at, data=session, tracked=True
        )
        session._closed = closed
        return session

    @property
    def _s(self) -> AsyncSessionState:
        state = self._state
        if state is None:
            raise RuntimeError("this Session was not made by sharedstate.starlette.SessionMiddleware")
        return state

    def _changed(self) -> None:
        if self._closed is not None:
            raise RuntimeError(self._closed)
        self.accessed = True
        self._s.changed()

    # -- Starlette's Session protocol ----------------------------------------------------------

    def mark_accessed(self) -> None:
        self.accessed = True

    def mark_modified(self) -> None:
        self._changed()

    @property
    def modified(self) -> bool:
        """Whether a mutating method was called. ``False`` skips saving this request's changes
        (``incr`` and ``destroy`` were applied at once and stay applied)."""
        return self._s.mutated

    @modified.setter
    def modified(self, value: bool) -> None:
        if value:
            self._changed()
        else:
            self._s.mutated = False
            self._s.discard = True

    @property
    def new(self) -> bool:
        """Whether no stored session backs this one (yet)."""
        return not self._s.existed

    # -- the dict (sharedstate._sessiondict): every mutating method is tracked; the hooks are here.
    # Reading keys (len, in, keys, ==) is the plain dict's: the data is loaded before the app runs.

    def _check_open(self) -> None:
        if self._closed is not None:
            raise RuntimeError(self._closed)

    def _touch(self, key: str) -> None:
        state = self._state
        if state is not None:
            state.touch(key)

    def _touch_all(self) -> None:
        state = self._state
        if state is not None:
            state.touch_all()

    def __iter__(self) -> Iterator[str]:
        # Overridden so that dict(session), {**session} and dict.update(session) go through
        # keys() and __getitem__ (CPython copies a dict subclass's storage directly otherwise).
        return dict.__iter__(self)

    def __repr__(self) -> str:
        state = "new" if self._state is None or not self._state.existed else "stored"
        return f"<Session {state} {dict.__repr__(self)}>"

    # -- store operations ----------------------------------------------------------------------

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0) and return the new value.

        Applied to the stored session at once by compare-and-set, so concurrent increments are
        never lost; it stays applied if the request fails later. A new session is stored (under a
        fresh id) right away. ``TypeError`` if ``key`` holds something other than an int.
        """
        self._changed()
        return await self._s.incr(key, by)

    async def regenerate(self) -> None:
        """Move this session to a new id when the response starts, killing the old id (login).

        Any write to the old id made meanwhile is carried over; nothing moves on a 5xx.
        """
        self._changed()
        self._s.regenerate()

    async def destroy(self) -> None:
        """End this session now (logout): the entry is deleted at once and the cookie removed.

        A request still in flight with this session can never write it back. Keys set afterwards
        start a new session under a new id.
        """
        self._changed()
        await self._s.destroy()


class SessionMiddleware:
    """Pure ASGI middleware putting a server-side :class:`Session` in ``scope["session"]``.

    ``SessionMiddleware(app, *, store, secret_key, ...)``; Starlette's cookie arguments
    (``session_cookie``, ``max_age``, ``path``, ``same_site``, ``https_only``, ``domain``,
    ``partitioned``) mean what they mean there. ``store``: an :class:`~sharedstate.AsyncStore` or
    its URL. ``secret_key`` signs the id (``secret_key_fallbacks`` are accepted too, to rotate).
    ``idle_timeout`` (default ``max_age``, or 14 days if that is ``None`` or not positive),
    ``absolute_timeout``, ``refresh_each_request``, ``refresh_fraction``: the lifetimes (see the
    module doc). ``lock=True``, ``lock_lease``, ``lock_timeout``: the per-session lock. Settings
    are checked here, each error naming its argument.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: AsyncStore | str,
        secret_key: str | bytes | Any,
        session_cookie: str = "session",
        max_age: int | timedelta | None = DEFAULT_MAX_AGE,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        secret_key_fallbacks: Iterable[str | bytes | Any] = (),
        idle_timeout: float | timedelta | None = None,
        absolute_timeout: float | timedelta | None = None,
        refresh_each_request: bool = True,
        refresh_fraction: float = 0.1,
        lock: bool = False,
        lock_lease: float | timedelta = 30.0,
        lock_timeout: float | timedelta = 30.0,
    ) -> None:
        self.app = app
        if isinstance(store, str):
            store = AsyncStore(store)
        if not isinstance(store, AsyncStore):
            raise TypeError(
                f"store must be an AsyncStore or a URL, got {type(store).__name__} (a sync Store "
                "would block the event loop: use AsyncStore with the same URL)"
            )
        self.store = store
        store._keyspace.warn_if_evictable("Starlette sessions")
        self.max_age = _cookie_max_age(max_age)
        if idle_timeout is None:
            idle_timeout = self.max_age if self.max_age is not None and self.max_age > 0 else DEFAULT_MAX_AGE
        self.settings = SessionSettings.create(
            idle=idle_timeout,
            absolute=absolute_timeout,
            refresh=refresh_each_request,
            refresh_fraction=refresh_fraction,
            lock=lock,
            lock_lease=lock_lease,
            lock_timeout=lock_timeout,
            names={
                "idle": "idle_timeout",
                "absolute": "absolute_timeout",
                "lock_lease": "lock_lease",
            },
        )
        # A websocket is never locked: a long-lived connection would hold the lock for its life.
        self._ws_settings = SessionSettings(
            **{**{f: getattr(self.settings, f) for f in self.settings.__dataclass_fields__}, "lock": False}
        )
        self.signer = CookieSigner([*map(_key_bytes, secret_key_fallbacks), _key_bytes(secret_key)], _SALT)
        if not session_cookie or not isinstance(session_cookie, str):
            raise ValueError(f"session_cookie must be a non-empty str, got {session_cookie!r}")
        if self.max_age is not None and self.max_age > 0 and self.settings.idle > self.max_age:
            raise ValueError(
                f"idle_timeout ({self.settings.idle:g}s) is longer than max_age ({self.max_age}s): "
                "the browser drops the cookie max_age seconds after it was issued; raise max_age, "
                "or pass max_age=None for a browser-session cookie"
            )
        same_site = same_site.lower()  # type: ignore[assignment]
        if same_site not in ("lax", "strict", "none"):
            raise ValueError(f"same_site must be 'lax', 'strict' or 'none', got {same_site!r}")
        self.session_cookie = session_cookie
        self.path = path
        flags = "httponly; samesite=" + same_site
        if https_only:  # the Secure flag: sent over HTTPS only
            flags += "; secure"
        if domain is not None:
            flags += f"; domain={domain}"
        if partitioned:
            flags += "; partitioned"
        self.security_flags = flags

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sid = issued = None
        cookie = _cookies(scope).get(self.session_cookie)
        if cookie:
            verified = self.signer.unsign(cookie)
            if verified is not None and (self.max_age is None or time.time() - verified[1] <= self.max_age):
                sid, issued = verified  # else tampered, forged, malformed or too old: a fresh session
        if kind == "websocket":
            session = Session._create(
                self.store,
                self._ws_settings,
                sid,
                issued,
                closed="a websocket's session is read-only: no cookie can be set after the handshake",
            )
            assert session._state is not None
            await session._state.load()  # a read only if the cookie was valid
            scope["session"] = session
            await self.app(scope, receive, send)
            return

        session = Session._create(self.store, self.settings, sid, issued)
        state = session._state
        assert state is not None
        try:
            await state.load()  # a read only if the cookie was valid (after the lock, if any)
            scope["session"] = session

            async def send_with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await self._save(session, state, message)
                await send(message)

            await self.app(scope, receive, send_with_cookie)
        finally:
            if state.lock is not None:
                await state.release_lock()

    async def _save(self, session: Session, state: AsyncSessionState, message: Message) -> None:
        session._closed = (
            "the session was saved when the response started: a change made after that (in a "
            "background task, or while the body streams) could not be saved"
        )
        try:
            # Nothing saved on a 5xx: only a destroy (applied at once) stands.
            failed = message["status"] >= 500
            action: SaveAction = state.unsaved() if failed else await state.save(time.time())
        finally:
            if state.lock is not None:
                await state.release_lock()
        if not session.accessed and action.kind == "keep":
            return  # no header to add
        if action.kind == "keep":  # the common read: only Vary to add, straight into the list
            raw = message["headers"] = list(message.get("headers", ()))
            if not any(name == b"vary" for name, _ in raw):
                raw.append((b"vary", b"Cookie"))
                return
        headers = MutableHeaders(scope=message)
        headers.add_vary_header("Cookie")
        if action.kind == "set":
            assert action.sid is not None
            max_age = f"Max-Age={self.max_age}; " if self.max_age is not None else ""
            headers.append(
                "set-cookie",
                f"{self.session_cookie}={self.signer.sign(action.sid)}; path={self.path}; "
                f"{max_age}{self.security_flags}",
            )
        elif action.kind == "delete":
            headers.append(
                "set-cookie",
                f"{self.session_cookie}=null; path={self.path}; "
                f"expires=Thu, 01 Jan 1970 00:00:00 GMT; {self.security_flags}",
            )


def _cookies(scope: Scope) -> dict[str, str]:
    """``HTTPConnection(scope).cookies``, without building the connection and its headers."""
    cookies: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    return cookies


def get_session(conn: HTTPConnection) -> Session:
    """``conn.session`` typed as :class:`Session` (``request.session`` is typed ``dict``), or an
    error saying which middleware is missing. A FastAPI dependency too:
    ``session: Annotated[Session, Depends(get_session)]``."""
    if "session" not in conn.scope:
        raise RuntimeError("no session: add sharedstate.starlette.SessionMiddleware to the app")
    session = conn.scope["session"]
    if not isinstance(session, Session):
        raise RuntimeError(
            f"the session is a {type(session).__module__}.{type(session).__qualname__}, not a "
            "sharedstate session: another SessionMiddleware (Starlette's?) is installed in place of, "
            "or inside, sharedstate.starlette.SessionMiddleware"
        )
    session.mark_accessed()
    return session


def _cookie_max_age(max_age: int | timedelta | None) -> int | None:
    """The cookie's ``Max-Age``: ``None`` (a browser-session cookie) or whole seconds. As with
    Starlette, 0 or less makes a cookie the browser drops at once (and that is refused here)."""
    if max_age is None:
        return None
    if isinstance(max_age, timedelta):
        max_age = int(seconds("max_age", max_age))
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise TypeError(f"max_age must be an int number of seconds or None, got {type(max_age).__name__}")
    if max_age > 0:
        seconds("max_age", max_age)  # the upper bound
    return max_age


def _key_bytes(key: str | bytes | Any) -> str | bytes:
    """A secret key as given: ``str``, ``bytes``, or anything whose ``str`` is the key (Starlette's
    ``Secret``)."""
    return key if isinstance(key, (str, bytes)) else str(key)
