"""sharedstate: state shared between web requests that stays correct across threads, processes and
machines.

>>> from sharedstate import Store
>>> store = Store()                      # SQLite file in the working directory; or Store("redis://")
>>> store.counter("hits").incr()         # unique, even with 100 clients on 8 processes
"""

from typing import TYPE_CHECKING, Any

from sharedstate.backends import register_backend
from sharedstate.errors import (
    BackendUnavailableError,
    ConflictError,
    LockNotOwnedError,
    LockTimeout,
    NestedUpdateError,
    NotSupportedError,
    SerializationError,
    SharedStateError,
    ValueTooLargeError,
)
from sharedstate.objects import Counter, Lock, SharedDict
from sharedstate.store import Store

if TYPE_CHECKING:
    from sharedstate._async.mapping import AsyncDict
    from sharedstate._async.objects import AsyncCounter, AsyncLock
    from sharedstate._async.store import AsyncStore

__version__ = "0.2.0.dev0"

# The async API is imported on first use, so sync users do not pay for importing asyncio.
_ASYNC_NAMES = {
    "AsyncStore": "sharedstate._async.store",
    "AsyncCounter": "sharedstate._async.objects",
    "AsyncDict": "sharedstate._async.mapping",
    "AsyncLock": "sharedstate._async.objects",
}


def __getattr__(name: str) -> Any:
    module = _ASYNC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'sharedstate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncCounter",
    "AsyncDict",
    "AsyncLock",
    "AsyncStore",
    "BackendUnavailableError",
    "ConflictError",
    "Counter",
    "Lock",
    "LockNotOwnedError",
    "LockTimeout",
    "NestedUpdateError",
    "NotSupportedError",
    "SerializationError",
    "SharedDict",
    "SharedStateError",
    "Store",
    "ValueTooLargeError",
    "register_backend",
]
