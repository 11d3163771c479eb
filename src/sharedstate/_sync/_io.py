"""Waiting, for the sync world (hand-written, not generated: the twin of ``_async/_io.py``)."""

from __future__ import annotations

import time

sleep = time.sleep
monotonic = time.monotonic

#: Which world this is: the async ``cached`` serves coroutine functions, the sync one plain ones.
IS_ASYNC = False
