"""The sync API is generated from the async source: the generated files are current, and the
check notices when they are not."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sync_code_is_current() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_or_orphan_generated_file(tmp_path: Path) -> None:
    script = _load_script()
    source, target = tmp_path / "_async", tmp_path / "_sync"
    shutil.copytree(script.SOURCE, source)
    shutil.copytree(script.TARGET, target)
    script.SOURCE, script.TARGET, script.ROOT = source, target, tmp_path
    assert script.main(["--check"]) == 0
    (target / "store.py").write_text((target / "store.py").read_text() + "# edited by hand\n")
    assert script.main(["--check"]) == 1
    assert script.main([]) == 0  # regenerates
    assert script.main(["--check"]) == 0
    (target / "orphan.py").write_text("")
    assert script.main(["--check"]) == 1


def test_rewrites() -> None:
    script = _load_script()
    line = "async with store.lock(n) as l: await AsyncStore(url).aclose()  # sharedstate._async\n"
    assert script.unasync_line(line) == "with store.lock(n) as l: Store(url).close()  # sharedstate._sync\n"
    assert script.unasync_line("x: Callable[P, Awaitable[R]]") == "x: Callable[P, R]"
    assert script.unasync_line("def dict(self) -> AsyncDict:") == "def dict(self) -> SharedDict:"
