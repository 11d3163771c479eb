"""``sharedstate race URL``: fire N concurrent requests at an endpoint and report what came back.

A load generator for one question: does this endpoint hand out unique values under concurrency? It
sends ``-n`` requests from ``-c`` threads (each with its own keep-alive ``http.client`` connection),
then reports status codes, distinct bodies, duplicates, gaps (when the bodies are integers) and latency
percentiles. Standard library only.

Safety: the run is bounded in count (``MAX_REQUESTS``), threads (``MAX_CONCURRENCY``) and time
(``--max-time``), and only loopback targets are allowed unless ``--allow-remote`` is given, because
pointing a load generator at someone else's server is an attack.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import itertools
import json
import math
import re
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import SplitResult, urlsplit

from sharedstate.urls import mask_url

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 1_000
#: Bodies longer than this are compared by their first bytes only (keeps memory bounded).
BODY_LIMIT = 256
#: How many duplicate values / missing integers the report lists (the counts are always complete).
LIST_LIMIT = 20

#: The keys of ``--json`` output, in order. Documented in docs/tools.md; tests pin them.
JSON_KEYS = (
    "url",
    "requests",
    "concurrency",
    "completed",
    "not_sent",
    "errors",
    "elapsed_s",
    "requests_per_s",
    "status",
    "distinct_bodies",
    "integers",
    "duplicates",
    "duplicate_values",
    "min",
    "max",
    "gaps",
    "missing",
    "latency_ms",
    "unique",
)


class RaceError(Exception):
    """A usage or connection problem, reported as one line with exit status 2."""


def _positive_int(limit: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fire N HTTP requests at URL with C concurrent connections and report status codes, distinct "
        "bodies, duplicates and gaps (when bodies are integers) and latency percentiles. Point it at an "
        "endpoint that should return a unique value per request, e.g. a counter."
    )
    parser.add_argument("url", metavar="URL", help="http:// or https:// URL of the endpoint")
    parser.add_argument(
        "-n",
        "--requests",
        type=_positive_int(MAX_REQUESTS),
        default=1000,
        help=f"number of requests (default 1000, at most {MAX_REQUESTS})",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int(MAX_CONCURRENCY),
        default=50,
        help=f"concurrent connections (default 50, at most {MAX_CONCURRENCY})",
    )
    parser.add_argument("-X", "--method", default="GET", help="HTTP method (default GET)")
    parser.add_argument(
        "--expect-unique",
        action="store_true",
        help="exit with status 1 if any successful (2xx) response body repeats",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (fixed keys)")
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="per-request connect/read timeout in seconds (default 10)",
    )
    parser.add_argument(
        "--max-time",
        type=_positive_float,
        default=120.0,
        metavar="S",
        help="overall deadline in seconds; requests not started by then are reported as not sent "
        "(default 120)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback host. race is a load generator: by default it only targets "
        "127.0.0.0/8, ::1 and localhost, so a typo cannot flood somebody else's server. Only use this "
        "against servers you run.",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="https: do not verify the certificate (self-signed dev certs)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")


# --- target checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    parts: SplitResult
    host: str
    port: int
    path: str


def parse_target(url: str) -> Target:
    """Validate ``url`` (http/https, host, port) or raise :class:`RaceError`."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RaceError(f"invalid URL {shown!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RaceError(f"invalid URL {shown!r}: expected http://host[:port]/path or https://...")
    if any(ch.isspace() for ch in url):
        raise RaceError(f"invalid URL {shown!r}: contains whitespace")
    if not url.isascii() or any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise RaceError(f"invalid URL {shown!r}: non-ASCII or control characters (percent-encode them)")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=shown, parts=parts, host=parts.hostname, port=port, path=path)


