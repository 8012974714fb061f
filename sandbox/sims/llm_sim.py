"""A local OpenAI- and Anthropic-compatible LLM endpoint, for adapter tests and the rehearsal.

    with LlmSimulator(api_key="sk-sim") as sim:
        OpenAI(api_key="sk-sim", base_url=f"{sim.url}/v1")       # POST /v1/chat/completions
        Anthropic(api_key="sk-sim", base_url=sim.url)             # POST /v1/messages

Answers in each vendor's real response shape. `mode` picks the behaviour of every request
(`json`: a valid analysis; `garbage`: text that is not JSON; `hang`: hold the request
`hang_seconds` of wall-clock time before answering, to exercise client timeouts; `error`:
HTTP 500 in the vendor's error shape). `answer` overrides the JSON analysis. `requests`
records each request's path, headers and parsed body, so a test can assert what reached
the vendor (no secret, prompt within the cap).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from sandbox.sims.loopback import LoopbackHandler

Mode = Literal["json", "garbage", "hang", "error"]

DEFAULT_ANSWER: dict[str, Any] = {
    "summary": "p95 latency rose about 25% right after istiod moved to the new version.",
    "root_cause": "The new istiod pushes a larger config to every sidecar; proxies restart and drop requests.",
    "evidence": ["latency_p95 212.6 -> 264.5 (+24.4%)", "istiod log: 'Push debounce' warnings"],
    "recommended_actions": ["Roll back to the previous version", "Review the sidecar resource limits"],
}


@dataclass(frozen=True)
class LlmRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def prompt_text(self) -> str:
        """Every prompt string the client sent (system + messages), concatenated."""
        parts: list[str] = []
        system = self.body.get("system")
        if isinstance(system, str):
            parts.append(system)
        elif isinstance(system, list):
            parts += [b.get("text", "") for b in system if isinstance(b, dict)]
        for message in self.body.get("messages") or []:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [b.get("text", "") for b in content if isinstance(b, dict)]
        return "\n".join(parts)


class LlmSimulator:
    """Plays `/v1/chat/completions` (OpenAI) and `/v1/messages` (Anthropic) on loopback."""

    def __init__(self, api_key: str = "sk-sim-key", mode: Mode = "json", hang_seconds: float = 5.0) -> None:
        self.api_key = api_key
        self.mode: Mode = mode
        self.hang_seconds = hang_seconds
        self.answer: dict[str, Any] | str = dict(DEFAULT_ANSWER)
        self.requests: list[LlmRequest] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._failures: list[int] = []

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` authenticated requests with `status` and the vendor's error body
        (500 `server_error` / `api_error`, 429 `rate_limit_error`), whatever the mode."""
        with self._lock:
            self._failures.extend([status] * times)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LlmSimulator:
        self._released.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="llm-sim",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()  # let hanging requests finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LlmSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------------ behaviour
    def _text(self) -> str:
        if self.mode == "garbage":
            return "I think the upgrade broke something, maybe the sidecars? {not json"
        return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)

    def handle(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(LlmRequest(path, headers, body))
        anthropic = path.rstrip("/").endswith("/v1/messages")
        if not anthropic and not path.rstrip("/").endswith("/chat/completions"):
            return 404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}}
        given = headers.get("authorization", "").removeprefix("Bearer ")
        if anthropic and "x-api-key" in headers:  # Anthropic takes either header
            given = headers["x-api-key"]
        if given != self.api_key:
            return 401, _error(anthropic, "authentication_error", "invalid api key")
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            kind = "rate_limit_error" if failure == 429 else ("api_error" if anthropic else "server_error")
            return failure, _error(anthropic, kind, f"simulated HTTP {failure}")
        if self.mode == "hang":
            self._released.wait(self.hang_seconds)
        if self.mode == "error":
            return 500, _error(anthropic, "api_error" if anthropic else "server_error", "simulated outage")
        text = self._text()
        model = str(body.get("model", "sim-model"))
        if anthropic:
            return 200, {
                "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": len(text) // 4},
            }
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(json.dumps(body)) // 4, "completion_tokens": len(text) // 4,
                      "total_tokens": (len(json.dumps(body)) + len(text)) // 4},
        }


def _error(anthropic: bool, kind: str, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _handler_for(sim: LlmSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw.decode(errors="replace")}
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = sim.handle(self.path.split("?", 1)[0], headers, body)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
