"""Parsing store URLs and masking the secrets in them.

A password with an unencoded ``/``, ``?`` or ``#`` in it cuts a URL short where every parser
(``urllib``, redis-py, libpq) thinks the host begins, so the rest of the password would land in
the host, port, path or query, and from there in error messages. Masking therefore never trusts
``urlsplit`` for the user info: it works on the raw text, taking everything between ``scheme://``
and the *last* ``@`` as the user info. :func:`split_url` refuses a URL whose user info the raw text
and ``urlsplit`` disagree about, asking for the password to be percent-encoded, rather than guess.
An ``@`` in a password is unambiguous (every parser takes the last ``@`` before the host) and is
accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import SplitResult, parse_qsl, quote, unquote, unquote_plus, urlsplit

_SECRET_OPTIONS = frozenset({"password", "passwd", "pass", "secret", "token", "sslpassword"})
MASK = "***"
# A secret in a libpq ``key=value`` connection string: password=x, password = 'a b\\'c'.
_KEYWORD_SECRET = re.compile(
    r"\b(?:" + "|".join(sorted(_SECRET_OPTIONS)) + r")\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s']*)", re.IGNORECASE
)


def _raw_userinfo_end(url: str) -> tuple[int, int] | None:
    """Where the raw user info lies in ``url``: (start, end) offsets, or None if it has none.

    The user info starts after ``scheme://`` and ends at the last ``@`` of the URL. A URL whose
    authority is empty (``sqlite:///path@x.db``) has none, whatever ``@`` its path holds.
    """
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    at = url.rfind("@")
    if at < start or url.startswith("/", start):
        return None
    return start, at


def _raw_password(url: str) -> tuple[int, int] | None:
    """The (start, end) offsets of the raw password text in ``url``'s user info, if it has one."""
    span = _raw_userinfo_end(url)
    if span is None:
        return None
    start, end = span
    colon = url.find(":", start, end)
    return None if colon < 0 else (colon + 1, end)


def _query_starts(url: str) -> set[int]:
    """Offsets where ``url``'s query string may begin (after a ``?``).

    Two candidates, as a password may hold a ``?`` and a query an ``@``: the first ``?`` after
    ``scheme://`` and the first ``?`` after the raw user info. Masking both is never too little.
    """
    starts: set[int] = set()
    scheme_end = url.find("://")
    span = _raw_userinfo_end(url)
    for after in (scheme_end + 3 if scheme_end >= 0 else 0, span[1] + 1 if span is not None else 0):
        mark = url.find("?", after)
        if mark >= 0:
            starts.add(mark + 1)
    return starts


def _query_items(url: str) -> Iterable[tuple[int, int, str]]:
    """(value start, value end, decoded name) of each ``name=value`` in ``url``'s query string."""
    for begin in _query_starts(url):
        end = url.find("#", begin)
        end = len(url) if end < 0 else end
        pos = begin
        while pos <= end:
            stop = url.find("&", pos, end)
            stop = end if stop < 0 else stop
            equals = url.find("=", pos, stop)
            if equals >= 0:
                yield equals + 1, stop, unquote_plus(url[pos:equals])
            pos = stop + 1


def _secret_values(url: str) -> list[tuple[int, int]]:
    """Spans of the secret options' values in the query (``?password=...``).

    Each runs to the end of the URL: an unencoded ``&`` or ``#`` in the password would otherwise
    leave its tail in view as another option or a fragment. Options after a secret one are
    masked with it: never less than the password.
    """
    return [(start, len(url)) for start, _, name in _query_items(url) if name.lower() in _SECRET_OPTIONS]


def has_secret_option(url: str) -> bool:
    """Whether ``url``'s query string holds a password (or another secret) option."""
    return bool(_secret_values(url))


def secrets_of(url: str) -> list[str]:
    """Every secret in ``url`` as raw text and percent-decoded: the password, ``?password=``...

    For scrubbing driver messages, which may quote either form. Longest first, so a secret that
    contains another is replaced whole.
    """
    found: set[str] = set()
    if "://" not in url:  # a libpq key=value string
        for match in _KEYWORD_SECRET.finditer(url):
            value = match.group(1)
            found.add(value)
            if value.startswith("'"):  # quoted: backslash escapes ' and \\
                inner = value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:]
                found.add(re.sub(r"\\(.)", r"\1", inner))
        return sorted((s for s in found if s), key=len, reverse=True)
    span = _raw_password(url)
    if span is not None:
        found.add(url[span[0] : span[1]])
    for start, stop, name in _query_items(url):
        if name.lower() in _SECRET_OPTIONS:
            found.add(url[start:stop])
    for start, stop in _secret_values(url):
        found.add(url[start:stop])
    decoded = {unquote(s) for s in found} | {unquote_plus(s) for s in found}
    encoded = {quote(s, safe="") for s in decoded}  # as a driver re-encodes it for its own use
    return sorted((s for s in found | decoded | encoded if s), key=len, reverse=True)


