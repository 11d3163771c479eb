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
    Key namespace. Default: the app's import name, so two apps sharing one store never see each
    other's keys, while every worker process of one app shares them. ``""`` means no namespace.
``SHAREDSTATE_SESSIONS``
    ``True``: server-side sessions in the same store (``app.session_interface`` is replaced).
``SHAREDSTATE_SESSION_LOCK``
    ``True``: requests of one session run one at a time (see :mod:`sharedstate.sessions`).
``SHAREDSTATE_STORE_OPTIONS``
    Extra keyword arguments for :class:`~sharedstate.store.Store` (``serializer``, ``secret_key``,
    ``max_value_size``).
"""

from __future__ import annotations

import functools
import os
import pprint
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from sharedstate.errors import SharedStateError
from sharedstate.store import DEFAULT_FILENAME, RESERVED_PREFIX, Store
from sharedstate.urls import mask_url

if TYPE_CHECKING:
    from sharedstate.cache import CachedFunction
    from sharedstate.objects import Counter, Lock, SharedDict

P = ParamSpec("P")
T = TypeVar("T")

#: ``app.extensions`` keys: the extension object, and the app's :class:`Store`.
EXTENSION_KEY = "sharedstate"
STORE_KEY = "sharedstate.store"


def default_url(app: Flask) -> str:
    """``$SHAREDSTATE_URL``, else the file ``sharedstate.sqlite3`` in the app's instance folder.

    The instance folder is created if missing.
    """
    if os.environ.get("SHAREDSTATE_URL"):
        return os.environ["SHAREDSTATE_URL"]
    os.makedirs(app.instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(app.instance_path, DEFAULT_FILENAME)}"


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
    extension object can serve any number of apps: it keeps no app and no store on itself. Each
    app gets its own :class:`~sharedstate.store.Store` (``app.extensions["sharedstate.store"]``),
    and every method below acts on the store of :data:`flask.current_app`, so it needs an app
    context (any request has one).

    Concurrency contract: that of :class:`~sharedstate.store.Store`. Every operation is atomic
    across the threads and processes of every worker that opens the same ``SHAREDSTATE_URL`` and
    namespace; a module-level ``state`` object is safe to use from every request. The store is
    shared by the process and keeps its connections pooled: it is not closed per request.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Open the app's store from its config, register the extension and ``flask state``."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"sharedstate is already set up on app {app.name!r}; call init_app once per app"
            )
        config = app.config
        config.setdefault("SHAREDSTATE_URL", None)
        config.setdefault("SHAREDSTATE_NAMESPACE", None)
        config.setdefault("SHAREDSTATE_SESSIONS", False)
        config.setdefault("SHAREDSTATE_SESSION_LOCK", False)
        config.setdefault("SHAREDSTATE_STORE_OPTIONS", {})

        url = config["SHAREDSTATE_URL"] or default_url(app)
        namespace = config["SHAREDSTATE_NAMESPACE"]
        if namespace is None:
            namespace = app.import_name
        store = Store(url, namespace=namespace, **config["SHAREDSTATE_STORE_OPTIONS"])

        app.extensions[EXTENSION_KEY] = self
        app.extensions[STORE_KEY] = store
        if config["SHAREDSTATE_SESSIONS"]:
            from sharedstate.sessions import SharedStateSessionInterface

            app.session_interface = SharedStateSessionInterface(store)
        app.cli.add_command(state_cli)

    # -- the current app's store -------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The current app's :class:`~sharedstate.store.Store`."""
        return store_for(current_app)

    def counter(self, name: str) -> Counter:
        """An atomic integer counter at ``name`` (:meth:`Store.counter`)."""
        return self.store.counter(name)

    def dict(self, name: str) -> SharedDict:
        """A shared mapping stored one key per item (:meth:`Store.dict`)."""
        return self.store.dict(name)

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

    def lock(self, name: str, ttl: float = 30.0, timeout: float | None = None) -> Lock:
        """A lease lock with an owner token (:meth:`Store.lock`)."""
        return self.store.lock(name, ttl=ttl, timeout=timeout)

    def cached(
        self, ttl: float, stale_ttl: float | None = None, *, lease: float = 30.0, name: str | None = None
    ) -> Callable[[Callable[P, T]], CachedFunction[P, T]]:
        """``@state.cached(ttl=60)``: cache results in the current app's store.

        Usable at import time, before any app exists: the store is looked up on each call, so one
        decorated function serves every app (each in its own namespace). Calls need an app
        context. Contract: :func:`sharedstate.cache.cached`.
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

    def __repr__(self) -> str:
        return "<SharedState>"


# -- flask state ... --------------------------------------------------------------------------

state_cli = AppGroup("state", help="Inspect and manage this app's sharedstate store.")


def _clean_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Report the library's errors (backend down, not supported...) as one line, not a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except SharedStateError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    return run


def _cli_store() -> Store:
    return store_for(current_app)


def _all_keys(store: Store) -> Iterator[str]:
    """Every key of the namespace, the library's own (``_ss:...``) included."""
    yield from store.keys("")
    yield from store.keys(RESERVED_PREFIX)


