"""The objects users hold: :class:`Counter`, :class:`SharedDict` and :class:`Lock`.

They are thin views over a store's keyspace: they hold no state of their own beyond their name,
are cheap to create per request, and use only the backend contract. Generated from the async
objects (``sharedstate._sync.objects``); ``SharedDict`` adds the ``MutableMapping`` protocol.
"""

from __future__ import annotations

from sharedstate._sync.mapping import SharedDict
from sharedstate._sync.objects import Counter, Lock

__all__ = ["Counter", "Lock", "SharedDict"]
