"""Local HTTP simulator of the Datadog endpoints GUARD calls.

Serves, on 127.0.0.1 and an ephemeral port:
- ``POST /api/v2/query/timeseries``: the formula-and-functions timeseries query, answered in
  the real shape (``data.attributes.series`` / ``times`` / ``values``).
- ``GET /api/v1/monitor``: list monitors, filtered by ``monitor_tags`` (all must match) and
  ``name``, paginated with ``page`` / ``page_size``.

Every request must carry ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` equal to the keys the
simulator was built with, otherwise it answers 403 as Datadog does.

Time series
    ``set_series(query, fn, interval_seconds)`` registers the exact query string (as GUARD
    sends it, after templating). ``fn(bucket_start)`` gives the value of the bucket that
    starts at ``bucket_start`` (aligned to the interval, timezone-aware UTC), or None for no
    data. Only buckets whose start lies in [from, to] and is not in the future (by ``clock``)
    are returned. Complete buckets only, unless ``partial_last_bucket=True``: then the
    still-filling bucket that contains "now" is returned too, like real Datadog does, with
    ``fn(bucket_start)`` scaled by the fraction of the interval elapsed so far (a count metric
    read mid-bucket looks low). A scenario that wants another value for that bucket can
    compare ``bucket_start`` with the clock in ``fn``. A query never registered, or whose
    buckets are all None, returns no series.

Faults
    ``fail_next(path_regex, status, times, headers)`` answers the next matching requests with
    ``status`` (429 gets Datadog's ``X-RateLimit-*`` headers unless overridden);
    ``delay_next(path_regex, seconds)`` stalls the next matching request in real time, to
    exercise client timeouts.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from guard.clock import SystemClock
from guard.ports import Clock

from sandbox.sims.loopback import LoopbackHandler, LoopbackServer

SeriesFn = Callable[[datetime], float | None]

TIMESERIES_PATH = "/api/v2/query/timeseries"
MONITOR_PATH = "/api/v1/monitor"
MONITOR_STATES = frozenset({"Alert", "Ignored", "No Data", "OK", "Skipped", "Unknown", "Warn"})
_DEFAULT_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "100",
    "X-RateLimit-Period": "10",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "1",
    "X-RateLimit-Name": "sim_rate_limit",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received, whatever it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class _Series:
    fn: SeriesFn
    interval_seconds: int


@dataclass
class _Monitor:
    id: int
    name: str
    tags: list[str]
    state: str
    query: str
    type: str


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    remaining: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


class DatadogSimulator(LoopbackServer):
    """Plays Datadog's metrics-query and monitor APIs over real HTTP on loopback."""

    thread_name = "datadog-sim"

    def __init__(
        self,
        api_key: str = "sim-api-key",
        app_key: str = "sim-app-key",
        clock: Clock | None = None,
        *,
        partial_last_bucket: bool = False,
    ) -> None:
        self.api_key = api_key
        self.app_key = app_key
        self.clock: Clock = clock or SystemClock()
        self.partial_last_bucket = partial_last_bucket
        self.requests: list[RecordedRequest] = []
        self._series: dict[str, _Series] = {}
        self._monitors: dict[int, _Monitor] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Fault] = []
        self._next_monitor_id = 1001
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    # ------------------------------------------------------------------ scenario API

    def set_series(self, query: str, fn: SeriesFn, interval_seconds: int = 60) -> None:
        """Serve `query` (exact string) with `fn(bucket_start)` per bucket of `interval_seconds`."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        with self._lock:
            self._series[query] = _Series(fn=fn, interval_seconds=interval_seconds)

    def remove_series(self, query: str) -> None:
        """Stop serving `query`: it returns no series from now on."""
        with self._lock:
            self._series.pop(query, None)

    def add_monitor(
        self,
        name: str,
        tags: dict[str, str] | list[str],
        state: str = "Alert",
        *,
        query: str = "avg(last_5m):avg:istio.mesh.request.count{*} > 100",
        monitor_type: str = "query alert",
    ) -> int:
        """Add a monitor; returns its id. `state` is the overall state (Alert, OK, Warn, ...)."""
        self._check_state(state)
        tag_list = [f"{k}:{v}" for k, v in tags.items()] if isinstance(tags, dict) else list(tags)
        with self._lock:
            monitor_id = self._next_monitor_id
            self._next_monitor_id += 1
            self._monitors[monitor_id] = _Monitor(
                id=monitor_id, name=name, tags=tag_list, state=state, query=query, type=monitor_type
            )
        return monitor_id

    def set_monitor_state(self, monitor_id: int, state: str) -> None:
        """Change a monitor's overall state (e.g. an alert that resolves)."""
        self._check_state(state)
        with self._lock:
            self._monitors[monitor_id].state = state

    def fail_next(
        self, path_regex: str, status: int, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `times` requests whose path matches `path_regex` with `status`.

        A 429 carries Datadog's rate-limit headers (``X-RateLimit-Reset: 1``) unless `headers`
        overrides them; pass ``{"X-RateLimit-Reset": ""}`` to drop one.
        """
        merged = dict(_DEFAULT_RATE_LIMIT_HEADERS) if status == 429 else {}
        merged.update(headers or {})
        merged = {k: v for k, v in merged.items() if v != ""}
        with self._lock:
            self._faults.append(
                _Fault(pattern=re.compile(path_regex), remaining=times, status=status, headers=merged)
            )

    def delay_next(self, path_regex: str, seconds: float, times: int = 1) -> None:
        """Stall the next `times` matching requests for `seconds` of real time before answering."""
        with self._lock:
            self._delays.append(
                _Fault(pattern=re.compile(path_regex), remaining=times, delay_seconds=seconds)
            )

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests for exactly `path` (and `method`, when given)."""
        with self._lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    @staticmethod
    def _check_state(state: str) -> None:
        if state not in MONITOR_STATES:
            raise ValueError(f"unknown monitor state {state!r}; one of {sorted(MONITOR_STATES)}")

    # ------------------------------------------------------------------ request handling

    def _take(self, faults: list[_Fault], path: str) -> _Fault | None:
        with self._lock:
            for fault in faults:
                if fault.remaining > 0 and fault.pattern.search(path):
                    fault.remaining -= 1
                    return fault
        return None

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Route one request; returns (status, extra headers, JSON payload)."""
        split = urlsplit(raw_path)
        path, query = split.path, parse_qs(split.query)

        delay = self._take(self._delays, path)
        if delay is not None:
            time.sleep(delay.delay_seconds)

        status, extra, payload = self._route(method, path, query, headers, body)
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=method, path=path, query=query, headers=headers, body=body, status=status
                )
            )
        return status, extra, payload

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], Any]:
        fault = self._take(self._faults, path)
        if fault is not None:
            return fault.status, fault.headers, {"errors": [f"simulated HTTP {fault.status}"]}

        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("dd-api-key") != self.api_key or lowered.get("dd-application-key") != self.app_key:
            return 403, {}, {"errors": ["Forbidden"]}

        if path == TIMESERIES_PATH and method == "POST":
            return self._timeseries(body)
        if path == MONITOR_PATH and method == "GET":
            return self._list_monitors(query)
        return 404, {}, {"errors": ["Not found"]}

    def _timeseries(self, body: Any) -> tuple[int, dict[str, str], Any]:
        try:
            data = body["data"]
            if data["type"] != "timeseries_request":
                raise ValueError("data.type must be timeseries_request")
            attrs = data["attributes"]
            start_ms, end_ms = int(attrs["from"]), int(attrs["to"])
            queries = attrs["queries"]
            names = [q.get("name") for q in queries]
            for q in queries:
                if q.get("data_source") != "metrics" or not isinstance(q.get("query"), str):
                    raise ValueError("each query needs data_source 'metrics' and a query string")
            formulas = [f["formula"] for f in attrs.get("formulas") or []]
        except (KeyError, TypeError, ValueError) as e:
            return 400, {}, {"errors": [f"invalid timeseries request: {e}"]}

        if formulas:
            unknown = [f for f in formulas if f not in names]
            if unknown:
                return 400, {}, {"errors": [f"simulator supports formulas naming one query only: {unknown}"]}
            outputs = [queries[names.index(f)]["query"] for f in formulas]
        else:
            outputs = [q["query"] for q in queries]

        now = self.clock.now()
        per_output: list[tuple[int, dict[int, float]]] = []
        for index, query_text in enumerate(outputs):
            with self._lock:
                series = self._series.get(query_text)
            if series is None:
                continue
            points = self._buckets(series, start_ms, end_ms, now)
            if points:
                per_output.append((index, points))

        times = sorted({t for _, points in per_output for t in points})
        return (
            200,
            {},
            {
                "data": {
                    "type": "timeseries_response",
                    "attributes": {
                        "series": [
                            {"group_tags": [], "query_index": index, "unit": None} for index, _ in per_output
                        ],
                        "times": times,
                        "values": [[points.get(t) for t in times] for _, points in per_output],
                    },
                }
            },
        )

    def _buckets(self, series: _Series, start_ms: int, end_ms: int, now: datetime) -> dict[int, float]:
        interval_ms = series.interval_seconds * 1000
        now_ms = int(now.timestamp() * 1000)
        first = -(-start_ms // interval_ms) * interval_ms  # first aligned bucket start >= from
        out: dict[int, float] = {}
        for bucket_ms in range(first, end_ms + 1, interval_ms):
            bucket_end_ms = bucket_ms + interval_ms
            if bucket_end_ms <= now_ms:
                fraction = 1.0
            elif self.partial_last_bucket and bucket_ms <= now_ms:
                fraction = (now_ms - bucket_ms) / interval_ms
            else:
                break  # the future, or a still-filling bucket that is not shown
            value = series.fn(datetime.fromtimestamp(bucket_ms / 1000, UTC))
            if value is not None:
                out[bucket_ms] = float(value) * fraction
        return out

    def _list_monitors(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        wanted_tags = [t for v in query.get("monitor_tags", []) for t in v.split(",") if t]
        name = query.get("name", [""])[0]
        with self._lock:
            monitors = sorted(self._monitors.values(), key=lambda m: m.id)
        selected = [
            m for m in monitors if all(t in m.tags for t in wanted_tags) and name.lower() in m.name.lower()
        ]
        if "page" in query:
            try:
                page = int(query["page"][0])
                size = int(query.get("page_size", ["100"])[0])
            except ValueError:
                return 400, {}, {"errors": ["page and page_size must be integers"]}
            selected = selected[page * size : (page + 1) * size]
        created = (self.clock.now() - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000000+00:00")
        return 200, {}, [_monitor_json(m, created) for m in selected]


def _monitor_json(m: _Monitor, created: str) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "type": m.type,
        "query": m.query,
        "message": "",
        "tags": m.tags,
        "options": {"notify_no_data": False},
        "overall_state": m.state,
        "created": created,
        "modified": created,
        "multi": False,
        "priority": None,
        "restricted_roles": None,
        "deleted": None,
    }


def _decode_body(raw: bytes, encoding: str) -> Any:
    if not raw:
        return None
    if encoding == "gzip":
        raw = gzip.decompress(raw)
    elif encoding == "deflate":
        raw = zlib.decompress(raw)
    return json.loads(raw)


def _handler_for(sim: DatadogSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = _decode_body(raw, self.headers.get("Content-Encoding", ""))
            except (OSError, ValueError, zlib.error):
                self._reply(400, {}, {"errors": ["request body is not valid JSON"]})
                return
            status, extra, payload = sim.handle(self.command, self.path, dict(self.headers.items()), body)
            self._reply(status, extra, payload)

        def _reply(self, status: int, extra: dict[str, str], payload: Any) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test); nothing to tell it

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read `sim.requests`, not stderr

    return Handler
