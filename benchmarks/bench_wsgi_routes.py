"""Flask routes under ``gunicorn -w 4`` (sync workers): what one Store call and a server-side session cost.

    python benchmarks/bench_wsgi_routes.py                  # 5 rounds of 3 s cells (about 2 minutes)
    python benchmarks/bench_wsgi_routes.py --quick          # 1 round of 1 s cells, a smoke test
    python benchmarks/bench_wsgi_routes.py --rounds 9 --seconds 2    # what benchmarks/README.md shows
    python benchmarks/bench_wsgi_routes.py --in-process --profile "counter sqlite"   # no server

The WSGI twin of ``bench_asgi_routes.py``. One gunicorn (``-w 4``, sync workers, loopback, a free
port) serves one WSGI app (``make_app`` below): Flask apps mounted by werkzeug's
``DispatcherMiddleware``, each with a :class:`sharedstate.flask.SharedState` configured the usual
way (``SHAREDSTATE_URL``; one store per app), so every request passes the same dispatcher:

- ``hello``: ``GET /hello`` returns ``"hello"``; the ceiling.
- ``counter sqlite://``: the route does ``state.counter("hits").incr()`` (the counter made once at
  app creation, as a module-level one would be) on an SQLite file. Target (issue 14): at least 90 %
  of the hello route's requests per second.
- ``counter lmdb://``: the same on ``lmdb://`` (its own app under ``/lmdb``). Target: >= 90 % too.
- ``counter redis://``: the same on Redis (under ``/redis``), for information.
- ``floor: raw sqlite3 upsert`` and ``floor: raw lmdb write txn``: what the engines alone cost, for
  information: the same root app as hello, a route doing one autocommit ``INSERT ... ON CONFLICT DO
  UPDATE SET value = value + 1 RETURNING value`` on a plain ``sqlite3`` connection (WAL,
  ``synchronous=NORMAL``, its own file, the default busy handler), resp. one ``lmdb`` write
  transaction (``get`` then ``put`` of an 8-byte integer, ``sync=False`` like ``lmdb://``). No
  namespace, codec, expiry or versions: the ceiling of the counter rows on this machine.
  ``floor: raw lmdb write txn + flock``: the same transaction inside an ``flock`` on a lock file, as
  ``lmdb://`` takes for its kill -9 guarantee: the ceiling of ``counter lmdb://`` with it.
- ``session: Flask cookie``: ``session.get("user")`` under Flask's own signed-cookie session (an app
  under ``/cookie``).
- ``session: sharedstate``: the same route on an app with ``SHAREDSTATE_SESSIONS = True`` on the
  SQLite file (under ``/ours``): the cookie holds a signed id, the data lives in the store. Target: at
  least as fast as the cookie one (>= 1.0x its req/s).
  Every session request carries the cookie from one earlier login request of its row.

gunicorn's sync workers serve one request at a time each and close the connection after every
response (``Connection: close``), so the load generator opens a new connection per request (as
``ab`` without ``-k`` does) and the default is 16 connections: 4 per worker keep every worker busy
without queueing hundreds of requests in the listen backlog. The listening socket is bound here with
``TCP_NODELAY`` and handed to gunicorn as ``--bind fd://N`` (gunicorn sets ``TCP_NODELAY`` on its
TCP listeners itself too; Linux copies it to accepted connections).

``--in-process`` runs no server: each row's request goes through the same WSGI app called in this
process, ``--calls`` times per cell, rounds interleaved as below, and the table gives the CPU time
per request, hello's and each row's extra over it; ``--profile ROW`` then runs cProfile (CPU time)
on that row. Far less disturbed by other work on the machine than req/s, and what to profile with.

Load generator, rounds, medians, ratios and the server's CPU (``/proc``): ``_routebench.py``, shared
with ``bench_asgi_routes.py``; see its docstring. The table gives the generator's CPU beside the
server's, so it shows whether the generator was the bottleneck. The targets are judged on req/s; the
ratio by server CPU per request is given beside each, as it moves less on a machine busy with other
work.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import suppress
from typing import Any

from _routebench import (
    FLOOR_UPSERT,
    WARMUP_S,
    Row,
    Samples,
    Server,
    add_load_arguments,
    check_rows,
    cpu_ratio,
    open_floor_sqlite,
    print_generator_share,
    print_table,
    ratio,
    run_rounds,
    select_rows,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TMP_ENV = "BENCH_WSGI_TMP"
NS_ENV = "BENCH_WSGI_NAMESPACE"
BACKENDS_ENV = "BENCH_WSGI_BACKENDS"
READY = "bench-wsgi-routes: app ready"
SECRET = "bench-wsgi-routes-not-a-real-secret"
COUNTER_TARGET = 0.90  # counter sqlite:// and lmdb:// rps >= 90 % of hello rps
SESSION_TARGET = 1.0  # sharedstate session rps >= Flask cookie session rps


# -- the app (made in each gunicorn worker) --------------------------------------------------------


def make_app() -> Any:
    """gunicorn ``bench_wsgi_routes:make_app()``: every row's route (see the module docstring)."""
    from flask import Flask, session
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from sharedstate.flask import SharedState

    tmp, namespace = os.environ[TMP_ENV], os.environ[NS_ENV]
    urls = {
        "sqlite": f"sqlite:///{tmp}/bench.sqlite3",
        "redis": REDIS_URL,
        "lmdb": f"lmdb:///{tmp}/bench.lmdb",
    }

    def flask_app(name: str, url: str | None = None, *, sessions: bool = False) -> Flask:
        app = Flask(f"bench_{name}")
        app.config["SECRET_KEY"] = SECRET
        if url is not None:
            app.config.update(
                SHAREDSTATE_URL=url, SHAREDSTATE_NAMESPACE=namespace, SHAREDSTATE_SESSIONS=sessions
            )
            state = SharedState(app)
            counter = state.counter("hits")
            with app.app_context():
                counter.get()  # connect before the first request

            @app.route("/counter")
            def incr() -> str:
                return str(counter.incr())

        return app

    root = flask_app("root", urls["sqlite"])

    @root.route("/hello")
    def hello() -> str:
        return "hello"

    # The floors: the engines alone, in the same app as hello (see the module docstring).
    raw_sqlite = open_floor_sqlite(f"{tmp}/floor.sqlite3")

    @root.route("/floor/sqlite")
    def floor_sqlite() -> str:
        row = raw_sqlite.execute(FLOOR_UPSERT).fetchone()
        return str(row[0])

    if "lmdb" in os.environ[BACKENDS_ENV].split(","):
        import lmdb

        raw_lmdb = lmdb.open(f"{tmp}/floor.lmdb", map_size=1 << 26, sync=False, metasync=False)

        def lmdb_increment() -> int:
            with raw_lmdb.begin(write=True) as txn:
                raw = txn.get(b"hits")
                value = int.from_bytes(raw, "little", signed=True) + 1 if raw else 1
                txn.put(b"hits", value.to_bytes(8, "little", signed=True))
            return value

        @root.route("/floor/lmdb")
        def floor_lmdb() -> str:
            return str(lmdb_increment())

        import fcntl

        lock_fd = os.open(f"{tmp}/floor.lmdb/write.lock", os.O_RDWR | os.O_CREAT, 0o600)

        @root.route("/floor/lmdb-flock")
        def floor_lmdb_flock() -> str:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # lmdb://'s write lock (its kill -9 guarantee)
            try:
                return str(lmdb_increment())
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def login() -> str:
        session["user"] = "alice"
        return "ok"

    def read() -> str:
        return str(session.get("user", ""))

    mounts: dict[str, Any] = {}
    for name in os.environ[BACKENDS_ENV].split(","):
        if name != "sqlite":
            mounts[f"/{name}"] = flask_app(name, urls[name])
    for name, app in (
        ("cookie", flask_app("cookie")),
        ("ours", flask_app("ours", urls["sqlite"], sessions=True)),
    ):
        app.add_url_rule("/login", view_func=login)
        app.add_url_rule("/read", view_func=read)
        mounts[f"/{name}"] = app
    print(f"{READY} (pid {os.getpid()})", file=sys.stderr, flush=True)
    return DispatcherMiddleware(root, mounts)


