"""The one builder of :class:`BackendUnavailableError` for the server backends.

Every server backend says the same things the same way: which server (its URL, password masked),
what happened, whether the operation was applied, and the driver's own words with every form of
the password scrubbed out (libpq, for one, quotes parts of a URL back in its messages). The
caller chains the driver's exception: ``raise unavailable(url, what, applied=..., cause=exc) from exc``.
"""

from __future__ import annotations

from sharedstate.errors import BackendUnavailableError

# sharedstate.urls (urllib.parse) is imported when an error is built, not with the package.

_PRODUCTS = {
    "redis": "Redis",
    "rediss": "Redis",
    "postgresql": "PostgreSQL",
    "postgres": "PostgreSQL",
    "memcached": "memcached",
}

_OUTCOMES = {
    False: "nothing was applied",
    None: "the request was sent and no reply came, so whether it was applied is unknown",
    True: "it was applied, but what followed failed",
}


def describe_server(url: str) -> str:
    """``"Redis at redis://:***@host/0"``: the product and the masked URL (libpq strings too)."""
    from sharedstate.urls import mask_url

    scheme = url.partition("://")[0].lower() if "://" in url else "postgresql"
    product = _PRODUCTS.get(scheme, scheme)
    return f"{product} at {mask_url(url)}"


def driver_text(url: str, cause: BaseException) -> str:
    """``"TypeName: message"`` of a driver's exception, on one line, with ``url``'s secrets scrubbed."""
    from sharedstate.urls import scrub, secrets_of

    text = " ".join(str(cause).split())
    name = type(cause).__name__
    return scrub(f"{name}: {text}" if text else name, secrets_of(url))


def unavailable(
    url: str, what: str, *, applied: bool | None, cause: BaseException | None = None
) -> BackendUnavailableError:
    """The error for a server that could not do an operation.

    ``url``: the backend's URL as given (the password is masked and scrubbed here, so callers
    pass it unmasked). ``what``: what happened, in words (``"no reply within 2s"``).
    ``applied``: False (nothing was sent), None (sent, no reply: unknown) or True (applied,
    something after failed). ``cause``: the driver's exception, quoted with secrets scrubbed.
    """
    from sharedstate.urls import scrub, secrets_of

    message = f"{describe_server(url)} is unavailable: {scrub(what, secrets_of(url))} ({_OUTCOMES[applied]})"
    if cause is not None:
        message += f": {driver_text(url, cause)}"
    return BackendUnavailableError(message, applied=applied)
