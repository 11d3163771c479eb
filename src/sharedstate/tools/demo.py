"""``sharedstate demo``: the classic global counter and a sharedstate counter, under a real server.

It serves the app from the question "Are global variables thread safe in Flask?" twice with gunicorn
(``--workers`` sync worker processes on a free loopback port): once with a module-level ``SomeObj``
whose method does ``self.param += 1; return self.param``, once with ``store.counter("hits").incr()``
(see :mod:`sharedstate.tools.demo_apps`). ``--server uvicorn`` serves the same pair as FastAPI apps
under ``uvicorn --workers``, the safe one on an ``AsyncStore`` counter (see
:mod:`sharedstate.tools.demo_asgi`). Each gets ``--clients`` requests released at the same moment
by a ``threading.Barrier``; the demo then prints, side by side, what the clients saw.

The store is an SQLite file in a temporary directory the demo creates and removes, or ``--url``; there
the counter lives under a fresh namespace and is deleted at the end, so existing data is not touched.

Cleanup contract: each server runs in its own process group, which is stopped in ``finally`` (also on
Ctrl-C and SIGTERM), SIGTERM first and SIGKILL after ``STOP_TIMEOUT``; the temporary directory is removed.
If the demo itself is killed with SIGKILL, the workers see their lifeline pipe close and shut the server
down themselves (only the temporary directory stays behind then).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from sharedstate.tools import demo_apps
from sharedstate.urls import mask_url

MAX_CLIENTS = 1000
MAX_WORKERS = 32
#: The servers ``--server`` chooses from; the first is the default.
SERVERS = ("gunicorn", "uvicorn")
#: Seconds for the server to load the app in every worker.
BOOT_TIMEOUT = 20.0
#: Seconds each client waits for its connection and response.
REQUEST_TIMEOUT = 15.0
#: Seconds between SIGTERM and SIGKILL when stopping the server.
STOP_TIMEOUT = 5.0
BACKLOG = 2048

NAIVE_TITLE = ("global SomeObj", "(one per process)")
SHARED_TITLE = "sharedstate counter"


class DemoError(Exception):
    """A problem that stops the demo (missing server, bad URL, server failed to start): exit 2."""


@dataclass(frozen=True)
class Reply:
    """What one client saw: the integer body, the serving worker's pid, or what went wrong."""

    value: int | None
    pid: int | None
    error: str | None


# -- command line ------------------------------------------------------------------------------


