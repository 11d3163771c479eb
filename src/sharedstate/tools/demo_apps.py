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
- ``SHAREDSTATE_DEMO_READY_PATH`` and ``SHAREDSTATE_DEMO_LIFELINE_PATH``: the same two pipes as named
  FIFOs, for servers whose workers do not inherit the master's file descriptors (uvicorn ``--workers``
  starts them with multiprocessing's *spawn*, see :mod:`sharedstate.tools.demo_asgi`).
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
READY_PATH_ENV = "SHAREDSTATE_DEMO_READY_PATH"
LIFELINE_PATH_ENV = "SHAREDSTATE_DEMO_LIFELINE_PATH"
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
    """Write this worker's pid and a newline to the demo's ready pipe (by fd or FIFO path), if any."""
    fd = os.environ.get(READY_FD_ENV)
    path = os.environ.get(READY_PATH_ENV)
    line = f"{os.getpid()}\n".encode()
    # One short write to a pipe is atomic, so lines of concurrent workers never interleave.
    with suppress(OSError):  # the demo is gone; the lifeline watcher shuts us down
        if fd:
            os.write(int(fd), line)
        elif path:
            # Non-blocking: with no reader (the demo is gone) this fails at once instead of hanging.
            out = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(out, line)
            finally:
                os.close(out)


def _watch_lifeline(master: int | None = None) -> None:
    """Stop the server (SIGTERM to ``master``, default: our parent) once the demo's lifeline closes."""
    fd_text = os.environ.get(LIFELINE_FD_ENV)
    path = os.environ.get(LIFELINE_PATH_ENV)
    if not fd_text and not path:
        return
    target = os.getppid() if master is None else master
    parent = os.getppid()

    def watch() -> None:
        try:
            if fd_text:
                fd = int(fd_text)
            else:
                # Opened non-blocking so it cannot hang when no writer is left (the demo is gone:
                # the reads below then return end-of-file at once), then switched to blocking reads.
                fd = os.open(path or "", os.O_RDONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
            while os.read(fd, 1):  # nobody writes: this returns b"" when the demo has exited
                pass
        except OSError:
            pass
        # Only signal the server we belong to: if our parent died already, it is now someone else.
        if target == os.getpid() or os.getppid() == parent:
            os.kill(target, signal.SIGTERM)

    threading.Thread(target=watch, name="sharedstate-demo-lifeline", daemon=True).start()
