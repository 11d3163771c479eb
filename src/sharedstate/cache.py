"""``cached``: memoize a function's results in a store, computed once across processes.

Keys are ``_ss:cache:{module}.{qualname}:{digest}``, where the digest is a SHA-256 of a canonical
encoding of the call's arguments (bound to the signature, so ``f(1)``, ``f(x=1)`` and ``f(1, y=2)``
with ``y=2`` as default are one entry). Only values with a stable meaning in every process can be
encoded: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``tuple``, ``list``, ``dict``,
``set``, ``frozenset``, ``datetime``, ``date``, ``UUID``, ``Decimal``, ``Enum`` members and
``markupsafe.Markup`` (anything with ``__html__``, keyed apart from the plain ``str``). Anything else
(an object whose ``repr`` holds a memory address, a method's ``self``, a subclass of ``str``,
``int`` or ``float``, which could mean something else than its base value) raises ``TypeError``
instead of silently producing a key that differs from process to process, or that two different
arguments share.

Only plain synchronous functions can be decorated: a coroutine function (its result would be a
coroutine, which cannot be stored; ``AsyncStore.cached`` serves those) and a method defined in a
class body (its ``self`` has no stable encoding, and the call would miss it) are refused when
decorated.

Each entry is stored as ``{"v": value}`` (``{"v": value, "f": fresh_until}`` with ``stale_ttl``), so a
cached ``None`` is told apart from a miss.
"""

from __future__ import annotations

from sharedstate._cachekeys import CACHE_PREFIX
from sharedstate._sync.cache import CachedFunction, cached

__all__ = ["CACHE_PREFIX", "CachedFunction", "cached"]
