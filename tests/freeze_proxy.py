"""A loopback TCP proxy that can freeze: it keeps every connection open but stops relaying.

That is what a client sees of a server that is stopped (``SIGSTOP``), swapping or stuck: the
kernel still accepts connections and acknowledges what is sent, and nothing comes back. Unlike
stopping the real server, freezing the proxy disturbs nobody else using that server. While
frozen, bytes read from either side are held, not dropped; :meth:`FreezeProxy.thaw` delivers them,
as a resumed server would process the requests waiting in its sockets. So a request sent during
the freeze is answered late, after the thaw, and a client that reused the connection would read
that stale answer as the reply to its next request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class FreezeProxy:
    """Relays ``127.0.0.1:<port>`` to ``(host, port)``; :meth:`freeze` and :meth:`thaw` it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._relaying = threading.Event()
        self._relaying.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, name="freeze-proxy-accept", daemon=True).start()

    def freeze(self) -> None:
        """Stop relaying: connections stay open and new ones are accepted, but nothing passes."""
        self._relaying.clear()

    def thaw(self) -> None:
        """Relay again, delivering first whatever was held during the freeze."""
        self._relaying.set()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def close(self) -> None:
        self._closed.set()
        self._relaying.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            self._relaying.wait()  # frozen: hold what was read (end of stream too) until thawed
            if self._closed.is_set():
                return
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
