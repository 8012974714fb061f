"""A Slack incoming-webhook endpoint on loopback that records what GUARD posts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from sandbox.sims.loopback import LoopbackHandler, LoopbackServer


class SlackRecorder(LoopbackServer):
    """Answers `ok` like Slack does and keeps every JSON payload in `messages`."""

    thread_name = "slack-sim"

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

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
                with recorder._lock:
                    recorder.messages.append(payload)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
