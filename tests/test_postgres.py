"""What is specific to ``postgresql://`` (the shared suites cover the contract over every backend).

Most tests use the server at ``servers.POSTGRES_URL``, each with a table of its own that is dropped
afterwards. The restart test runs a PostgreSQL server of its own (initdb in a temporary directory,
on a free loopback port) so it can stop and start it without disturbing anyone else.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from sharedstate import Store
from sharedstate.backends import backend_from_url
from sharedstate.errors import BackendUnavailableError
from tests import servers

psycopg = pytest.importorskip("psycopg")
from sharedstate.backends.postgres import PostgresBackend, ddl  # noqa: E402

PASSWORD = "s3cret-pw"


@pytest.fixture
def pg_url() -> str:
    if not servers.reachable(servers.POSTGRES_URL, 5432):
        servers.unavailable(f"PostgreSQL is not reachable at {servers.POSTGRES_URL}")
    return servers.POSTGRES_URL


def _with(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _sql(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _table_exists(url: str, table: str) -> bool:
    return bool(_sql(url, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0])


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    """A table name of this test's own, dropped afterwards."""
    name = f"sharedstate_t{servers.RUN_ID}_{uuid.uuid4().hex[:8]}"
    yield name
    _sql(pg_url, f'DROP TABLE IF EXISTS "{name}"')


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedstate.backends.postgres", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- URL options -------------------------------------------------------------------------------


def test_table_option_puts_rows_in_that_table(pg_url: str, table: str) -> None:
    with Store(_with(pg_url, f"table={table}"), namespace="ns") as store:
        store.set("k", {"a": 1})
        assert store.incr("n", 5) == 5
        rows = _sql(pg_url, f'SELECT key, value IS NULL, num FROM "{table}" ORDER BY key')
        # integers are native bigints in num, everything else codec bytes in value
        assert rows == [("ns/k", False, None), ("ns/n", True, 5)]
        assert store.backend.describe() == _with(pg_url, f"table={table}")


@pytest.mark.parametrize("bad", ["Upper", "1abc", "a-b", "x;drop table y", "", "a" * 51])
def test_bad_table_names_are_refused(pg_url: str, bad: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        backend_from_url(_with(pg_url, f"table={bad}"))
    with pytest.raises(ValueError, match="table name"):
        ddl(bad)


def test_unknown_option_lists_the_known_ones(pg_url: str) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:5432/test?tabel=x"
    with pytest.raises(ValueError) as info:
        backend_from_url(url)
    message = str(info.value)
    assert "'tabel'" in message
    for known in ("table", "create_table", "timeout", "pool_size", "sslmode", "application_name"):
        assert known in message
    assert PASSWORD not in message


@pytest.mark.parametrize("query", ["timeout=0", "timeout=abc", "pool_size=0", "create_table=maybe"])
def test_bad_option_values_are_refused(pg_url: str, query: str) -> None:
    with pytest.raises(ValueError):
        backend_from_url(_with(pg_url, query))


def test_our_options_are_stripped_and_libpq_options_passed_on(pg_url: str, table: str) -> None:
    app_name = f"ss-test-{uuid.uuid4().hex[:8]}"
    url = _with(pg_url, f"table={table}&application_name={app_name}&timeout=3&pool_size=2&create_table=true")
    backend = backend_from_url(url)
    assert isinstance(backend, PostgresBackend)
    assert (backend.table, backend.timeout, backend.pool_size, backend.create_table) == (table, 3.0, 2, True)
    assert "table=" not in backend._conninfo and "timeout=" not in backend._conninfo
    try:
        backend.set("k", b"v")
        seen = _sql(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app_name,))
        assert seen[0][0] >= 1  # libpq got application_name; a libpq-unknown "table" would have failed
    finally:
        backend.close()


def test_postgres_scheme_is_an_alias(pg_url: str, table: str) -> None:
    assert pg_url.startswith("postgresql://")
    url = "postgres://" + pg_url[len("postgresql://") :]
    with Store(_with(url, f"table={table}")) as store:
        store.set("k", "v")
    with Store(_with(pg_url, f"table={table}")) as store:
        assert store.get("k") == "v"


def test_password_is_masked_wherever_it_is_given() -> None:
    port = servers.free_port()
    in_query = f"postgresql://app@127.0.0.1:{port}/db?password={PASSWORD}&timeout=0.5"
    keyword = f"host=127.0.0.1 port={port} user=app password={PASSWORD} dbname=db"
    for backend in (backend_from_url(in_query), PostgresBackend(keyword, timeout=0.5)):
        assert PASSWORD not in backend.describe()
        with pytest.raises(BackendUnavailableError) as info:
            backend.get("k")
        assert PASSWORD not in str(info.value)
        assert "password=***" in str(info.value)
        backend.close()