def _key_arg(store: Store, key: str) -> str:
    try:
        return store.full_key(key, internal=True)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from None


@state_cli.command("list")
@click.argument("prefix", default="")
@click.option("--all", "show_all", is_flag=True, help=f"Include the library's own {RESERVED_PREFIX}* keys.")
@_clean_errors
def list_command(prefix: str, show_all: bool) -> None:
    """List the keys starting with PREFIX (namespace not shown)."""
    store = _cli_store()
    keys = store.keys(prefix)
    if show_all and not prefix.startswith(RESERVED_PREFIX) and RESERVED_PREFIX.startswith(prefix):
        keys += store.keys(RESERVED_PREFIX)  # every internal key starts with prefix
    for key in sorted(keys):
        click.echo(key)


@state_cli.command("get")
@click.argument("key")
@_clean_errors
def get_command(key: str) -> None:
    """Print the value at KEY."""
    store = _cli_store()
    full = _key_arg(store, key)
    entry = store.backend.get(full)
    if entry is None:
        raise click.ClickException(f"no key {key!r}")
    click.echo(pprint.pformat(store.decode(full, entry.value), sort_dicts=True))


@state_cli.command("delete")
@click.argument("key")
@_clean_errors
def delete_command(key: str) -> None:
    """Delete KEY."""
    store = _cli_store()
    if not store.backend.delete(_key_arg(store, key)):
        raise click.ClickException(f"no key {key!r}")
    click.echo(f"deleted {key}")


@state_cli.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_clean_errors
def clear_command(yes: bool) -> None:
    """Delete every key of this app's namespace, the library's own included."""
    store = _cli_store()
    where = f"namespace {store.namespace!r}" if store.namespace else "the whole store (no namespace)"
    if not yes:
        click.confirm(f"Delete every key in {where} of {mask_url(store.backend.describe())}?", abort=True)
    removed = 0
    for key in list(_all_keys(store)):
        if store.backend.delete(store.full_key(key, internal=True)):
            removed += 1
    click.echo(f"deleted {removed} keys")


@state_cli.command("sweep")
@_clean_errors
def sweep_command() -> None:
    """Remove expired entries now (the store also does this lazily)."""
    store = _cli_store()
    removed = batch = store.sweep(1000)
    while batch == 1000:
        batch = store.sweep(1000)
        removed += batch
    click.echo(f"swept {removed} expired entries")


@state_cli.command("stats")
@_clean_errors
def stats_command() -> None:
    """Show the backend, namespace and number of keys."""
    store = _cli_store()
    user = len(store.keys(""))
    internal = len(store.keys(RESERVED_PREFIX))
    click.echo(f"backend:   {mask_url(store.backend.describe())}")
    click.echo(f"url:       {mask_url(store.url)}")
    click.echo(f"namespace: {store.namespace!r}")
    click.echo(f"keys:      {user} (+{internal} internal)")
