"""A Helm chart repository and an OCI registry on 127.0.0.1, for the precheck that the target
chart version is published.

- Helm repository: `GET /charts/index.yaml`, the format `helm repo index` writes (apiVersion v1,
  `entries: {chart: [{name, version, appVersion, urls, digest, created}]}`, `generated`).
- OCI registry (distribution spec): `GET /v2/<name>/tags/list` answers `{"name", "tags"}`;
  `NAME_UNKNOWN` (404) for a repository it does not hold. With `require_token`, an anonymous
  request gets 401 and a `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge;
  `GET /token` hands out a token for the scope, as Docker's token spec describes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from sandbox.sims.loopback import LoopbackHandler, LoopbackServer


class ChartRepositorySimulator(LoopbackServer):
    """Publishes chart versions: `publish(chart, *versions)` for the Helm repository, and
    `push(repository, *tags)` for the OCI registry (repository e.g. `charts/istiod`)."""

    thread_name = "chart-repo-sim"

    def __init__(self, require_token: bool = True) -> None:
        self.require_token = require_token
        self._charts: dict[str, list[str]] = {}
        self._oci: dict[str, list[str]] = {}
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self.requests: list[str] = []

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("_BoundChartHandler", (_Handler,), {"sim": self})

    @property
    def helm_url(self) -> str:
        return f"{self.url}/charts"

    @property
    def registry(self) -> str:
        """host:port, as written after oci://"""
        return self.url.removeprefix("http://")

    def publish(self, chart: str, *versions: str) -> None:
        with self._lock:
            self._charts.setdefault(chart, []).extend(v for v in versions if v not in self._charts.get(chart, []))

    def push(self, repository: str, *tags: str) -> None:
        with self._lock:
            known = self._oci.setdefault(repository.strip("/"), [])
            known.extend(t.replace("+", "_") for t in tags if t.replace("+", "_") not in known)

    def index_yaml(self) -> str:
        with self._lock:
            entries = {chart: [{
                "apiVersion": "v2", "name": chart, "version": v, "appVersion": v, "type": "application",
                "description": f"Helm chart for {chart}", "created": "2026-11-01T00:00:00Z",
                "digest": hashlib.sha256(f"{chart}-{v}".encode()).hexdigest(),
                "urls": [f"{self.helm_url}/{chart}-{v}.tgz"]} for v in reversed(versions)]
                for chart, versions in self._charts.items()}
        return yaml.safe_dump({"apiVersion": "v1", "entries": entries, "generated": "2026-11-01T00:00:00Z"},
                              sort_keys=False)

    def handle(self, path: str, query: dict[str, str], authorization: str | None) -> tuple[int, dict[str, str], str]:
        self.requests.append(path)
        if path == "/charts/index.yaml":
            return 200, {"Content-Type": "application/x-yaml"}, self.index_yaml()
        if path == "/token":
            token = secrets.token_hex(16)
            with self._lock:
                self._tokens.add(token)
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": token, "expires_in": 300})
        if path.startswith("/v2/") and path.endswith("/tags/list"):
            name = path[len("/v2/"):-len("/tags/list")]
            if self.require_token and (authorization or "").removeprefix("Bearer ") not in self._tokens:
                challenge = (f'Bearer realm="{self.url}/token",service="{self.registry}",'
                             f'scope="repository:{name}:pull"')
                return 401, {"Content-Type": "application/json", "WWW-Authenticate": challenge}, json.dumps(
                    {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                 "detail": [{"Type": "repository", "Name": name, "Action": "pull"}]}]})
            with self._lock:
                tags = list(self._oci.get(name, [])) if name in self._oci else None
            if tags is None:
                return 404, {"Content-Type": "application/json"}, json.dumps(
                    {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry",
                                 "detail": {"name": name}}]})
            return 200, {"Content-Type": "application/json"}, json.dumps({"name": name, "tags": tags})
        return 404, {"Content-Type": "text/plain"}, "404 page not found\n"


class _Handler(LoopbackHandler):
    sim: ChartRepositorySimulator

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        status, headers, body = self.sim.handle(parts.path, query, self.headers.get("Authorization"))
        raw = body.encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        return
