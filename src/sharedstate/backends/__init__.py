"""Backends, chosen by URL scheme from a registry built from the schemes each backend declares.

Each built-in backend module holds a sync backend class and its async twin; :data:`_BUILTIN`
names them, and nothing else: the schemes come from the sync class's ``schemes``. A module is
imported only when a URL needs it (in the order of :data:`_BUILTIN`, so ``sqlite://`` never imports
the server drivers), so optional client libraries (redis, psycopg, pymemcache, lmdb) are needed only by
the people who use them. Two backends claiming one scheme is an error, whichever registers second.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from sharedstate.backends.base import AsyncBackend, Backend, CasResult, Entry, RawValue, Version
from sharedstate.errors import NotSupportedError

# sharedstate.urls (urllib.parse) is imported when a URL is opened, not with the package: see
# _scheme, and tests/test_import_cost.py.

BackendFactory = Callable[[str], Backend]
AsyncBackendFactory = Callable[[str], AsyncBackend]

#: The built-in backends: (module, sync class, async class). Their schemes come from the classes.
#: An async class the module does not define (yet) makes its URLs fail clearly in
#: :func:`async_backend_from_url`, and nowhere else.
_BUILTIN: tuple[tuple[str, str, str], ...] = (
    ("sharedstate.backends.memory", "MemoryBackend", "AsyncMemoryBackend"),
    ("sharedstate.backends.sqlite", "SQLiteBackend", "AsyncSQLiteBackend"),
    ("sharedstate.backends.redis", "RedisBackend", "AsyncRedisBackend"),
    ("sharedstate.backends.postgres", "PostgresBackend", "AsyncPostgresBackend"),
    ("sharedstate.backends.memcached", "MemcachedBackend", "AsyncMemcachedBackend"),
    ("sharedstate.backends.lmdb", "LMDBBackend", "AsyncLMDBBackend"),
)


class _Registration(NamedTuple):
    """What serves one scheme: a sync factory and an async one (``None``: no async backend)."""

    sync: str | BackendFactory  # "module:Class" or a callable taking the URL
    async_: str | AsyncBackendFactory | None
    origin: str  # for clash messages


class _Registry:
    """Scheme -> registration; built-in modules are loaded on demand, in ``_BUILTIN`` order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._schemes: dict[str, _Registration] = {}
        self._pending = list(_BUILTIN)
        self._failed: dict[str, ImportError] = {}  # module -> why it could not be imported

    def add(self, scheme: str, registration: _Registration) -> None:
        with self._lock:
            taken = self._schemes.get(scheme)
            if taken is not None:
                raise ValueError(
                    f"a backend is already registered for scheme {scheme!r} ({taken.origin}); "
                    f"{registration.origin} cannot take it too"
                )
            self._schemes[scheme] = registration

    def lookup(self, scheme: str) -> _Registration | None:
        with self._lock:
            while scheme not in self._schemes and self._pending:
                self._load_next()
            return self._schemes.get(scheme)

    def load_all(self) -> None:
        with self._lock:
            while self._pending:
                self._load_next()

    def schemes(self) -> list[str]:
        self.load_all()
        return sorted(self._schemes)

    def failures(self) -> dict[str, ImportError]:
        return dict(self._failed)

    def _load_next(self) -> None:
        module_name, sync_name, async_name = self._pending.pop(0)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # its driver is not installed: its schemes stay unknown
            self._failed[module_name] = exc
            return
        sync_class: type[Backend] = getattr(module, sync_name)
        async_class = getattr(module, async_name, None)
        declared = getattr(async_class, "schemes", ())
        if declared and set(declared) != set(sync_class.schemes):  # undeclared: the sync class's
            raise ValueError(
                f"{module_name}: {async_name}.schemes {declared} differ from "
                f"{sync_name}.schemes {sync_class.schemes}"
            )
        registration = _Registration(
            f"{module_name}:{sync_name}", f"{module_name}:{async_name}", f"{module_name}.{sync_name}"
        )
        for scheme in sync_class.schemes:
            self.add(scheme, registration)


