"""``Store``: a URL-chosen backend plus a namespace and a codec, and the objects users hold.

The class is generated from :class:`~sharedstate.AsyncStore` (``sharedstate._sync.store``); this
module keeps the names every existing import uses.
"""

from __future__ import annotations

from sharedstate._sync.keyspace import DEFAULT_MAX_VALUE_SIZE, RESERVED_PREFIX
from sharedstate._sync.store import DEFAULT_FILENAME, Store, default_url
from sharedstate.engine import LastWritten as _LastWritten
from sharedstate.engine import backoff_delays

__all__ = [
    "DEFAULT_FILENAME",
    "DEFAULT_MAX_VALUE_SIZE",
    "RESERVED_PREFIX",
    "Store",
    "_LastWritten",
    "backoff_delays",
    "default_url",
]
