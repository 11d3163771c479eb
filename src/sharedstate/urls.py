"""Parsing store URLs and masking the secrets in them."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

_SECRET_OPTIONS = frozenset({"password", "passwd", "pass", "secret", "token", "sslpassword"})


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.query:  # libpq and others also take the password as ?password=...
        query = "&".join(
            f"{name}=***" if name.lower() in _SECRET_OPTIONS else f"{name}={value}"
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        )
        parts = parts._replace(query=query)
        url = urlunsplit(parts)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{parts.username or ''}:***@{host}"
    if port is not None:
        netloc += f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def split_url(url: str) -> SplitResult:
    """Split ``url``, raising ``ValueError`` (with the password masked) if it is malformed."""
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ValueError(f"malformed store URL {mask_url(url)!r}: {exc}") from None
    if not parts.scheme or "://" not in url:
        raise ValueError(f"malformed store URL {mask_url(url)!r}: expected scheme://...")
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
            raise ValueError(
                f"unknown option {name!r} in store URL {mask_url(url)!r}; known options: {listed}"
            )
        try:
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                options[name] = raw.lower() in ("1", "true", "yes")
            else:
                options[name] = kind(raw)
        except ValueError:
            raise ValueError(
                f"option {name}={raw!r} in store URL {mask_url(url)!r} is not a valid {kind.__name__}"
            ) from None
    return options
