"""Backends, chosen by URL scheme from an explicit registry.

Each entry maps a scheme to ``"module:Class"``; the module is imported only when a URL with that
scheme is opened, so optional client libraries (redis, psycopg, pymemcache) are needed only by the
people who use them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sharedstate.backends.base import Backend, CasResult, Entry, RawValue, Version
from sharedstate.urls import mask_url, split_url

BackendFactory = Callable[[str], Backend]

_REGISTRY: dict[str, str | BackendFactory] = {
    "memory": "sharedstate.backends.memory:MemoryBackend",
    "sqlite": "sharedstate.backends.sqlite:SQLiteBackend",
    "redis": "sharedstate.backends.redis:RedisBackend",
    "rediss": "sharedstate.backends.redis:RedisBackend",
    "postgresql": "sharedstate.backends.postgres:PostgresBackend",
    "postgres": "sharedstate.backends.postgres:PostgresBackend",
    "memcached": "sharedstate.backends.memcached:MemcachedBackend",
}


def known_schemes() -> list[str]:
    """The URL schemes a store can be opened with."""
    return sorted(_REGISTRY)


def register_backend(scheme: str, factory: str | BackendFactory) -> None:
    """Register a backend for ``scheme``: a callable taking the URL, or ``"module:Class"``.

    Registering a scheme that is already taken is an error, so two packages cannot silently
    replace each other's backend.
    """
    if scheme in _REGISTRY:
        raise ValueError(f"a backend is already registered for scheme {scheme!r}")
    _REGISTRY[scheme] = factory


def backend_from_url(url: str) -> Backend:
    """Open the backend for ``url`` (e.g. ``sqlite:///state.db``, ``redis://host/0``)."""
    parts = split_url(url)
    scheme = parts.scheme.lower()
    target = _REGISTRY.get(scheme)
    if target is None:
        raise ValueError(
            f"unknown store URL scheme {scheme!r} in {mask_url(url)!r}; "
            f"known schemes: {', '.join(s + '://' for s in known_schemes())}"
        )
    if isinstance(target, str):
        module_name, _, class_name = target.partition(":")
        module = importlib.import_module(module_name)
        factory: BackendFactory = getattr(module, class_name).from_url
    else:
        factory = target
    return factory(url)


__all__ = [
    "Backend",
    "CasResult",
    "Entry",
    "RawValue",
    "Version",
    "backend_from_url",
    "known_schemes",
    "register_backend",
]
