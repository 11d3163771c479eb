"""Flask integration: the :class:`SharedState` extension and the ``flask state`` command group.

>>> from flask import Flask
>>> from sharedstate.flask import SharedState
>>> app = Flask(__name__)
>>> state = SharedState(app)        # or state = SharedState(); state.init_app(app) in a factory
>>> @app.route("/")
... def home():
...     return str(state.counter("hits").incr())

Configuration (read by :meth:`SharedState.init_app`, so set it before):

``SHAREDSTATE_URL``
    Store URL. Default: the environment variable ``$SHAREDSTATE_URL`` (as for ``Store()``), else
    ``sqlite:///{app.instance_path}/sharedstate.sqlite3`` (folder created).
``SHAREDSTATE_NAMESPACE``
    Key namespace. Default: the app's module name, the same however the app is started
    (:func:`default_namespace`), so two apps sharing one store never see each other's keys, while
    every worker process of one app shares them. ``""`` means no namespace.
``SHAREDSTATE_SESSIONS``
    ``True``: server-side sessions in the same store (``app.session_interface`` is replaced).
``SHAREDSTATE_SESSION_LOCK``
    ``True``: requests of one session run one at a time (see :mod:`sharedstate.sessions`).
``SHAREDSTATE_STORE_OPTIONS``
    Extra keyword arguments for :class:`~sharedstate.store.Store` (``serializer``, ``secret_key``,
    ``max_value_size``).
"""

from __future__ import annotations

import builtins
import contextvars
import weakref
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup

from sharedstate import _appconfig
from sharedstate._appconfig import CONFIG_KEY, EXTENSION_KEY, STORE_KEY, PerStore, check_name
from sharedstate._statecli import STATE_HELP, add_state_commands
from sharedstate.errors import LockNotOwnedError
from sharedstate.objects import Counter, Lock, SharedDict
from sharedstate.store import Store
from sharedstate.validation import MIN_LEASE, seconds

if TYPE_CHECKING:
    from sharedstate.cache import CachedFunction

try:  # The app context's own variable (Flask >= 2.2): read directly, the app in use costs ~0.1 µs
    # instead of ~0.8 µs through has_app_context() and the current_app proxy, on every call of
    # every method below. The public path stays as the fallback.
    from flask.globals import _cv_app
except ImportError:  # pragma: no cover - a Flask without it
    _cv_app = None  # type: ignore[assignment,unused-ignore]

P = ParamSpec("P")
T = TypeVar("T")


def default_url(app: Flask) -> str:
    """``$SHAREDSTATE_URL``, else the file ``sharedstate.sqlite3`` in the app's instance folder.

    The instance folder is created if missing.
    """
    return _appconfig.default_url(app.instance_path)


def default_namespace(app: Flask) -> str:
    """The name of the module that made ``app``, the same however the app is started.

    ``Flask(__name__)`` gets ``"__main__"`` as its import name when its file is run as a script
    (``python app.py``, ``python -m pkg.app``) and the module name when it is imported (``gunicorn
    app:app``, ``flask --app app``), so a namespace taken from the import name gave one app two
    sets of data. For ``"__main__"`` this returns the name the module would be imported under: the
    ``-m`` module name (``"pkg.app"``), else the file name without ``.py`` (``"app"``, as Flask's
    ``app.name``), else ``"__main__"`` (an interactive session).
    """
    return _appconfig.default_namespace(app.import_name)


def store_for(app: Flask) -> Store:
    """The :class:`Store` that :meth:`SharedState.init_app` made for ``app``."""
    try:
        store = app.extensions[STORE_KEY]
    except KeyError:
        raise RuntimeError(
            f"sharedstate is not set up on app {app.name!r}: call SharedState(app) or "
            "state.init_app(app) in your app factory"
        ) from None
    assert isinstance(store, Store)
    return store


