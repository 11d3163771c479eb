"""The sync API, generated from ``sharedstate._async`` by ``scripts/unasync.py``.

Every module here except ``_io.py`` and ``mapping.py`` (hand-written) is generated: change the async
source and regenerate. Users import :class:`sharedstate.Store` and friends from the top-level package.
"""
