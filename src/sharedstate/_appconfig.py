"""What the framework extensions (Flask, Quart) share: reading ``SHAREDSTATE_*`` settings (the
store's and the sessions'), session cookie signers, and objects that act on the store of the app
in use.

Framework-neutral and stdlib-only: an app is described by its config mapping, its instance folder
and its import name, which Flask and Quart apps both have. :mod:`sharedstate.flask` and
:mod:`sharedstate.quart` build on it; neither imports the other.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from sharedstate._sessions import CookieSigner, SessionSettings
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


# -- sessions ---------------------------------------------------------------------------------------

#: The config keys of the session settings, by :class:`~sharedstate._sessions.SessionSettings` field.
SESSION_SETTING_NAMES = {
    "absolute": "SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT",
    "refresh_fraction": "SHAREDSTATE_SESSION_REFRESH_FRACTION",
    "lock_lease": "SHAREDSTATE_SESSION_LOCK_LEASE",
    "lock_timeout": "SHAREDSTATE_SESSION_LOCK_TIMEOUT",
    "permanent": "SESSION_PERMANENT",
}


def read_session_settings(
    config: Mapping[str, Any], permanent_session_lifetime: float | timedelta
) -> SessionSettings:
    """The session settings of an app, from its config; a bad one raises ``TypeError`` or
    ``ValueError`` naming its config key. Read on every request, so config changes apply at once.

    ``SHAREDSTATE_SESSION_IDLE_TIMEOUT`` (default: ``permanent_session_lifetime``, the app's
    ``PERMANENT_SESSION_LIFETIME``), ``SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT``,
    ``SESSION_REFRESH_EACH_REQUEST``, ``SHAREDSTATE_SESSION_REFRESH_FRACTION``,
    ``SHAREDSTATE_SESSION_LOCK``, ``SHAREDSTATE_SESSION_LOCK_LEASE``,
    ``SHAREDSTATE_SESSION_LOCK_TIMEOUT`` and ``SESSION_PERMANENT``. :class:`SessionSettingsCache`
    does this once per set of values.
    """
    if config.get("SHAREDSTATE_SESSION_IDLE_TIMEOUT") is not None:
        idle, idle_name = config["SHAREDSTATE_SESSION_IDLE_TIMEOUT"], "SHAREDSTATE_SESSION_IDLE_TIMEOUT"
    else:
        idle, idle_name = permanent_session_lifetime, "PERMANENT_SESSION_LIFETIME"
    return SessionSettings.create(
        idle=idle,
        absolute=config.get("SHAREDSTATE_SESSION_ABSOLUTE_TIMEOUT"),
        refresh=bool(config.get("SESSION_REFRESH_EACH_REQUEST", True)),
        refresh_fraction=config.get("SHAREDSTATE_SESSION_REFRESH_FRACTION", 0.1),
        lock=bool(config.get("SHAREDSTATE_SESSION_LOCK", False)),
        lock_lease=config.get("SHAREDSTATE_SESSION_LOCK_LEASE", 30.0),
        lock_timeout=config.get("SHAREDSTATE_SESSION_LOCK_TIMEOUT", 30.0),
        permanent=config.get("SESSION_PERMANENT", False),
        names={"idle": idle_name, **SESSION_SETTING_NAMES},
    )


#: Every config key the session settings are made from (:func:`read_session_settings`).
SESSION_CONFIG_KEYS = (
    "PERMANENT_SESSION_LIFETIME",
    "SHAREDSTATE_SESSION_IDLE_TIMEOUT",
    "SESSION_REFRESH_EACH_REQUEST",
    "SHAREDSTATE_SESSION_LOCK",
    *SESSION_SETTING_NAMES.values(),
)

SettingsT = TypeVar("SettingsT", bound=SessionSettings)


class SessionSettingsCache(Generic[SettingsT]):
    """The session settings of each app, checked and built once, not on every request.

    ``get(config, make)`` still reads the config on every request (one lookup per setting), so a
    change of the config applies at once: the settings are made again (``make()``, reading that
    config) whenever any setting's value is not the very object it was last time (compared with
    ``is``: config values are replaced, not changed in place). Thread and task safe (each app's
    entry is one tuple, replaced whole; a lost race builds the settings twice).
    """

    def __init__(self) -> None:
        self._by_config: dict[int, tuple[tuple[Any, ...], SettingsT]] = {}

    def get(self, config: Mapping[str, Any], make: Callable[[], SettingsT]) -> SettingsT:
        values = tuple(map(config.get, SESSION_CONFIG_KEYS))
        last = self._by_config.get(id(config))
        if last is not None and all(map(operator.is_, values, last[0])):
            return last[1]
        settings = make()  # raises for a bad value: nothing cached
        if len(self._by_config) > 64:  # many short-lived apps (tests): start over
            self._by_config.clear()
        self._by_config[id(config)] = (values, settings)
        return settings


class CookieSigners:
    """The cookie signer of each set of secret keys, made once (deriving keys costs an HMAC).

    :meth:`for_app` signs with ``SECRET_KEY`` and also accepts ``SECRET_KEY_FALLBACKS``, as Flask's
    and Quart's own session cookies do. Thread and task safe (a lost race makes one signer twice).
    """

    def __init__(self, salt: str) -> None:
        self.salt = salt
        self._signers: dict[tuple[bytes, ...], CookieSigner] = {}
        self._last: tuple[str | bytes | None, tuple[Any, ...], CookieSigner] | None = None

    def for_app(self, config: Mapping[str, Any], secret_key: str | bytes | None) -> CookieSigner:
        fallbacks = tuple(config.get("SECRET_KEY_FALLBACKS") or ())
        last = self._last  # the common case: the same keys as last time, nothing to encode or hash
        if last is not None and last[0] == secret_key and last[1] == fallbacks and secret_key:
            return last[2]
        keys = tuple(
            k.encode() if isinstance(k, str) else k
            for k in [*(config.get("SECRET_KEY_FALLBACKS") or ()), secret_key]
        )  # a missing key (None) makes CookieSigner raise ValueError
        signer = self._signers.get(keys)
        if signer is None:
            if len(self._signers) > 16:  # keys rotated many times: start over
                self._signers.clear()
            # itsdangerous signs with the last key and accepts any of them.
            signer = CookieSigner(keys, self.salt)
            self._signers[keys] = signer
        self._last = (secret_key, fallbacks, signer)
        return signer
