"""Quart integration: the :class:`SharedState` extension and the ``quart state`` command group.

>>> from quart import Quart
>>> from sharedstate.quart import SharedState
>>> app = Quart(__name__)
>>> state = SharedState(app)        # or state = SharedState(); state.init_app(app) in a factory
>>> @app.route("/")
... async def home():
...     return str(await state.counter("hits").incr())

Built on :class:`~sharedstate.AsyncStore`: no operation blocks the event loop. The settings are
those of :mod:`sharedstate.flask`, read by :meth:`SharedState.init_app` (so set them before):

``SHAREDSTATE_URL``
    Store URL. Default: the environment variable ``$SHAREDSTATE_URL``, else
    ``sqlite:///{app.instance_path}/sharedstate.sqlite3`` (folder created).
``SHAREDSTATE_NAMESPACE``
    Key namespace. Default: the app's module name, the same however the app is started
    (:func:`default_namespace`). ``""`` means no namespace.
``SHAREDSTATE_SESSIONS``
    ``True``: server-side sessions in the same store (``app.session_interface`` is replaced).
``SHAREDSTATE_SESSION_LOCK`` and the other ``SHAREDSTATE_SESSION_*`` settings
    As for Flask: see :mod:`sharedstate.sessions`.
``SHAREDSTATE_STORE_OPTIONS``
    Extra keyword arguments for :class:`~sharedstate.AsyncStore` (``serializer``, ``secret_key``,
    ``max_value_size``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from sharedstate import _appconfig
from sharedstate._appconfig import (
    CONFIG_KEY,
    EXTENSION_KEY,
    STORE_KEY,
    CookieSigners,
    PerStore,
    SessionSettingsCache,
    StoreConfig,
    check_name,
    read_session_settings,
)
from sharedstate._async.cache import cached as _async_cached
from sharedstate._async.mapping import AsyncDict
from sharedstate._async.objects import AsyncCounter, AsyncLock
from sharedstate._async.sessions import AsyncSessionState
from sharedstate._async.store import AsyncStore
from sharedstate._optional import require
from sharedstate._sessiondict import FlaskStyleDict
from sharedstate._sessions import DEFAULT_SALT, CookieSigner, SessionSettings
from sharedstate._statecli import STATE_HELP, add_state_commands
from sharedstate.errors import LockNotOwnedError
from sharedstate.store import Store
from sharedstate.validation import MIN_LEASE, seconds

require("quart", "quart")

from quart import Quart, current_app, has_app_context  # noqa: E402
from quart.cli import AppGroup, ScriptInfo  # noqa: E402
from quart.sessions import SessionInterface, SessionMixin  # noqa: E402
from quart.signals import request_tearing_down, websocket_tearing_down  # noqa: E402
from quart.wrappers import BaseRequestWebsocket, Response  # noqa: E402
from werkzeug.wrappers import Response as WerkzeugResponse  # noqa: E402

if TYPE_CHECKING:
    from sharedstate._async.cache import AsyncCachedFunction

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "CONFIG_KEY",
    "EXTENSION_KEY",
    "STORE_KEY",
    "QuartCounter",
    "QuartDict",
    "QuartLock",
    "QuartSession",
    "QuartSessionInterface",
    "SharedState",
    "default_namespace",
    "default_url",
    "state_cli",
    "store_for",
]


def default_url(app: Quart) -> str:
    """``$SHAREDSTATE_URL``, else the file ``sharedstate.sqlite3`` in the app's instance folder.

    The instance folder is created if missing. The same rule as ``sharedstate.flask.default_url``.
    """
    return _appconfig.default_url(app.instance_path)


def default_namespace(app: Quart) -> str:
    """The name of the module that made ``app``, the same however the app is started.

    For ``Quart(__name__)`` run as a script (import name ``"__main__"``) this is the name the
    module would be imported under; see :func:`sharedstate.flask.default_namespace`.
    """
    return _appconfig.default_namespace(app.import_name)


def store_for(app: Quart) -> AsyncStore:
    """The :class:`~sharedstate.AsyncStore` that :meth:`SharedState.init_app` made for ``app``."""
    try:
        store = app.extensions[STORE_KEY]
    except KeyError:
        raise RuntimeError(
            f"sharedstate is not set up on app {app.name!r}: call SharedState(app) or "
            "state.init_app(app) in your app factory"
        ) from None
    assert isinstance(store, AsyncStore)
    return store


class SharedState:
    """State shared between requests, tasks, worker processes and machines of a Quart app.

    ``SharedState(app)``, or ``SharedState()`` then ``init_app(app)`` for app factories. Each app
    gets its own :class:`~sharedstate.AsyncStore` (``app.extensions["sharedstate.store"]``), and
    every method acts on the store of the app in use: :data:`quart.current_app` inside an app
    context (any request has one); outside any app context, the app given to
    ``SharedState(app)``, if any (held by a weak reference); else ``RuntimeError``.

    The objects (:meth:`counter`, :meth:`dict`, :meth:`lock`) and :meth:`cached` functions can be
    made at import time, before any app exists: they look up the app in use each time they are
    used, so one object serves every app.

    Concurrency contract: that of :class:`~sharedstate.AsyncStore`. Every operation is atomic
    across the tasks, processes and machines of every worker that opens the same
    ``SHAREDSTATE_URL`` and namespace (``hypercorn --workers 4`` runs four processes: they share
    the store, not Python objects), and no operation blocks the event loop. A module-level
    ``state`` object, and module-level objects made by it, are safe to use from every request (a
    module-level :meth:`lock` is held per task, see :class:`QuartLock`). The store keeps its
    connections pooled per process and event loop; they are closed when the app stops serving
    (``after_serving``) and reopened if it is used again.
    """

    def __init__(self, app: Quart | None = None) -> None:
        self._default_app: weakref.ref[Quart] | None = None
        if app is not None:
            self.init_app(app)
            self._default_app = weakref.ref(app)

    def init_app(self, app: Quart) -> None:
        """Open the app's store from its config; register sessions (if asked) and ``quart state``."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"sharedstate is already set up on app {app.name!r}; call init_app once per app"
            )
        settings = _appconfig.read_store_config(
            app.config, instance_path=app.instance_path, import_name=app.import_name
        )
        store = AsyncStore(settings.url, namespace=settings.namespace, **settings.options)
        app.extensions[EXTENSION_KEY] = self
        app.extensions[STORE_KEY] = store
        app.extensions[CONFIG_KEY] = settings
        if settings.sessions:
            app.session_interface = QuartSessionInterface(store)  # type: ignore[assignment]

        async def close_store() -> None:
            await store.aclose()

        app.after_serving(close_store)
        app.cli.add_command(state_cli)

    # -- the store of the app in use ---------------------------------------------------------

    def _app_store(self) -> AsyncStore | None:
        """The store of the app in use, or ``None`` if there is none (see the class doc)."""
        if has_app_context():
            return store_for(current_app)
        app = None if self._default_app is None else self._default_app()
        return None if app is None else store_for(app)

    @property
    def store(self) -> AsyncStore:
        """The :class:`~sharedstate.AsyncStore` of the app in use."""
        store = self._app_store()
        if store is None:
            raise RuntimeError(
                "Working outside of application context: sharedstate acts on the store of the app "
                "in use. Use it in a request, a CLI command or `async with app.app_context():`, or "
                "create the extension with SharedState(app) to use that app's store outside of app "
                "contexts"
            )
        return store

    def counter(self, name: str) -> AsyncCounter:
        """An atomic counter at ``name`` (:meth:`AsyncStore.counter`): ``await c.incr()``.

        Can be made at import time; see :class:`QuartCounter`.
        """
        return QuartCounter(self, name)

    def dict(self, name: str) -> AsyncDict:
        """A shared mapping stored one key per item (:meth:`AsyncStore.dict`) of the app in use.

        Can be made at import time; see :class:`QuartDict`.
        """
        return QuartDict(self, name)

    def lock(
        self, name: str, ttl: float = 30.0, timeout: float | None = None, *, blocking: bool = True
    ) -> AsyncLock:
        """A lease lock with an owner token (:meth:`AsyncStore.lock`) in the store of the app in use.

        ``async with state.lock("report"):``. ``blocking=False``: ``async with`` tries once and
        raises ``LockTimeout``; ``await acquire()`` returns ``False`` if the lock is taken. Can be
        made at import time and shared by every request: see :class:`QuartLock`.
        """
        return QuartLock(self, name, ttl=ttl, timeout=timeout, blocking=blocking)

    def edit(
        self,
        name: str,
        default: Any = None,
        *,
        ttl: float | None = None,
        lease: float = 30.0,
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[Any]:
        """``async with state.edit(name, default={...}) as obj:`` (:meth:`AsyncStore.edit`)."""
        return self.store.edit(name, default, ttl=ttl, lease=lease, timeout=timeout)

    async def update(
        self, name: str, fn: Callable[[Any], T], default: Any = None, *, ttl: float | None = None
    ) -> T:
        """Replace the value at ``name`` with ``fn(value)`` by compare-and-set (:meth:`AsyncStore.update`)."""
        return await self.store.update(name, fn, default, ttl=ttl)

    def cached(
        self, ttl: float, stale_ttl: float | None = None, *, lease: float = 30.0, name: str | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], AsyncCachedFunction[P, T]]:
        """``@state.cached(ttl=60)`` on an ``async def``: cache results in the store of the app in use.

        Usable at import time: the store is looked up on each call, so one decorated function serves
        every app (each in its own namespace). Calls need an app context, or ``SharedState(app)``.
        Single flight across every worker process, stale-while-revalidate with ``stale_ttl``:
        the contract of :func:`sharedstate.cache.cached`.
        """
        return _async_cached(lambda: self.store, ttl, stale_ttl=stale_ttl, lease=lease, name=name)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` if absent or expired."""
        return await self.store.get(key, default)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, expiring after ``ttl`` seconds if given."""
        await self.store.set(key, value, ttl)

    async def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; whether it was stored. Atomic."""
        return await self.store.add(key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return await self.store.delete(key)

    async def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0); the new value."""
        return await self.store.incr(key, by, ttl)

    async def touch(self, key: str, ttl: float | None) -> bool:
        """Give ``key`` a new expiry without rewriting it; whether it existed."""
        return await self.store.touch(key, ttl)

    async def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix`` (namespace stripped), sorted."""
        return await self.store.keys(prefix)

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires (``None``: never); ``KeyError`` if absent."""
        return await self.store.ttl(key)

    async def get_many(self, keys: Iterable[str]) -> builtins.dict[str, Any]:
        """The present keys among ``keys`` and their values, in one round trip where possible."""
        return await self.store.get_many(keys)

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item (each atomically; nothing if one item is refused)."""
        await self.store.set_many(mapping, ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; how many existed."""
        return await self.store.delete_many(keys)

    async def ping(self) -> None:
        """Raise ``BackendUnavailableError`` if the store does not answer."""
        await self.store.ping()

    def __repr__(self) -> str:
        return "<SharedState (Quart)>"


# -- objects of the app in use --------------------------------------------------------------------


class QuartCounter(AsyncCounter):
    """An :class:`~sharedstate.AsyncCounter` of the app in use (``state.counter(name)``).

    Each call acts on the store of the app in use (see :class:`SharedState`), so it can be made at
    import time and serves every app. Contract: that of ``AsyncCounter``.
    """

    def __init__(self, state: SharedState, name: str) -> None:
        # No AsyncCounter.__init__: every method is overridden to act on the app's own counter.
        check_name(name, "counter name")
        self.name = name
        self._of_app = PerStore(state, lambda store: store.counter(name))

    def _counter(self) -> AsyncCounter:
        return self._of_app.get()

    async def incr(self, by: int = 1) -> int:
        return await self._counter().incr(by)

    async def decr(self, by: int = 1) -> int:
        return await self._counter().decr(by)

    async def get(self) -> int:
        return await self._counter().get()

    async def reset(self, to: int = 0) -> None:
        await self._counter().reset(to)

    def __repr__(self) -> str:
        return f"<QuartCounter {self.name!r}>"


_MISSING: Any = object()


class QuartDict(AsyncDict):
    """An :class:`~sharedstate.AsyncDict` of the app in use (``state.dict(name)``).

    Each call acts on the store of the app in use, so ``settings = state.dict("settings")`` can sit
    at module level and serves every app. Contract: that of ``AsyncDict`` (each item operation
    atomic; ``setdefault``, ``pop``, ``incr`` and ``update_item`` atomic read-modify-writes).
    """

    def __init__(self, state: SharedState, name: str) -> None:
        # No AsyncDict.__init__: every method is overridden to act on the app's own dict.
        check_name(name, "dict name")
        self.name = name
        self._of_app = PerStore(state, lambda store: store.dict(name))

    def _dict(self) -> AsyncDict:
        return self._of_app.get()

    async def get(self, item: str, default: Any = None) -> Any:
        return await self._dict().get(item, default)

    async def set(self, item: str, value: Any) -> None:
        await self._dict().set(item, value)

    async def delete(self, item: str) -> bool:
        return await self._dict().delete(item)

    async def contains(self, item: object) -> bool:
        return await self._dict().contains(item)

    async def keys(self) -> list[str]:
        return await self._dict().keys()

    async def items(self) -> list[tuple[str, Any]]:
        return await self._dict().items()

    async def len(self) -> int:
        return await self._dict().len()

    async def setdefault(self, item: str, default: Any = None) -> Any:
        return await self._dict().setdefault(item, default)

    async def pop(self, item: str, default: Any = _MISSING) -> Any:
        if default is _MISSING:
            return await self._dict().pop(item)
        return await self._dict().pop(item, default)

    async def clear(self) -> None:
        await self._dict().clear()

    async def incr(self, item: str, by: int = 1) -> int:
        return await self._dict().incr(item, by)

    async def update_item(self, item: str, fn: Callable[[Any], T], default: Any = None) -> T:
        return await self._dict().update_item(item, fn, default)

    def __repr__(self) -> str:
        return f"<QuartDict {self.name!r}>"


@dataclass
class _Holding:
    lock: AsyncLock
    task: asyncio.Task[Any] | None  # the task that took it (a task's children inherit the variable)
    token: contextvars.Token[_Holding | None] | None = None


class QuartLock(AsyncLock):
    """An :class:`~sharedstate.AsyncLock` of the app in use (``state.lock(name, ...)``).

    Unlike a plain ``AsyncLock`` (one owner per object), one ``QuartLock`` can be shared by every
    request, as a module-level ``asyncio.Lock`` would be, except that it excludes every task of
    every process and machine::

        report_lock = state.lock("nightly-report", ttl=60)     # module level

        @app.post("/report")
        async def report():
            async with report_lock:      # one request at a time, across every worker
                ...

    Each acquisition takes a new ``AsyncLock`` in the store of the app in use and holds it for the
    current task (a :mod:`contextvars` variable, checked against the task that set it, since a task
    started by the holder inherits its variables): ``release``, ``extend``, ``owned`` and
    ``fencing_token`` act on the one this task holds, and releasing a lock held by another task
    raises ``LockNotOwnedError``; a task started by the holder is another task, which waits for
    the lock like any other. Not reentrant: acquiring it again in the task that holds it raises
    ``RuntimeError``.
    """

    def __init__(
        self,
        state: SharedState,
        name: str,
        *,
        ttl: float = 30.0,
        timeout: float | None = None,
        blocking: bool = True,
    ) -> None:
        # No AsyncLock.__init__: every method is overridden to act on the lock this context holds.
        check_name(name, "lock name")
        self.name = name
        self.ttl = seconds("ttl", ttl, minimum=MIN_LEASE)
        self.timeout = timeout
        self.blocking = blocking
        self._state = state
        self._held: contextvars.ContextVar[_Holding | None] = contextvars.ContextVar(
            f"sharedstate.QuartLock({name!r})", default=None
        )
        store = state._app_store()
        if store is not None:
            self._new_lock(store)  # checks ttl, timeout and blocking the way the store does

    def _new_lock(self, store: AsyncStore) -> AsyncLock:
        return store.lock(self.name, ttl=self.ttl, timeout=self.timeout, blocking=self.blocking)

    def _mine(self) -> _Holding | None:
        """This task's holding, if any (not one inherited from the task that started this one)."""
        holding = self._held.get()
        if holding is None or holding.task is not _current_task():
            return None
        return holding

    def _holding(self) -> _Holding:
        holding = self._mine()
        if holding is None:
            raise LockNotOwnedError(f"lock {self.name!r} is not held in this context")
        return holding

    def _hold(self, lock: AsyncLock) -> None:
        holding = _Holding(lock, _current_task())
        holding.token = self._held.set(holding)

    def _forget(self, holding: _Holding) -> None:
        try:
            assert holding.token is not None
            self._held.reset(holding.token)  # leaves no trace in a long-lived context
        except ValueError:  # released in a copy of the context it was taken in
            self._held.set(None)

    async def _check_not_held(self) -> None:
        holding = self._mine()
        if holding is not None:
            if await holding.lock.owned:
                raise RuntimeError(f"lock {self.name!r} is already held in this context")
            self._forget(holding)  # its lease ran out: take it anew

    @property
    async def locked(self) -> bool:
        """Whether anyone holds the lock now (``await lock.locked``)."""
        return await self._new_lock(self._state.store).locked

    @property
    async def owned(self) -> bool:
        """Whether this task holds the lock now (``await lock.owned``)."""
        holding = self._mine()
        return holding is not None and await holding.lock.owned

    @property
    def fencing_token(self) -> int | None:
        """The fencing token of this task's acquisition; ``None`` if it holds none."""
        holding = self._mine()
        return None if holding is None else holding.lock.fencing_token

    @fencing_token.setter
    def fencing_token(self, value: int | None) -> None:
        raise AttributeError("fencing_token is set by acquire")

    async def acquire(self, *args: Any, **kwargs: Any) -> int:
        """Take the lock for this context: :meth:`AsyncLock.acquire` (same arguments and result)."""
        await self._check_not_held()
        lock = self._new_lock(self._state.store)
        result = await lock.acquire(*args, **kwargs)
        if result is not False:  # blocking=False returns False when the lock is taken
            self._hold(lock)
        return result

    async def release(self) -> None:
        """Release this context's hold. ``LockNotOwnedError`` if it holds none or its lease ran out."""
        holding = self._holding()
        self._forget(holding)
        await holding.lock.release()

    async def extend(self, ttl: float | None = None) -> None:
        """Renew this context's lease (:meth:`AsyncLock.extend`)."""
        await self._holding().lock.extend(ttl)

    async def __aenter__(self) -> QuartLock:
        await self._check_not_held()
        lock = self._new_lock(self._state.store)
        await lock.__aenter__()
        self._hold(lock)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<QuartLock {self.name!r} ttl={self.ttl}>"


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


# -- sessions ---------------------------------------------------------------------------------------

# The session whose lock is held in this request, released at teardown if save_session never ran
# (an exception propagated with PROPAGATE_EXCEPTIONS, e.g. in testing mode).
_HELD: contextvars.ContextVar[QuartSession | None] = contextvars.ContextVar(
    "sharedstate_quart_session_lock", default=None
)


class QuartSession(FlaskStyleDict, SessionMixin):
    """The ``session`` of one Quart request: a ``dict`` of str keys, loaded when the request starts.

    The Quart face of the framework-free session engine
    (``sharedstate._async.sessions.AsyncSessionState``), with the contract of
    :mod:`sharedstate.sessions`: saving writes only the keys this request changed, merged into
    the stored entry by compare-and-set, so concurrent requests of one user that change different
    keys all persist; nested changes are found at save time.

    Quart opens the session (awaited) before the view runs and the view reads it without
    ``await``, so the entry is read in :meth:`QuartSessionInterface.open_session` when the cookie
    names a session (a request without a valid cookie reads nothing), and every dict method works
    on the loaded data. Besides the dict methods: ``await session.incr(key)`` (atomic, applied at
    once), ``await session.destroy()`` (logout, applied at once), ``session.regenerate()``
    (login: a new id at save), ``new``, ``permanent`` and ``modified`` (set it to ``False`` to skip
    saving this request's changes). A session object belongs to one request and is not task safe.
    """

    _state: AsyncSessionState

    def __init__(
        self, store: AsyncStore, settings: SessionSettings, sid: str | None, issued_at: float | None
    ):
        super().__init__()
        self._settings = settings
        self._state = AsyncSessionState(store._keyspace, settings, sid, issued_at, data=self, tracked=True)
        self.accessed = False

    def _read(self) -> None:
        self.accessed = True

    def _changed(self) -> None:
        self.accessed = True
        self._state.changed()

    async def _release_lock(self) -> None:
        await self._state.release_lock()
        if _HELD.get() is self:
            _HELD.set(None)

    # -- the dict (sharedstate._sessiondict): every read is noted (Vary: Cookie), every change
    # tracked.

    _access = _read

    def __repr__(self) -> str:
        kind = "new" if not self._state.existed else "stored"
        return f"<QuartSession {kind} keys={list(dict.keys(self))}>"

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Whether no stored session backs this one (yet)."""
        return not self._state.existed

    # -- atomic operations -------------------------------------------------------------------

    async def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0) and return the new value.

        Applied to the stored session at once by compare-and-set, so concurrent increments of one
        session are never lost, and it stays applied if the request fails later. It replaces any
        change of ``key`` made earlier in this request. A new session is stored (under a fresh id)
        right away. Raises ``TypeError`` if ``key`` holds something other than an int.
        """
        self.accessed = True
        return await self._state.incr(key, by)

    def regenerate(self) -> None:
        """Move this session to a new id when the response is saved, and kill the old id (login).

        Any write to the old id made meanwhile is carried over. Nothing moves if the response is a
        5xx. On a new session this changes nothing (its id is fresh anyway).
        """
        self.accessed = True
        self._state.regenerate()

    async def destroy(self) -> None:
        """End this session now (logout): its entry is deleted at once and the cookie removed.

        A request still in flight with this session can never write it back. Keys set after
        ``destroy`` start a new session under a new id.
        """
        self.accessed = True
        await self._state.destroy()


class QuartSessionInterface(SessionInterface):
    """Quart session interface keeping sessions in an :class:`~sharedstate.AsyncStore`.

    ``app.session_interface = QuartSessionInterface(store)``, or ``SHAREDSTATE_SESSIONS = True``
    with :class:`SharedState`. Every setting is read from ``app.config`` on each request (the
    ones of :mod:`sharedstate.sessions`, with the same code), and the cookie is the Flask
    sessions' (a random 256-bit id signed with ``SECRET_KEY``, ``SECRET_KEY_FALLBACKS``
    accepted), so a Flask and a Quart app with one key and one store share sessions.
    """

    salt = DEFAULT_SALT

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self._signers = CookieSigners(self.salt)
        self._settings: SessionSettingsCache[SessionSettings] = SessionSettingsCache()
        store._keyspace.warn_if_evictable("Quart sessions")
        # Idempotent: blinker keeps one connection per receiver.
        request_tearing_down.connect(_release_at_teardown, weak=False)
        websocket_tearing_down.connect(_release_at_teardown, weak=False)

    def cookie_signer(self, app: Quart) -> CookieSigner:
        """The signer of ``app``'s session cookies: signs with ``SECRET_KEY``, also accepts
        ``SECRET_KEY_FALLBACKS``."""
        return self._signers.for_app(app.config, app.secret_key)

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> QuartSession | None:
        """Check the cookie's signature and, if it names a session, read it (taking the session
        lock first if ``SHAREDSTATE_SESSION_LOCK``). Without ``SECRET_KEY``: ``None`` (Quart's
        null session, which says so when written)."""
        if not app.secret_key:
            return None
        settings = self._settings.get(
            app.config, lambda: read_session_settings(app.config, app.permanent_session_lifetime)
        )
        sid = issued = None
        cookie = request.cookies.get(self.get_cookie_name(app))
        if cookie:
            verified = self.cookie_signer(app).unsign(cookie)
            if verified is not None:  # else tampered, forged or malformed: a fresh session
                sid, issued = verified
        session = QuartSession(self.store, settings, sid, issued)
        try:
            await session._state.load()  # no IO without a session id
        except BaseException:
            await session._state.release_lock()  # taken, then the read failed
            raise
        if session._state.lock is not None:
            _HELD.set(session)
        return session

    async def save_session(
        self, app: Quart, session: SessionMixin, response: Response | WerkzeugResponse | None
    ) -> None:
        """Save the changes (nothing on a 5xx), then release the session lock if held.

        After a websocket (``response`` is ``None``: no cookie can be sent) the changes of a
        stored session are saved, but a new session or a regenerated id cannot reach the client,
        so neither is stored.
        """
        assert isinstance(session, QuartSession)
        state = session._state
        try:
            if response is None:
                if state.existed and not state.regenerating:
                    await state.save(time.time())
                return
            if not session.accessed:
                return  # never used (only loaded): nothing to save, no expiry renewed, as in Flask
            response.vary.add("Cookie")
            # Nothing saved on a 5xx: only a destroy (applied at once) stands.
            failed = response.status_code >= 500
            kind, sid, ttl = state.unsaved() if failed else await state.save(time.time())
            if kind == "set":
                assert sid is not None and ttl is not None
                self._set_cookie(app, response, session, sid, ttl)
            elif kind == "delete":
                self._delete_cookie(app, response)
        finally:
            await session._release_lock()

    def _set_cookie(
        self,
        app: Quart,
        response: Response | WerkzeugResponse,
        session: SessionMixin,
        sid: str,
        ttl: float,
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

    def _delete_cookie(self, app: Quart, response: Response | WerkzeugResponse) -> None:
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


async def _release_at_teardown(sender: Quart, **extra: Any) -> None:
    session = _HELD.get()
    if session is not None:
        await session._release_lock()


# -- quart state ... --------------------------------------------------------------------------

state_cli = AppGroup("state", help=STATE_HELP)


@contextmanager
def _cli_store() -> Iterator[Store]:
    """A sync :class:`Store` on the app's store URL, namespace and options, for one command.

    The commands are those of ``flask state`` (:mod:`sharedstate._statecli`) and run without an
    event loop: the same data, read and written through the sync API. (``memory://`` belongs to
    one process, so a command run in its own process sees none of a server's data.)
    """
    app = click.get_current_context().ensure_object(ScriptInfo).load_app()
    config = app.extensions.get(CONFIG_KEY)
    if not isinstance(config, StoreConfig):
        raise click.ClickException(
            f"sharedstate is not set up on app {app.name!r}: call SharedState(app) or state.init_app(app)"
        )
    with Store(config.url, namespace=config.namespace, **config.options) as store:
        yield store


add_state_commands(state_cli, _cli_store)