def test_libpq_options_with_spaces_reach_the_server(pg_url: str, table: str) -> None:
    schema = f"ss_schema_{uuid.uuid4().hex[:8]}"
    _sql(pg_url, f"CREATE SCHEMA {schema}")
    try:
        url = _with(pg_url, f"table={table}&options=-c%20search_path%3D{schema}")
        with Store(url) as store:
            store.set("k", "v")
            assert store.get("k") == "v"
        assert _sql(pg_url, "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{table}",)) == [(True,)]
        assert not _table_exists(pg_url, table)  # not in the default schema
    finally:
        _sql(pg_url, f"DROP SCHEMA {schema} CASCADE")


def test_default_timeout_is_at_most_5_seconds(pg_url: str) -> None:
    backend = backend_from_url(pg_url)
    assert isinstance(backend, PostgresBackend)
    assert backend.timeout <= 5.0
    assert backend._connect_kwargs["connect_timeout"] <= 5


# -- table creation and DDL ----------------------------------------------------------------------


def test_create_table_false_with_missing_table_says_how_to_create_it(pg_url: str, table: str) -> None:
    url = _with(pg_url, f"table={table}&create_table=false")
    with Store(url) as store:
        with pytest.raises(BackendUnavailableError) as info:
            store.set("k", 1)
        message = str(info.value)
        assert f'"{table}" does not exist' in message
        assert "python -m sharedstate.backends.postgres" in message and "--run" in message
        assert f'ddl("{table}")' in message
        with pytest.raises(BackendUnavailableError, match="does not exist"):
            store.get("k")
        assert not _table_exists(pg_url, table)

        result = _cli(url, "--run")
        assert result.returncode == 0, result.stderr
        assert _table_exists(pg_url, table)
        store.set("k", 1)  # the same store works once the table is there
        assert store.get("k") == 1


