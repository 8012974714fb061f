"""Local HTTP simulator of the Datadog endpoints GUARD calls.

Serves, on 127.0.0.1 and an ephemeral port:
- ``POST /api/v2/query/timeseries``: the formula-and-functions timeseries query, answered in
  the real shape (``data.attributes.series`` / ``times`` / ``values``).
- ``GET /api/v1/monitor``: list monitors, filtered by ``monitor_tags`` (all must match) and
  ``name``, paginated with ``page`` / ``page_size``; ``group_states`` adds ``state.groups``.
- ``GET /api/v1/monitor/groups/search``: monitor groups, filtered by ``group_status:<state>``.
- ``GET /api/v1/monitor/search``: monitors, filtered by ``status:<state>``, paged (``metadata.page_count``).
- ``POST /api/v1/events``: post an event (202 ``{"status": "ok", "event": {...}}``), validated as
  Datadog does: ``title`` (at most 100 characters) and ``text`` (at most 4,000) required,
  ``alert_type`` / ``priority`` from their enums, ``aggregation_key`` at most 100 characters, tags
  at most 200 characters each, ``date_happened`` an integer no older than 18 hours. Kept in ``events``.
- ``GET /api/v1/graph/snapshot``: ``start`` and ``end`` (integer POSIX seconds, start before end)
  and a ``metric_query`` (or ``graph_def``) are required; a query with no ``<aggregation>:<metric>{...}``
  term or unbalanced brackets is a 400. Answers ``{"metric_query", "graph_def", "snapshot_url"}``
  with a URL on Datadog's snapshot host (never fetched here). Kept in ``snapshots``.

Every request must carry ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` equal to the keys the
simulator was built with, otherwise it answers 403 as Datadog does (posting an event needs the
API key only).

Strict like Datadog (sandbox.sims.datadog_formula)
    A ``metrics`` query must be one metric query (``<aggregation>:<metric>{<filters>}``,
    optional ``by {<tags>}``, suffixes ``.as_count()`` ``.as_rate()`` ``.rollup(...)``
    ``.fill(...)``). Arithmetic or a function wrapper gets 400 "Functions are not supported in
    metrics data source field. Use the formulas payload."; formulas naming the queries are
    evaluated. A series' ``query_index`` is its formula's index (the query's, without formulas).

Grouped queries (sandbox.sims.datadog_formula.parse_scope)
    A registered query is one series whose tags are its filter terms. A query ``... by {key}``
    answers one series per value of ``key`` among the registered series that carry its other
    terms (``IN (...)``, an OR of that tag, or ``key:value`` narrow the values), each with
    ``group_tags: ["key:value"]``; a formula over grouped queries is evaluated per group. Filters
    mixing the symbolic ``,`` / ``!`` with ``AND`` ``OR`` ``NOT`` ``IN`` are refused as Datadog does;
    other valid forms the simulator does not evaluate are refused saying so.

Time series
    ``set_series(query, fn, interval_seconds)`` registers one metric query (exact string, as
    GUARD sends it after templating and splitting). ``fn(bucket_start)`` gives the value of the
    bucket that starts at ``bucket_start`` (aligned to the interval, timezone-aware UTC), or None
    for no data. Only buckets whose start lies in [from, to] and is not in the future (by
    ``clock``) are returned. Complete buckets only, unless ``partial_last_bucket=True``: then the
    still-filling bucket that contains "now" is returned too, like real Datadog does, with
    ``fn(bucket_start)`` scaled by the fraction of the interval elapsed so far (a count metric
    read mid-bucket looks low). A query never registered, or whose buckets are all None, returns
    no series (and so does a formula over it).

    Like Datadog, a response holds at most ``max_points`` points per series: a longer window (or
    a requested ``interval``) is answered with coarser buckets, the native ones rolled up (sum for
    ``.as_count()`` or ``.rollup(sum)``, else average), their width a standard step.

Rate limits
    Per organisation (every key of this simulator shares them) and per calendar-aligned period,
    with ``X-RateLimit-Limit`` / ``-Period`` / ``-Remaining`` / ``-Reset`` / ``-Name`` on every
    answer of the limited endpoint, and 429 once the period's budget is spent. Defaults follow
    the hourly periods Datadog uses (``DEFAULT_RATE_LIMITS``); pass ``rate_limits`` to change them.

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

from sandbox.sims.datadog_formula import MetricQuery, QueryRefused, Scope, evaluate, parse_metric_query, parse_scope
from sandbox.sims.loopback import LoopbackHandler, LoopbackServer

SeriesFn = Callable[[datetime], float | None]

TIMESERIES_PATH = "/api/v2/query/timeseries"
MONITOR_PATH = "/api/v1/monitor"
MONITOR_GROUPS_SEARCH_PATH = "/api/v1/monitor/groups/search"
MONITOR_SEARCH_PATH = "/api/v1/monitor/search"
EVENTS_PATH = "/api/v1/events"
SNAPSHOT_PATH = "/api/v1/graph/snapshot"
EVENT_ALERT_TYPES = frozenset({"error", "warning", "info", "success", "user_update", "recommendation", "snapshot"})
EVENT_TITLE_MAX, EVENT_TEXT_MAX, EVENT_KEY_MAX, TAG_MAX = 100, 4000, 100, 200
EVENT_MAX_AGE_SECONDS = 18 * 3600
_METRIC_TERM = re.compile(r"[a-z]+:[A-Za-z0-9_.]+\{[^{}]*\}")
MONITOR_STATES = frozenset({"Alert", "Ignored", "No Data", "OK", "Skipped", "Unknown", "Warn"})
# Worst first: a multi-alert monitor's overall state is its worst group's.
_SEVERITY = ["Alert", "Warn", "No Data", "Unknown", "OK", "Ignored", "Skipped"]
MAX_POINTS = 1500
# Bucket widths Datadog rolls a long window up to (seconds).
_ROLLUP_STEPS = [60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400]
_DEFAULT_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "100",
    "X-RateLimit-Period": "10",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "1",
    "X-RateLimit-Name": "sim_rate_limit",
}


@dataclass(frozen=True)
class RateLimit:
    """One named limit: `limit` requests per calendar-aligned `period_seconds`, on paths matching `path_regex`."""

    name: str
    limit: int
    period_seconds: int
    path_regex: str


# Hourly, as Datadog's rate-limit docs show; an older version of them gave 1,600 an hour for
# "Query a Timeseries". The monitor figure is an assumption: check your organisation's headers.
DEFAULT_RATE_LIMITS = (
    RateLimit("query_timeseries", 1600, 3600, r"^/api/v2/query/timeseries$"),
    RateLimit("monitors_read", 3000, 3600, r"^/api/v1/monitor(/groups/search|/search)?$"),
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received, whatever it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int
    response_headers: dict[str, str] = field(default_factory=dict)


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
    groups: dict[str, str] = field(default_factory=dict)  # multi-alert: group name -> state

    @property
    def overall_state(self) -> str:
        if not self.groups:
            return self.state
        return min(self.groups.values(), key=_SEVERITY.index)


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
        max_points: int = MAX_POINTS,
        rate_limits: tuple[RateLimit, ...] = DEFAULT_RATE_LIMITS,
    ) -> None:
        self.api_key = api_key
        self.app_key = app_key
        self.clock: Clock = clock or SystemClock()
        self.partial_last_bucket = partial_last_bucket
        self.max_points = max_points
        self.rate_limits = rate_limits
        self._rate_used: dict[tuple[str, int], int] = {}  # (limit name, period start) -> requests
        self.requests: list[RecordedRequest] = []
        self._series: dict[str, _Series] = {}
        # (aggregation:metric, suffixes) -> (filter terms, series) of every registered query (parse_scope)
        self._scopes: dict[tuple[str, str], list[tuple[frozenset[str], _Series]]] | None = None
        self._monitors: dict[int, _Monitor] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Fault] = []
        self._next_monitor_id = 1001
        self.events: list[dict[str, Any]] = []  # as Datadog stored them (id, date_happened, tags, ...)
        self.snapshots: list[dict[str, Any]] = []  # {"metric_query", "start", "end", "title", "snapshot_url"}
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
            self._scopes = None

    def remove_series(self, query: str) -> None:
        """Stop serving `query`: it returns no series from now on."""
        with self._lock:
            self._series.pop(query, None)
            self._scopes = None

    def add_monitor(
        self,
        name: str,
        tags: dict[str, str] | list[str],
        state: str = "Alert",
        *,
        query: str | None = None,
        monitor_type: str = "query alert",
        groups: dict[str, str] | None = None,
    ) -> int:
        """Add a monitor; returns its id. `state` is the overall state (Alert, OK, Warn, ...).

        `groups` makes it a multi-alert monitor (`... by {cluster_name}`): group name (its tags,
        comma-separated, e.g. ``cluster_name:eks-prod-1``) -> that group's state; the overall
        state is then the worst group's, as in Datadog.
        """
        self._check_state(state)
        for group_state in (groups or {}).values():
            self._check_state(group_state)
        tag_list = [f"{k}:{v}" for k, v in tags.items()] if isinstance(tags, dict) else list(tags)
        if query is None:
            by = sorted({t.split(":", 1)[0] for g in (groups or {}) for t in g.split(",")})
            grouping = f" by {{{','.join(by)}}}" if by else ""
            query = f"avg(last_5m):avg:istio.mesh.request.count{{*}}{grouping} > 100"
        with self._lock:
            monitor_id = self._next_monitor_id
            self._next_monitor_id += 1
            self._monitors[monitor_id] = _Monitor(
                id=monitor_id, name=name, tags=tag_list, state=state, query=query, type=monitor_type,
                groups=dict(groups or {}),
            )
        return monitor_id

    def set_monitor_state(self, monitor_id: int, state: str, *, group: str | None = None) -> None:
        """Change a monitor's overall state, or one group's (e.g. an alert that resolves)."""
        self._check_state(state)
        with self._lock:
            if group is None:
                self._monitors[monitor_id].state = state
            else:
                self._monitors[monitor_id].groups[group] = state

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
                    method=method, path=path, query=query, headers=headers, body=body, status=status,
                    response_headers=dict(extra),
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
        needs_app_key = not (path == EVENTS_PATH and method == "POST")  # events take the API key alone
        if lowered.get("dd-api-key") != self.api_key or (
                needs_app_key and lowered.get("dd-application-key") != self.app_key):
            return 403, {}, {"errors": ["Forbidden"]}

        limited, limit_headers = self._count_request(path)
        if limited:
            return 429, limit_headers, {"errors": ["Too many requests"]}
        if path == TIMESERIES_PATH and method == "POST":
            status, extra, payload = self._timeseries(body)
        elif path == MONITOR_PATH and method == "GET":
            status, extra, payload = self._list_monitors(query)
        elif path == MONITOR_GROUPS_SEARCH_PATH and method == "GET":
            status, extra, payload = self._search_groups(query)
        elif path == MONITOR_SEARCH_PATH and method == "GET":
            status, extra, payload = self._search_monitors(query)
        elif path == EVENTS_PATH and method == "POST":
            status, extra, payload = self._post_event(body)
        elif path == SNAPSHOT_PATH and method == "GET":
            status, extra, payload = self._snapshot(query)
        else:
            return 404, {}, {"errors": ["Not found"]}
        return status, extra | limit_headers, payload

    def _count_request(self, path: str) -> tuple[bool, dict[str, str]]:
        """Spend one request of `path`'s limit; (over the limit?, the X-RateLimit-* headers)."""
        limit = next((r for r in self.rate_limits if re.search(r.path_regex, path)), None)
        if limit is None:
            return False, {}
        now = self.clock.now().timestamp()
        period_start = int(now // limit.period_seconds) * limit.period_seconds  # calendar-aligned
        with self._lock:
            used = self._rate_used.get((limit.name, period_start), 0)
            over = used >= limit.limit
            if not over:
                used += 1
                self._rate_used[(limit.name, period_start)] = used
        reset = max(1, int(-(-(period_start + limit.period_seconds - now) // 1)))
        return over, {
            "X-RateLimit-Limit": str(limit.limit),
            "X-RateLimit-Period": str(limit.period_seconds),
            "X-RateLimit-Remaining": str(max(0, limit.limit - used)),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Name": limit.name,
        }

    def _timeseries(self, body: Any) -> tuple[int, dict[str, str], Any]:
        try:
            data = body["data"]
            if data["type"] != "timeseries_request":
                raise ValueError("data.type must be timeseries_request")
            attrs = data["attributes"]
            start_ms, end_ms = int(attrs["from"]), int(attrs["to"])
            requested_ms = int(attrs["interval"]) if attrs.get("interval") is not None else None
            queries = attrs["queries"]
            for q in queries:
                if q.get("data_source") != "metrics" or not isinstance(q.get("query"), str):
                    raise ValueError("each query needs data_source 'metrics' and a query string")
            names = [str(q.get("name") or "") for q in queries]
            formulas = [str(f["formula"]) for f in attrs.get("formulas") or []]
        except (KeyError, TypeError, ValueError) as e:
            return 400, {}, {"errors": [f"invalid timeseries request: {e}"]}
        if formulas and (len(set(names)) != len(names) or not all(names)):
            return 400, {}, {"errors": ["every query needs a unique name when formulas are given"]}
        try:
            parsed = [parse_metric_query(q["query"]) for q in queries]
        except QueryRefused as e:
            return 400, {}, {"errors": [str(e)]}

        try:
            scopes = [parse_scope(q["query"]) for q in queries]
        except QueryRefused as e:
            return 400, {}, {"errors": [str(e)]}

        now = self.clock.now()
        selected = [self._select(q.text, scope) for q, scope in zip(parsed, scopes, strict=True)]
        used = [one for chosen in selected for one in chosen.values()]
        width = self._width(used, parsed, start_ms, end_ms, requested_ms)
        # Per query: group value ("" when not grouped) -> its buckets; a group with no data is left out.
        points: list[dict[str, dict[int, float | None]]] = []
        for query, chosen in zip(parsed, selected, strict=True):
            buckets = {g: self._buckets(one, query, width, start_ms, end_ms, now) for g, one in chosen.items()}
            points.append({g: b for g, b in buckets.items() if b})
        times = sorted({t for answered in points for values in answered.values() for t in values})

        keys = [scope.key for scope in scopes]
        outputs: list[tuple[int, str | None, str, dict[int, float | None] | None]] = []  # (index, key, group, values)
        if formulas:
            try:
                for index, formula in enumerate(formulas):
                    referenced = [i for i, n in enumerate(names) if re.search(rf"\b{re.escape(n)}\b(?!\s*\()", formula)]
                    grouped_by = {keys[i] for i in referenced if keys[i] is not None}
                    if len(grouped_by) > 1:
                        raise QueryRefused("simulator does not evaluate a formula over queries grouped by "
                                           "different tags")
                    key = grouped_by.pop() if grouped_by else None
                    named = sorted({g for i in referenced if keys[i] for g in points[i]}) if key else [""]
                    for group in named:
                        by_name = {n: (points[i].get(group) if keys[i] else points[i].get("")) or None
                                   for i, n in enumerate(names)}
                        outputs.append((index, key, group, evaluate(formula, by_name, times)))
            except QueryRefused as e:
                return 400, {}, {"errors": [str(e)]}
        else:
            for index, answered in enumerate(points):
                for group, values in sorted(answered.items()):
                    outputs.append((index, keys[index], group, {t: values.get(t) for t in times}))
        shown = [o for o in outputs if o[3] and any(v is not None for v in o[3].values())]
        return 200, {}, {
            "data": {
                "type": "timeseries_response",
                "attributes": {
                    "series": [
                        {"group_tags": [f"{key}:{group}"] if key else [], "query_index": i, "unit": None}
                        for i, key, group, _ in shown
                    ],
                    "times": times,
                    "values": [[out.get(t) for t in times] for _, _, _, out in shown if out],
                },
            },
        }

    def _select(self, text: str, scope: Scope) -> dict[str, _Series]:
        """The registered series a metric query selects: group value -> series ("" when not grouped).

        A registered query is one series whose tags are its filter terms; a grouped query selects
        those carrying its other terms plus one value of its `by` tag that its filter allows.
        """
        with self._lock:
            exact = self._series.get(text)
            if exact is not None and scope.key is None:
                return {"": exact}
            if self._scopes is None:
                self._scopes = {}
                for registered, one in self._series.items():
                    try:
                        known = parse_scope(registered)
                    except QueryRefused:
                        continue
                    self._scopes.setdefault((known.head, known.tail), []).append((known.required, one))
            candidates = list(self._scopes.get((scope.head, scope.tail), []))
        if scope.key is None:
            return next(({"": one} for terms, one in candidates if terms == scope.required), {})
        selected: dict[str, _Series] = {}
        prefix = f"{scope.key}:"
        for terms, one in candidates:
            values = [t[len(prefix):] for t in terms if t.startswith(prefix)]
            if len(values) != 1 or terms - {prefix + values[0]} != scope.required:
                continue
            if scope.allowed is None or values[0] in scope.allowed:
                selected.setdefault(values[0], one)
        return selected

    def _width(self, registered: list[_Series], parsed: list[MetricQuery], start_ms: int, end_ms: int,
               requested_ms: int | None) -> int:
        """Bucket width (s) of the response: the native one, or coarser for `interval`, rollups and the cap."""
        native = max((s.interval_seconds for s in registered), default=60)
        floor = max([native, (requested_ms or 0) // 1000] + [q.rollup_seconds or 0 for q in parsed])
        width = -(-floor // native) * native
        span = max(0, end_ms - start_ms) // 1000
        if span // width <= self.max_points:
            return width
        for step in _ROLLUP_STEPS:
            if step >= width and step % native == 0 and span // step <= self.max_points:
                return step
        return -(-span // self.max_points // 86400 + 1) * 86400

    def _buckets(self, series: _Series, query: MetricQuery, width_seconds: int, start_ms: int, end_ms: int,
                 now: datetime) -> dict[int, float | None]:
        """Values of the `width_seconds` buckets starting in [start, end], native buckets rolled up."""
        native_ms = series.interval_seconds * 1000
        width_ms = width_seconds * 1000
        now_ms = int(now.timestamp() * 1000)
        method = query.rollup_method or ("sum" if query.as_count else "avg")
        first = -(-start_ms // width_ms) * width_ms  # first aligned bucket start >= from
        out: dict[int, float | None] = {}
        for bucket_ms in range(first, end_ms + 1, width_ms):
            if bucket_ms + width_ms > now_ms and not (self.partial_last_bucket and bucket_ms <= now_ms):
                break  # the future, or a still-filling bucket that is not shown
            values = []
            for native_start in range(bucket_ms, bucket_ms + width_ms, native_ms):
                if native_start + native_ms <= now_ms:
                    fraction = 1.0
                elif native_start <= now_ms:
                    fraction = (now_ms - native_start) / native_ms
                else:
                    break
                value = series.fn(datetime.fromtimestamp(native_start / 1000, UTC))
                if value is not None:
                    values.append(float(value) * fraction)
            if values:
                out[bucket_ms] = _roll_up(method, values)
        return out

    def _list_monitors(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        wanted_tags = [t for v in query.get("monitor_tags", []) for t in v.split(",") if t]
        name = query.get("name", [""])[0]
        group_states = {s.strip().lower() for v in query.get("group_states", []) for s in v.split(",") if s}
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
        return 200, {}, [_monitor_json(m, created, group_states, self._epoch()) for m in selected]

    def _search_groups(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        """`GET /api/v1/monitor/groups/search`: `group_status:<state>` terms only (others refused)."""
        parsed = _search_query(query, "group_status")
        if isinstance(parsed, str):
            return 400, {}, {"errors": [parsed]}
        statuses, page, per_page = parsed
        with self._lock:
            monitors = sorted(self._monitors.values(), key=lambda m: m.id)
        groups = [
            (m, group, state)
            for m in monitors
            for group, state in (sorted(m.groups.items()) if m.groups else [("*", m.state)])
            if not statuses or state.lower() in statuses
        ]
        shown = groups[page * per_page : (page + 1) * per_page]
        counts: dict[str, int] = {}
        for _, _, state in groups:
            counts[state] = counts.get(state, 0) + 1
        epoch = self._epoch()
        return 200, {}, {
            "counts": {"status": [{"count": n, "name": state} for state, n in sorted(counts.items())],
                       "type": [{"count": len(groups), "name": "metric"}] if groups else []},
            "groups": [
                {"group": group, "group_tags": group.split(",") if group != "*" else ["*"],
                 "last_nodata_ts": 0, "last_triggered_ts": epoch if state == "Alert" else None,
                 "monitor_id": m.id, "monitor_name": m.name, "status": state}
                for m, group, state in shown
            ],
            "metadata": {"page": page, "page_count": -(-len(groups) // per_page) if per_page else 0,
                         "per_page": per_page, "total_count": len(groups)},
        }

    def _search_monitors(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        """`GET /api/v1/monitor/search`: `status:<state>` terms only (others refused), paged, worst first."""
        parsed = _search_query(query, "status")
        if isinstance(parsed, str):
            return 400, {}, {"errors": [parsed]}
        statuses, page, per_page = parsed
        with self._lock:
            monitors = sorted(self._monitors.values(), key=lambda m: m.id)
        found = [m for m in monitors if not statuses or m.overall_state.lower() in statuses]
        shown = found[page * per_page : (page + 1) * per_page]
        counts: dict[str, int] = {}
        for m in found:
            counts[m.overall_state] = counts.get(m.overall_state, 0) + 1
        epoch = self._epoch()
        return 200, {}, {
            "counts": {"status": [{"count": n, "name": state} for state, n in sorted(counts.items())],
                       "tag": [], "type": [{"count": len(found), "name": "metric"}] if found else [], "muted": []},
            "monitors": [
                {"id": m.id, "name": m.name, "status": m.overall_state, "tags": m.tags, "type": m.type,
                 "query": m.query, "classification": "metric", "metrics": [], "notifications": [],
                 "last_triggered_ts": epoch if m.overall_state == "Alert" else None, "org_id": 1,
                 "scopes": [], "creator": {"email": "sim@example.com", "handle": "sim@example.com", "name": "sim"}}
                for m in shown
            ],
            "metadata": {"page": page, "page_count": -(-len(found) // per_page) if per_page else 0,
                         "per_page": per_page, "total_count": len(found)},
        }

    def _epoch(self) -> int:
        return int(self.clock.now().timestamp())

    def _post_event(self, body: Any) -> tuple[int, dict[str, str], Any]:
        """`POST /api/v1/events`: refuses what Datadog refuses, with its `{"errors": [...]}`."""
        problem = _event_problem(body, self._epoch())
        if problem:
            return 400, {}, {"errors": [problem]}
        with self._lock:
            event_id = 5_000_000 + len(self.events) + 1
            event = {"id": event_id, "id_str": str(event_id), "title": body["title"], "text": body["text"],
                     "date_happened": int(body.get("date_happened") or self._epoch()),
                     "alert_type": body.get("alert_type", "info"), "priority": body.get("priority"),
                     "aggregation_key": body.get("aggregation_key"), "tags": list(body.get("tags") or []),
                     "source_type_name": body.get("source_type_name"), "handle": None, "related_event_id": None,
                     "url": f"https://app.datadoghq.com/event/event?id={event_id}"}
            self.events.append(event)
        shown = {k: v for k, v in event.items() if k not in ("alert_type", "aggregation_key", "source_type_name")}
        return 202, {}, {"status": "ok", "event": shown}

    def _snapshot(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        """`GET /api/v1/graph/snapshot`: a PNG's URL for `metric_query` over [start, end] (seconds)."""
        try:
            start, end = int(query["start"][0]), int(query["end"][0])
        except (KeyError, IndexError, ValueError):
            return 400, {}, {"errors": ["start and end are required POSIX timestamps in seconds"]}
        metric_query = query.get("metric_query", [""])[0]
        graph_def = query.get("graph_def", [""])[0]
        if start >= end:
            return 400, {}, {"errors": ["start must be before end"]}
        if not metric_query and not graph_def:
            return 400, {}, {"errors": ["metric_query or graph_def is required"]}
        if metric_query and (not _METRIC_TERM.search(metric_query) or not _balanced(metric_query)):
            return 400, {}, {"errors": [f"Error parsing query: {metric_query}"]}
        with self._lock:
            number = len(self.snapshots) + 1
            url = (f"https://p.datadoghq.com/snapshot/view/dd-snapshots-prod/org_1/"
                   f"{datetime.fromtimestamp(end, UTC):%Y-%m-%d}/sim-{number:06d}.png")
            self.snapshots.append({"metric_query": metric_query, "start": start, "end": end,
                                   "title": query.get("title", [""])[0], "snapshot_url": url})
        return 200, {}, {"metric_query": metric_query or None, "graph_def": graph_def or None, "snapshot_url": url}


def _event_problem(body: Any, now: int) -> str | None:
    """What Datadog's events API would refuse in `body`, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for name, limit in (("title", EVENT_TITLE_MAX), ("text", EVENT_TEXT_MAX)):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return f"'{name}' is required"
        if len(value) > limit:
            return f"'{name}' is limited to {limit} characters"
    if body.get("alert_type") is not None and body["alert_type"] not in EVENT_ALERT_TYPES:
        return f"invalid alert_type {body['alert_type']!r}"
    if body.get("priority") is not None and body["priority"] not in ("normal", "low"):
        return f"invalid priority {body['priority']!r}"
    key = body.get("aggregation_key")
    if key is not None and (not isinstance(key, str) or len(key) > EVENT_KEY_MAX):
        return f"'aggregation_key' is limited to {EVENT_KEY_MAX} characters"
    tags = body.get("tags", [])
    if not isinstance(tags, list) or any(not isinstance(t, str) or not t or len(t) > TAG_MAX for t in tags):
        return f"'tags' must be a list of non-empty strings of at most {TAG_MAX} characters"
    happened = body.get("date_happened")
    if happened is not None:
        if not isinstance(happened, int) or isinstance(happened, bool):
            return "'date_happened' must be an integer POSIX timestamp"
        if happened < now - EVENT_MAX_AGE_SECONDS:
            return "'date_happened' is limited to events no older than 18 hours"
    return None


def _balanced(text: str) -> bool:
    depth = {"(": 0, "{": 0}
    closing = {")": "(", "}": "{"}
    for char in text:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def _roll_up(method: str, values: list[float]) -> float:
    if method == "sum":
        return sum(values)
    if method == "max":
        return max(values)
    if method == "min":
        return min(values)
    if method == "count":
        return float(len(values))
    return sum(values) / len(values)


def _monitor_json(m: _Monitor, created: str, group_states: set[str], epoch: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": m.id,
        "name": m.name,
        "type": m.type,
        "query": m.query,
        "message": "",
        "tags": m.tags,
        "options": {"notify_no_data": False},
        "overall_state": m.overall_state,
        "overall_state_modified": created,
        "created": created,
        "modified": created,
        "multi": bool(m.groups),
        "priority": None,
        "restricted_roles": None,
        "deleted": None,
    }
    if group_states:
        body["state"] = {"groups": {
            group: {"name": group, "status": state, "last_triggered_ts": epoch if state == "Alert" else 0,
                    "last_notified_ts": 0, "last_resolved_ts": 0, "last_nodata_ts": 0}
            for group, state in m.groups.items()
            if "all" in group_states or state.lower() in group_states
        }}
    return body


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


def _search_query(query: dict[str, list[str]], key: str) -> tuple[set[str], int, int] | str:
    """A monitor search's `<key>:<state>` terms (lower-cased), page and per_page; or why it is refused
    (the simulator knows no other term)."""
    statuses: set[str] = set()
    for term in (query.get("query", [""])[0]).split():
        name, _, value = term.partition(":")
        if name != key or not value:
            return f"simulator supports only {key}:<state> terms, not {term!r}"
        statuses.add(value.strip('"').lower())
    try:
        return statuses, int(query.get("page", ["0"])[0]), int(query.get("per_page", ["30"])[0])
    except ValueError:
        return "page and per_page must be integers"
