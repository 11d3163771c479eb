"""The two apps ``sharedstate demo`` serves under gunicorn: the classic global counter, and a safe one.

``gunicorn 'sharedstate.tools.demo_apps:make_app("naive")'`` serves the counter from the Flask question
"Are global variables thread safe in Flask?": a module-level ``SomeObj`` whose method does
``self.param += 1; return self.param``. ``make_app("shared")`` serves the same counter kept in a
sharedstate store (URL and namespace from ``SHAREDSTATE_DEMO_URL`` / ``SHAREDSTATE_DEMO_NAMESPACE``).

Both are plain WSGI callables, not Flask apps: the bug lives in the module-level object and the server's
worker processes, not in the framework, and plain WSGI keeps the demo free of any dependency but gunicorn.
``GET /`` answers the new value as the body (an integer, like the original app) and the serving worker's
pid in the ``X-Worker-Pid`` header, so the demo can show which process handed out which numbers.

Contract with the demo (all optional, read from the environment of each worker):

- ``SHAREDSTATE_DEMO_READY_FD``: a pipe; each worker writes its pid and a newline once the app is loaded,
  so the demo fires only when every worker is ready to accept.
- ``SHAREDSTATE_DEMO_LIFELINE_FD``: a pipe the demo never writes to. When the demo process is gone (even
  by SIGKILL), reading it returns end-of-file and the worker asks its gunicorn master to shut down, so no
  server outlives the demo.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

URL_ENV = "SHAREDSTATE_DEMO_URL"
NAMESPACE_ENV = "SHAREDSTATE_DEMO_NAMESPACE"
READY_FD_ENV = "SHAREDSTATE_DEMO_READY_FD"
LIFELINE_FD_ENV = "SHAREDSTATE_DEMO_LIFELINE_FD"
COUNTER_NAME = "hits"
PID_HEADER = "X-Worker-Pid"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SomeObj:
    """The object from the question, verbatim in spirit. NOT safe: this is what the demo shows.

    ``query`` reads ``param``, adds one and writes it back: three steps, so two threads of one process
    can interleave them. And every worker process that imports this module gets its own ``SomeObj``.
    """

    def __init__(self, param: int) -> None:
        self.param = param

    def query(self) -> int:
        self.param += 1
        return self.param


# The classic "global SomeObj": one per process that imports this module, each starting at 0.
global_obj = SomeObj(0)


def _respond(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            (PID_HEADER, str(os.getpid())),
        ],
    )
    return [body]


def naive_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    """``GET /``: ``global_obj.query()``. Other paths: 404 (so a stray request does not count)."""
    if environ.get("PATH_INFO", "/") != "/":
        return _respond(start_response, "404 Not Found", b"not found\n")
    return _respond(start_response, "200 OK", str(global_obj.query()).encode())


def shared_app_for(url: str | None, namespace: str = "") -> WSGIApp:
    """A WSGI app whose ``GET /`` returns ``store.counter("hits").incr()``: atomic, unique values.

    The store is opened here, in the worker process that calls this (after gunicorn's fork), and its
    connection is opened before the first request, so the demo measures increments, not connects.
    """
    from sharedstate.store import Store

    store = Store(url, namespace=namespace)
    counter = store.counter(COUNTER_NAME)
    counter.get()  # connect (and create the schema) now: a bad URL fails the boot, not a request

    def shared_app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO", "/") != "/":
            return _respond(start_response, "404 Not Found", b"not found\n")
        try:
            value = counter.incr()
        except Exception as exc:  # report it to the client; the demo counts it as an error
            return _respond(start_response, "500 Internal Server Error", type(exc).__name__.encode())
        return _respond(start_response, "200 OK", str(value).encode())

    return shared_app


def make_app(kind: str) -> WSGIApp:
    """gunicorn app factory: ``make_app("naive")`` or ``make_app("shared")``.

    gunicorn (without ``--preload``) calls it in each worker after the fork, so the worker announces
    itself ready and starts watching its lifeline here.
    """
    app: WSGIApp
    if kind == "naive":
        app = naive_app
    elif kind == "shared":
        # Without the demo's variables: $SHAREDSTATE_URL, else sharedstate.sqlite3 in the working dir.
        app = shared_app_for(os.environ.get(URL_ENV) or None, os.environ.get(NAMESPACE_ENV, ""))
    else:
        raise ValueError(f"unknown demo app {kind!r}: expected 'naive' or 'shared'")
    _watch_lifeline()
    _announce_ready()
    return app


def _announce_ready() -> None:
    fd = os.environ.get(READY_FD_ENV)
    if fd:
        # One short write to a pipe is atomic, so lines of concurrent workers never interleave.
        with suppress(OSError):  # the demo is gone; the lifeline watcher shuts us down
            os.write(int(fd), f"{os.getpid()}\n".encode())


def _watch_lifeline() -> None:
    fd = os.environ.get(LIFELINE_FD_ENV)
    if not fd:
        return
    master = os.getppid()

    def watch() -> None:
        try:
            while os.read(int(fd), 1):  # nobody writes: this returns b"" when the demo has exited
                pass
        except OSError:
            pass
        # Only signal the master we were forked from: if it died already, our parent is now init.
        if os.getppid() == master:
            os.kill(master, signal.SIGTERM)

    threading.Thread(target=watch, name="sharedstate-demo-lifeline", daemon=True).start()
