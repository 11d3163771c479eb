"""Waiting, for the async world (hand-written; ``_sync/_io.py`` is its sync twin).

The algorithms in this package never wait by themselves: they ``await sleep(...)`` from here, so
the generated sync code (``await`` dropped) calls ``time.sleep`` from ``_sync/_io.py`` instead.
"""

from __future__ import annotations

import asyncio
import time

sleep = asyncio.sleep
monotonic = time.monotonic

#: Which world this is: the async ``cached`` serves coroutine functions, the sync one plain ones.
IS_ASYNC = True
