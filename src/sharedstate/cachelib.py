"""``SharedStateCache``: a :class:`cachelib.BaseCache` (and Flask-Caching backend) over a ``Store``.

``SharedStateCache("sqlite:///cache.db")``, ``SharedStateCache("redis://...")`` or
``SharedStateCache(store)`` is a cachelib cache whose every operation is atomic per key across
threads, processes and machines: ``inc``/``dec`` are one atomic increment on the backend (cachelib's
own ``BaseCache.inc`` is a get then a set, so concurrent increments are lost), ``add`` stores only
if the key is absent, atomically. It is also a Flask-Caching backend:
``CACHE_TYPE = "sharedstate.cachelib.SharedStateCache"``, the store read from the app's config on
first use (see :class:`SharedStateCache`).

Needs the ``cachelib`` extra (``pip install 'sharedstate[cachelib]'``).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from sharedstate._optional import require
from sharedstate.errors import BackendUnavailableError, NotSupportedError, SerializationError
from sharedstate.store import Store

if TYPE_CHECKING:
    from cachelib import BaseCache
else:
    BaseCache = require("cachelib", "cachelib").BaseCache

__all__ = ["DEFAULT_NAMESPACE", "SharedStateCache"]

logger = logging.getLogger(__name__)

#: The part of the store a :class:`SharedStateCache` keeps its entries in, unless told otherwise.
DEFAULT_NAMESPACE = "cachelib"


class SharedStateCache(BaseCache):
    """A cachelib cache over a sharedstate :class:`~sharedstate.Store`.

    ``SharedStateCache(store=None, *, namespace="cachelib", key_prefix=None, default_timeout=300,
    ignore_delete_many_errors=True, serializer="json", secret_key=None)``

    ``store`` is a :class:`~sharedstate.Store` or a URL (``"sqlite:///cache.db"``,
    ``"redis://..."``). With ``None`` the store is taken from the Flask app in use, on first use
    (this is how Flask-Caching makes it, see below); outside an app context that raises
    ``RuntimeError``. Entries are stored at ``namespace + ":" + key_prefix + key`` in the store, so
    a cache can share a store with counters, sessions and other state: :meth:`clear` deletes the
    entries under its own ``namespace:key_prefix`` and nothing else. ``key_prefix`` may be a
    callable returning the prefix, as with cachelib's ``RedisCache``.

    Concurrency contract: every method is atomic per key across threads, processes and (server
    backends) machines. :meth:`inc`/:meth:`dec` are a single atomic increment, so no increment is
    ever lost; :meth:`add` stores only if the key is absent, atomically, so of several concurrent
    adds exactly one returns ``True``. The batched methods are atomic per key, not as a whole.

    Timeouts are cachelib's: ``None`` means ``default_timeout``, ``0`` never expires, a positive
    number of seconds or a :class:`datetime.timedelta` (rounded up to whole seconds; floats are
    rounded up with cachelib's ``DeprecationWarning``) expires after that long, and a negative
    timeout stores an entry that has already expired (``set`` removes the key and returns
    ``True``, as cachelib's ``SimpleCache`` and ``FileSystemCache`` read nothing back). A key that
    :meth:`inc` creates gets ``default_timeout``; later increments keep its expiry.

    Values use sharedstate's codec: JSON data plus datetime, date, UUID, Decimal, bytes, tuple,
    set and frozenset, with no pickle. A value outside those raises ``TypeError``
    (:class:`~sharedstate.SerializationError`, naming the key and the type) before anything is
    written, which is cachelib's contract for values it cannot serialize ("pickling errors ... will
    raise"). To cache arbitrary objects (Flask ``Response`` objects from ``@cache.cached`` views),
    pass ``serializer="pickle"`` and a ``secret_key``: every pickle is then HMAC-signed together
    with its key, and a value whose signature does not verify is never unpickled. Both apply only
    when this cache opens the store from a URL; a ``Store`` passed in keeps its own codec.

    Return values follow cachelib's documentation. When the backend cannot be reached
    (:class:`~sharedstate.BackendUnavailableError`), the error is logged on the
    ``sharedstate.cachelib`` logger, with whether the write was applied, and the method returns
    cachelib's failure value: ``None`` from ``get`` and ``inc``/``dec``, ``False`` from ``set``,
    ``add``, ``delete``, ``has`` and ``clear``, and lists without the keys concerned from
    ``set_many`` and ``delete_many`` (which raises ``RuntimeError`` instead when
    ``ignore_delete_many_errors`` is false). A stored value that cannot be read back (a pickle
    whose signature fails, data written by another tool) reads as ``None``, logged.

    Flask-Caching: ``CACHE_TYPE = "sharedstate.cachelib.SharedStateCache"``. Flask-Caching builds
    it as ``SharedStateCache(*CACHE_ARGS, default_timeout=CACHE_DEFAULT_TIMEOUT,
    ignore_delete_many_errors=CACHE_IGNORE_ERRORS, **CACHE_OPTIONS)``, without the app, so the
    store is resolved on first use, in the app's context, from the app's config:
    ``CACHE_SHAREDSTATE_URL``, else ``SHAREDSTATE_URL``, else the Flask extension's default (the
    SQLite file ``sharedstate.sqlite3`` in the app's instance folder, or ``$SHAREDSTATE_URL``); the
    namespace of the ``SharedState`` extension (``SHAREDSTATE_NAMESPACE``, default the app's module
    name); ``CACHE_KEY_PREFIX`` as ``key_prefix``; ``CACHE_SHAREDSTATE_SERIALIZER`` (``"json"``,
    or ``"pickle"``, signed with ``CACHE_SHAREDSTATE_SECRET_KEY``, else the app's
    ``SECRET_KEY``). ``CACHE_OPTIONS={"store": URL}`` names the store up front instead.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        key_prefix: str | Callable[[], str] | None = None,
        default_timeout: int | dt.timedelta = 300,
        ignore_delete_many_errors: bool = True,
        serializer: str = "json",
        secret_key: str | bytes | None = None,
    ) -> None:
        super().__init__(default_timeout, ignore_delete_many_errors=ignore_delete_many_errors)
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
        if key_prefix is not None and not (isinstance(key_prefix, str) or callable(key_prefix)):
            raise TypeError(f"key_prefix must be a str or a callable, got {type(key_prefix).__name__}")
        if isinstance(store, Store) and (serializer != "json" or secret_key is not None):
            raise ValueError(
                "serializer and secret_key apply only when the cache opens the store from a URL; "
                "a Store passed in keeps its own codec (make it with Store(url, serializer=..., "
                "secret_key=...))"
            )
        self.namespace = namespace
        self.key_prefix = key_prefix
        self._serializer = serializer
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self._store: Store | None
        if isinstance(store, str):
            self._store = Store(store, serializer=serializer, secret_key=secret_key)
        elif isinstance(store, Store):
            self._store = store
        elif store is None:
            self._store = None
            made_by = _flask_caching_caller()
            if made_by is not None:
                self._configure_from_flask(*made_by)
        else:
            raise TypeError(f"store must be a Store, a URL or None, got {type(store).__name__}")

    # -- the store and the keys ----------------------------------------------------------------

    @classmethod
    def factory(
        cls, app: Any, config: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> SharedStateCache:
        """Flask-Caching's backend constructor: the cache, its store named by ``config``.

        ``config`` is Flask-Caching's merged config (the app's, then ``Cache(config=...)``, then
        ``init_app(app, config=...)``). Flask-Caching calls this only for subclasses of its own
        ``BaseCache`` named by a ``CACHE_TYPE`` without "cachelib" in it; for
        ``"sharedstate.cachelib.SharedStateCache"`` it calls the class itself, which then finds
        the same ``app`` and ``config`` itself (see :class:`SharedStateCache`).
        """
        cache = cls(*args, **kwargs)
        if cache._store is None:
            cache._configure_from_flask(app, config)
        return cache

    @property
    def store(self) -> Store:
        """The store the entries live in (resolved from the Flask app on first use if not given)."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._configure_from_current_app()
                store = self._store
                assert store is not None
        return store

    def _configure_from_current_app(self) -> None:
        try:
            from flask import current_app, has_app_context
        except ImportError:
            in_app = False
        else:
            in_app = has_app_context()
        if not in_app:
            raise RuntimeError(
                "SharedStateCache() without a store reads it from the Flask app's config "
                "(CACHE_SHAREDSTATE_URL) on first use, which needs an app context; pass a URL or "
                "a Store (SharedStateCache('sqlite:///cache.db'), or CACHE_OPTIONS={'store': url} "
                "under Flask-Caching)"
            )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        self._configure_from_flask(app, app.config)

    def _configure_from_flask(self, app: Any, config: Mapping[str, Any]) -> None:
        from sharedstate.flask import default_namespace, default_url

        url = config.get("CACHE_SHAREDSTATE_URL") or config.get("SHAREDSTATE_URL") or default_url(app)
        namespace = config.get("SHAREDSTATE_NAMESPACE")
        if namespace is None:
            namespace = default_namespace(app)
        if self.key_prefix is None:
            self.key_prefix = config.get("CACHE_KEY_PREFIX") or None
        serializer = config.get("CACHE_SHAREDSTATE_SERIALIZER") or self._serializer
        secret_key = self._secret_key
        if serializer == "pickle" and secret_key is None:
            secret_key = config.get("CACHE_SHAREDSTATE_SECRET_KEY") or config.get("SECRET_KEY")
        self._store = Store(url, namespace=namespace, serializer=serializer, secret_key=secret_key)

    def _prefix(self) -> str:
        if self._store is None:
            self.store  # noqa: B018  # resolving the store from the app may set key_prefix
        prefix = self.key_prefix
        if prefix is None:
            prefix = ""
        elif not isinstance(prefix, str):
            prefix = prefix()
        return f"{self.namespace}:{prefix}"

    def _key(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"cache keys must be str, got {type(key).__name__}: {key!r}")
        return self._prefix() + key

    def _ttl(self, timeout: int | dt.timedelta | None) -> float | None:
        """The store's ttl for a cachelib timeout: ``None`` never expires, negative: already expired."""
        seconds = self._normalize_timeout(timeout)
        return None if seconds == 0 else float(seconds)

    @staticmethod
    def _failed(what: str, exc: BackendUnavailableError) -> None:
        applied = {True: "it was applied", False: "it was not applied", None: "it may have been applied"}
        logger.warning("SharedStateCache.%s failed (%s): %s", what, applied[exc.applied], exc)

    # -- single keys ---------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value at ``key``, or ``None`` if it is absent, expired or unreadable."""
        full = self._key(key)
        try:
            return self.store.get(full)
        except BackendUnavailableError as exc:
            self._failed("get", exc)
        except SerializationError as exc:
            logger.warning("SharedStateCache.get(%r): %s", key, exc)
        return None

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a live entry (one that has not expired)."""
        full = self._key(key)
        try:
            self.store.ttl(full)  # reads the expiry, not the value
        except KeyError:
            return False
        except BackendUnavailableError as exc:
            self._failed("has", exc)
            return False
        return True

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Store ``value`` at ``key``; ``True``, or ``False`` if the backend could not be reached.

        Raises ``TypeError`` for a value the store's codec cannot hold, before anything is written.
        """
        full = self._key(key)
        ttl = self._ttl(timeout)
        try:
            if ttl is not None and ttl < 0:
                self.store.delete(full)  # stored already expired: nothing to read back
            else:
                self.store.set(full, value, ttl)
        except BackendUnavailableError as exc:
            self._failed("set", exc)
            return False
        return True

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent (atomically); whether it was stored."""
        full = self._key(key)
        ttl = self._ttl(timeout)
        try:
            if ttl is not None and ttl < 0:
                return not self.has(key)  # "stored", already expired
            return self.store.add(full, value, ttl)
        except BackendUnavailableError as exc:
            self._failed("add", exc)
            return False

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed (and so has been deleted)."""
        full = self._key(key)
        try:
            return self.store.delete(full)
        except BackendUnavailableError as exc:
            self._failed("delete", exc)
            return False

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Atomically add ``delta`` to the integer at ``key`` (absent: 0) and return the new value.

        No increment is ever lost, across threads, processes and machines. A key this creates gets
        the default timeout. Raises ``TypeError`` if ``key`` holds something other than an integer;
        returns ``None`` if the backend could not be reached.
        """
        full = self._key(key)
        ttl = self._ttl(None)
        try:
            return self.store.incr(full, delta, ttl if ttl is None or ttl > 0 else None)
        except BackendUnavailableError as exc:
            self._failed("inc", exc)
            return None

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Atomically subtract ``delta`` (see :meth:`inc`); the new value."""
        if type(delta) is not int:
            raise TypeError(f"delta must be an int, got {type(delta).__name__}")
        return self.inc(key, -delta)

    # -- several keys --------------------------------------------------------------------------

    def get_many(self, *keys: str) -> list[Any]:
        """The values of ``keys``, in order; ``None`` for each absent, expired or unreadable one."""
        fulls = [self._key(k) for k in keys]
        try:
            found = self.store.get_many(fulls)
        except BackendUnavailableError as exc:
            self._failed("get_many", exc)
            return [None] * len(keys)
        except SerializationError:
            return [self.get(k) for k in keys]  # find, and log, the unreadable ones
        return [found.get(full) for full in fulls]

    def set_many(self, mapping: dict[str, Any], timeout: int | dt.timedelta | None = None) -> list[Any]:
        """Store every item of ``mapping``; the list of keys stored (all, or none on a backend error).

        Every value is encoded before any is written, so an unsupported one raises ``TypeError``
        with nothing written.
        """
        items = {self._key(k): v for k, v in mapping.items()}
        ttl = self._ttl(timeout)
        try:
            if ttl is not None and ttl < 0:
                self.store.delete_many(list(items))
            else:
                self.store.set_many(items, ttl)
        except BackendUnavailableError as exc:
            self._failed("set_many", exc)
            return []
        return list(mapping)

    def delete_many(self, *keys: str) -> list[Any]:
        """Remove ``keys``; the list of keys now absent (all of them, absent ones included).

        On a backend error: ``[]``, or ``RuntimeError`` if ``ignore_delete_many_errors`` is false.
        """
        fulls = [self._key(k) for k in keys]
        try:
            self.store.delete_many(fulls)
        except BackendUnavailableError as exc:
            if not self.ignore_delete_many_errors:
                raise RuntimeError(f"Failed to delete keys: {list(keys)}") from exc
            self._failed("delete_many", exc)
            return []
        return list(keys)

    def clear(self) -> bool:
        """Delete this cache's entries (under ``namespace:key_prefix``) and nothing else in the store.

        Not a snapshot: an entry written while this runs may survive it. On ``memcached://``,
        which cannot list keys, nothing is deleted and this returns ``False`` (logged).
        """
        prefix = self._prefix()
        try:
            store = self.store
            store.delete_many(store.keys(prefix))  # keys() lists them with the prefix
        except BackendUnavailableError as exc:
            self._failed("clear", exc)
            return False
        except NotSupportedError as exc:
            # memcached cannot list keys. cachelib: "not all caches support completely clearing
            # the cache"; returns whether it was cleared.
            logger.warning("SharedStateCache.clear() did nothing: %s", exc)
            return False
        return True

    def close(self) -> None:
        """Close this process's connections to the store (it reconnects if used again)."""
        if self._store is not None:
            self._store.close()

    # -- cachelib serializers do not apply -----------------------------------------------------

    @property
    def serializer(self) -> Any:
        # Flask-Caching's CACHE_SERIALIZER checks hasattr(cache, "serializer") and warns that this
        # cache does not use one; cachelib code that assigns one gets an error instead of a
        # serializer silently ignored.
        raise AttributeError(
            "SharedStateCache has no cachelib serializer: values go through sharedstate's codec "
            "(serializer='json' or 'pickle' with a secret_key)"
        )

    @serializer.setter
    def serializer(self, value: Any) -> None:
        raise TypeError(
            "SharedStateCache does not use cachelib serializers: values go through sharedstate's "
            "codec; pass serializer='pickle' and a secret_key for arbitrary objects"
        )

    def __repr__(self) -> str:
        where = repr(self._store) if self._store is not None else "<store of the Flask app>"
        return f"<SharedStateCache {where} namespace={self.namespace!r}>"


def _flask_caching_caller() -> tuple[Any, Mapping[str, Any]] | None:
    """The ``app`` and merged ``config`` of the Flask-Caching ``init_app`` making this cache, if any.

    For a ``CACHE_TYPE`` with "cachelib" in its import path, Flask-Caching (2.x) calls the class
    with only ``default_timeout``, ``ignore_delete_many_errors`` and ``CACHE_OPTIONS``, from
    ``Cache._set_cache(app, config)``. The store's URL is in that ``config`` (which holds the
    settings given to ``Cache(config=...)`` and ``init_app``, not only ``app.config``), so it is
    read from that frame. Anything else (no such frame, other local names) returns ``None`` and the
    store is resolved from the app in use on first use instead.
    """
    frame: FrameType | None = sys._getframe(2)
    try:
        for _ in range(6):  # __init__ of a subclass or two, then Flask-Caching's _set_cache
            if frame is None:
                return None
            if frame.f_code.co_name == "_set_cache" and frame.f_globals.get("__name__") == "flask_caching":
                app, config = frame.f_locals.get("app"), frame.f_locals.get("config")
                if app is not None and isinstance(config, dict):
                    return app, config
                return None
            frame = frame.f_back
        return None
    finally:
        del frame