def _int_between(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clients",
        type=_int_between(1, MAX_CLIENTS),
        default=100,
        help="simultaneous clients, one request each (default 100)",
    )
    parser.add_argument(
        "--workers",
        type=_int_between(1, MAX_WORKERS),
        default=4,
        help="worker processes per app: gunicorn sync workers, or uvicorn --workers (default 4)",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=SERVERS[0],
        help="gunicorn: plain WSGI apps under gunicorn (default); uvicorn: FastAPI apps under "
        "uvicorn, the shared one on an AsyncStore counter (needs sharedstate[fastapi])",
    )
    parser.add_argument(
        "--url",
        default=None,
        help="store for the shared counter (default: an SQLite file in a temporary directory); "
        "the demo uses a fresh namespace there and deletes its key afterwards",
    )
    parser.add_argument("--json", action="store_true", help='print {"naive": {...}, "shared": {...}}')


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 if the shared counter was exact, 1 if not, 2 if the demo could not run."""
    progress = None if args.json or not sys.stderr.isatty() else sys.stderr
    try:
        with _sigterm_as_interrupt():
            report = run_demo(args.clients, args.workers, args.url, server=args.server, progress=progress)
    except DemoError as exc:
        print(f"sharedstate demo: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(to_json(report))
    else:
        print(render(report))
    return 0 if report["shared"]["exact"] else 1


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt meanwhile, so ``finally`` still stops the servers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM, see above) back meanwhile; raise KeyboardInterrupt right after.

    Used around starting gunicorn, where an interrupt inside ``Popen`` would lose the child's pid so
    nothing could stop it, and around cleanup, which an interrupt would cut short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only: nothing can interrupt this one
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    held = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if callable(current):  # Python-level handlers only: SIG_IGN and SIG_DFL stay as they are
            held[sig] = current
            signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


# -- the demo ----------------------------------------------------------------------------------


def run_demo(
    clients: int = 100,
    workers: int = 4,
    url: str | None = None,
    *,
    server: str = "gunicorn",
    progress: TextIO | None = None,
) -> dict[str, dict[str, Any]]:
    """Serve both apps, fire ``clients`` simultaneous requests at each, return the two summaries.

    ``server`` is ``"gunicorn"`` (WSGI apps, sync workers) or ``"uvicorn"`` (FastAPI apps, the shared
    one on an :class:`~sharedstate.AsyncStore`).
    """
    if server not in SERVERS:
        raise DemoError(f"unknown server {server!r}: expected one of {', '.join(SERVERS)}")
    server_flags = _gunicorn_flags() if server == "gunicorn" else _uvicorn_flags()
    if url is not None and urlsplit(url).scheme.lower() == "memory":
        raise DemoError(
            "memory:// keeps state inside one process, and the demo runs several worker processes: "
            "use sqlite:///path.db, redis://... or postgresql://..."
        )
    from sharedstate.errors import SharedStateError
    from sharedstate.store import Store

    tmpdir = tempfile.mkdtemp(prefix="sharedstate-demo-")
    lifeline_r, lifeline_w = os.pipe()
    lifeline_fifo = -1
    store: Store | None = None
    try:
        store_url = url or f"sqlite:///{os.path.join(tmpdir, 'demo.sqlite3')}"
        label = mask_url(url) if url else "sqlite://, temporary file"
        namespace = f"sharedstate-demo-{secrets.token_hex(6)}"
        try:
            store = Store(store_url, namespace=namespace)
            store.counter(demo_apps.COUNTER_NAME).get()  # fail here, clearly, not in every worker
        except (ValueError, ImportError, SharedStateError) as exc:
            raise DemoError(f"cannot use the store {mask_url(store_url)}: {exc}") from None
        env = _child_env(tmpdir, lifeline_r)
        env[demo_apps.URL_ENV] = store_url
        env[demo_apps.NAMESPACE_ENV] = namespace
        if server == "uvicorn":
            # uvicorn's workers are spawned, not forked: they inherit no descriptor, so they find the
            # lifeline as a FIFO by name. The demo holds it open read-write (it is the only writer).
            fifo = os.path.join(tmpdir, "lifeline.fifo")
            os.mkfifo(fifo, 0o600)
            lifeline_fifo = os.open(fifo, os.O_RDWR)
            env.pop(demo_apps.LIFELINE_FD_ENV, None)
            env[demo_apps.LIFELINE_PATH_ENV] = fifo
        common = (clients, workers, server, server_flags, env, tmpdir, lifeline_r, progress)
        naive = {
            "app": "module-level SomeObj: self.param += 1; return self.param",
            **_serve_and_fire("naive", *common),
        }
        shared_app = (
            f"store.counter('{demo_apps.COUNTER_NAME}').incr()"
            if server == "gunicorn"
            else f"await AsyncStore(...).counter('{demo_apps.COUNTER_NAME}').incr()"
        )
        shared = {"app": shared_app, "store": label, **_serve_and_fire("shared", *common)}
        return {"naive": naive, "shared": shared}
    finally:
        with _interrupts_deferred():
            os.close(lifeline_w)  # after the servers are stopped: tells any survivor to stop
            os.close(lifeline_r)
            if lifeline_fifo >= 0:
                os.close(lifeline_fifo)
            if store is not None:
                with suppress(Exception):  # best effort: never hide the demo's own error
                    store.delete(demo_apps.COUNTER_NAME)
                with suppress(Exception):
                    store.close()
            shutil.rmtree(tmpdir, ignore_errors=True)


def _gunicorn_flags() -> list[str]:
    """Check gunicorn is importable here (the servers run on this interpreter); extra flags it needs."""
    from sharedstate._optional import require

    try:
        require("gunicorn", "cli")
        config = require("gunicorn.config", "cli")
    except ImportError as exc:
        raise DemoError(f"the demo serves its apps with gunicorn, which is missing. {exc}") from None
    known = {setting.name for setting in getattr(config, "KNOWN_SETTINGS", [])}
    # gunicorn >= 25.1 creates a control socket file in $XDG_RUNTIME_DIR or ~/.gunicorn by default.
    return ["--no-control-socket"] if "control_socket_disable" in known else []


def _uvicorn_flags() -> list[str]:
    """Check FastAPI and uvicorn are importable here (the servers run on this interpreter)."""
    from sharedstate._optional import require
    from sharedstate.tools.demo_asgi import EXTRA

    try:
        require("fastapi", EXTRA)
        require("uvicorn", EXTRA)
    except ImportError as exc:
        raise DemoError(
            f"--server uvicorn serves FastAPI apps with uvicorn, which needs more packages. {exc}"
        ) from None
    return []


def _child_env(tmpdir: str, lifeline_r: int) -> dict[str, str]:
    env = dict(os.environ)
    # The demo's flags alone decide how the server runs (uvicorn reads UVICORN_* variables too).
    env.pop("GUNICORN_CMD_ARGS", None)
    for name in [name for name in env if name.startswith("UVICORN_")]:
        del env[name]
    # Make this very copy of sharedstate importable in the workers, also when run from a source tree.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(demo_apps.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env[demo_apps.LIFELINE_FD_ENV] = str(lifeline_r)
    return env


def _serve_and_fire(
    kind: str,
    clients: int,
    workers: int,
    server: str,
    server_flags: list[str],
    env: dict[str, str],
    tmpdir: str,
    lifeline_r: int,
    progress: TextIO | None,
) -> dict[str, Any]:
    if progress is not None:
        print(f"serving the {kind} app with {server} ({workers} workers)...", file=progress)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ready_r, ready_w = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    log_path = os.path.join(tmpdir, f"{server}-{kind}.log")
    try:
        # Bound here and handed over (fd://N, --fd N): the port is ours from the start, no free-port race.
        if server == "uvicorn":
            # Accepted connections inherit it (Linux). uvicorn's workers do not set it on a socket
            # they are handed, and without it each response body waits ~40 ms for a delayed ACK.
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        port = listener.getsockname()[1]
        child_env = dict(env)
        if server == "gunicorn":
            cmd = _gunicorn_command(kind, workers, listener.fileno(), server_flags, tmpdir)
            child_env[demo_apps.READY_FD_ENV] = str(ready_w)
        else:
            cmd = _uvicorn_command(kind, workers, listener.fileno(), server_flags)
            # Spawned workers inherit no descriptor: they open the ready pipe as a FIFO by name. The
            # demo reads it through a read-write descriptor, so it never sees end-of-file meanwhile.
            fifo = os.path.join(tmpdir, f"ready-{kind}.fifo")
            os.mkfifo(fifo, 0o600)
            os.close(ready_r)
            ready_r = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            child_env[demo_apps.READY_PATH_ENV] = fifo
        with _interrupts_deferred(), open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                pass_fds=(listener.fileno(), ready_w, lifeline_r),
                start_new_session=True,  # its own process group, stopped as a whole below
            )
        os.close(ready_w)
        ready_w = -1
        listener.close()  # the server holds its own copy
        _wait_ready(proc, ready_r, workers, log_path, server)
        started = time.monotonic()
        replies = fire(port, clients)
        elapsed = time.monotonic() - started
    finally:
        with _interrupts_deferred():
            if proc is not None:
                _stop(proc)
            listener.close()
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)
    summary = summarize(replies, clients)
    return {"server": server, "workers": workers, **summary, "elapsed_s": round(elapsed, 3)}


def _gunicorn_command(kind: str, workers: int, fd: int, flags: list[str], tmpdir: str) -> list[str]:
    # An empty config file, so a gunicorn.conf.py in the working directory cannot change the setup.
    config_path = os.path.join(tmpdir, "gunicorn_conf.py")
    open(config_path, "w").close()
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        config_path,
        "--bind",
        f"fd://{fd}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--backlog",
        str(BACKLOG),
        "--timeout",
        "30",
        "--graceful-timeout",
        "2",
        "--worker-tmp-dir",
        tmpdir,
        "--log-level",
        "warning",
        *flags,
        f"sharedstate.tools.demo_apps:make_app({kind!r})",
    ]


def _uvicorn_command(kind: str, workers: int, fd: int, flags: list[str]) -> list[str]:
    # --fd: the socket bound by the demo; uvicorn's master hands it on to the workers it spawns.
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--fd",
        str(fd),
        "--workers",
        str(workers),
        "--backlog",
        str(BACKLOG),
        "--lifespan",
        "on",
        "--timeout-graceful-shutdown",
        "2",
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-use-colors",
        *flags,
        "--factory",
        f"sharedstate.tools.demo_asgi:{kind}_app",
    ]


def _wait_ready(
    proc: subprocess.Popen[bytes], ready_r: int, workers: int, log_path: str, server: str = "gunicorn"
) -> None:
    """Wait until every worker has loaded the app (each writes its pid to the ready pipe)."""
    import select

    deadline = time.monotonic() + BOOT_TIMEOUT
    buffer = b""
    pids: set[int] = set()
    while len(pids) < workers:
        if _has_exited(proc):
            raise DemoError(f"{server} stopped before its workers were ready:\n{_tail(log_path)}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DemoError(
                f"{server} started {len(pids)} of {workers} workers within {BOOT_TIMEOUT:.0f}s:\n"
                f"{_tail(log_path)}"
            )
        readable, _, _ = select.select([ready_r], [], [], min(left, 0.1))
        if readable:
            chunk = os.read(ready_r, 4096)
            if not chunk:  # every writer is gone: the server died; the check above reports it
                time.sleep(0.05)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            pids.update(int(line) for line in lines if line.strip().isdigit())


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the server's master exited, without reaping it where possible.

    While it is unreaped (a zombie), its pid, and so its process group id, cannot be reused, which
    makes the final ``killpg`` in :func:`_stop` safe.
    """
    if proc.returncode is not None:
        return True
    if hasattr(os, "waitid"):
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True
    return proc.poll() is not None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL; reap the master last."""
    if proc.returncode is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not _has_exited(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        # Anything left in the group (a stuck master, a worker it did not reap): the master is not
        # reaped yet, so the group id is still ours.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().rstrip().splitlines()[-lines:]
    except OSError:
        return "(no server output)"
    return "\n".join(f"  | {line}" for line in text) or "(no server output)"


# -- the clients -------------------------------------------------------------------------------


def fire(port: int, clients: int, *, timeout: float = REQUEST_TIMEOUT) -> list[Reply]:
    """Send ``GET /`` from ``clients`` threads at once (a barrier releases them together)."""
    barrier = threading.Barrier(clients)
    replies: list[Reply] = [Reply(None, None, "no reply")] * clients

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            barrier.wait(timeout)
            conn.request("GET", "/")  # connects here, after the barrier: a truly simultaneous burst
            response = conn.getresponse()
            body = response.read()
            pid_text = response.getheader(demo_apps.PID_HEADER) or ""
            pid = int(pid_text) if pid_text.isdigit() else None
            if response.status != 200:
                text = body[:80].decode("utf-8", "replace")
                replies[index] = Reply(None, pid, f"HTTP {response.status}: {text}")
            else:
                replies[index] = Reply(int(body), pid, None)
        except Exception as exc:  # every failure is reported, none stops the other clients
            replies[index] = Reply(None, None, f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(i,), name=f"demo-client-{i}", daemon=True)
        for i in range(clients)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 2 * timeout + 5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        barrier.abort()  # on Ctrl-C or a thread that never started: release the waiting clients
    return list(replies)


# -- the report --------------------------------------------------------------------------------


def summarize(replies: Sequence[Reply], clients: int) -> dict[str, Any]:
    """What the clients saw: counts of responses, distinct values, duplicates and missing numbers.

    ``duplicates`` counts responses that repeat a value another client already got; ``missing`` the
    numbers of 1..clients that nobody got; ``exact`` is true when the values are exactly 1..clients.
    """
    values = sorted(r.value for r in replies if r.value is not None)
    errors = [r.error for r in replies if r.error is not None]
    seen = Counter(values)
    missing = [n for n in range(1, clients + 1) if n not in seen]
    by_pid: dict[int, list[int]] = {}
    for reply in replies:
        if reply.value is not None and reply.pid is not None:
            by_pid.setdefault(reply.pid, []).append(reply.value)
    return {
        "clients": clients,
        "responses": len(values),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "distinct": len(seen),
        "duplicates": len(values) - len(seen),
        "missing": len(missing),
        "exact": values == list(range(1, clients + 1)),
        "values": values,
        "missing_values": missing,
        "duplicate_values": sorted(v for v, n in seen.items() if n > 1),
        "workers_used": len(by_pid),
        "per_worker": [
            {"pid": pid, "requests": len(got), "values": sorted(got)} for pid, got in sorted(by_pid.items())
        ],
    }


def to_json(obj: Any, level: int = 0) -> str:
    """JSON with one key per line, but lists of numbers and small flat objects on one line each.

    (``json.dumps(indent=2)`` would spend a line on each of the hundreds of values.)
    """
    pad, inner = "  " * level, "  " * (level + 1)

    def flat(value: Any) -> bool:
        return not isinstance(value, (dict, list)) or (
            isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)
        )

    if isinstance(obj, dict) and obj and not (level >= 2 and all(flat(v) for v in obj.values())):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and not flat(obj):
        return "[\n" + ",\n".join(f"{inner}{to_json(v, level + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj)


def ranges(values: Sequence[int], limit: int = 48) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1..3, 5, 7..8"``, cut to about ``limit`` characters."""
    parts: list[str] = []
    ordered = sorted(set(values))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}..{ordered[j]}")
        i = j + 1
    text = ""
    for n, part in enumerate(parts):
        candidate = part if n == 0 else f"{text}, {part}"
        if len(candidate) > limit and n > 0:
            return f"{text}, ..."
        text = candidate
    return text or "-"


