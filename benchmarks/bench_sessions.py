"""Flask sessions side by side: sharedstate against Flask's cookie session and Flask-Session.

    python benchmarks/bench_sessions.py              # every subject (about a minute on 2 cores)
    python benchmarks/bench_sessions.py --only sharedstate-sqlite,flask-session-sqlalchemy
    python benchmarks/bench_sessions.py --rounds 3 --latency 300

Each subject is the same small Flask app with a different session setup, served by werkzeug's
threaded server in a process of its own on a free loopback port. The client behaves like one
browser: one cookie jar, updated from every response's ``Set-Cookie``, sent with every request.

- lost (of 50): 50 requests, 10 at a time, of one user. ``rmw`` runs the code everybody writes,
  ``session["n"] = session.get("n", 0) + 1``; ``keys`` sets a different key per request; ``incr``
  uses ``session.incr("n")`` (sharedstate only). Lost = 50 minus what the session holds afterwards.
  ``errors`` counts responses that were not 200.
- read / write: median latency (ms) of a request that reads the session, and of one that writes a
  key, one request at a time (``--latency`` of each, after a warm-up).

Needs Redis on 127.0.0.1:6379 for the redis subjects (``--redis`` to change). Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/0"
SUBJECTS = [
    "flask-cookie",
    "flask-session-sqlalchemy",
    "flask-session-redis",
    "sharedstate-sqlite",
    "sharedstate-redis",
    "sharedstate-sqlite+lock",
    "sharedstate-redis+lock",
]
SECRET = "bench-secret"
N, AT_ONCE = 50, 10
# Every Redis key of a run starts with this (servers inherit it), so the run removes its keys after.
RUN = os.environ.setdefault("SHAREDSTATE_BENCH_SESSIONS_RUN", f"sessbench{uuid.uuid4().hex[:8]}")


# -- the app under test (runs in the server process) ---------------------------------------------


def make_app(subject: str, workdir: str, redis_url: str) -> Any:
    from flask import Flask, jsonify, session

    app = Flask("bench")
    app.config["SECRET_KEY"] = SECRET
    prefix = f"{RUN}{subject.replace('-', '').replace('+', '')}"
    ours = subject.startswith("sharedstate")
    if subject == "flask-session-sqlalchemy":
        from flask_session import Session
        from flask_sqlalchemy import SQLAlchemy

        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{workdir}/flask_session.sqlite3"
        db = SQLAlchemy(app)
        app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db)
        Session(app)
    elif subject == "flask-session-redis":
        import redis
        from flask_session import Session

        app.config.update(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(redis_url),
            SESSION_KEY_PREFIX=prefix + ":",
        )
        Session(app)
    elif ours:
        from sharedstate.flask import SharedState

        backend = subject.removeprefix("sharedstate-").removesuffix("+lock")
        url = f"sqlite:///{workdir}/sharedstate.sqlite3" if backend == "sqlite" else redis_url
        app.config.update(
            SHAREDSTATE_URL=url,
            SHAREDSTATE_NAMESPACE=prefix,
            SHAREDSTATE_SESSIONS=True,
            SHAREDSTATE_SESSION_LOCK=subject.endswith("+lock"),
            SHAREDSTATE_SESSION_IDLE_TIMEOUT=600,
        )
        SharedState(app)

    @app.get("/start")
    def start() -> str:
        session["n"] = 0
        session["user"] = "bench"
        return "ok"

    @app.get("/rmw")
    def rmw() -> str:
        session["n"] = session.get("n", 0) + 1
        return "ok"

    @app.get("/incr")
    def incr() -> str:
        return str(session.incr("n"))  # type: ignore[attr-defined]

    @app.get("/key/<k>")
    def key(k: str) -> str:
        session[k] = 1
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(session.get("user"))

    @app.get("/write/<v>")
    def write(v: str) -> str:
        session["w"] = v
        return "ok"

    @app.get("/dump")
    def dump() -> Any:
        return jsonify(dict(session))

    return app


def serve(subject: str, workdir: str, redis_url: str) -> None:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = make_app(subject, workdir, redis_url)
    flask_wsgi = app.wsgi_app

    def timed_wsgi(environ: Any, start_response: Any) -> Any:
        # Flask calls start_response after the view ran and the session was saved: report the
        # time the app spent so far, free of the client's and the HTTP server's noise.
        started = time.perf_counter()

        def start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            headers.append(("X-App-Us", str(round((time.perf_counter() - started) * 1e6))))
            return start_response(status, headers, *rest)

        return flask_wsgi(environ, start)

    app.wsgi_app = timed_wsgi  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


# -- the client: one browser --------------------------------------------------------------------


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict[str, str] = {}
        self.mutex = threading.Lock()

    app_us: list[float]

    def get(self, path: str) -> tuple[int, str]:
        with self.mutex:
            cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            resp = conn.getresponse()
            body = resp.read().decode()
            if hasattr(self, "app_us"):
                self.app_us.append(float(resp.getheader("X-App-Us") or "nan"))
            for header in resp.msg.get_all("Set-Cookie") or []:
                parsed: SimpleCookie = SimpleCookie()
                parsed.load(header)
                with self.mutex:
                    for name, morsel in parsed.items():
                        if morsel.value:
                            self.jar[name] = morsel.value
                        else:
                            self.jar.pop(name, None)
            return resp.status, body
        finally:
            conn.close()


def lost_updates(port: int, kind: str) -> tuple[int, int]:
    """(lost, errors) of N concurrent requests of one browser, AT_ONCE at a time."""
    browser = Browser(port)
    assert browser.get("/start")[0] == 200
    paths = {"rmw": ["/rmw"] * N, "incr": ["/incr"] * N, "keys": [f"/key/k{i}" for i in range(N)]}[kind]
    with ThreadPoolExecutor(AT_ONCE) as pool:
        statuses = [s for s, _ in pool.map(browser.get, paths)]
    errors = sum(1 for s in statuses if s != 200)
    status, body = browser.get("/dump")
    data = json.loads(body) if status == 200 else {}
    kept = data.get("n", 0) if kind != "keys" else sum(1 for k in data if k.startswith("k"))
    return N - kept, errors


def timed(browser: Browser, path: str, count: int) -> tuple[list[float], list[float]]:
    """(round-trip ms, in-app ms) of ``count`` requests, one at a time."""
    samples = []
    browser.app_us = []
    for i in range(count):
        started = time.perf_counter()
        status, _ = browser.get(path.format(i=i))
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200, (path, status)
    return samples, [us / 1000 for us in browser.app_us]


def latencies(ports: dict[str, int], count: int) -> dict[str, dict[str, float]]:
    """Median ms per subject of reads and writes, interleaved in chunks across subjects so that
    noise from the (shared) machine falls on every subject alike."""
    browsers = {name: Browser(port) for name, port in ports.items()}
    kinds = ["read", "write", "read_app", "write_app"]
    samples: dict[str, dict[str, list[float]]] = {name: {k: [] for k in kinds} for name in ports}
    for browser in browsers.values():
        assert browser.get("/start")[0] == 200
        timed(browser, "/read", 20)  # warm-up: connections, caches, code paths
        timed(browser, "/write/{i}", 20)
    chunk = 20
    for _ in range(max(1, count // chunk)):
        for name, browser in browsers.items():
            for kind, path in [("read", "/read"), ("write", "/write/{i}")]:
                total, in_app = timed(browser, path, chunk)
                samples[name][kind] += total
                samples[name][kind + "_app"] += in_app
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def start_server(subject: str, args: argparse.Namespace, workdir: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", subject, "--workdir", workdir, "--redis", args.redis],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def measure_lost(subject: str, port: int, rounds: int) -> dict[str, Any]:
    row: dict[str, Any] = {"subject": subject, "errors": 0}
    kinds = ["rmw", "keys"] + (["incr"] if subject.startswith("sharedstate") else [])
    for kind in kinds:
        results = [lost_updates(port, kind) for _ in range(rounds)]
        row[f"lost_{kind}"] = statistics.mean(r[0] for r in results)
        row["errors"] += sum(r[1] for r in results)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated subjects: " + ",".join(SUBJECTS))
    parser.add_argument("--rounds", type=int, default=2, help="runs of each lost-update scenario (mean)")
    parser.add_argument("--latency", type=int, default=200, help="requests per latency measurement")
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.workdir, args.redis)
        return 0
    subjects = args.only.split(",") if args.only else SUBJECTS
    unknown = set(subjects) - set(SUBJECTS)
    if unknown:
        parser.error(f"unknown subjects: {', '.join(sorted(unknown))}")
    rows = []
    procs: list[subprocess.Popen[str]] = []
    ports: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for subject in subjects:
                print(f"  lost updates: {subject} ...", file=sys.stderr, flush=True)
                sub = os.path.join(workdir, subject)
                os.makedirs(sub)
                proc, port = start_server(subject, args, sub)
                procs.append(proc)
                ports[subject] = port
                rows.append(measure_lost(subject, port, args.rounds))
            print("  latency, all subjects interleaved ...", file=sys.stderr, flush=True)
            for row, (subject, result) in zip(rows, latencies(ports, args.latency).items(), strict=True):
                assert row["subject"] == subject
                for kind in ["read", "write", "read_app", "write_app"]:
                    row[kind + "_ms"] = result[kind]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            if any("redis" in subject for subject in subjects):
                drop_redis_keys(args.redis)
    print_table(rows)
    return 0


def drop_redis_keys(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{RUN}*", count=500):
        client.delete(key)
    client.close()


def print_table(rows: list[dict[str, Any]]) -> None:
    def lost(row: dict[str, Any], kind: str) -> str:
        value = row.get(f"lost_{kind}")
        return "-" if value is None else f"{round(value, 1):g}"

    print()
    print(f"One browser, {N} requests {AT_ONCE} at a time; latency: median of one-at-a-time requests")
    print("(HTTP: measured by the client; app: time inside the Flask app, session load and save included).")
    print()
    print(
        "| subject | lost rmw (of 50) | lost keys (of 50) | lost incr (of 50) | errors "
        "| read ms HTTP | read ms app | write ms HTTP | write ms app |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['subject']} | {lost(row, 'rmw')} | {lost(row, 'keys')} | {lost(row, 'incr')} "
            f"| {row['errors']} | {row['read_ms']:.2f} | {row['read_app_ms']:.3f} "
            f"| {row['write_ms']:.2f} | {row['write_app_ms']:.3f} |"
        )
    by = {row["subject"]: row for row in rows}
    print()
    for ours, peer in [
        ("sharedstate-sqlite", "flask-session-sqlalchemy"),
        ("sharedstate-redis", "flask-session-redis"),
    ]:
        if ours in by and peer in by:
            for kind, label in [("read_ms", "read (HTTP)"), ("read_app_ms", "read (app)")]:
                ratio = by[ours][kind] / by[peer][kind]
                verdict = "PASS" if ratio <= 1.0 else "FAIL"
                print(f"{label} latency {ours} / {peer}: {ratio:.2f}x (target <= 1.0x) {verdict}")


if __name__ == "__main__":
    sys.exit(main())
