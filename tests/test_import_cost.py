"""``import sharedstate`` stays cheap: heavy modules are imported where they are first used.

Structural, not timed (benchmarks/bench_import.py measures the milliseconds): a fresh interpreter
imports the package and reports which of the modules we keep lazy got loaded anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")

# Each costs a millisecond or more at start-up and is needed only by some operations.
LAZY = [
    "asyncio",  # the async API
    "dataclasses",
    "decimal",  # codec: Decimal values
    "hashlib",
    "hmac",  # signed pickles
    "inspect",  # cached(): binding arguments
    "json",  # built by the first store's codec
    "pickle",
    "secrets",
    "sharedstate._cachekeys",
    "sharedstate._sync.cache",
    "sharedstate.backends.sqlite",  # backends: when a URL needs one
    "sqlite3",
    "urllib.parse",  # URLs: when a store is opened
    "uuid",
]


def _loaded_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    # json is imported by the probe after the code under test, so it is not counted.
    script = f"import sys\n{code}\n_before = sorted(sys.modules)\nimport json\nprint(json.dumps(_before))"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_import_sharedstate_loads_no_heavy_module() -> None:
    loaded = _loaded_after("import sharedstate")
    assert sorted(loaded & set(LAZY)) == []


def test_public_names_still_import() -> None:
    import sharedstate

    code = f"from sharedstate import {', '.join(sharedstate.__all__)}"
    loaded = _loaded_after(code)
    assert "sharedstate._async.store" in loaded  # the async names resolve (lazily)


def test_lazy_modules_arrive_when_used() -> None:
    code = (
        "import datetime, decimal, uuid\n"
        "from sharedstate import Store\n"
        "s = Store('memory://')\n"
        "v = {'d': decimal.Decimal('1.5'), 'u': uuid.UUID(int=7), 'b': b'x', 't': datetime.timedelta(1)}\n"
        "s.set('k', {'d': v['d'], 'u': v['u'], 'b': v['b']}, ttl=v['t'])\n"
        "assert s.get('k') == {'d': v['d'], 'u': v['u'], 'b': v['b']}\n"
        "assert s.cached(ttl=60, name='inc')(lambda x: x + 1)(1) == 2"
    )
    loaded = _loaded_after(code)
    assert {"json", "urllib.parse", "sharedstate._sync.cache"} <= loaded
