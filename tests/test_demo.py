"""``sharedstate demo``: the real command, real gunicorn, real HTTP clients, real SQLite files.

Every run gets a marker in its environment, which gunicorn and its workers inherit; scanning
``/proc/*/environ`` for it finds exactly this run's server processes, so the tests can prove none
is left behind (and, in the interrupt tests, that the scan does see them while they run).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sharedstate import Store
from sharedstate.tools.demo import Reply, ranges, summarize, to_json

MARK_ENV = "SHAREDSTATE_DEMO_TEST_MARK"
#: The issue's bound for a whole demo run on this machine.
RUN_BOUND_S = 30.0

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="scans /proc for processes")


@pytest.fixture
def make_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    made: list[Demo] = []

    def make(*args: str) -> Demo:
        demo = Demo(tmp_path / str(len(made)), *args)
        made.append(demo)
        return demo

    yield make
    for demo in made:
        demo.kill_leftovers()


def _command() -> list[str]:
    script = Path(sys.executable).with_name("sharedstate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sharedstate"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """One ``sharedstate demo`` subprocess with its own TMPDIR, HOME and process marker."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.mark = uuid.uuid4().hex
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmpdir = tmp_path / "tmp"
        self.home = tmp_path / "home"
        self.tmpdir.mkdir()
        self.home.mkdir()
        env = dict(os.environ)
        env.pop("XDG_RUNTIME_DIR", None)
        env.update(TMPDIR=str(self.tmpdir), HOME=str(self.home), **{MARK_ENV: self.mark})
        self.args = [*_command(), "demo", *args]
        self.env = env

    def run(self, timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        done = subprocess.run(
            self.args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return done, time.monotonic() - started

    def start(self) -> subprocess.Popen[str]:
        # A terminal's Ctrl-C reaches the demo with SIGINT at its default; a pytest-xdist worker
        # ignores SIGINT, and an ignored signal stays ignored in its children: restore it.
        return subprocess.Popen(
            self.args,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )

    def processes(self) -> list[int]:
        """Live (non-zombie) processes carrying this run's marker, other than the demo itself."""
        needle = f"{MARK_ENV}={self.mark}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/status") as f:
                    zombie = any(line.startswith("State:\tZ") for line in f)
            except OSError:  # it exited while we looked
                continue
            # gunicorn's master and workers; `python -m uvicorn`, the workers it spawns and the
            # resource tracker multiprocessing starts for them (not the demo: `--server uvicorn`).
            server = b"gunicorn" in cmdline or b"-m\0uvicorn" in cmdline or b"multiprocessing" in cmdline
            if server and not zombie:
                found.append(int(entry))
        return found

    def wait_no_processes(self, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def kill_leftovers(self) -> None:
        """After a failed test: stop whatever this run left behind, so one failure does not leak."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def assert_clean(self) -> None:
        # No grace period: the demo reaps gunicorn's master, which reaps its workers, before exiting.
        # (Waiting here would let the workers' lifeline shutdown hide a demo that forgot to stop them.)
        assert self.processes() == []
        assert list(self.tmpdir.iterdir()) == [], "the demo left files in its temporary directory"
        assert not (self.home / ".gunicorn").exists(), "gunicorn created a control socket in HOME"


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _check_naive_per_worker(section: dict[str, Any]) -> None:
    # Each sync worker process counted on its own copy, one request at a time: 1..k in each.
    for worker in section["per_worker"]:
        assert worker["values"] == list(range(1, worker["requests"] + 1)), worker


# -- the real thing ----------------------------------------------------------------------------


@needs_proc
@pytest.mark.timeout(120)
def test_global_counter_duplicates_and_shared_counter_is_exact(make_demo: Callable[..., Demo]) -> None:
    demo = make_demo("--json", "--clients", "60", "--workers", "3")
    done, elapsed = demo.run()
    report = _json(done)

    assert set(report) == {"naive", "shared"}
    naive, shared = report["naive"], report["shared"]
    for section in (naive, shared):
        assert {"responses", "distinct", "duplicates", "exact", "missing", "errors"} <= set(section)
        assert section["responses"] == 60
        assert section["errors"] == 0
        assert section["workers"] == 3
    # The global: several processes each counted from 1, so numbers repeat and the top is never reached.
    assert naive["exact"] is False
    assert naive["duplicates"] > 0
    assert naive["distinct"] + naive["duplicates"] == 60
    assert naive["missing"] == 60 - naive["distinct"]
    assert naive["workers_used"] >= 2, "the load did not spread over gunicorn's worker processes"
    _check_naive_per_worker(naive)
    # The shared counter: exactly 1..60, whichever process served each request.
    assert shared["exact"] is True
    assert shared["distinct"] == 60
    assert shared["duplicates"] == 0 and shared["missing"] == 0
    assert shared["values"] == list(range(1, 61))
    assert sum(w["requests"] for w in shared["per_worker"]) == 60

    assert elapsed < RUN_BOUND_S
    demo.assert_clean()


@needs_proc
@pytest.mark.timeout(120)
def test_url_points_at_an_existing_sqlite_file_whose_data_is_left_alone(
    make_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'mine.sqlite3'}"
    with Store(url) as mine:
        mine.counter("hits").reset(41)  # the name the demo counts under, outside its namespace
        mine.set("settings", {"theme": "dark"})
    demo = make_demo("--json", "--clients", "40", "--workers", "2", "--url", url)
    done, elapsed = demo.run()
    report = _json(done)

    assert report["shared"]["exact"] is True
    assert report["shared"]["distinct"] == 40
    assert report["shared"]["store"] == url
    assert report["naive"]["exact"] is False and report["naive"]["duplicates"] > 0
    with Store(url) as mine:
        assert mine.keys() == ["hits", "settings"]  # the demo's own key is deleted
        assert mine.counter("hits").get() == 41
        assert mine.get("settings") == {"theme": "dark"}
    assert elapsed < RUN_BOUND_S
    demo.assert_clean()


@needs_proc
@pytest.mark.timeout(120)
def test_one_worker_table_output(make_demo: Callable[..., Demo]) -> None:
    demo = make_demo("--clients", "30", "--workers", "1")
    done, _ = demo.run()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()

    def row(label: str) -> list[str]:
        [line] = [line for line in lines if line.startswith(f"  {label}  ")]
        return line.split()[-2:]  # the global's column, the shared counter's column

    # One sync worker handles one request at a time: here even the global counts right, and says why.
    assert row("exactly 1..30?") == ["yes", "yes"]
    assert row("duplicates") == ["0", "0"]
    assert row("distinct values") == ["30", "30"]
    assert row("errors") == ["0", "0"]
    assert "one worker process handling one request at a time" in " ".join(lines)
    assert "exactly 1..30." in " ".join(lines)
    demo.assert_clean()


@needs_proc
@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_the_server_and_removes_files(
    make_demo: Callable[..., Demo], sig: signal.Signals
) -> None:
    demo = make_demo("--clients", "200", "--workers", "4")
    proc = demo.start()
    try:
        deadline = time.monotonic() + 30
        while not demo.processes():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "gunicorn never started"
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    demo.assert_clean()


@needs_proc
@pytest.mark.timeout(60)
def test_server_stops_itself_when_the_demo_is_killed(make_demo: Callable[..., Demo]) -> None:
    """SIGKILL skips the demo's cleanup; the workers see their lifeline pipe close and stop the server.

    Only the temporary directory stays behind then (nothing in the demo runs any more to remove it).
    """
    demo = make_demo("--clients", "1000", "--workers", "3")  # a long burst: time to look
    proc = demo.start()
    try:
        deadline = time.monotonic() + 30
        while len(demo.processes()) < 4:  # master and 3 workers
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "gunicorn never started its workers"
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no finally runs in the demo; the workers' lifeline pipe closes
        proc.communicate()
    assert demo.wait_no_processes(timeout=15) == []


# -- --server uvicorn: FastAPI apps, the shared one on an AsyncStore counter ----------------------


@needs_proc
@pytest.mark.timeout(120)
def test_uvicorn_fastapi_global_and_async_store_counter(make_demo: Callable[..., Demo]) -> None:
    demo = make_demo("--server", "uvicorn", "--json", "--clients", "100", "--workers", "4")
    done, elapsed = demo.run()
    report = _json(done)

    assert set(report) == {"naive", "shared"}
    naive, shared = report["naive"], report["shared"]
    for section in (naive, shared):
        assert section["server"] == "uvicorn"
        assert section["workers"] == 4
        assert section["responses"] == 100
        assert section["errors"] == 0
    # The AsyncStore counter: exactly 1..100, whichever uvicorn worker served each request.
    assert shared["app"] == "await AsyncStore(...).counter('hits').incr()"
    assert shared["exact"] is True
    assert shared["values"] == list(range(1, 101))
    assert shared["duplicates"] == 0 and shared["missing"] == 0
    assert sum(w["requests"] for w in shared["per_worker"]) == 100
    # The global: whatever it really gave. One asyncio worker can accept a whole burst by itself, so
    # it may look right; each worker counts 1..k on its own copy (an async def route has no await
    # inside the read-add-write), so it is exact exactly when a single worker answered everything.
    _check_naive_per_worker(naive)
    assert naive["exact"] is (naive["workers_used"] == 1)
    assert naive["distinct"] + naive["duplicates"] == 100
    assert naive["distinct"] == max(w["requests"] for w in naive["per_worker"])

    assert elapsed < RUN_BOUND_S
    demo.assert_clean()


@needs_proc
@pytest.mark.timeout(120)
def test_uvicorn_table_output(make_demo: Callable[..., Demo]) -> None:
    demo = make_demo("--server", "uvicorn", "--clients", "30", "--workers", "2")
    done, _ = demo.run()
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "FastAPI app (async def route) served by uvicorn with 2 worker processes" in text
    [row] = [line for line in text.splitlines() if line.startswith("  exactly 1..30?  ")]
    assert row.split()[-1] == "yes"  # the AsyncStore counter; the global's column is what it was
    assert "exactly 1..30." in " ".join(text.splitlines())
    demo.assert_clean()


@needs_proc
@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 3])
def test_uvicorn_stops_itself_when_the_demo_is_killed(make_demo: Callable[..., Demo], workers: int) -> None:
    """uvicorn spawns its workers (no inherited descriptors): the lifeline is a FIFO they open by name.

    With one worker uvicorn serves in its master process, which then stops itself.
    """
    demo = make_demo("--server", "uvicorn", "--clients", "1000", "--workers", str(workers))
    proc = demo.start()
    try:
        deadline = time.monotonic() + 30
        # The master, and with --workers > 1 the spawned workers and multiprocessing's resource tracker.
        expected = 1 if workers == 1 else workers + 2
        while len(demo.processes()) < expected:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "uvicorn never started its workers"
            time.sleep(0.01)
        time.sleep(0.5)  # let the workers finish their lifespan startup and watch the lifeline
    finally:
        proc.kill()
        proc.communicate()
    assert demo.wait_no_processes(timeout=15) == []


@needs_proc
@pytest.mark.timeout(60)
def test_uvicorn_interrupt_stops_the_server_and_removes_files(make_demo: Callable[..., Demo]) -> None:
    demo = make_demo("--server", "uvicorn", "--clients", "1000", "--workers", "2")
    proc = demo.start()
    try:
        deadline = time.monotonic() + 30
        while not demo.processes():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "uvicorn never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    demo.assert_clean()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_missing_gunicorn_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['gunicorn'] = None  # makes 'import gunicorn' raise ImportError\n"
        "from sharedstate.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "pip install 'sharedstate[cli]'" in done.stderr
    assert done.stdout == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("missing", ["fastapi", "uvicorn"])
def test_uvicorn_server_missing_fastapi_or_uvicorn_names_the_extra(missing: str) -> None:
    code = (
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # makes the import raise ImportError\n"
        "from sharedstate.cli import main\n"
        "sys.exit(main(['demo', '--server', 'uvicorn']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert f"{missing!r} is needed" in done.stderr
    assert "pip install 'sharedstate[fastapi]'" in done.stderr
    assert done.stdout == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", "memory:// keeps state inside one process"),
        ("sqlite:////nonexistent-dir-for-demo/x.db", "does not exist"),
        ("redis://user:s3cret-pw@127.0.0.1:1/0", "redis://user:***@127.0.0.1:1/0"),
    ],
)
def test_unusable_url_is_one_line_and_starts_nothing(
    make_demo: Callable[..., Demo], url: str, expected: str
) -> None:
    demo = make_demo("--url", url)
    done, _ = demo.run(timeout=60)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "s3cret-pw" not in done.stderr
    assert done.stdout == ""
    assert list(demo.tmpdir.iterdir()) == []


# -- the report ---------------------------------------------------------------------------------


def test_summarize_counts_duplicates_missing_and_errors() -> None:
    replies = [Reply(1, 10, None), Reply(2, 10, None), Reply(1, 11, None), Reply(1, 12, None)]
    replies += [Reply(None, None, "ConnectionResetError: reset")]
    summary = summarize(replies, 5)
    assert summary["responses"] == 4
    assert summary["distinct"] == 2
    assert summary["duplicates"] == 2
    assert summary["missing"] == 3 and summary["missing_values"] == [3, 4, 5]
    assert summary["duplicate_values"] == [1]
    assert summary["errors"] == 1 and summary["error_samples"] == ["ConnectionResetError: reset"]
    assert summary["exact"] is False
    assert summary["workers_used"] == 3
    assert summary["per_worker"][0] == {"pid": 10, "requests": 2, "values": [1, 2]}


def test_summarize_exact_only_for_one_to_n() -> None:
    assert summarize([Reply(v, 1, None) for v in (3, 1, 2)], 3)["exact"] is True
    assert summarize([Reply(v, 1, None) for v in (2, 3, 4)], 3)["exact"] is False  # shifted
    assert summarize([Reply(v, 1, None) for v in (1, 2)], 3)["exact"] is False  # one lost
    assert summarize([Reply(1, 1, None), Reply(2, 1, None), Reply(None, None, "x")], 3)["exact"] is False


def test_ranges() -> None:
    assert ranges([5, 1, 2, 3, 7, 8, 8]) == "1..3, 5, 7..8"
    assert ranges([]) == "-"
    assert ranges(list(range(1, 200, 2)), limit=12) == "1, 3, 5, 7, ..."


def test_to_json_is_json_with_short_lists_on_one_line() -> None:
    report = {
        "naive": {"exact": False, "values": [1, 1, 2], "per_worker": [{"pid": 7, "values": [1, 2]}]},
        "shared": {"exact": True, "values": [], "error_samples": ['a "quoted" error'], "empty": {}},
    }
    text = to_json(report)
    assert json.loads(text) == report
    assert '    "values": [1, 1, 2],' in text.splitlines()
    assert '      {"pid": 7, "values": [1, 2]}' in text.splitlines()
