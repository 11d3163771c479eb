"""No password in any error message, traceback or log line, whatever characters it holds.

Property tests over random passwords of printable characters, ``/ # ? @`` included, written in
the URL both raw (which a user may do by mistake: such a URL is refused, or an ``@`` read as
meant) and percent-encoded, for every server backend: against a closed port, and against the
real server with credentials it refuses (Redis: an unknown user; PostgreSQL, whose test server
trusts any password: an unknown user, and a database that does not exist).
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from collections.abc import Iterator
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from sharedstate import Store
from sharedstate.errors import BackendUnavailableError
from sharedstate.urls import mask_url, scrub, secrets_of, split_url
from tests import servers

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
SPECIALS = "/#?@"

# Long enough that a message cannot hold one by chance; always with one of the specials.
passwords = st.builds(
    lambda head, special, tail: head + special + tail,
    st.text(PRINTABLE, min_size=6, max_size=12),
    st.sampled_from(SPECIALS),
    st.text(PRINTABLE, min_size=6, max_size=12),
)

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def forms(password: str) -> list[str]:
    """Every way a leak of ``password`` could show: raw, percent-encoded, and decoded."""
    return [f for f in {password, quote(password, safe=""), unquote(password)} if len(f) >= 4]


def pieces(password: str) -> list[str]:
    """The password's stretches between URL delimiters, which a parser cut short could show.

    Only those of 6 characters or more: shorter ones could be in a message by chance.
    """
    return [p for p in re.split(r"[/#?@&:%+\s]", password) if len(p) >= 6]


class Records(logging.Handler):
    """Every log record emitted anywhere while it is installed, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def all_logs() -> Iterator[Records]:
    root = logging.getLogger()
    handler, level = Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def everything_said(url: str) -> str:
    """Open ``url``, use it, fail: every message, traceback (causes included) and log line."""
    said: list[str] = []
    with all_logs() as logs:
        try:
            store = Store(url)
        except ValueError as exc:  # refused as malformed
            said.append("".join(traceback.format_exception(exc)))
        else:
            said += [repr(store), store.backend.describe()]
            try:
                for op in (lambda: store.get("k"), lambda: store.set("k", 1), lambda: store.incr("n")):
                    with pytest.raises(BackendUnavailableError) as info:
                        op()
                    said.append("".join(traceback.format_exception(info.value)))
                    assert info.value.applied is False, str(info.value)
            finally:
                store.close()
    return "\n".join(said + logs.lines)


def assert_never_said(url: str, password: str) -> None:
    text = everything_said(url)
    # What is said anyway, with a decoy password of the same shape (its delimiters kept, every
    # other character replaced): a piece that shows there too (say "shared", in "sharedstate",
    # or "timeou" in "?timeout=2") is there by chance, not leaked.
    decoy = re.sub(r"[^/#?@&:%+\s]", "Q", password)
    decoy_url = url.replace(password, decoy).replace(quote(password, safe=""), quote(decoy, safe=""))
    baseline = everything_said(decoy_url)
    leaked = [f for f in forms(password) + pieces(password) if f in text and f not in baseline]
    assert not leaked, f"{leaked} in:\n{text}"


def url_forms(template: str, password: str) -> list[str]:
    """``template`` with ``{pw}`` replaced by the password raw and percent-encoded."""
    return [template.format(pw=password), template.format(pw=quote(password, safe=""))]


# -- the pure functions ------------------------------------------------------------------------


@PROPERTY
@given(password=passwords, user=st.sampled_from(["", "app", "u%40corp"]))
@example(password="pa/ss@word", user="app")
@example(password="p#ss?w@rd", user="")
def test_mask_url_hides_any_password(password: str, user: str) -> None:
    for scheme in ("redis", "postgresql", "memcached", "rediss"):
        for url in url_forms(f"{scheme}://{user}:{{pw}}@db.example:1234/0?timeout=2", password):
            rest = url.replace(password, "").replace(quote(password, safe=""), "")
            assume(all(form not in rest for form in forms(password)))
            masked = mask_url(url)
            for form in forms(password):
                assert form not in masked
            assert masked.startswith(f"{scheme}://{user}:***@")


