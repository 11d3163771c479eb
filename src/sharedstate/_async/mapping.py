"""The dict a store hands out (hand-written, not generated).

In the async world it is :class:`~sharedstate._async.objects.AsyncDict` as is: Python cannot await
inside ``d[k]``, ``in`` or ``len()``, so every operation is a method. ``_sync/mapping.py`` adds the
``MutableMapping`` protocol on top of the generated sync class.
"""

from __future__ import annotations

from sharedstate._async.objects import AsyncDict

__all__ = ["AsyncDict"]
