"""cachelib's own cache tests, run against ``SharedStateCache`` by tests/test_cachelib_peers.py.

Not collected by the project's own run (not ``test_*.py``, and it imports cachelib's test modules,
which are only on the path in that subprocess). The classes below are cachelib's common test
classes (``tests/common.py``, ``clear.py``, ``has.py``, ``delete_many_with_prefix.py`` of the
installed version's sdist, see scripts/peer_suite.py), given a ``cache_factory`` that makes a
``SharedStateCache`` on a fresh SQLite file, as cachelib's own backend test modules do.
cachelib's ``key_prefix`` fixture (from its conftest, loaded as a plugin) runs each test without
and with a key prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clear import ClearTests  # type: ignore[import-not-found]
from common import CommonTests  # type: ignore[import-not-found]
from delete_many_with_prefix import DeleteManyWithPrefixTests  # type: ignore[import-not-found]
from has import HasTests  # type: ignore[import-not-found]
from serializer import SerializerTests  # type: ignore[import-not-found]

from sharedstate import Store
from sharedstate.cachelib import SharedStateCache

SECRET = "peer-suite-secret"


@pytest.fixture(autouse=True, params=["json", "pickle"])
def cache_factory(request: pytest.FixtureRequest, key_prefix: str | None, tmp_path: Path) -> Iterator[None]:
    """``cache_factory(**kwargs)`` as cachelib's backend tests use it; one store per test."""
    url = f"sqlite:///{tmp_path / 'cache.sqlite3'}"
    pickled = request.param == "pickle"
    opened: list[SharedStateCache] = []

    def factory(self: Any, *args: Any, **kwargs: Any) -> SharedStateCache:
        kwargs.setdefault("key_prefix", key_prefix)
        if pickled:
            kwargs.update(serializer="pickle", secret_key=SECRET)
        else:  # every test makes its cache before it reads the samples
            self.sample_pairs = {k: v for k, v in type(self).sample_pairs.items() if k != "4096"}
        cache = SharedStateCache(url, *args, **kwargs)
        opened.append(cache)
        return cache

    request.cls.cache_factory = factory
    request.cls.json_only = not pickled
    yield
    for cache in opened:
        cache.close()


class TestSharedStateCache(CommonTests, ClearTests, HasTests, DeleteManyWithPrefixTests, SerializerTests):  # type: ignore[misc]
    """Every test of cachelib's common classes; the JSON codec cannot hold one of their samples.

    ``sample_pairs["4096"]`` is ``{"sauce": [], 256: "truffle"}``: a dict with an int key, which
    JSON cannot hold without turning the key into ``"256"``. With the default JSON codec
    ``SharedStateCache`` refuses it (``TypeError``, nothing written) rather than reading back a
    different dict, so the JSON leg runs on the samples without it; the pickle leg runs them all.
    """

    def test_json_refuses_int_dict_keys(self) -> None:
        """What the JSON leg leaves out: refused before anything is written."""
        cache = self.cache_factory()
        if not self.json_only:
            pytest.skip("pickle stores it")
        with pytest.raises(TypeError, match="dict keys must be str"):
            cache.set("4096", {"sauce": [], 256: "truffle"})
        with pytest.raises(TypeError):
            cache.set_many({"ok": 1, "4096": {256: "truffle"}})
        assert cache.get("4096") is None and cache.get("ok") is None

    def test_store_instance(self, tmp_path: Path) -> None:
        """A Store passed in, shared with other state that clear() leaves alone."""
        with Store(f"sqlite:///{tmp_path / 'shared.sqlite3'}") as store:
            store.set("counter", 7)
            cache = SharedStateCache(store)
            assert cache.set("a", 1) and cache.inc("n") == 1
            assert cache.clear()
            assert cache.get("a") is None and store.get("counter") == 7
