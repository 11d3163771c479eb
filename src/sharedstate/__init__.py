"""sharedstate: state shared between web requests that stays correct across threads, processes and
machines.

>>> from sharedstate import Store
>>> store = Store()                      # SQLite file in the working directory; or Store("redis://")
>>> store.counter("hits").incr()         # unique, even with 100 clients on 8 processes
"""

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

__version__ = "0.2.0.dev0"

__all__ = [
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