@PROPERTY
@given(password=passwords)
def test_password_in_the_query_or_a_keyword_string_is_masked(password: str) -> None:
    encoded = quote(password, safe="")
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"  # libpq's quoting
    for text in (
        f"postgresql://app@h:5432/db?sslmode=disable&password={encoded}",
        f"host=h port=5432 user=app password={quoted} dbname=db",
    ):
        masked = mask_url(text)
        for form in [*forms(password), quoted]:
            assert form not in masked
        assert "password=***" in masked
        assert password not in scrub(f"libpq said: {password}.", secrets_of(text))


@pytest.mark.parametrize("special", ["/", "#", "?"])
def test_unencoded_slash_hash_or_question_mark_is_refused(special: str) -> None:
    url = f"redis://app:kx7{special}qz9@127.0.0.1:6379/0"
    with pytest.raises(ValueError, match="percent-encode the password") as info:
        split_url(url)
    assert "kx7" not in str(info.value) and "qz9" not in str(info.value)


def test_an_at_sign_in_the_password_is_read_as_meant() -> None:
    parts = split_url("redis://app:p@ss@127.0.0.1:6379/0")
    assert (parts.username, parts.password, parts.hostname) == ("app", "p@ss", "127.0.0.1")
    assert mask_url("redis://app:p@ss@127.0.0.1:6379/0") == "redis://app:***@127.0.0.1:6379/0"


def test_an_at_sign_after_the_host_must_be_encoded() -> None:
    with pytest.raises(ValueError, match="%40"):
        split_url("postgresql://app:pw@h/db?application_name=a@b")
    assert split_url("postgresql://app:pw@h/db?application_name=a%40b").hostname == "h"
    assert split_url("sqlite:///home/me@corp/state.db").path == "/home/me@corp/state.db"


# -- every backend, closed port ----------------------------------------------------------------


@pytest.mark.timeout(300)
@PROPERTY
@given(password=passwords)
@example(password="pa/ss@word")
@example(password="s3cr#t?pw@x")
def test_closed_port_never_shows_the_password(password: str) -> None:
    port = servers.free_port()
    for template in (
        f"redis://app:{{pw}}@127.0.0.1:{port}/0?timeout=1",
        f"postgresql://app:{{pw}}@127.0.0.1:{port}/db?timeout=1",
        f"postgresql://app@127.0.0.1:{port}/db?timeout=1&password={{pw}}",
        f"memcached://app:{{pw}}@127.0.0.1:{port}",
    ):
        for url in url_forms(template, password):
            assert_never_said(url, password)


# -- the real servers, credentials they refuse -------------------------------------------------


@pytest.fixture
def redis_address() -> str:
    pytest.importorskip("redis")
    if not servers.reachable(servers.REDIS_URL, 6379):
        servers.unavailable(f"Redis is not reachable at {servers.REDIS_URL}")
    return servers.REDIS_URL.split("//", 1)[1].rsplit("@", 1)[-1].split("/", 1)[0]


@pytest.fixture
def postgres_address() -> str:
    pytest.importorskip("psycopg")
    if not servers.reachable(servers.POSTGRES_URL, 5432):
        servers.unavailable(f"PostgreSQL is not reachable at {servers.POSTGRES_URL}")
    return servers.POSTGRES_URL.split("//", 1)[1].rsplit("@", 1)[-1].split("/", 1)[0]


@pytest.mark.timeout(300)
@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(password=passwords)
@example(password="pa/ss@word")
def test_redis_refusing_the_credentials_never_shows_the_password(redis_address: str, password: str) -> None:
    # An unknown user: Redis answers WRONGPASS during the connection's setup.
    for url in url_forms(f"redis://nobody-{servers.RUN_ID}:{{pw}}@{redis_address}/0?timeout=2", password):
        assert_never_said(url, password)


@pytest.mark.timeout(300)
@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(password=passwords)
@example(password="pa/ss@word")
def test_postgres_refusing_the_connection_never_shows_the_password(
    postgres_address: str, password: str
) -> None:
    # The test server trusts every password, so make it refuse otherwise: an unknown role, a
    # database that does not exist.
    for template in (
        f"postgresql://nobody_{servers.RUN_ID}:{{pw}}@{postgres_address}/test?timeout=2",
        f"postgresql://postgres:{{pw}}@{postgres_address}/nodb_{servers.RUN_ID}?timeout=2",
    ):
        for url in url_forms(template, password):
            assert_never_said(url, password)
