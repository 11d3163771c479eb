"""What the framework extensions (Flask, Quart) share: reading ``SHAREDSTATE_*`` settings, and
objects that act on the store of the app in use.

Framework-neutral and stdlib-only: an app is described by its config mapping, its instance folder
and its import name, which Flask and Quart apps both have. :mod:`sharedstate.flask` and
:mod:`sharedstate.quart` build on it; neither imports the other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sharedstate.store import DEFAULT_FILENAME, RESERVED_PREFIX
from sharedstate.validation import key_text

#: ``app.extensions`` keys: the extension object, and the app's store.
EXTENSION_KEY = "sharedstate"
STORE_KEY = "sharedstate.store"
#: ``app.extensions`` key of the :class:`StoreConfig` the store was opened with.
CONFIG_KEY = "sharedstate.config"


def default_url(instance_path: str) -> str:
    """``$SHAREDSTATE_URL``, else the file ``sharedstate.sqlite3`` in ``instance_path``.

    The folder is created if missing.
    """
    if os.environ.get("SHAREDSTATE_URL"):
        return os.environ["SHAREDSTATE_URL"]
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(instance_path, DEFAULT_FILENAME)}"


def default_namespace(import_name: str) -> str:
    """The name of the module that made an app with ``import_name``, however the app is started.

    ``Flask(__name__)`` and ``Quart(__name__)`` get ``"__main__"`` as their import name when their
    file is run as a script (``python app.py``, ``python -m pkg.app``) and the module name when it
    is imported (``gunicorn app:app``, ``hypercorn app:app``), so a namespace taken from the import
    name gave one app two sets of data. For ``"__main__"`` this returns the name the module would
    be imported under: the ``-m`` module name (``"pkg.app"``), else the file name without ``.py``
    (``"app"``, as the app's ``name``), else ``"__main__"`` (an interactive session).
    """
    if import_name != "__main__":
        return import_name
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    filename = getattr(main, "__file__", None)
    if filename:
        return os.path.splitext(os.path.basename(str(filename)))[0]
    return "__main__"


@dataclass(frozen=True)
class StoreConfig:
    """Where an app's store is and how it is opened, as read from the app's config."""

    url: str
    namespace: str
    options: dict[str, Any] = field(default_factory=dict)
    sessions: bool = False


def read_store_config(
    config: MutableMapping[str, Any], *, instance_path: str, import_name: str
) -> StoreConfig:
    """Read the ``SHAREDSTATE_*`` store settings, filling in the defaults in ``config``.

    ``SHAREDSTATE_URL`` (default :func:`default_url`), ``SHAREDSTATE_NAMESPACE`` (default
    :func:`default_namespace`; ``""`` means none), ``SHAREDSTATE_SESSIONS``,
    ``SHAREDSTATE_SESSION_LOCK`` (read per request by the session interface) and
    ``SHAREDSTATE_STORE_OPTIONS`` (extra store keyword arguments).
    """
    config.setdefault("SHAREDSTATE_URL", None)
    config.setdefault("SHAREDSTATE_NAMESPACE", None)
    config.setdefault("SHAREDSTATE_SESSIONS", False)
    config.setdefault("SHAREDSTATE_SESSION_LOCK", False)
    config.setdefault("SHAREDSTATE_STORE_OPTIONS", {})
    url = config["SHAREDSTATE_URL"] or default_url(instance_path)
    namespace = config["SHAREDSTATE_NAMESPACE"]
    if namespace is None:
        namespace = default_namespace(import_name)
    return StoreConfig(
        url=url,
        namespace=namespace,
        options=dict(config["SHAREDSTATE_STORE_OPTIONS"]),
        sessions=bool(config["SHAREDSTATE_SESSIONS"]),
    )


def check_name(name: str, what: str) -> None:
    """The checks of a key name that need no store (the store repeats them all when used)."""
    key_text(name, what)
    if not name:
        raise ValueError(f"{what} must not be empty")
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(f"{what} {name!r}: names starting with {RESERVED_PREFIX!r} are reserved")


S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)
V = TypeVar("V")


class AppStores(Protocol[S_co]):
    """An extension that finds the store of the app in use (``SharedState`` of Flask or Quart)."""

    def _app_store(self) -> S_co | None: ...

    @property
    def store(self) -> S_co: ...


class PerStore(Generic[S, V]):
    """Makes the store's own object for the app in use, once per store, and hands it out.

    The last (store, object) pair is kept as one tuple, read and replaced whole, so threads or
    tasks that use two apps at once each get an object of their own app's store.
    """

    def __init__(self, state: AppStores[S], make: Callable[[S], V]) -> None:
        self._state = state
        self._make = make
        self._last: tuple[S, V] | None = None
        store = state._app_store()
        if store is not None:  # bound right away: the name is checked, eviction warned about
            self._last = (store, make(store))

    def get(self) -> V:
        store = self._state.store
        last = self._last
        if last is None or last[0] is not store:
            last = self._last = (store, self._make(store))
        return last[1]