def test_ddl_is_printed_and_creates_a_working_table(pg_url: str, table: str) -> None:
    result = _cli(_with(pg_url, f"table={table}"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ddl(table)
    assert f'CREATE TABLE IF NOT EXISTS "{table}"' in result.stdout
    assert f'CREATE INDEX IF NOT EXISTS "{table}_expires_at"' in result.stdout
    assert not _table_exists(pg_url, table)  # printing runs nothing

    with psycopg.connect(pg_url, autocommit=True) as conn:  # as a migration tool would run it
        for statement in result.stdout.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(ddl(table).split(";\n")[0])  # idempotent
    with Store(_with(pg_url, f"table={table}&create_table=false")) as store:
        store.set("a", [1, 2])
        assert store.incr("n") == 1
        assert store.get("a") == [1, 2]


def test_cli_refuses_a_bad_url() -> None:
    result = _cli("postgresql://u:pw@127.0.0.1/db?nonsense=1")
    assert result.returncode == 2
    assert "nonsense" in result.stderr


def test_auto_created_table_is_recreated_after_a_drop(pg_url: str, table: str) -> None:
    with Store(_with(pg_url, f"table={table}")) as store:
        store.set("k", 1)
        _sql(pg_url, f'DROP TABLE "{table}"')
        assert store.get("k") is None
        store.set("k", 2)
        assert store.get("k") == 2


def test_concurrent_first_use_creates_the_table_once(pg_url: str, table: str, tmp_path: Path) -> None:
    url = _with(pg_url, f"table={table}")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_incr_worker, args=(url, 20)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert _sql(pg_url, f"SELECT num FROM \"{table}\" WHERE key = 'n'") == [(80,)]


def _incr_worker(url: str, times: int) -> None:
    with Store(url) as store:
        for _ in range(times):
            store.incr("n")


# -- sweeping ----------------------------------------------------------------------------------


def _count(url: str, table: str, where: str = "true") -> int:
    return int(_sql(url, f'SELECT count(*) FROM "{table}" WHERE {where}')[0][0])


def test_lazy_sweep_deletes_expired_rows_in_small_batches(pg_url: str, table: str) -> None:
    backend = backend_from_url(_with(pg_url, f"table={table}"))
    assert isinstance(backend, PostgresBackend)
    try:
        for i in range(25):
            backend.set(f"old{i}", b"x", ttl=0.05)
        backend.set("keep", b"y", ttl=3600)
        time.sleep(0.2)
        backend.sweep_every_writes, backend.sweep_batch, backend.sweep_every_seconds = 5, 10, 3600
        backend._writes = 0
        expired = "expires_at <= now()"
        assert _count(pg_url, table, expired) == 25
        for i in range(4):
            backend.set(f"new{i}", b"z")
            assert _count(pg_url, table, expired) == 25  # nothing swept before the 5th write
        backend.set("new4", b"z")
        assert _count(pg_url, table, expired) == 15  # one batch of 10, not everything at once
        for i in range(5, 10):
            backend.set(f"new{i}", b"z")
        assert _count(pg_url, table, expired) == 5
        assert backend.sweep(limit=3) == 3
        assert backend.sweep() == 2
        assert backend.sweep() == 0
        assert _count(pg_url, table) == 11  # keep + new0..new9: live rows are never swept
    finally:
        backend.close()


def test_expired_rows_are_invisible_before_they_are_swept(pg_url: str, table: str) -> None:
    with Store(_with(pg_url, f"table={table}")) as store:
        store.set("gone", "v", ttl=0.05)
        store.set("n", 7, ttl=0.05)
        time.sleep(0.2)
        assert _count(pg_url, table) == 2  # still stored...
        assert store.get("gone") is None  # ...but never returned
        assert store.keys() == []
        assert store.touch("gone", 10) is False
        assert store.incr("n") == 1  # an expired counter restarts at 0
        assert store.add("gone", "new") is True


# -- integers ----------------------------------------------------------------------------------


def test_incr_overflow_raises_and_leaves_the_value(pg_url: str, table: str) -> None:
    with Store(_with(pg_url, f"table={table}")) as store:
        store.set("n", 2**63 - 2)
        assert store.incr("n") == 2**63 - 1
        with pytest.raises(OverflowError):
            store.incr("n")
        assert store.get("n") == 2**63 - 1


# What another client writes between incr's UPDATE (which found no live integer) and its upsert:
# the upsert must take it in as if the incr had come after it. The first statement is replaced by
# one that writes that row itself and returns nothing, so the interleaving is certain.
_MEANWHILE = {
    "an integer": ("NULL, 41, 1, NULL", 42, None),
    "an expired integer": ("NULL, 41, 1, now() - interval '1 second'", 1, 60.0),
    "a non-integer": ("'\\x78'::bytea, NULL, 1, NULL", TypeError, None),
}


@pytest.mark.parametrize("meanwhile", sorted(_MEANWHILE))
@pytest.mark.parametrize("api", ["sync", "async"])
def test_incr_upsert_takes_in_a_row_written_after_its_update(
    pg_url: str, table: str, meanwhile: str, api: str
) -> None:
    from sharedstate.backends.postgres import AsyncPostgresBackend

    columns, expected, ttl = _MEANWHILE[meanwhile]
    writer = f'INSERT INTO "{table}" (key, value, num, version, expires_at) VALUES (%(key)s, {columns})'
    url = _with(pg_url, f"table={table}")
    _sql(pg_url, ddl(table))

    def incr(backend: Any) -> int | type[BaseException]:
        backend._sql.incr_live = f"WITH w AS ({writer}) SELECT 1 WHERE false"
        if api == "sync":
            try:
                return int(backend.incr("n", ttl=ttl))
            except TypeError:
                return TypeError
            finally:
                backend.close()

        async def run() -> int | type[BaseException]:
            try:
                return int(await backend.incr("n", ttl=ttl))
            except TypeError:
                return TypeError
            finally:
                await backend.aclose()

        return asyncio.run(run())

    backend_class = PostgresBackend if api == "sync" else AsyncPostgresBackend
    assert incr(backend_class.from_url(url)) == expected
    rows = _sql(
        pg_url,
        f'SELECT value, num, expires_at IS NOT NULL FROM "{table}" WHERE key = %s',
        ("n",),
    )
    if expected is TypeError:
        assert rows == [(b"x", None, False)]  # left as the other client wrote it
    else:
        assert rows == [(None, expected, ttl is not None)]


def test_foreign_version_tokens_never_match(pg_url: str, table: str) -> None:
    backend = backend_from_url(_with(pg_url, f"table={table}"))
    try:
        backend.set("k", b"v")
        assert backend.compare_and_set("k", "not-a-version", b"w").stored is False
        assert backend.compare_and_set("k", 2**70, b"w").stored is False
        assert backend.delete_if_version("k", b"abc") is False
        entry = backend.get("k")
        assert entry is not None and entry.value == b"v"
    finally:
        backend.close()


# -- failures ----------------------------------------------------------------------------------


def test_closed_port_fails_fast_with_masked_password() -> None:
    port = servers.free_port()  # nothing listens here
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/db?timeout=1"
    with Store(url) as store:
        for op in (lambda: store.get("k"), lambda: store.set("k", 1), lambda: store.incr("n")):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                op()
            elapsed = time.monotonic() - started
            assert elapsed < 5.0
            message = str(info.value)
            assert PASSWORD not in message
            assert f"postgresql://app:***@127.0.0.1:{port}/db" in message
            assert "refused" in message.lower() or "failed" in message.lower()
            assert info.value.applied is False


def test_fork_child_opens_its_own_pool(pg_url: str, table: str) -> None:
    with Store(_with(pg_url, f"table={table}")) as store:
        assert store.incr("n") == 1  # the parent's pool is open and has a connection
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
            ctx = multiprocessing.get_context("fork")
            child = ctx.Process(target=_incr_inherited, args=(store, 200))
            child.start()
        for _ in range(200):
            store.incr("n")
        child.join(120)
        assert child.exitcode == 0
        assert store.get("n") == 401  # both processes' increments, none lost, no protocol mix-up


def _incr_inherited(store: Store, times: int) -> None:
    for _ in range(times):
        store.incr("n")


# -- a server of our own, stopped and started --------------------------------------------------


def _pg_bindir() -> str | None:
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(path, "initdb")):
            return path
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


class OwnPostgres:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port.

    PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
    ``postgres`` user and is driven through ``runuser``.
    """

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            servers.unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        assert bindir is not None
        self.bindir = bindir
        self.prefix: list[str] = []
        self.dir = tempfile.mkdtemp(prefix="sharedstate-pg-")
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                servers.unavailable("running as root without runuser: cannot start PostgreSQL")
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = servers.free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(f"{self.bindir}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(self.dir, "log")
        self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-l", log, "-o", opts, "-w", "-t", "30", "start")

    def stop(self) -> None:
        self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")

    def cleanup(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(
                [*self.prefix, f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.mark.timeout(180)
def test_server_restart_same_store_works_again(own_postgres: OwnPostgres) -> None:
    with Store(f"{own_postgres.url}?timeout=2") as store:
        assert store.incr("n") == 1
        store.set("k", "v")

        own_postgres.stop()
        for op in (lambda: store.get("k"), lambda: store.incr("n"), lambda: store.set("k", "w")):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as info:
                op()
            assert time.monotonic() - started < 10  # timeout=2, plus slack for a busy machine
            assert f"127.0.0.1:{own_postgres.port}" in str(info.value)

        own_postgres.start()
        assert store.get("k") == "v"  # the same Store, no restart of the app
        assert store.incr("n") == 2  # the failed incr above was not applied

        # A restart between two operations: the idle connections the server closed are noticed
        # before anything is sent, so the next write succeeds at its first attempt.
        own_postgres.stop()
        own_postgres.start()
        assert store.incr("n") == 3
        store.set("k", "after")
        assert store.get("k") == "after"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_long_outage_recovers_at_the_first_attempt(own_postgres: OwnPostgres) -> None:
    """After a long outage psycopg_pool's own reconnect backoff has grown to many seconds; the
    backend replaces the pool on failure, so the first operation after the restart succeeds."""
    with Store(f"{own_postgres.url}?timeout=1") as store:
        store.set("k", 1)
        own_postgres.stop()
        down_since = time.monotonic()
        while time.monotonic() - down_since < 20:
            with pytest.raises(BackendUnavailableError):
                store.get("k")
        own_postgres.start()
        assert store.get("k") == 1


# -- connection errors: wrapped, fast, quiet ---------------------------------------------------


def test_empty_url_means_libpq_defaults_not_a_driver_error(table: str) -> None:
    # "postgresql://" is libpq's URL for "all defaults" (local socket, the OS user's role).
    try:
        with Store(f"postgresql://?table={table}&timeout=2") as store:
            store.get("k")
    except BackendUnavailableError as exc:  # no server or role there: ours, with the cause
        assert exc.applied is False
        assert isinstance(exc.__cause__, psycopg.Error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["database", "role"])
def test_missing_database_or_role_fails_at_once_with_one_log_line(
    pg_url: str, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg_url)
    if what == "database":
        url = parts._replace(path=f"/nodb_{servers.RUN_ID}").geturl()
    else:
        netloc = f"norole_{servers.RUN_ID}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
        url = parts._replace(netloc=netloc).geturl()
    caplog.set_level(logging.DEBUG)
    with Store(f"{url}?timeout=4") as store:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as info:
            store.get("k")
        elapsed = time.monotonic() - started
    time.sleep(0.5)  # anything the pool's threads would still log
    assert elapsed < 1.5, f"took {elapsed:.1f}s: waited out the timeout instead of failing at once"
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "does not exist" in str(info.value)
    warnings_logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings_logged) <= 1, [r.getMessage() for r in warnings_logged]
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]
    assert PASSWORD not in caplog.text


def test_refused_statement_says_nothing_was_applied(pg_url: str, table: str) -> None:
    url = _with(pg_url, f"table={table}&create_table=false")
    with Store(url) as store, pytest.raises(BackendUnavailableError) as info:
        store.set("k", 1)
    assert info.value.applied is False
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