# -- the server ------------------------------------------------------------------------------------


def start_server(workers: int, env: dict[str, str], tmp: str) -> Server:
    """``gunicorn -w N --bind fd://FD`` (sync workers), the socket bound by :class:`_routebench.Server`."""
    here = os.path.dirname(os.path.abspath(__file__))

    def command(fd: int) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}",
            "--workers", str(workers), "--worker-class", "sync", "--backlog", "2048",
            "--graceful-timeout", "2", "--log-level", "info", "--chdir", here,
            "bench_wsgi_routes:make_app()",
        ]  # fmt: skip

    return Server("gunicorn", command, READY, workers, env, tmp)


# -- the driver ------------------------------------------------------------------------------------


def _available_backends() -> tuple[list[str], list[str]]:
    from sharedstate import Store

    ok, missing = ["sqlite"], []
    if importlib.util.find_spec("lmdb") is not None:
        ok.append("lmdb")
    else:
        missing.append("counter lmdb:// | the lmdb package is not installed")
    try:
        with Store(REDIS_URL, namespace=f"bench-wsgi-probe-{secrets.token_hex(4)}") as probe:
            probe.counter("probe").get()
        ok.append("redis")
    except Exception as exc:
        missing.append(f"counter redis:// | {type(exc).__name__}")
    return ok, missing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_arguments(parser, connections=16)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn -w")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="no server: call the WSGI app in this process, --calls times per cell, and report the "
        "CPU time per request (see the module docstring)",
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per cell with --in-process")
    parser.add_argument(
        "--profile",
        default="",
        metavar="ROW",
        help="with --in-process: then cProfile (CPU time) --calls calls of the first row whose name "
        "contains ROW",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0

    backends, missing = _available_backends()
    rows = [Row("hello", "/hello"), Row("counter sqlite://", "/counter")]
    rows.append(Row("floor: raw sqlite3 upsert", "/floor/sqlite"))
    for b in backends:
        if b != "sqlite":
            rows.append(Row(f"counter {b}://", f"/{b}/counter"))
        if b == "lmdb":
            rows.append(Row("floor: raw lmdb write txn", "/floor/lmdb"))
            rows.append(Row("floor: raw lmdb write txn + flock", "/floor/lmdb-flock"))
    rows.append(Row("session: Flask cookie", "/cookie/read", "/cookie/login"))
    rows.append(Row("session: sharedstate", "/ours/read", "/ours/login"))
    rows = select_rows(rows, args.only)

    tmp = tempfile.mkdtemp(prefix="bench-wsgi-")
    namespace = f"bench-wsgi-{secrets.token_hex(6)}"
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update({TMP_ENV: tmp, NS_ENV: namespace, BACKENDS_ENV: ",".join(backends)})
    env.pop("GUNICORN_CMD_ARGS", None)
    if args.in_process:
        os.environ.update({TMP_ENV: tmp, NS_ENV: namespace, BACKENDS_ENV: ",".join(backends)})
        try:
            _in_process(rows, args)
        finally:
            _cleanup(backends, namespace, tmp)
        return
    print(
        f"gunicorn -w {args.workers} (sync) on 127.0.0.1; load: {args.generators} generator "
        f"process(es), {args.connections} connections (a new one per request: Connection: close); "
        f"{args.rounds} rounds of {args.seconds:g} s cells (+{WARMUP_S:g} s warm-up); "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    server = start_server(args.workers, env, tmp)
    try:

        def check(row: Row, body: str) -> None:
            if row.cookie_from:
                assert body == "alice", (row.path, body)

        cookies = check_rows(server.port, rows, check)
        samples = run_rounds(server.port, server.proc.pid, rows, cookies, args)
    finally:
        server.stop()
        _cleanup(backends, namespace, tmp)
    _report(rows, samples, missing, args)


def _cleanup(backends: list[str], namespace: str, tmp: str) -> None:
    if "redis" in backends:
        from sharedstate import Store

        with suppress(Exception), Store(REDIS_URL, namespace=namespace) as store:
            store.delete_many(store.keys())
    shutil.rmtree(tmp, ignore_errors=True)


def _in_process(rows: list[Row], args: argparse.Namespace) -> None:
    """``--in-process``: each row's request through the WSGI app in this process, CPU time each."""
    import cProfile
    import pstats

    from werkzeug.test import EnvironBuilder

    app = make_app()

    def call(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started.append((status, headers))

        body = app(dict(environ), start_response)
        try:
            return started[0][0], started[0][1], b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()

    def environ(path: str, cookie: str = "") -> dict[str, Any]:
        headers = {"Cookie": cookie} if cookie else {}
        return EnvironBuilder(path=path, headers=headers).get_environ()

    environs = {}
    for row in rows:
        cookie = ""
        if row.cookie_from:
            _, headers, _ = call(environ(row.cookie_from))
            cookie = next(v for k, v in headers if k == "Set-Cookie").split(";", 1)[0]
        environs[row.name] = environ(row.path, cookie)
        status, _, body = call(environs[row.name])
        assert status.startswith("200"), (row.path, status, body)
        if row.cookie_from:
            assert body == b"alice", (row.path, body)
    print(
        f"in process (no server): {args.rounds} rounds of {args.calls} calls per row, CPU time per request",
        flush=True,
    )
    us: dict[str, list[float]] = {row.name: [] for row in rows}
    for r in range(args.rounds):
        shift = r % len(rows)
        for row in rows[shift:] + rows[:shift]:
            env = environs[row.name]
            t0 = time.process_time()
            for _ in range(args.calls):
                call(env)
            us[row.name].append((time.process_time() - t0) / args.calls * 1e6)
    print()
    print("| route | CPU µs/request (median) | min..max | over hello | hello's / this row's |")
    print("|---|---|---|---|---|")
    hello = statistics.median(us["hello"])
    for row in rows:
        mine = statistics.median(us[row.name])
        ratio_ = statistics.median(h / m for h, m in zip(us["hello"], us[row.name], strict=True))
        print(
            f"| {row.name} | {mine:.1f} | {min(us[row.name]):.1f}..{max(us[row.name]):.1f} "
            f"| {mine - hello:+.1f} | {ratio_:.2f}x |"
        )
    print()
    print(
        "No server and no HTTP here: under gunicorn every request also pays the server's own work "
        "(accept, parse, write, close), so a row's extra µs over hello is what carries over."
    )
    if args.profile:
        row = next(r for r in rows if args.profile in r.name)
        env = environs[row.name]
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(args.calls):
            call(env)
        profiler.disable()
        print(f"\ncProfile (CPU time) of {args.calls} calls of {row.name}:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def _report(rows: list[Row], samples: Samples, missing: list[str], args: argparse.Namespace) -> None:
    print_table(rows, samples, missing)
    print("Ratios (median of per-round ratios) vs targets:")
    for name in (
        "counter sqlite://",
        "counter lmdb://",
        "counter redis://",
        "floor: raw sqlite3 upsert",
        "floor: raw lmdb write txn",
        "floor: raw lmdb write txn + flock",
    ):
        if name not in samples:
            continue
        value = ratio(samples, name, "hello")
        judged = (
            f"(target >= {COUNTER_TARGET:.2f}x) {'PASS' if value >= COUNTER_TARGET else 'FAIL'}"
            if name in ("counter sqlite://", "counter lmdb://")
            else "(for information: the engine alone, a ceiling)"
            if "floor" in name
            else "(for information)"
        )
        by_cpu = cpu_ratio(samples, name, "hello")
        cpu_judged = (
            f" {'PASS' if by_cpu >= COUNTER_TARGET else 'FAIL'}"
            if name in ("counter sqlite://", "counter lmdb://")
            else ""
        )
        print(
            f"  {name} / hello: {value:.2f}x {judged}; by server CPU per request: {by_cpu:.2f}x{cpu_judged}"
        )
    if {"session: sharedstate", "session: Flask cookie"} <= samples.keys():
        value = ratio(samples, "session: sharedstate", "session: Flask cookie")
        verdict = "PASS" if value >= SESSION_TARGET else "FAIL"
        by_cpu = cpu_ratio(samples, "session: sharedstate", "session: Flask cookie")
        print(
            f"  session sharedstate / Flask cookie: {value:.2f}x (target >= {SESSION_TARGET:.2f}x) "
            f"{verdict}; by server CPU per request: {by_cpu:.2f}x "
            f"{'PASS' if by_cpu >= SESSION_TARGET else 'FAIL'}"
        )
    print_generator_share(samples, args)


if __name__ == "__main__":
    main()