def scrub(message: str, secrets: Iterable[str]) -> str:
    """``message`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, MASK)
    return message


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for logs and error messages.

    Works on the raw text, so a password is masked even when an unencoded ``/ # ? @`` in it
    makes the URL malformed: everything between ``user:`` and the last ``@`` is masked (when a
    path or query also holds an ``@``, more than the password is masked: never less).
    Passwords given as query options (``?password=...``, as libpq takes them) are masked too.
    """
    if not isinstance(url, str):
        return "<not a URL>"
    if "://" not in url:  # a libpq key=value string
        return _KEYWORD_SECRET.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + MASK, url)
    cuts: list[tuple[int, int]] = []
    span = _raw_password(url)
    if span is not None:
        cuts.append(span)
    cuts += _secret_values(url)
    merged: list[list[int]] = []
    for start, stop in sorted(cuts):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    for start, stop in reversed(merged):
        url = url[:start] + MASK + url[stop:]
    return url


def split_url(url: str) -> SplitResult:
    """Split ``url``, raising ``ValueError`` (with the password masked) if it is malformed.

    Refused: a URL whose user info ``urlsplit`` reads differently from the raw text, which
    happens when a password holds an unencoded ``/``, ``?`` or ``#`` (or when an ``@`` follows
    the host, in the path or the query): the message asks for percent-encoding.
    """
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, got {type(url).__name__}")
    secrets = secrets_of(url)
    span = _raw_userinfo_end(url)
    if span is not None and ":" in url[span[0] : span[1]]:
        netloc_end = len(url)
        for mark in "/?#":
            found = url.find(mark, span[0])
            if 0 <= found < netloc_end:
                netloc_end = found
        if netloc_end < span[1]:  # the last "@" lies past where every parser ends the host
            raise ValueError(
                f"malformed store URL {mask_url(url)!r}: its user info holds a '/', '?' or '#', "
                "or an '@' follows the host; percent-encode the password "
                "(urllib.parse.quote(password, safe='')) and any '@' in the path or query (%40)"
            )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ValueError(f"malformed store URL {mask_url(url)!r}: {scrub(str(exc), secrets)}") from None
    if not parts.scheme or "://" not in url:
        raise ValueError(f"malformed store URL {mask_url(url)!r}: expected scheme://...")
    if "#" in url:
        raise ValueError(
            f"malformed store URL {mask_url(url)!r}: store URLs have no #fragment; percent-encode "
            "a '#' in a password or an option (%23)"
        )
    return parts


def query_options(
    parts: SplitResult, known: Mapping[str, type], url: str
) -> dict[str, int | float | str | bool]:
    """Parse the URL's query string into typed options; unknown or ill-typed ones are errors."""
    options: dict[str, int | float | str | bool] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        kind = known.get(name)
        if kind is None:
            listed = ", ".join(sorted(known)) or "none"
            # After ?password=..., an "option" may be the tail of a password with an unencoded "&".
            shown = (
                "(name not shown: is an '&' in the password percent-encoded?)"
                if (has_secret_option(url))
                else repr(name)
            )
            raise ValueError(
                f"unknown option {shown} in store URL {mask_url(url)!r}; known options: {listed}"
            )
        try:
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                options[name] = raw.lower() in ("1", "true", "yes")
            else:
                options[name] = kind(raw)
        except ValueError:
            shown = MASK if name.lower() in _SECRET_OPTIONS else repr(raw)
            raise ValueError(
                f"option {name}={shown} in store URL {mask_url(url)!r} is not a valid {kind.__name__}"
            ) from None
    return options
