"""cachelib's and Flask-Caching's own tests, run against ``sharedstate.cachelib.SharedStateCache``.

Each suite runs in a pytest subprocess over the released sdist of the installed version
(scripts/peer_suite.py; nothing of theirs is copied here), with our fixtures from tests/peers/,
under their own warnings policy (``-W error``). What is left out, and why:

cachelib (``tests/peers/cachelib_suite.py``: its ``CommonTests``, ``ClearTests``, ``HasTests``,
``DeleteManyWithPrefixTests`` and ``SerializerTests``, with and without a key prefix, once with the
JSON codec and once with signed pickle):

- the ``SerializerTests`` that assign a cachelib serializer (``cache.serializer = ...``):
  ``SharedStateCache`` stores values with sharedstate's codec and refuses a cachelib serializer
  with ``TypeError`` rather than ignoring it;
- ``test_expiration`` is run once (JSON, no prefix), not four times: it sleeps 4 real seconds;
- on the JSON leg, the sample ``{"sauce": [], 256: "truffle"}``: JSON cannot hold an int dict key,
  so it is refused (``TypeError``, nothing written; asserted by ``test_json_refuses_int_dict_keys``);
- the backend modules (FileSystem, Redis, memcached, ...) test those backends, not ours.

Flask-Caching (``tests/peers/flask_caching_plugin.py`` provides the ``app``, ``cache`` and
``clock`` fixtures, with ``CACHE_TYPE = "sharedstate.cachelib.SharedStateCache"``; the generic
backend tests through ``tests/peers/flask_caching_suite.py``), once with the JSON codec and once
with ``CACHE_SHAREDSTATE_SERIALIZER = "pickle"``:

- test_basic_app.py, test_init.py, test_cachelib.py, test_serializer.py and
  test_backend_cache.py's own classes configure Flask-Caching's backends (RedisCache on its port
  6360, SimpleCache, cachelib classes, cachelib serializers): they test those, not a backend
  named by ``CACHE_TYPE``; so do test_cache.py's ``test_cache_unlink`` (RedisCache),
  ``test_cache_unlink_if_not`` and ``test_cache_delete_many_ignored`` (SimpleCache) and
  test_hash_method.py's ``test_file_hash_method_is_independent`` (FileSystemCache);
- on the JSON leg, the views that return a ``CachedResponse`` or raise an ``HTTPException``
  (Flask-Caching caches the response object): the JSON codec refuses them, so they are run on the
  pickle leg only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers"
sys.path.insert(0, str(ROOT / "scripts"))
from peer_suite import PeerSuiteUnavailable, peer_suite  # noqa: E402

FLASK_CACHING_FILES = [
    "test_cache.py",
    "test_memoize.py",
    "test_view.py",
    "test_templates.py",
    "test_signals.py",
    "test_hash_method.py",
    "test_subclassing.py",
    "test_py314_annotations.py",
]


def suite(distribution: str) -> Path:
    try:
        return peer_suite(distribution) / "tests"
    except PeerSuiteUnavailable as exc:
        servers.unavailable(f"cannot fetch {distribution}'s test suite: {exc}")
        raise AssertionError("unreachable") from exc


def run(tmp_path: Path, pythonpath: list[Path], args: list[str]) -> tuple[dict[str, int], str, float]:
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tmp_path)]
    command += ["-p", "no:cacheprovider", "-q", "-W", "error"]
    command += ["-W", "default::pytest.PytestUnraisableExceptionWarning", "--basetemp", str(tmp_path / "t")]
    started = time.monotonic()
    done = subprocess.run(command + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    out = done.stdout + done.stderr
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    found = re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", tail)
    counts = {word: int(n) for n, word in found}
    return counts, out, elapsed


@pytest.mark.timeout(120)
def test_cachelib_own_tests(tmp_path: Path) -> None:
    theirs = suite("cachelib")
    counts, out, elapsed = run(
        tmp_path,
        [ROOT / "src", theirs, PEERS],
        [
            "-p",
            "conftest",  # cachelib's conftest: its key_prefix fixture
            "--confcutdir",
            str(PEERS),
            "-k",
            "not serializer_injection and not serializer_is_stored"
            " and not (test_expiration and (pickle or with_key_prefix))",
            str(PEERS / "cachelib_suite.py"),
        ],
    )
    assert counts.get("failed", 0) == 0 and "error" not in counts and "errors" not in counts, out[-6000:]
    assert counts.get("passed", 0) >= 65, out[-3000:]
    print(f"cachelib: {counts} in {elapsed:.1f}s")


@pytest.mark.timeout(120)
def test_flask_caching_own_tests(tmp_path: Path) -> None:
    theirs = suite("flask-caching")
    deselect = (
        "not test_cache_unlink and not test_cache_delete_many_ignored"
        " and not test_file_hash_method_is_independent"
        " and not (json and (http_exception or dynamic_via_cached_reponse))"
    )
    counts, out, elapsed = run(
        tmp_path,
        [ROOT / "src", PEERS, theirs],
        [
            "--noconftest",
            "-p",
            "flask_caching_plugin",  # our fixtures instead of theirs
            "-k",
            deselect,
            str(PEERS / "flask_caching_suite.py"),
            *(str(theirs / name) for name in FLASK_CACHING_FILES),
        ],
    )
    assert counts.get("failed", 0) == 0 and "error" not in counts and "errors" not in counts, out[-6000:]
    assert counts.get("passed", 0) >= 290, out[-3000:]
    print(f"flask-caching: {counts} in {elapsed:.1f}s")
