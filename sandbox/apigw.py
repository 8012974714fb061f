"""A local HTTP endpoint that plays API Gateway (REST, proxy integration) for one handler."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ApiGatewayShim:
    """POSTs to `url + path` become API Gateway proxy events for `handler`."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], dict[str, Any]], context_factory: Callable[[], Any],
                 resource: str = "/webhooks/gitlab") -> None:
        self._handler = handler
        self._context_factory = context_factory
        self._resource = resource
        self.responses: list[tuple[int, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ApiGatewayShim:
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                event = shim.event("POST", self.path, dict(self.headers.items()), body)
                try:
                    result = shim._handler(event, shim._context_factory())
                    status, payload = int(result.get("statusCode", 502)), str(result.get("body", ""))
                except Exception as e:  # API Gateway answers 502 when the integration crashes
                    status, payload = 502, json.dumps({"message": f"Internal server error: {type(e).__name__}"})
                shim.responses.append((status, payload))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload.encode())))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def event(self, method: str, path: str, headers: dict[str, str], body: str) -> dict[str, Any]:
        return {
            "resource": self._resource,
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": None,
            "multiValueQueryStringParameters": None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {"resourcePath": self._resource, "httpMethod": method, "path": f"/prod{path}",
                               "stage": "prod", "requestId": str(uuid.uuid4()),
                               "identity": {"sourceIp": "127.0.0.1"}},
            "body": body,
            "isBase64Encoded": False,
        }