def render(report: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table, what each worker process handed out, and why."""
    naive, shared = report["naive"], report["shared"]
    clients, workers = naive["clients"], naive["workers"]

    def yes_no(flag: bool) -> str:
        return "yes" if flag else "NO"

    rows = [
        ("", NAIVE_TITLE[0], SHARED_TITLE),
        ("", NAIVE_TITLE[1], f"({shared.get('store', '')})"),
        (
            "responses",
            f"{naive['responses']} of {clients}",
            f"{shared['responses']} of {clients}",
        ),
        ("errors", str(naive["errors"]), str(shared["errors"])),
        ("distinct values", str(naive["distinct"]), str(shared["distinct"])),
        ("duplicates", str(naive["duplicates"]), str(shared["duplicates"])),
        (f"missing from 1..{clients}", str(naive["missing"]), str(shared["missing"])),
        ("values seen", ranges(naive["values"], 26), ranges(shared["values"], 26)),
        (f"exactly 1..{clients}?", yes_no(naive["exact"]), yes_no(shared["exact"])),
        (
            "worker processes used",
            f"{naive['workers_used']} of {workers}",
            f"{shared['workers_used']} of {workers}",
        ),
    ]
    widths = [max(len(row[c]) for row in rows) + 3 for c in range(2)]
    plural = "es" if workers != 1 else ""
    if naive.get("server", "gunicorn") == "uvicorn":
        served = f"FastAPI app (async def route) served by uvicorn with {workers} worker process{plural}"
    else:
        served = f"counter app served by gunicorn with {workers} sync worker process{plural}"
    lines = [
        f"sharedstate demo: {clients} clients send one request each, all at the same moment, to the",
        f"same {served} (127.0.0.1).",
        "",
    ]
    lines += [f"  {a:<{widths[0]}}{b:<{widths[1]}}{c}".rstrip() for a, b, c in rows]
    lines += ["", "Which worker process answered which numbers:"]
    for title, section in ((NAIVE_TITLE[0], naive), (SHARED_TITLE, shared)):
        for n, worker in enumerate(section["per_worker"]):
            head = title if n == 0 else ""
            lines.append(
                f"  {head:<22}pid {worker['pid']:<8} {worker['requests']:>4} requests: "
                f"{ranges(worker['values'])}"
            )
    for title, section in ((NAIVE_TITLE[0], naive), (SHARED_TITLE, shared)):
        for sample in section["error_samples"]:
            lines.append(f"  error ({title}): {sample}")
    lines += ["", *_wrap(explain(report))]
    return "\n".join(lines)


def explain(report: dict[str, dict[str, Any]]) -> str:
    """One paragraph: why the global went wrong (or looked right) and why the shared counter did not."""
    naive, shared = report["naive"], report["shared"]
    clients, workers = naive["clients"], naive["workers"]
    server = naive.get("server", "gunicorn")
    if server == "uvicorn":
        inner = (
            "Inside one process there is a second bug that this async def route hides: `self.param "
            "+= 1; return self.param` is a read, an add and a write, and the event loop runs them with "
            "no await in between, so they do not interleave; but in a plain def route (FastAPI runs it "
            "in a thread pool), or with an await between the read and the write, two requests can "
            "interleave them, lose an increment and return the same number."
        )
        alone = "one worker process whose event loop runs the route's read, add and write in one go"
        unscheduled = "its event loop accepted the whole burst before the others woke up"
    else:
        inner = (
            "Inside one process there is a second bug that sync workers hide, because each handles one "
            "request at a time: `self.param += 1; return self.param` is a read, an add and a write, so "
            "under a threaded server (gunicorn --threads, Flask's development server) two requests can "
            "interleave them, lose an increment and return the same number."
        )
        alone = "one worker process handling one request at a time"
        unscheduled = "the others were not scheduled"
    if naive["workers_used"] > 1 and not naive["exact"]:
        why = (
            f"Why: {server} ran {workers} worker processes and each one imported the app, so each has "
            "its own global_obj starting at 0 and counts 1, 2, 3... by itself. Clients served by "
            "different processes got the same numbers (the duplicates), and the numbers one shared "
            f"counter would have reached were never handed out (the missing). {inner}"
        )
    elif naive["workers_used"] > 1 or naive["errors"]:
        why = (
            f"Why: the global went wrong in a way this demo did not expect ({naive['errors']} errors); "
            f"each of the {workers} worker processes has its own global_obj, starting at 0. {inner}"
        )
    else:
        which = (
            alone if workers == 1 else f"only one of the {workers} worker processes answering ({unscheduled})"
        )
        why = (
            f"Why: {which} made the global look right here. It breaks as soon as requests are served "
            "by several processes (run with --workers 4): each process has its own global_obj, "
            f"starting at 0. {inner}"
        )
    if shared["exact"]:
        verdict = (
            f"sharedstate keeps the counter in one place ({shared.get('store', 'the store')}) that every "
            "process and thread uses, and increments it in one atomic operation, so every client got a "
            f"different number: exactly 1..{clients}."
        )
    else:
        verdict = (
            f"The sharedstate counter was NOT exact ({shared['errors']} errors, {shared['duplicates']} "
            "duplicates): that is a bug in sharedstate or a store that failed; please report it."
        )
    return f"{why} {verdict}"


def _wrap(text: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, break_on_hyphens=False)