class SharedState:
    """State shared between requests, threads, worker processes and machines of a Flask app.

    ``SharedState(app)``, or ``SharedState()`` then ``init_app(app)`` for app factories. One
    extension object can serve any number of apps: each gets its own
    :class:`~sharedstate.store.Store` (``app.extensions["sharedstate.store"]``), and every method
    below acts on the store of the app in use: :data:`flask.current_app` inside an app context (any
    request has one); outside any app context, the app given to ``SharedState(app)``, if any (it is
    held by a weak reference); else ``RuntimeError``.

    The objects (:meth:`counter`, :meth:`dict`, :meth:`lock`) can be made at import time, before
    any app exists (``settings = state.dict("settings")`` at module level): they look up the app in
    use each time they are used, like :meth:`cached` functions, so one object serves every app.

    Concurrency contract: that of :class:`~sharedstate.store.Store`. Every operation is atomic
    across the threads and processes of every worker that opens the same ``SHAREDSTATE_URL`` and
    namespace; a module-level ``state`` object, and module-level objects made by it, are safe to use
    from every request (a module-level :meth:`lock` is held per request context, see
    :class:`AppLock`). The store is shared by the process and keeps its connections pooled: it is
    not closed per request.
    """

    def __init__(self, app: Flask | None = None) -> None:
        # The app used outside app contexts. Weak, so the extension never keeps an app alive.
        self._default_app: weakref.ref[Flask] | None = None
        if app is not None:
            self.init_app(app)
            self._default_app = weakref.ref(app)

    def init_app(self, app: Flask) -> None:
        """Open the app's store from its config, register the extension and ``flask state``."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"sharedstate is already set up on app {app.name!r}; call init_app once per app"
            )
        settings = _appconfig.read_store_config(
            app.config, instance_path=app.instance_path, import_name=app.import_name
        )
        store = Store(settings.url, namespace=settings.namespace, **settings.options)

        app.extensions[EXTENSION_KEY] = self
        app.extensions[STORE_KEY] = store
        app.extensions[CONFIG_KEY] = settings
        if settings.sessions:
            from sharedstate.sessions import SharedStateSessionInterface

            app.session_interface = SharedStateSessionInterface(store)
        app.cli.add_command(state_cli)

    # -- the store of the app in use ---------------------------------------------------------

    def _app_store(self) -> Store | None:
        """The store of the app in use, or ``None`` if there is none (see the class doc)."""
        app: Flask | None
        if _cv_app is not None:
            ctx = _cv_app.get(None)
            app = None if ctx is None else ctx.app
        else:  # pragma: no cover - a Flask without _cv_app
            app = current_app._get_current_object() if has_app_context() else None
        if app is None:
            app = None if self._default_app is None else self._default_app()
            if app is None:
                return None
        store = app.extensions.get(STORE_KEY)
        return store if isinstance(store, Store) else store_for(app)

    @property
    def store(self) -> Store:
        """The :class:`~sharedstate.store.Store` of the app in use."""
        store = self._app_store()
        if store is None:
            raise RuntimeError(
                "Working outside of application context: sharedstate acts on the store of the app "
                "in use. Use it in a request, a CLI command or `with app.app_context():`, or create "
                "the extension with SharedState(app) to use that app's store outside of app contexts"
            )
        return store

    def counter(self, name: str) -> Counter:
        """An atomic integer counter at ``name`` (:meth:`Store.counter`) of the app in use.

        Can be made at import time; see :class:`AppCounter`.
        """
        return AppCounter(self, name)

    def dict(self, name: str) -> SharedDict:
        """A shared mapping stored one key per item (:meth:`Store.dict`) of the app in use.

        Can be made at import time; see :class:`AppDict`.
        """
        return AppDict(self, name)

    def lock(
        self, name: str, ttl: float = 30.0, timeout: float | None = None, *, blocking: bool = True
    ) -> Lock:
        """A lease lock with an owner token (:meth:`Store.lock`) in the store of the app in use.

        ``blocking=False``, as in :mod:`threading`: ``with`` tries once and raises ``LockTimeout``;
        ``acquire()`` returns ``False`` if the lock is taken. Can be made at import time and shared
        by every request: see :class:`AppLock`.
        """
        return AppLock(self, name, ttl=ttl, timeout=timeout, blocking=blocking)

    def edit(
        self,
        name: str,
        default: Any = None,
        *,
        ttl: float | None = None,
        lease: float = 30.0,
        timeout: float | None = None,
    ) -> AbstractContextManager[Any]:
        """Edit a dict or list in place under a lock on ``name`` alone (:meth:`Store.edit`)."""
        return self.store.edit(name, default, ttl=ttl, lease=lease, timeout=timeout)

    def update(
        self, name: str, fn: Callable[[Any], T], default: Any = None, *, ttl: float | None = None
    ) -> T:
        """Replace the value at ``name`` with ``fn(value)`` by compare-and-set (:meth:`Store.update`)."""
        return self.store.update(name, fn, default, ttl=ttl)

    def cached(
        self, ttl: float, stale_ttl: float | None = None, *, lease: float = 30.0, name: str | None = None
    ) -> Callable[[Callable[P, T]], CachedFunction[P, T]]:
        """``@state.cached(ttl=60)``: cache results in the store of the app in use.

        Usable at import time, before any app exists: the store is looked up on each call, so one
        decorated function serves every app (each in its own namespace). Calls need an app
        context, or ``SharedState(app)``. Contract: :func:`sharedstate.cache.cached`.
        """
        from sharedstate.cache import cached

        return cached(lambda: self.store, ttl, stale_ttl=stale_ttl, lease=lease, name=name)

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` if absent or expired."""
        return self.store.get(key, default)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, expiring after ``ttl`` seconds if given."""
        self.store.set(key, value, ttl)

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; whether it was stored. Atomic."""
        return self.store.add(key, value, ttl)

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return self.store.delete(key)

    def incr(self, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``by`` to the integer at ``key`` (missing: 0); the new value."""
        return self.store.incr(key, by, ttl)

    def touch(self, key: str, ttl: float | None) -> bool:
        """Give ``key`` a new expiry without rewriting it; whether it existed."""
        return self.store.touch(key, ttl)

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix`` (namespace stripped), sorted."""
        return self.store.keys(prefix)

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires (``None``: never); ``KeyError`` if absent."""
        return self.store.ttl(key)

    def get_many(self, keys: Iterable[str]) -> builtins.dict[str, Any]:
        """The present keys among ``keys`` and their values, in one round trip where possible."""
        return self.store.get_many(keys)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item (each atomically; nothing if one item is refused)."""
        self.store.set_many(mapping, ttl)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; how many existed."""
        return self.store.delete_many(keys)

    def ping(self) -> None:
        """Raise ``BackendUnavailableError`` if the store does not answer."""
        self.store.ping()

    def __repr__(self) -> str:
        return "<SharedState>"


# -- objects of the app in use --------------------------------------------------------------------


class AppCounter(Counter):
    """A :class:`~sharedstate.objects.Counter` of the app in use (``state.counter(name)``).

    Each call acts on the store of the app in use (see :class:`SharedState`), so it can be made at
    import time and serves every app. Contract: that of ``Counter``.
    """

    def __init__(self, state: SharedState, name: str) -> None:
        # No Counter.__init__: every method is overridden to act on the app's own Counter.
        check_name(name, "counter name")
        self.name = name
        self._of_app = PerStore(state, lambda store: store.counter(name))

    def _counter(self) -> Counter:
        return self._of_app.get()

    def incr(self, by: int = 1) -> int:
        return self._counter().incr(by)

    def decr(self, by: int = 1) -> int:
        return self._counter().decr(by)

    def get(self) -> int:
        return self._counter().get()

    def reset(self, to: int = 0) -> None:
        self._counter().reset(to)

    def __repr__(self) -> str:
        return f"<AppCounter {self.name!r}>"


class AppDict(SharedDict):
    """A :class:`~sharedstate.objects.SharedDict` of the app in use (``state.dict(name)``).

    Each call acts on the store of the app in use (see :class:`SharedState`), so
    ``settings = state.dict("settings")`` can sit at module level and serves every app. Contract:
    that of ``SharedDict`` (each item operation atomic; ``setdefault``, ``pop``, ``incr`` and
    ``update_item`` atomic read-modify-writes).
    """

    def __init__(self, state: SharedState, name: str) -> None:
        # No SharedDict.__init__: every method is overridden to act on the app's own SharedDict.
        check_name(name, "dict name")
        self.name = name
        self._of_app = PerStore(state, lambda store: store.dict(name))

    def _dict(self) -> SharedDict:
        return self._of_app.get()

    def __getitem__(self, item: str) -> Any:
        return self._dict()[item]

    def get(self, item: str, default: Any = None) -> Any:
        return self._dict().get(item, default)

    def __setitem__(self, item: str, value: Any) -> None:
        self._dict()[item] = value

    def __delitem__(self, item: str) -> None:
        del self._dict()[item]

    def __contains__(self, item: object) -> bool:
        return item in self._dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def setdefault(self, item: str, default: Any = None) -> Any:
        return self._dict().setdefault(item, default)

    def pop(self, item: str, *default: Any) -> Any:
        return self._dict().pop(item, *default)

    def clear(self) -> None:
        self._dict().clear()

    def incr(self, item: str, by: int = 1) -> int:
        return self._dict().incr(item, by)

    def update_item(self, item: str, fn: Callable[[Any], T], default: Any = None) -> T:
        return self._dict().update_item(item, fn, default)

    # The method forms the sync SharedDict shares with AsyncDict (generated from it).
    def set(self, item: str, value: Any) -> None:
        self._dict().set(item, value)

    def delete(self, item: str) -> bool:
        return self._dict().delete(item)

    def contains(self, item: object) -> bool:
        return self._dict().contains(item)

    def len(self) -> int:
        return self._dict().len()

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return self._dict().keys()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return self._dict().items()

    def values(self) -> ValuesView[Any]:
        return self._dict().values()

    def __repr__(self) -> str:
        return f"<AppDict {self.name!r}>"


@dataclass
class _Holding:
    lock: Lock
    token: contextvars.Token[_Holding | None] | None = None


class AppLock(Lock):
    """A :class:`~sharedstate.objects.Lock` of the app in use (``state.lock(name, ...)``).

    Unlike a plain ``Lock`` (one owner per object), one ``AppLock`` can be shared by every request,
    as a module-level ``threading.Lock`` would be::

        report_lock = state.lock("nightly-report", ttl=60)     # module level

        @app.post("/report")
        def report():
            with report_lock:      # one request at a time, across every thread, process, machine
                ...

    Each acquisition takes a new ``Lock`` in the store of the app in use and holds it for the
    current context (thread, greenlet or task: a :mod:`contextvars` variable): ``release``,
    ``extend``, ``owned`` and ``fencing_token`` act on the one this context holds, and releasing
    a lock held by another context raises ``LockNotOwnedError``. Not reentrant: acquiring it again
    in the context that holds it raises ``RuntimeError``.
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
        # No Lock.__init__: every method is overridden to act on the Lock this context holds.
        check_name(name, "lock name")
        self.name = name
        self.ttl = seconds("ttl", ttl, minimum=MIN_LEASE)
        self.timeout = timeout
        self.blocking = blocking
        self._state = state
        self._held: contextvars.ContextVar[_Holding | None] = contextvars.ContextVar(
            f"sharedstate.AppLock({name!r})", default=None
        )
        store = state._app_store()
        if store is not None:
            self._new_lock(store)  # checks ttl, timeout and blocking the way the store does

    def _new_lock(self, store: Store) -> Lock:
        return store.lock(self.name, ttl=self.ttl, timeout=self.timeout, blocking=self.blocking)

    def _holding(self) -> _Holding:
        holding = self._held.get()
        if holding is None:
            raise LockNotOwnedError(f"lock {self.name!r} is not held in this context")
        return holding

    def _hold(self, lock: Lock) -> None:
        holding = _Holding(lock)
        holding.token = self._held.set(holding)

    def _forget(self, holding: _Holding) -> None:
        try:
            assert holding.token is not None
            self._held.reset(holding.token)  # leaves no trace in a long-lived context
        except ValueError:  # released in a copy of the context it was taken in
            self._held.set(None)

    def _check_not_held(self) -> None:
        holding = self._held.get()
        if holding is not None:
            if holding.lock.owned:
                raise RuntimeError(f"lock {self.name!r} is already held in this context")
            self._forget(holding)  # its lease ran out: take it anew

    @property
    def locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return self._new_lock(self._state.store).locked

    @property
    def owned(self) -> bool:
        """Whether this context holds the lock now (its lease has not run out)."""
        holding = self._held.get()
        return holding is not None and holding.lock.owned

    @property
    def fencing_token(self) -> int | None:
        """The fencing token of this context's acquisition; ``None`` if it holds none."""
        holding = self._held.get()
        return None if holding is None else holding.lock.fencing_token

    @fencing_token.setter
    def fencing_token(self, value: int | None) -> None:
        raise AttributeError("fencing_token is set by acquire")

    def acquire(self, *args: Any, **kwargs: Any) -> int:
        """Take the lock for this context: :meth:`Lock.acquire` (same arguments and result)."""
        self._check_not_held()
        lock = self._new_lock(self._state.store)
        result = lock.acquire(*args, **kwargs)
        if result is not False:  # blocking=False returns False when the lock is taken
            self._hold(lock)
        return result

    def release(self) -> None:
        """Release this context's hold. ``LockNotOwnedError`` if it holds none or its lease ran out."""
        holding = self._holding()
        self._forget(holding)
        holding.lock.release()

    def extend(self, ttl: float | None = None) -> None:
        """Renew this context's lease (:meth:`Lock.extend`)."""
        self._holding().lock.extend(ttl)

    def __enter__(self) -> AppLock:
        self._check_not_held()
        lock = self._new_lock(self._state.store)
        lock.__enter__()
        self._hold(lock)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<AppLock {self.name!r} ttl={self.ttl}>"


# -- flask state ... --------------------------------------------------------------------------

state_cli = AppGroup("state", help=STATE_HELP)


@contextmanager
def _cli_store() -> Iterator[Store]:
    """The store of the app of the command (Flask's ``AppGroup`` gives it an app context)."""
    yield store_for(current_app)


add_state_commands(state_cli, _cli_store)