def is_loopback(host: str) -> bool:
    """True if every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise RaceError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def preflight(target: Target, timeout: float) -> None:
    """Open (and close) one TCP connection so a dead server is one clear error, not N failures."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise RaceError(f"connection refused by {target.url} (is the server running?)") from None
    except TimeoutError:
        raise RaceError(f"cannot connect to {target.url}: timed out after {timeout:g} s") from None
    except OSError as exc:
        raise RaceError(f"cannot connect to {target.url}: {exc.strerror or exc}") from None


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    """What the worker threads collected; appends are guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: list[bytes] = field(default_factory=list)  # 2xx bodies, stripped and truncated
    latencies: list[float] = field(default_factory=list)  # seconds, responses only
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    done: int = 0


class Runner:
    """Sends ``total`` requests from ``concurrency`` threads; each thread keeps one connection."""

    def __init__(self, target: Target, args: argparse.Namespace) -> None:
        self.target = target
        self.total: int = args.requests
        self.concurrency: int = min(args.concurrency, args.requests)
        self.method: str = args.method.upper()
        self.timeout: float = args.timeout
        self.deadline = time.monotonic() + args.max_time
        self.insecure: bool = args.insecure
        self.results = Results()
        self.stop = threading.Event()
        self._claim_lock = threading.Lock()
        self._claimed = 0

    def _claim(self) -> bool:
        with self._claim_lock:
            if self._claimed >= self.total or self.stop.is_set() or time.monotonic() >= self.deadline:
                return False
            self._claimed += 1
            return True

    def _connect(self) -> http.client.HTTPConnection:
        if self.target.parts.scheme == "https":
            context = ssl.create_default_context()
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(
                self.target.host, self.target.port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout)

    def _worker(self) -> None:
        res = self.results
        conn = self._connect()
        host_header = self.target.parts.netloc.rpartition("@")[2]
        headers = {"Host": host_header, "User-Agent": "sharedstate-race", "Accept": "*/*"}
        try:
            while self._claim():
                with res.lock:
                    res.started += 1
                t0 = time.perf_counter()
                try:
                    conn.request(self.method, self.target.path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    conn.close()  # a fresh connection for the next request
                    with res.lock:
                        res.errors[type(exc).__name__] += 1
                        res.done += 1
                    continue
                elapsed = time.perf_counter() - t0
                with res.lock:
                    res.statuses[resp.status] += 1
                    res.latencies.append(elapsed)
                    if 200 <= resp.status < 300:
                        res.bodies.append(body.strip()[:BODY_LIMIT])
                    res.done += 1
        finally:
            conn.close()

    def run(self, progress: Progress | None) -> float:
        """Run to completion (or deadline); return the elapsed wall time in seconds."""
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=self._worker, name=f"race-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    # The deadline also bounds requests in flight: a hung server cannot hold us past
                    # max-time + timeout.
                    t.join(0.1)
                    if progress is not None:
                        progress.update(self.results.done, self.total, time.monotonic() - t0)
                    if time.monotonic() > self.deadline + self.timeout + 1:
                        self.stop.set()
                        break
        finally:
            self.stop.set()
        if progress is not None:
            progress.finish(self.results.done, self.total, time.monotonic() - t0)
        return time.monotonic() - t0


class Progress:
    """A bar on a TTY (redrawn in place); otherwise one plain line per ``interval`` seconds."""

    def __init__(self, stream: TextIO, interval: float = 2.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self._last = 0.0

    def update(self, done: int, total: int, elapsed: float) -> None:
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            rate = done / elapsed if elapsed > 0 else 0.0
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {done}/{total}  {rate:,.0f} req/s  {elapsed:.1f} s ")
            self.stream.flush()
        elif elapsed - self._last >= self.interval:
            self._last = elapsed
            self.stream.write(f"race: {done}/{total} requests done after {elapsed:.1f} s\n")
            self.stream.flush()

    def finish(self, done: int, total: int, elapsed: float) -> None:
        if self.tty:
            self.update(done, total, elapsed)
            self.stream.write("\n")
            self.stream.flush()


# --- the report ----------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _as_int(body: bytes) -> int | None:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())):
        return None
    return int(text)


def _display(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def build_report(runner: Runner, elapsed: float) -> dict[str, Any]:
    """The report as a dict with exactly the keys in :data:`JSON_KEYS`."""
    res = runner.results
    with res.lock:  # workers past the hard deadline may still be appending
        statuses = Counter(res.statuses)
        bodies = list(res.bodies)
        latencies = list(res.latencies)
        errors = dict(res.errors)
        started, done = res.started, res.done
    counts = Counter(bodies)
    dup_items = sorted(((b, n) for b, n in counts.items() if n > 1), key=lambda item: (-item[1], item[0]))
    duplicates = sum(n - 1 for _, n in dup_items)

    ints = [_as_int(b) for b in counts]
    integers = bool(ints) and all(i is not None for i in ints)
    lo = hi = gaps = None
    missing: list[int] = []
    if integers:
        distinct = sorted(i for i in ints if i is not None)
        lo, hi = distinct[0], distinct[-1]
        gaps = (hi - lo + 1) - len(distinct)
        # Walk neighbours: O(distinct) however wide the range is.
        for a, b in itertools.pairwise(distinct):
            for m in range(a + 1, b):
                if len(missing) >= LIST_LIMIT:
                    break
                missing.append(m)
            if len(missing) >= LIST_LIMIT:
                break

    lat = sorted(latencies)
    latency = (
        {
            "p50": round(_percentile(lat, 50) * 1000, 3),
            "p95": round(_percentile(lat, 95) * 1000, 3),
            "p99": round(_percentile(lat, 99) * 1000, 3),
            "max": round(lat[-1] * 1000, 3),
        }
        if lat
        else {"p50": None, "p95": None, "p99": None, "max": None}
    )
    completed = sum(statuses.values())
    report: dict[str, Any] = {
        "url": runner.target.url,
        "requests": runner.total,
        "concurrency": runner.concurrency,
        "completed": completed,
        "not_sent": runner.total - started,
        "errors": dict(sorted(errors.items())),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        "status": {str(code): n for code, n in sorted(statuses.items())},
        "distinct_bodies": len(counts),
        "integers": integers,
        "duplicates": duplicates,
        "duplicate_values": {_display(b): n for b, n in dup_items[:LIST_LIMIT]},
        "min": lo,
        "max": hi,
        "gaps": gaps,
        "missing": missing,
        "latency_ms": latency,
        "unique": duplicates == 0,
    }
    assert tuple(report) == JSON_KEYS
    return report


def format_text(report: dict[str, Any]) -> str:
    lines = [f"target      {report['url']}"]
    errors = sum(report["errors"].values())
    rate = report["requests_per_s"]
    lines.append(
        f"requests    {report['requests']} at concurrency {report['concurrency']}: "
        f"{report['completed']} responses, {errors} errors, {report['not_sent']} not sent; "
        f"{report['elapsed_s']:.2f} s" + (f" ({rate:,.0f} req/s)" if rate else "")
    )
    if report["errors"]:
        lines.append("errors      " + ", ".join(f"{k} x {v}" for k, v in report["errors"].items()))
    status = ", ".join(f"{code} x {n}" for code, n in report["status"].items()) or "none"
    lines.append(f"status      {status}")
    ok = sum(n for code, n in report["status"].items() if code.startswith("2"))
    kind = f", integers {report['min']}..{report['max']}" if report["integers"] else ""
    lines.append(f"bodies      {report['distinct_bodies']} distinct of {ok} successful (2xx){kind}")
    if report["duplicates"]:
        shown = ", ".join(f"{v!r} x {n}" for v, n in report["duplicate_values"].items())
        more = " ..." if len(report["duplicate_values"]) >= LIST_LIMIT else ""
        lines.append(f"duplicates  {report['duplicates']}: {shown}{more}")
    else:
        lines.append("duplicates  0")
    if report["integers"]:
        if report["gaps"]:
            more = " ..." if report["gaps"] > len(report["missing"]) else ""
            missing = ", ".join(str(m) for m in report["missing"])
            lines.append(f"gaps        {report['gaps']} missing: {missing}{more}")
        else:
            lines.append("gaps        0")
    lat = report["latency_ms"]
    if lat["p50"] is not None:
        lines.append(
            f"latency     p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  p99 {lat['p99']:.1f} ms  "
            f"max {lat['max']:.1f} ms"
        )
    verdict = "every successful response was unique" if report["unique"] else "DUPLICATES: values repeated"
    lines.append(f"result      {verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done; 1 ``--expect-unique`` and a value repeated; 2 bad URL / unreachable."""
    try:
        if not re.fullmatch(r"[A-Za-z]{1,20}", args.method):
            raise RaceError(f"invalid HTTP method {args.method!r}")
        target = parse_target(args.url)
        if not args.allow_remote and not is_loopback(target.host):
            raise RaceError(
                f"{target.host!r} is not a loopback address; race is a load generator, so it only "
                "targets 127.0.0.0/8, ::1 and localhost unless you pass --allow-remote"
            )
        preflight(target, args.timeout)
    except RaceError as exc:
        print(f"sharedstate race: {exc}", file=sys.stderr)
        return 2
    runner = Runner(target, args)
    progress = None if args.quiet else Progress(sys.stderr)
    elapsed = runner.run(progress)
    report = build_report(runner, elapsed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_text(report))
    if report["not_sent"]:
        print(
            f"sharedstate race: deadline reached after {args.max_time:g} s; "
            f"{report['not_sent']} requests not sent",
            file=sys.stderr,
        )
    return 1 if args.expect_unique and not report["unique"] else 0
