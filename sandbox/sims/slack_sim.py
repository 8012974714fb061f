"""A Slack incoming-webhook endpoint on loopback that records what GUARD posts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from sandbox.sims.loopback import LoopbackHandler, LoopbackServer


class SlackRecorder(LoopbackServer):
    """Answers `ok` like Slack does and keeps every JSON payload in `messages`.

    `fail_next(status, times)` answers the next posts with an error as Slack does when it is down
    (500 `internal_error`) or rate-limits (429 `rate_limited` with `Retry-After`); those are not kept.
    """

    thread_name = "slack-sim"

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.refused = 0  # posts answered with an injected error
        self._lock = threading.Lock()
        self._failures: list[int] = []

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` posts with `status` (429 adds `Retry-After: 1`)."""
        with self._lock:
            self._failures.extend([status] * times)

    def _take_failure(self) -> int | None:
        with self._lock:
            if not self._failures:
                return None
            self.refused += 1
            return self._failures.pop(0)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(LoopbackHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b"invalid_payload")
                    return
                failure = recorder._take_failure()
                if failure is not None:
                    body = b"rate_limited" if failure == 429 else b"internal_error"
                    self.send_response(failure)
                    if failure == 429:
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                with recorder._lock:
                    recorder.messages.append(payload)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
