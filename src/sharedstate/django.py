"""Django cache backend: ``sharedstate.django.SharedStateCache``.

One setting switches a Django project's cache to a sharedstate store::

    CACHES = {
        "default": {
            "BACKEND": "sharedstate.django.SharedStateCache",
            "LOCATION": "sqlite:////var/lib/app/cache.db",   # any sharedstate URL
        }
    }

Everything in Django's cache contract works: ``get``/``set``/``add``/``touch``/``delete``,
``get_or_set``, ``get_many``/``set_many``/``delete_many``, ``has_key``, ``incr``/``decr``,
``clear``, versions (``version=``, ``incr_version``/``decr_version``), ``KEY_PREFIX``,
``KEY_FUNCTION``, ``TIMEOUT``, and the ``a``-prefixed async methods, which are native (they await
an :class:`~sharedstate.AsyncStore`; no thread hop through ``sync_to_async``).

Concurrency contract: every method is atomic per key across threads, processes and (server
backends) machines, as the store's operations are. ``incr``/``decr`` are the store's atomic
``incr``: no increment is ever lost, and the entry keeps its expiry. Django requires ``incr`` of a
missing key to raise ``ValueError``; the store's ``incr`` would create it, so the key's presence is
read first. If the key is deleted or expires between that read and the increment, the increment
creates it (holding ``delta``, with the cache's default timeout), as Django's Redis backend does.
``incr`` of a value that is not an integer (``None``, a str, a float) raises ``TypeError`` and
leaves it unchanged.

OPTIONS (all optional, lower or upper case):

``serializer``
    ``"pickle"`` (default) or ``"json"``. Django caches arbitrary objects (responses, querysets,
    model instances), so the default is pickle, and every pickled value is HMAC-signed together
    with its key: whoever can write to the cache server still cannot make the app unpickle their
    data. ``"json"`` stores only the types listed in :mod:`sharedstate.codecs`.
``secret_key``
    The key that signs pickles. Default: a key derived from ``settings.SECRET_KEY`` with
    :func:`django.utils.crypto.salted_hmac` (salt ``"sharedstate.django.SharedStateCache"``), so a
    signature made for the cache is never valid anywhere else Django signs with ``SECRET_KEY``.
    After ``SECRET_KEY`` changes, entries signed with the old one read as misses (and a warning is
    logged on the ``sharedstate.django`` logger), so they are recomputed.
``namespace``
    The sharedstate namespace holding this cache's entries. Default: ``"django-cache"``, or
    ``"django-cache:<KEY_PREFIX>"`` when ``KEY_PREFIX`` is set. ``clear()`` removes every entry of
    the namespace and nothing else in the store: caches with different ``KEY_PREFIX`` es, or the
    counters, sessions and locks of the same URL, are never touched.
``max_value_size``
    The largest encoded value in bytes (default 1 MiB); a larger one raises
    ``ValueTooLargeError`` before anything is written.

``MAX_ENTRIES`` and ``CULL_FREQUENCY`` are refused (``InvalidCacheBackendError``): this backend
never culls; entries leave when their timeout ends or on ``clear()``.

Timeouts follow Django exactly: ``None`` never expires, ``0`` or a negative number means "do not
cache" (``set`` removes the key, ``add`` stores nothing and returns whether the key was absent,
``touch`` removes the key), a float is allowed. A timeout over 100 years is stored without expiry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    InvalidCacheBackendError,
    InvalidCacheKey,
)
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac

from sharedstate._async.store import AsyncStore, default_url
from sharedstate.codecs import UnpicklableValueError
from sharedstate.errors import SerializationError
from sharedstate.store import RESERVED_PREFIX, Store
from sharedstate.validation import MAX_SECONDS, key_text, seconds

__all__ = ["DEFAULT_NAMESPACE", "SharedStateCache", "UnpicklableValueError"]

logger = logging.getLogger("sharedstate.django")

#: The namespace of a cache without ``KEY_PREFIX`` (and without the ``namespace`` option).
DEFAULT_NAMESPACE = "django-cache"

_SALT = "sharedstate.django.SharedStateCache"
_OPTIONS = ("serializer", "secret_key", "namespace", "max_value_size")


class _Expired:
    """The timeout of an entry that must not be cached (Django's ``0`` or negative)."""


_EXPIRED = _Expired()
_MISSING = object()
_BATCH = 500  # keys per delete_many round trip in clear()

# One Store per configuration and process, shared by every thread (Django builds one cache object
# per thread; a store per thread would open a pool per thread). A Store survives fork.
_stores: dict[tuple[Any, ...], Store] = {}
_stores_lock = threading.Lock()


def _escape(prefix: str) -> str:
    """``KEY_PREFIX`` as namespace text: a namespace may not hold ``/``."""
    return prefix.replace("%", "%25").replace("/", "%2F")


class SharedStateCache(BaseCache):  # type: ignore[misc]  # Django ships no type information
    """A Django cache whose entries live in a sharedstate store (``LOCATION`` is its URL).

    See the module docstring for the settings and the concurrency contract.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        raw_options = params.get("OPTIONS") or {}
        options = {str(k).lower(): v for k, v in raw_options.items()}
        culling = [k for k in raw_options if str(k).lower() in ("max_entries", "cull_frequency")]
        if culling:
            raise InvalidCacheBackendError(
                f"SharedStateCache does not cull, so OPTIONS {', '.join(map(repr, culling))} would have "
                "no effect: entries leave when their timeout ends or on clear(). Remove the option"
            )
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise InvalidCacheBackendError(
                f"unknown SharedStateCache OPTIONS {unknown}; known: {', '.join(_OPTIONS)}"
            )
        serializer = options.get("serializer", "pickle")
        if serializer not in ("pickle", "json"):
            raise InvalidCacheBackendError(
                f"SharedStateCache OPTIONS serializer must be 'pickle' or 'json', got {serializer!r}"
            )
        secret: str | bytes | None = None
        if serializer == "pickle":
            secret = options.get("secret_key") or self._derived_secret()
        prefix = str(self.key_prefix)
        default_ns = f"{DEFAULT_NAMESPACE}:{_escape(prefix)}" if prefix else DEFAULT_NAMESPACE
        self.namespace: str = options.get("namespace", default_ns)
        if not self.namespace or not isinstance(self.namespace, str):
            raise InvalidCacheBackendError(
                "SharedStateCache OPTIONS namespace must be a non-empty str: clear() empties the "
                "whole namespace, and with none that would be the whole store"
            )
        if not isinstance(location, str):
            raise InvalidCacheBackendError(
                "SharedStateCache LOCATION must be one sharedstate URL (a str), got "
                f"{type(location).__name__}"
            )
        self.location: str = location or default_url()
        self._pickle = serializer == "pickle"
        self._store_args: dict[str, Any] = {
            "namespace": self.namespace,
            "serializer": serializer,
            "secret_key": secret,
            "max_value_size": options.get("max_value_size", 1024 * 1024),
        }
        config = (self.location, *sorted(self._store_args.items()))
        with _stores_lock:
            store = _stores.get(config)
            if store is None:
                store = _stores[config] = Store(self.location, **self._store_args)
        self._store = store
        self._async_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncStore] = (
            weakref.WeakKeyDictionary()
        )
        self._async_lock = threading.Lock()

    @staticmethod
    def _derived_secret() -> bytes:
        try:
            secret = settings.SECRET_KEY
        except ImproperlyConfigured:  # empty, or settings not configured
            secret = ""
        if not secret:
            raise InvalidCacheBackendError(
                "SharedStateCache signs its pickles with a key derived from settings.SECRET_KEY, "
                "which is empty or not configured: set SECRET_KEY, or OPTIONS secret_key, or "
                "OPTIONS serializer 'json'"
            )
        digest: bytes = salted_hmac(_SALT, "pickle-signing-key", secret=secret, algorithm="sha256").digest()
        return digest

    @property
    def store(self) -> Store:
        """The :class:`~sharedstate.Store` holding this cache (shared by every thread)."""
        return self._store

    def _astore(self) -> AsyncStore:
        """The :class:`~sharedstate.AsyncStore` of the running event loop (one per loop)."""
        loop = asyncio.get_running_loop()
        store = self._async_stores.get(loop)
        if store is None:
            with self._async_lock:
                store = self._async_stores.get(loop)
                if store is None:
                    store = self._async_stores[loop] = AsyncStore(self.location, **self._store_args)
        return store

    # -- keys, timeouts, values ---------------------------------------------------------------

    def validate_key(self, key: str) -> None:
        """Warn about keys memcached would refuse (as Django's own backends do); refuse keys no
        sharedstate backend can store (NUL, lone surrogates, the reserved ``_ss:`` prefix) with
        ``InvalidCacheKey``."""
        super().validate_key(key)
        try:
            key_text(key, "cache key")
        except (TypeError, ValueError) as exc:
            raise InvalidCacheKey(str(exc)) from None
        if not key:
            raise InvalidCacheKey("cache key must not be empty (check KEY_FUNCTION)")
        if key.startswith(RESERVED_PREFIX):
            raise InvalidCacheKey(
                f"cache key {key!r} starts with {RESERVED_PREFIX!r}, which sharedstate reserves "
                "(check KEY_PREFIX and KEY_FUNCTION)"
            )

    def _key(self, key: Any, version: int | None) -> str:
        made: str = self.make_and_validate_key(key, version=version)
        return made

    def _ttl(self, timeout: Any) -> float | _Expired | None:
        """Django's timeout as a store ttl: ``None`` forever, ``_EXPIRED`` for 0 or negative."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        if not isinstance(timeout, bool) and isinstance(timeout, (int, float)):
            if timeout <= 0:
                return _EXPIRED
            if timeout > MAX_SECONDS:
                return None
        checked: float = seconds("timeout", timeout)
        return checked

    def _incr_ttl(self) -> float | None:
        """The ttl of an entry ``incr`` creates (only in the race where the key just vanished)."""
        ttl = self._ttl(DEFAULT_TIMEOUT)
        return 0.001 if isinstance(ttl, _Expired) else ttl

    def _unreadable(self, key: str, exc: SerializationError) -> None:
        logger.warning("sharedstate cache %s: entry %r counts as a miss: %s", self.namespace, key, exc)

    def _write_error(self, exc: SerializationError) -> Exception:
        if self._pickle and not isinstance(exc, UnpicklableValueError):
            return UnpicklableValueError(str(exc))
        return exc

    # -- sync API ----------------------------------------------------------------------------

    def _get(self, k: str, default: Any) -> Any:
        try:
            return self._store.get(k, default)
        except SerializationError as exc:
            self._unreadable(k, exc)
            return default

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._get(self._key(key, version), default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        k = self._key(key, version)
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            self._store.delete(k)
            return
        try:
            self._store.set(k, value, ttl)
        except SerializationError as exc:
            raise self._write_error(exc) from exc

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        k = self._key(key, version)
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):  # stored and gone at once: it was added if it was absent
            return not self._has(k)
        try:
            return self._store.add(k, value, ttl)
        except SerializationError as exc:
            raise self._write_error(exc) from exc

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        k = self._key(key, version)
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            return self._store.delete(k)
        return self._store.touch(k, ttl)

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._store.delete(self._key(key, version))

    def _has(self, k: str) -> bool:
        try:
            self._store.ttl(k)
        except KeyError:
            return False
        return True

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Whether ``key`` is present and live (one round trip; the value is not read)."""
        return self._has(self._key(key, version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        k = self._key(key, version)
        if not self._has(k):
            raise ValueError(f"Key '{key}' not found")
        return self._store.incr(k, delta, self._incr_ttl())

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made = {self._key(key, version): key for key in keys}
        if not made:
            return {}
        try:
            found = self._store.get_many(list(made))
        except SerializationError:  # one unreadable entry: read one by one, it counts as a miss
            found = {k: v for k in made if (v := self._get(k, _MISSING)) is not _MISSING}
        return {made[k]: v for k, v in found.items()}

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Store every item, or (an unsupported value, a bad key) raise with nothing stored.

        Returns ``[]``: no key ever fails alone.
        """
        items = {self._key(key, version): value for key, value in data.items()}
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            if items:
                self._store.delete_many(list(items))
            return []
        try:
            self._store.set_many(items, ttl)
        except SerializationError as exc:
            raise self._write_error(exc) from exc
        return []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        made = [self._key(key, version) for key in keys]
        if made:
            self._store.delete_many(made)

    def clear(self) -> None:
        """Remove every entry of this cache's namespace (nothing else in the store)."""
        store = self._store
        keys = store.keys()
        for i in range(0, len(keys), _BATCH):
            store.delete_many(keys[i : i + _BATCH])

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` to version ``version + delta``; return the new version.

        Unlike Django's default, the entry keeps the time it had left (not a fresh default
        timeout). Not atomic across the two keys, as in Django: a concurrent writer of either
        version may interleave.
        """
        if version is None:
            version = self.version
        old, new = self._key(key, version), self._key(key, version + delta)
        value = self._get(old, _MISSING)
        ttl = self._left(old) if value is not _MISSING else _EXPIRED
        if isinstance(ttl, _Expired):
            raise ValueError(f"Key '{key}' not found")
        self._store.set(new, value, ttl)
        self._store.delete(old)
        return int(version + delta)

    def _left(self, k: str) -> float | _Expired | None:
        try:
            ttl = self._store.ttl(k)
        except KeyError:
            return _EXPIRED
        return _EXPIRED if ttl is not None and ttl <= 0 else ttl

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: Django calls this after every request, and the store keeps its
        connections pooled across requests (and reopens them after a fork)."""

    # -- async API (native: awaits an AsyncStore) --------------------------------------------

    async def _aget(self, k: str, default: Any) -> Any:
        try:
            return await self._astore().get(k, default)
        except SerializationError as exc:
            self._unreadable(k, exc)
            return default

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return await self._aget(self._key(key, version), default)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        k = self._key(key, version)
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            await self._astore().delete(k)
            return
        try:
            await self._astore().set(k, value, ttl)
        except SerializationError as exc:
            raise self._write_error(exc) from exc

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        k = self._key(key, version)
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            return not await self._ahas(k)
        try:
            return await self._astore().add(k, value, ttl)
        except SerializationError as exc:
            raise self._write_error(exc) from exc

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        k = self._key(key, version)
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            return await self._astore().delete(k)
        return await self._astore().touch(k, ttl)

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return await self._astore().delete(self._key(key, version))

    async def _ahas(self, k: str) -> bool:
        try:
            await self._astore().ttl(k)
        except KeyError:
            return False
        return True

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return await self._ahas(self._key(key, version))

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        k = self._key(key, version)
        if not await self._ahas(k):
            raise ValueError(f"Key '{key}' not found")
        return await self._astore().incr(k, delta, self._incr_ttl())

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made = {self._key(key, version): key for key in keys}
        if not made:
            return {}
        try:
            found = await self._astore().get_many(list(made))
        except SerializationError:
            found = {k: v for k in made if (v := await self._aget(k, _MISSING)) is not _MISSING}
        return {made[k]: v for k, v in found.items()}

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        items = {self._key(key, version): value for key, value in data.items()}
        ttl = self._ttl(timeout)
        if isinstance(ttl, _Expired):
            if items:
                await self._astore().delete_many(list(items))
            return []
        try:
            await self._astore().set_many(items, ttl)
        except SerializationError as exc:
            raise self._write_error(exc) from exc
        return []

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        made = [self._key(key, version) for key in keys]
        if made:
            await self._astore().delete_many(made)

    async def aclear(self) -> None:
        """See :meth:`clear`."""
        store = self._astore()
        keys = await store.keys()
        for i in range(0, len(keys), _BATCH):
            await store.delete_many(keys[i : i + _BATCH])

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """See :meth:`incr_version`."""
        if version is None:
            version = self.version
        old, new = self._key(key, version), self._key(key, version + delta)
        value = await self._aget(old, _MISSING)
        ttl = await self._aleft(old) if value is not _MISSING else _EXPIRED
        if isinstance(ttl, _Expired):
            raise ValueError(f"Key '{key}' not found")
        store = self._astore()
        await store.set(new, value, ttl)
        await store.delete(old)
        return int(version + delta)

    async def _aleft(self, k: str) -> float | _Expired | None:
        try:
            ttl = await self._astore().ttl(k)
        except KeyError:
            return _EXPIRED
        return _EXPIRED if ttl is not None and ttl <= 0 else ttl

    async def aclose(self, **kwargs: Any) -> None:
        """See :meth:`close`."""
