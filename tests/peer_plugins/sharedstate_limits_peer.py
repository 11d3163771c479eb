"""pytest plugin: run limits' own storage and strategy tests (from its released sdist) against
``sharedstate.limits``.

limits parametrizes its storage tests with ``(uri, args, fixture)`` (or ``(uri, args,
expected_instance, fixture)``) over its docker services. This plugin rewrites those parameter
lists, before pytest generates the tests, to our schemes: one parameter per store URL given in
``$SHAREDSTATE_LIMITS_PEER_URLS`` (JSON ``{"name": "store URL"}``), as ``sharedstate+URL`` for
sync tests and ``async+sharedstate+URL`` for coroutine tests. Every test gets a fresh namespace
(its ``args`` carry it), emptied again after the test. Nothing of limits is copied here; run with
``--noconftest`` (limits' conftest only starts its docker services).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import uuid
from typing import Any

import pytest
from pytest_lazy_fixtures import lf

import sharedstate.limits as ss_limits

URLS: dict[str, str] = json.loads(os.environ.get("SHAREDSTATE_LIMITS_PEER_URLS", "{}"))
ARGNAMES = {("uri", "args", "fixture"), ("uri", "args", "expected_instance", "fixture")}
OURS = "sharedstate-"


def _argnames(mark: pytest.Mark) -> tuple[str, ...]:
    names = mark.args[0]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    return tuple(names)


def _params(names: tuple[str, ...], is_async: bool) -> list[Any]:
    prefix = ss_limits.ASYNC_PREFIX if is_async else ss_limits.PREFIX
    cls = ss_limits.AsyncSharedStateStorage if is_async else ss_limits.SharedStateStorage
    params = []
    for name, url in URLS.items():
        values: list[Any] = [prefix + url, {}]
        if "expected_instance" in names:
            values.append(cls)
        values.append(lf("sharedstate_limits_namespace"))
        params.append(pytest.param(*values, id=f"{OURS}{name}", marks=pytest.mark.sharedstate_backend(name)))
    return params


def _rewrite(mark: pytest.Mark, is_async: bool) -> pytest.Mark:
    if mark.name != "parametrize" or _argnames(mark) not in ARGNAMES:
        return mark
    names = _argnames(mark)
    return pytest.mark.parametrize(mark.args[0], _params(names, is_async), **mark.kwargs).mark


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Runs before pytest's own hook, which reads the parametrize marks of the function and of the
    # nodes above it (a class-level mark lives on the class): rewrite them where they are. A class
    # holds only sync or only async tests in limits' suite, so rewriting it again is idempotent.
    is_async = inspect.iscoroutinefunction(metafunc.function)
    for node in metafunc.definition.listchain():
        node.own_markers[:] = [_rewrite(m, is_async) for m in node.own_markers]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sharedstate_backend(name): the sharedstate backend under test")


@pytest.fixture
def sharedstate_limits_namespace(request: pytest.FixtureRequest) -> Any:
    """A fresh namespace for this test's storage (set in its ``args``), emptied afterwards."""
    args = request.node.callspec.params["args"]
    uri = request.node.callspec.params["uri"]
    namespace = f"limits-peer-{uuid.uuid4().hex[:12]}"
    args["namespace"] = namespace
    yield namespace
    if uri.startswith(ss_limits.ASYNC_PREFIX):
        uri = uri[len("async+") :]
    if "memcached" in uri or "memory" in uri:
        return  # memcached cannot list keys (our own server, dropped at the end); memory dies with us
    storage = ss_limits.SharedStateStorage(uri, namespace=namespace)
    storage.reset()
    storage.store.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        backend = item.get_closest_marker("sharedstate_backend")
        if not backend or backend.args[0] != "memcached":
            continue
        if item.name.startswith("test_storage_reset"):
            # limits skips this for its own memcached storage too: memcached cannot list keys.
            item.add_marker(
                pytest.mark.skip(reason="memcached cannot list keys, so reset() cannot find them")
            )
        if item.name.startswith(("test_expiry_incr", "test_expiry_acquire_entry")):
            item.add_marker(
                pytest.mark.skip(
                    reason="memcached keeps an entry up to 2 s past its ttl (whole seconds, documented); "
                    "these tests give a 1 s limit 0.1 s to expire"
                )
            )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """limits runs its timing-sensitive tests (``@pytest.mark.flaky``, the ``flaky`` plugin) up to
    ``max_runs`` times (default 2); so do we, saying so on stderr, without installing ``flaky``."""
    mark = item.get_closest_marker("flaky")
    if mark is None:
        return None
    from _pytest.runner import runtestprotocol

    runs = int(mark.kwargs.get("max_runs", 2))
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(1, runs + 1):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        if all(not report.failed for report in reports) or attempt == runs:
            break
        sys.stderr.write(f"\nflaky rerun: {item.nodeid} failed on run {attempt} of {runs}\n")
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
