"""A local HTTP endpoint that plays API Gateway (REST, proxy integration) for one function."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from sandbox.sims.loopback import LoopbackHandler


class ApiGatewayShim:
    """POSTs to `url + path` become API Gateway proxy events passed to `invoke`.

    `invoke(event)` runs the function and returns its proxy response. The server answers
    requests on parallel threads, like API Gateway; the rehearsal passes
    `lambda event: engine.invoke("GitLabWebhook", event)`, so two overlapping requests still
    run the function one at a time, as two invocations of one Lambda execution environment
    would (sandbox.engine.ExecutionEnvironments says why that matters).
    """

    def __init__(self, invoke: Callable[[dict[str, Any]], dict[str, Any]],
                 resource: str = "/webhooks/gitlab") -> None:
        self._invoke = invoke
        self._resource = resource
        self.responses: list[tuple[int, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ApiGatewayShim:
        shim = self

        class Handler(LoopbackHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                # No binary media types are configured, so API Gateway hands the function text; bytes
                # that are not UTF-8 must not crash the shim (the function is what answers them).
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                event = shim.event("POST", self.path, dict(self.headers.items()), body)
                try:
                    result = shim._invoke(event)
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
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def event(self, method: str, path: str, headers: dict[str, str], body: str) -> dict[str, Any]:
        return proxy_event(method, path, headers, body, self._resource)


def proxy_event(method: str, path: str, headers: dict[str, str], body: str,
                resource: str = "/webhooks/gitlab") -> dict[str, Any]:
    """The event API Gateway (REST, proxy integration, stage `prod`) passes to the function."""
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "path": f"/prod{path}",
                           "stage": "prod", "requestId": str(uuid.uuid4()),
                           "identity": {"sourceIp": "127.0.0.1"}},
        "body": body,
        "isBase64Encoded": False,
    }
