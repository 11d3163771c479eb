"""pytest plugin: Starlette's own session middleware tests, run against sharedstate's middleware.

Loaded with ``-p sharedstate_starlette_peer`` into a pytest run inside Starlette's released sdist
(see tests/test_starlette_peer.py). Before their test modules are imported, it replaces
``starlette.middleware.sessions.SessionMiddleware`` with :class:`sharedstate.starlette.SessionMiddleware`
bound to a fresh ``AsyncStore`` on an SQLite file per test, so their
``Middleware(SessionMiddleware, secret_key=..., max_age=..., ...)`` builds ours. Nothing of their
tests is copied or edited. At the end it reports how many of our middlewares their tests built.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Starlette's test suite imports httpx2 (its next HTTP client) only for type names and the
# TestClient, which still works on httpx, the client installed here: let the one stand for the other.
if importlib.util.find_spec("httpx2") is None:
    import httpx

    sys.modules["httpx2"] = httpx

import starlette.middleware.sessions as theirs

from sharedstate import AsyncStore
from sharedstate.starlette import SessionMiddleware

_current: list[AsyncStore] = []
_built = [0]


class BoundSessionMiddleware(SessionMiddleware):
    """Our middleware on the current test's store, with Starlette's signature otherwise."""

    def __init__(self, app: Any, secret_key: Any, **kwargs: Any) -> None:
        if not _current:
            raise RuntimeError("no sharedstate store for this test (the plugin's fixture did not run)")
        super().__init__(app, store=_current[-1], secret_key=secret_key, **kwargs)
        _built[0] += 1


theirs.SessionMiddleware = BoundSessionMiddleware  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _sharedstate_store(tmp_path: Path) -> Iterator[None]:
    store = AsyncStore(f"sqlite:///{tmp_path}/sessions.sqlite3")
    _current.append(store)
    try:
        yield
    finally:
        _current.remove(store)
        asyncio.run(store.aclose())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "SessionMiddleware"):
            assert module.SessionMiddleware is BoundSessionMiddleware, module.__name__


def pytest_terminal_summary(terminalreporter: Any) -> None:
    import starlette

    terminalreporter.write_line(f"sharedstate: {_built[0]} sharedstate SessionMiddleware instances built")
    terminalreporter.write_line(f"sharedstate: starlette {starlette.__version__} from {starlette.__file__}")
