"""``sharedstate race`` against a real threaded HTTP server on a free loopback port."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sharedstate.cli import main
from sharedstate.tools.race import JSON_KEYS, Progress, is_loopback
from tests.servers import free_port

SHAREDSTATE = Path(sys.executable).parent / "sharedstate"

# The documented --json keys (docs/tools.md). Changing them is a breaking change.
DOCUMENTED_KEYS = [
    "url", "requests", "concurrency", "completed", "not_sent", "errors", "elapsed_s", "requests_per_s",
    "status", "distinct_bodies", "integers", "duplicates", "duplicate_values", "min", "max", "gaps",
    "missing", "latency_ms", "unique",
]  # fmt: skip


class CounterApp:
    """Two counters: one with a read-sleep-write race, one behind a lock."""

    def __init__(self) -> None:
        self.unsafe = 0
        self.safe = 0
        self.lock = threading.Lock()
        self.requests = 0
        self.requests_lock = threading.Lock()

    def handle(self, path: str) -> tuple[int, bytes]:
        with self.requests_lock:
            self.requests += 1
        if path == "/unsafe":
            value = self.unsafe
            time.sleep(0.01)  # widen the race window: concurrent requests read the same value
            self.unsafe = value + 1
            return 200, str(value + 1).encode()
        if path == "/safe":
            with self.lock:
                self.safe += 1
                return 200, str(self.safe).encode()
        if path == "/slow":
            time.sleep(0.2)
            return 200, b"slow"
        if path == "/text":
            return 200, b"hello"
        return 404, b"not found"


@pytest.fixture
def server() -> Iterator[tuple[str, CounterApp]]:
    app = CounterApp()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a production server
        disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms ACK stalls

        def do_GET(self) -> None:
            if self.path == "/drop":  # close without answering: the client sees RemoteDisconnected
                self.close_connection = True
                return
            status, body = app.handle(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", app
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def race_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["race", "--json", "-q", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.timeout(60)
def test_locked_counter_is_exact(server: tuple[str, CounterApp], capsys: pytest.CaptureFixture[str]) -> None:
    url, app = server
    code, report = race_json(capsys, f"{url}/safe", "-n", "300", "-c", "20", "--expect-unique")
    assert code == 0
    assert app.requests == 300
    assert report["completed"] == 300
    assert report["status"] == {"200": 300}
    assert report["errors"] == {}
    assert report["not_sent"] == 0
    assert report["distinct_bodies"] == 300
    assert report["duplicates"] == 0
    assert report["duplicate_values"] == {}
    assert report["integers"] is True
    assert (report["min"], report["max"], report["gaps"], report["missing"]) == (1, 300, 0, [])
    assert report["unique"] is True
    latency = report["latency_ms"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


@pytest.mark.timeout(60)
def test_unsafe_counter_shows_duplicates(
    server: tuple[str, CounterApp], capsys: pytest.CaptureFixture[str]
) -> None:
    url, app = server
    code, report = race_json(capsys, f"{url}/unsafe", "-n", "200", "-c", "20", "--expect-unique")
    assert code == 1
    assert app.requests == 200
    assert report["completed"] == 200
    assert report["unique"] is False
    duplicates = report["duplicates"]
    distinct = report["distinct_bodies"]
    assert isinstance(duplicates, int) and isinstance(distinct, int)
    assert duplicates > 0
    # Every response is either the first of its value or a duplicate: the accounting is exact.
    assert distinct + duplicates == 200
    dup_values = report["duplicate_values"]
    assert isinstance(dup_values, dict)
    assert all(n >= 2 for n in dup_values.values())
    # Each value v was reached by a chain of v requests, each reading its predecessor's write; two
    # requests returning the same value cannot be in one chain, so lost updates cap the maximum.
    max_value = report["max"]
    assert isinstance(max_value, int)
    assert max_value <= 200 - duplicates

    # Without --expect-unique the same finding is reported but the exit status is 0.
    assert main(["race", "-q", f"{url}/unsafe", "-n", "40", "-c", "10"]) == 0
    text = capsys.readouterr().out
    assert "DUPLICATES" in text
    assert "duplicates  " in text and "latency     p50" in text


@pytest.mark.timeout(60)
def test_json_keys_are_fixed(server: tuple[str, CounterApp], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = server
    assert list(JSON_KEYS) == DOCUMENTED_KEYS
    _, report = race_json(capsys, f"{url}/text", "-n", "20", "-c", "4")
    assert list(report) == DOCUMENTED_KEYS
    assert report["integers"] is False
    assert (report["min"], report["max"], report["gaps"]) == (None, None, None)
    assert report["distinct_bodies"] == 1 and report["duplicates"] == 19
    _, report = race_json(capsys, f"{url}/missing", "-n", "10", "-c", "2")
    assert list(report) == DOCUMENTED_KEYS
    # Non-2xx bodies are not values: a 404 page repeated is not a duplicate.
    assert report["status"] == {"404": 10}
    assert (report["distinct_bodies"], report["duplicates"], report["unique"]) == (0, 0, True)


@pytest.mark.timeout(60)
def test_deadline_bounds_the_run(server: tuple[str, CounterApp], capsys: pytest.CaptureFixture[str]) -> None:
    url, app = server
    started = time.monotonic()
    code, report = race_json(capsys, f"{url}/slow", "-n", "1000", "-c", "2", "--max-time", "0.5")
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 10  # generous: 0.5 s deadline plus requests in flight on a loaded machine
    not_sent = report["not_sent"]
    completed = report["completed"]
    assert isinstance(not_sent, int) and isinstance(completed, int)
    assert not_sent > 900
    assert completed + not_sent == 1000
    assert app.requests == completed


@pytest.mark.timeout(60)
def test_connection_errors_are_counted(
    server: tuple[str, CounterApp], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = server
    code, report = race_json(capsys, f"{url}/drop", "-n", "10", "-c", "3", "--expect-unique")
    assert code == 0  # nothing repeated: nothing came back
    assert report["errors"] == {"RemoteDisconnected": 10}
    assert (report["completed"], report["not_sent"], report["status"]) == (0, 0, {})
    assert report["latency_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHAREDSTATE), "race", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.timeout(120)
def test_refused_connection_is_one_line_exit_2() -> None:
    port = free_port()  # nothing listens there
    result = run_cli(f"http://127.0.0.1:{port}/", "-n", "10")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"sharedstate race: connection refused by http://127.0.0.1:{port}/ (is the server running?)"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "not-a-url",
        "ftp://127.0.0.1/",
        "http://",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:x/",
        "http://127.0.0.1/caf\u00e9",
        "http://127.0.0.1/a\nb",
    ],
)
def test_bad_url_is_one_line_exit_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["race", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("sharedstate race: invalid URL")


def test_bad_url_in_subprocess_has_no_traceback() -> None:
    result = run_cli("http://user:secret@127.0.0.1:99999/")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr  # passwords are masked


def test_bad_method_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["race", "http://127.0.0.1/", "-X", "GET /x"]) == 2
    assert capsys.readouterr().err == "sharedstate race: invalid HTTP method 'GET /x'\n"


def test_remote_hosts_need_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never routed, so nothing is sent even if the check were missing.
    assert main(["race", "http://192.0.2.1/", "-n", "5", "--timeout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "--allow-remote" in err and "load generator" in err


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.5.6.7")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("192.0.2.1")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("::ffff:10.0.0.1")


def test_limits_are_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["race", "http://127.0.0.1/", "-n", "100001"]) == 2
    assert main(["race", "http://127.0.0.1/", "-c", "0"]) == 2
    assert main(["race", "http://127.0.0.1/", "--timeout", "nan"]) == 2
    assert "must be between 1 and 100000" in capsys.readouterr().err


def test_progress_plain_lines_when_not_a_tty() -> None:
    stream = io.StringIO()
    progress = Progress(stream, interval=1.0)
    for step in range(5):
        progress.update(done=step * 10, total=50, elapsed=step * 0.6)
    progress.finish(50, 50, 3.0)
    # Updates at 0, 0.6, 1.2, 1.8, 2.4 s with a 1 s interval: lines at 1.2 and 2.4 s only.
    assert stream.getvalue().splitlines() == [
        "race: 20/50 requests done after 1.2 s",
        "race: 40/50 requests done after 2.4 s",
    ]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_tty() -> None:
    stream = FakeTTY()
    progress = Progress(stream)
    progress.update(done=25, total=100, elapsed=0.5)
    progress.finish(100, 100, 1.0)
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0].startswith("[" + "#" * 7 + "-" * 23 + "] 25/100  50 req/s")
    assert frames[1].startswith("[" + "#" * 30 + "] 100/100  100 req/s")
    assert stream.getvalue().endswith("\n")


def test_cli_without_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "race" in capsys.readouterr().err
    assert main(["--version"]) == 0