_REGISTRY = _Registry()


def known_schemes() -> list[str]:
    """The URL schemes a store can be opened with (built-in backends whose driver is installed,
    and registered ones)."""
    return _REGISTRY.schemes()


def register_backend(
    scheme: str,
    factory: str | BackendFactory,
    async_factory: str | AsyncBackendFactory | None = None,
) -> None:
    """Register a backend for ``scheme``: ``factory`` opens a :class:`Backend` for ``Store``,
    ``async_factory`` (optional) an :class:`AsyncBackend` for ``AsyncStore``.

    Each is a callable taking the URL, or ``"module:Class"`` (the class's ``from_url`` is called;
    the module is imported on first use). Registering a scheme that is already taken, by a
    built-in backend or an earlier registration, is an error, so two packages cannot silently
    replace each other's backend. Without ``async_factory``, opening the scheme with
    ``AsyncStore`` raises :class:`~sharedstate.errors.NotSupportedError`.
    """
    _REGISTRY.load_all()  # a clash with a built-in scheme is found now, not at first use
    _REGISTRY.add(scheme, _Registration(factory, async_factory, f"register_backend({scheme!r})"))


def backend_from_url(url: str) -> Backend:
    """Open the backend for ``url`` (e.g. ``sqlite:///state.db``, ``redis://host/0``)."""
    registration = _registration(url)
    factory = registration.sync
    if isinstance(factory, str):
        backend: Backend = _resolve(factory, url).from_url(url)
        return backend
    return factory(url)


def async_backend_from_url(url: str) -> AsyncBackend:
    """Open the async backend for ``url`` (the same URLs as :func:`backend_from_url`).

    Raises :class:`~sharedstate.errors.NotSupportedError` if the scheme has no async backend.
    """
    registration = _registration(url)
    factory = registration.async_
    scheme = _scheme(url)
    if factory is None:
        raise NotSupportedError(
            f"the backend registered for {scheme}:// ({registration.origin}) has no async backend: "
            "use Store, or register it with register_backend(scheme, factory, async_factory=...)"
        )
    if isinstance(factory, str):
        async_backend: AsyncBackend = _resolve(factory, url, asynchronous=True).from_url(url)
        return async_backend
    return factory(url)


def _scheme(url: str) -> str:
    from sharedstate.urls import split_url

    return split_url(url).scheme.lower()


def _registration(url: str) -> _Registration:
    scheme = _scheme(url)
    registration = _REGISTRY.lookup(scheme)
    if registration is not None:
        return registration
    from sharedstate.urls import mask_url

    known = ", ".join(s + "://" for s in known_schemes())
    failures = _REGISTRY.failures()
    if failures:  # most likely the backend for it, whose driver is not installed
        raise ValueError(
            f"no backend for {scheme}:// ({mask_url(url)!r}) could be loaded: "
            + "; ".join(f"{module}: {exc}" for module, exc in failures.items())
            + f" (the backends that could be loaded serve {known})"
        ) from next(iter(failures.values()))
    raise ValueError(f"unknown store URL scheme {scheme!r} in {mask_url(url)!r}; known schemes: {known}")


def _resolve(target: str, url: str, *, asynchronous: bool = False) -> Any:
    """The class named by ``"module:Class"``; a class the module lacks is reported clearly."""
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    found = getattr(module, class_name, None)
    if found is None:
        scheme = _scheme(url)
        kind = "async backend" if asynchronous else "backend"
        raise NotSupportedError(
            f"{scheme}:// has no {kind} in this version of sharedstate ({module_name} defines no "
            f"{class_name})" + ("; use Store, the sync API, with this URL" if asynchronous else "")
        )
    return found


__all__ = [
    "AsyncBackend",
    "AsyncBackendFactory",
    "Backend",
    "BackendFactory",
    "CasResult",
    "Entry",
    "RawValue",
    "Version",
    "async_backend_from_url",
    "backend_from_url",
    "known_schemes",
    "register_backend",
]
