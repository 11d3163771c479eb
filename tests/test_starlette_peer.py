"""Starlette's own session middleware tests (tests/middleware/test_session.py of the installed
Starlette's released sdist), run against ``sharedstate.starlette.SessionMiddleware``.

``scripts/peer_suite.py`` fetches the sdist (sha256-checked); a pytest subprocess runs their test
file there with our plugin, tests/peer_plugins/sharedstate_starlette_peer.py, which makes their
``SessionMiddleware`` ours (on a fresh SQLite store per test). Nothing of theirs is copied.

Selected: every test of their middleware (cookie attributes, ``max_age`` including ``None``, 0
and negative, ``https_only``, ``same_site``, ``partitioned``, ``path`` under a mount, ``domain``,
invalid cookies, ``Vary: Cookie``, Set-Cookie only on modification, mutations that persist).
Deselected: ``test_session_tracks_modification``, a unit test of Starlette's cookie ``Session``
class itself (built directly from a dict, never by the middleware); ours is tested in
tests/test_starlette.py. Run on asyncio only (their anyio default; our stores are asyncio).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = Path(__file__).resolve().parent / "peer_plugins"
DESELECTED = ["test_session_tracks_modification"]
MIN_PASSED = 14
pytestmark = pytest.mark.timeout(180)


def _peer_suite() -> Path:
    spec = importlib.util.spec_from_file_location("peer_suite", ROOT / "scripts" / "peer_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        path: Path = module.peer_suite("starlette")
    except module.PeerSuiteUnavailable as exc:
        servers.unavailable(f"Starlette's test suite cannot be fetched: {exc}")
    return path


def test_starlettes_own_session_tests_pass_on_our_middleware() -> None:
    suite = _peer_suite()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(PLUGIN_DIR)])}
    result = subprocess.run(
        [
            sys.executable,
            "-P",  # the installed starlette, not the source tree in the sdist
            "-m",
            "pytest",
            "-p",
            "sharedstate_starlette_peer",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/middleware/test_session.py",
            "--deselect",
            *[f"tests/middleware/test_session.py::{name}" for name in DESELECTED],
        ],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed[1]) >= MIN_PASSED, output[-3000:]
    assert "failed" not in output and "error" not in output.lower().replace("stderr", ""), output[-3000:]
    built = re.search(r"sharedstate: (\d+) sharedstate SessionMiddleware instances built", output)
    assert built and int(built[1]) >= MIN_PASSED, output[-3000:]  # their apps really ran ours
    assert "1 deselected" in output, output[-3000:]
