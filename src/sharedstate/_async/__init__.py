"""The source of the library's algorithms, written once for asyncio.

``sharedstate._sync`` is generated from this package by ``scripts/unasync.py`` (``make check``
fails when it is out of date). Users import :class:`sharedstate.AsyncStore` and friends from the
top-level package.
"""
