"""What every simulator shares: an HTTP server on 127.0.0.1, a free port, a daemon thread, and
the request handler base that answers without Nagle's delay."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackHandler(BaseHTTPRequestHandler):
    """Base of the simulators' request handlers.

    Answers go out as soon as they are written: with Nagle's algorithm on, the body written
    after the headers waits for the client's delayed ACK, about 40 ms per keep-alive request
    on Linux, which made every Kubernetes read of a rehearsal ~50 times slower than the work.
    """

    disable_nagle_algorithm = True


class LoopbackServer:
    """Base of the simulators: `start()` / `stop()`, a context manager, and `url`.

    Subclasses implement `_handler_class()`; the name is used for the server thread.
    """

    thread_name = "simulator"

    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise TypeError(f"{type(self).__name__} must define _handler_class()")

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError(f"{self.thread_name} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
