"""`ChartRepository`: published chart versions from a Helm repository's index.yaml or an OCI
registry's tags list (OCI distribution API `GET /v2/<name>/tags/list`), over HTTP with `requests`.

A registry that answers 401 with a `WWW-Authenticate: Bearer realm=...,service=...,scope=...`
challenge gets the anonymous token flow (Docker token spec) once, then the list is asked again.
Helm stores a chart version `1.2.3+build` as the OCI tag `1.2.3_build`; tags are read back.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

from guard.clock import SystemClock
from guard.errors import ExternalServiceError, TransientError
from guard.ports import Clock
from guard.retry import RetryPolicy, policy

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_MAX_PAGES = 50


class HttpChartRepository:
    """Reads published versions; every HTTP call goes through the retry policy (guard.retry)."""

    def __init__(self, session: requests.Session | None = None, timeout_seconds: float = 10,
                 retry: RetryPolicy | None = None, clock: Clock | None = None) -> None:
        self._http = session or requests.Session()
        self._timeout = timeout_seconds
        self._retry = retry or policy((clock or SystemClock()).sleep)

    def published_versions(self, kind: str, url: str, chart: str, insecure: bool = False) -> set[str]:
        if kind == "helm":
            return self._retry.call(f"Helm repository {url}", lambda: self._helm(url, chart))
        if kind == "oci":
            return self._retry.call(f"OCI registry {url}", lambda: self._oci(url, insecure))
        raise ExternalServiceError(f"unknown chart repository kind {kind!r} for {url}")

    def _helm(self, url: str, chart: str) -> set[str]:
        response = self._get(f"{url.rstrip('/')}/index.yaml", what=f"Helm repository {url}")
        try:
            index = yaml.safe_load(response.text)
        except yaml.YAMLError as e:
            raise ExternalServiceError(f"Helm repository {url}: index.yaml is not YAML: {e}") from e
        entries = index.get("entries") if isinstance(index, dict) else None
        if not isinstance(entries, dict):
            raise ExternalServiceError(f"Helm repository {url}: index.yaml has no `entries` mapping")
        return {str(e["version"]) for e in entries.get(chart) or [] if isinstance(e, dict) and e.get("version")}

    def _oci(self, url: str, insecure: bool) -> set[str]:
        parts = urlsplit(url)
        if parts.scheme != "oci" or not parts.netloc or not parts.path.strip("/"):
            raise ExternalServiceError(f"{url!r} is not an OCI repository URL (oci://host/path/chart)")
        base = f"{'http' if insecure else 'https'}://{parts.netloc}"
        name = parts.path.strip("/")
        next_url: str | None = f"{base}/v2/{name}/tags/list"
        headers: dict[str, str] = {}
        tags: set[str] = set()
        for _ in range(_MAX_PAGES):
            if next_url is None:
                break
            response = self._http.get(next_url, headers=headers, timeout=self._timeout)
            if response.status_code == 401 and "Authorization" not in headers:
                headers["Authorization"] = f"Bearer {self._token(response, url)}"
                continue
            if response.status_code == 404:
                return set()  # NAME_UNKNOWN: no such repository, so no version of the chart
            self._raise_for(response, f"OCI registry {url}")
            body = response.json()
            tags |= {str(t).replace("_", "+") for t in body.get("tags") or []}
            link = response.links.get("next", {}).get("url")
            next_url = f"{base}{link}" if link and link.startswith("/") else link
        return tags

    def _token(self, challenge: requests.Response, url: str) -> str:
        header = challenge.headers.get("WWW-Authenticate", "")
        if not header.lower().startswith("bearer "):
            raise ExternalServiceError(f"OCI registry {url}: 401 without a Bearer challenge (credentials needed)")
        params = dict(_CHALLENGE.findall(header))
        realm = params.pop("realm", None)
        if not realm:
            raise ExternalServiceError(f"OCI registry {url}: Bearer challenge without a realm")
        response = self._get(realm, what=f"OCI registry {url} token", params=params)
        body: Any = response.json()
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise ExternalServiceError(f"OCI registry {url}: the token endpoint gave no token")
        return str(token)

    def _get(self, url: str, what: str, params: dict[str, str] | None = None) -> requests.Response:
        try:
            response = self._http.get(url, params=params, timeout=self._timeout)
        except (requests.Timeout, requests.ConnectionError) as e:
            raise TransientError(f"{what}: {type(e).__name__}") from e
        self._raise_for(response, what)
        return response

    @staticmethod
    def _raise_for(response: requests.Response, what: str) -> None:
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"{what}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ExternalServiceError(f"{what}: HTTP {response.status_code}")
