"""Datadog `MetricsProvider`: v2 timeseries formula queries and v1 monitors; and `DashboardMarkers`:
v1 events and v1 graph snapshots.

Imports `datadog_api_client`; only the Lambda functions that query Datadog should import
this module (cold start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.api.snapshots_api import SnapshotsApi
from datadog_api_client.v1.model.event_alert_type import EventAlertType
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.metrics_data_source import MetricsDataSource
from datadog_api_client.v2.model.metrics_timeseries_query import MetricsTimeseriesQuery
from datadog_api_client.v2.model.query_formula import QueryFormula
from datadog_api_client.v2.model.timeseries_formula_query_request import TimeseriesFormulaQueryRequest
from datadog_api_client.v2.model.timeseries_formula_request import TimeseriesFormulaRequest
from datadog_api_client.v2.model.timeseries_formula_request_attributes import (
    TimeseriesFormulaRequestAttributes,
)
from datadog_api_client.v2.model.timeseries_formula_request_queries import TimeseriesFormulaRequestQueries
from datadog_api_client.v2.model.timeseries_formula_request_type import TimeseriesFormulaRequestType

from guard.clock import SystemClock
from guard.datadog_groups import GroupedQuery
from guard.datadog_query import UnsplittableQuery
from guard.datadog_query import split as split_query
from guard.errors import ConfigError, ExternalServiceError, TransientError
from guard.ports import Alert, AlertingGroup, AlertsSnapshot, Clock, MarkerEvent, Point
from guard.retry import RetryPolicy, policy, retry_after_seconds
from guard.vendor_slots import VendorSlots, unlimited

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 10.0
MONITOR_PAGE_SIZE = 100
MAX_MONITOR_PAGES = 50
# Reconnect on a refused/reset connection, never retry a response (see `_call`).
NO_STATUS_RETRY = urllib3.Retry(
    total=None, connect=2, read=0, redirect=0, status=0, other=0, respect_retry_after_header=False
)


class DatadogMetrics:
    """`MetricsProvider` backed by the Datadog API.

    Every call goes through the project's retry policy (guard.retry): timeouts, connection
    errors, 5xx and 429 are tried again with jittered backoff, or after the wait Datadog asks
    for (`X-RateLimit-Reset`, else `Retry-After`). A wait longer than the policy sleeps in a
    Lambda leaves as `RateLimited` (the state machine waits it out); attempts that run out leave
    as `TransientError`. A request Datadog refuses (400, 401, 403, 404) raises
    `ExternalServiceError` naming the operation.

    A client built elsewhere should set `request_timeout` (a default is filled in when it is
    unset) and `retry_policy=NO_STATUS_RETRY`, as `from_keys` does.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        site: str = "datadoghq.com",
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        interval_seconds: int | None = None,
        slots: VendorSlots | None = None,
    ) -> None:
        self._slots = slots  # execution.vendor_concurrency: held for one request, never across a wait
        # Every call must be bounded: the SDK reads its timeout from the configuration.
        if not api_client.configuration.request_timeout:
            api_client.configuration.request_timeout = DEFAULT_TIMEOUT_SECONDS
        self._metrics = MetricsApi(api_client)
        self._monitors = MonitorsApi(api_client)
        self._events = EventsApi(api_client)
        self._snapshots = SnapshotsApi(api_client)
        self._site = site
        self._clock: Clock = clock or SystemClock()
        self._retry = retry or policy(self._clock.sleep)
        self._interval_ms = interval_seconds * 1000 if interval_seconds else None

    @classmethod
    def from_keys(
        cls,
        api_key: str,
        app_key: str,
        site: str = "datadoghq.com",
        host: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        interval_seconds: int | None = None,
        slots: VendorSlots | None = None,
    ) -> DatadogMetrics:
        """Build the client for `site` (or for `host`, e.g. a local simulator over http)."""
        config = Configuration(host=host) if host else Configuration()
        config.server_variables["site"] = site  # wins over DD_SITE in the environment
        config.api_key["apiKeyAuth"] = api_key
        config.api_key["appKeyAuth"] = app_key
        config.request_timeout = timeout_seconds
        # Rate limits are handled here, with an injectable sleep: neither the SDK nor urllib3
        # (which by default sleeps out a Retry-After on GET) may retry a status on its own.
        config.enable_retry = False
        config.retry_policy = NO_STATUS_RETRY
        return cls(
            ApiClient(config),
            site=site,
            clock=clock,
            retry=retry,
            interval_seconds=interval_seconds,
            slots=slots,
        )

    # ------------------------------------------------------------------ MetricsProvider

    def query(self, queries: dict[str, str], start: datetime, end: datetime) -> dict[str, list[Point]]:
        """Points of each named query in [start, end], all in one request. Missing data -> [].

        Each query goes as metric queries plus one formula (guard.datadog_query): the v2 API refuses
        arithmetic and functions inside a metric query, and the formula keeps the whole window in one
        request (the v1 `/api/v1/query` endpoint would accept `a / b` as text, but it is the legacy API,
        its application-key scopes differ, and it answers one query per request).
        """
        if not queries:
            return {}
        names = list(queries)
        result: dict[str, list[Point]] = {n: [] for n in names}
        seen: set[int] = set()
        for index, _, points in self._timeseries([queries[n] for n in names], names, start, end):
            if index in seen:
                raise ConfigError(
                    f"Datadog query {names[index]!r} returned several series; a GUARD query must "
                    f"aggregate to one series (no 'by {{...}}'): {queries[names[index]]}"
                )
            seen.add(index)
            result[names[index]] = points
        return result

    def query_groups(self, queries: list[GroupedQuery], start: datetime,
                     end: datetime) -> list[dict[str, list[Point]]]:
        """Points per cluster of each grouped query in [start, end], all in one request.

        Datadog answers one series per group (`group_tags`, e.g. `cluster_name:eks-1`), which names
        the cluster (`GroupedQuery.clusters`). A cluster with no series gets [] (no data: never a pass).
        A series of a group GUARD did not ask for is refused: the query's filter would be wider than
        its clusters.
        """
        results: list[dict[str, list[Point]]] = [{c: [] for c in q.clusters.values()} for q in queries]
        if not queries:
            return results
        answered = self._timeseries([q.text for q in queries], [q.name for q in queries], start, end)
        seen: set[tuple[int, str]] = set()
        for index, group_tags, points in answered:
            grouped = queries[index]
            values = [t.partition(":")[2] for t in group_tags if t.partition(":")[0] == grouped.key]
            cluster_id = grouped.clusters.get(values[0]) if len(values) == 1 else None
            if cluster_id is None:
                raise ExternalServiceError(f"Datadog query {grouped.name!r} returned a series for the group "
                                           f"{group_tags!r}, not one of its clusters")
            if (index, cluster_id) in seen:
                raise ExternalServiceError(f"Datadog query {grouped.name!r} returned two series for {group_tags!r}")
            seen.add((index, cluster_id))
            results[index][cluster_id] = points
        return results

    def _timeseries(self, texts: list[str], names: list[str], start: datetime,
                    end: datetime) -> list[tuple[int, list[str], list[Point]]]:
        """One v2 timeseries request of one formula per text: (formula index, group tags, points) per series."""
        metric_queries: list[MetricsTimeseriesQuery] = []
        formulas: list[QueryFormula] = []
        for name, text in zip(names, texts, strict=True):
            offset = len(metric_queries)
            try:
                # Formula variables must be identifiers; GUARD's query names need not be unique across splits.
                parts = split_query(text, partial(_variable, offset))
            except UnsplittableQuery as e:
                raise ConfigError(f"Datadog query {name!r} cannot be sent: {e}: {text}") from e
            metric_queries += [
                MetricsTimeseriesQuery(data_source=MetricsDataSource.METRICS, query=part, name=f"q{offset + i}")
                for i, part in enumerate(parts.queries)
            ]
            formulas.append(QueryFormula(formula=parts.formula))
        attributes = TimeseriesFormulaRequestAttributes(
            _from=_ms(start),
            to=_ms(end),
            queries=TimeseriesFormulaRequestQueries(metric_queries),
            formulas=formulas,
        )
        if self._interval_ms:
            attributes.interval = self._interval_ms
        body = TimeseriesFormulaQueryRequest(
            data=TimeseriesFormulaRequest(
                type=TimeseriesFormulaRequestType.TIMESERIES_REQUEST, attributes=attributes
            )
        )
        response = self._call("query timeseries", lambda: self._metrics.query_timeseries_data(body))

        data = getattr(response, "data", None)
        attrs = getattr(data, "attributes", None) if data is not None else None
        if attrs is None:
            errors = getattr(response, "errors", None)
            if errors:
                raise ExternalServiceError(f"Datadog query timeseries returned errors: {errors}")
            return []

        times = _plain(getattr(attrs, "times", None))
        series = _plain(getattr(attrs, "series", None))
        values = _plain(getattr(attrs, "values", None))
        answered: list[tuple[int, list[str], list[Point]]] = []
        # With formulas, a series' `query_index` is the index of its formula: one formula per GUARD query.
        for position, one in enumerate(series):
            index = int(one.query_index)
            if not 0 <= index < len(texts) or position >= len(values):
                raise ExternalServiceError(
                    f"Datadog query timeseries returned an unexpected series #{position}"
                )
            points = [
                Point(ts=datetime.fromtimestamp(t / 1000, UTC), value=float(v))
                for t, v in zip(times, _plain(values[position]), strict=False)
                if v is not None
            ]
            answered.append((index, [str(t) for t in _plain(getattr(one, "group_tags", None))], points))
        return answered

    def active_alerts(self, tags: dict[str, str], snapshot: AlertsSnapshot | None = None) -> list[Alert]:
        """Monitors alerting about the cluster `tags` describe, each at most once.

        Two kinds: a monitor carrying every one of `tags` whose overall state is Alert (a single-alert
        monitor scoped to the cluster), and a group in Alert of a multi-alert monitor (`... by
        {cluster_name}`) whose group names this cluster (`cluster_group_matches`). The second is asked
        of `GET /api/v1/monitor/groups/search`: such monitors carry team or service tags, not the
        cluster's, and their overall state reflects any group, so neither tells about THIS cluster.
        Both are about every cluster: a chunk asks them once (`alerts_snapshot`) and passes them in.
        """
        if snapshot is None:
            alerts = {a.monitor_id: a for a in self._tagged_alerts(tags)}
            groups = self._alerting_groups()
        else:
            wanted = [f"{k}:{v}" for k, v in sorted(tags.items())]
            alerts = {m.monitor_id: self._alert(m.monitor_id, m.name, "Alert") for m in snapshot.monitors
                      if all(t in m.group_tags for t in wanted)}
            groups = snapshot.groups
        for group in groups:
            if cluster_group_matches(group.group_tags, tags):
                alerts.setdefault(group.monitor_id, self._alert(group.monitor_id, group.name, "Alert"))
        return sorted(alerts.values(), key=lambda a: a.monitor_id)

    def _tagged_alerts(self, tags: dict[str, str]) -> list[Alert]:
        wanted = [f"{k}:{v}" for k, v in sorted(tags.items())]
        monitor_tags = ",".join(wanted)
        alerts: list[Alert] = []
        for page in range(MAX_MONITOR_PAGES):
            list_page = partial(
                self._monitors.list_monitors,
                monitor_tags=monitor_tags,
                page=page,
                page_size=MONITOR_PAGE_SIZE,
            )
            batch = self._call("list monitors", list_page)
            for monitor in batch:
                state = getattr(monitor, "overall_state", None)
                state_name = str(getattr(state, "value", state))
                monitor_tag_set = set(getattr(monitor, "tags", None) or [])
                # Checked here as well: the API's tag filter is a search, not a guarantee of "all".
                if state_name == "Alert" and all(t in monitor_tag_set for t in wanted):
                    alerts.append(self._alert(int(monitor.id), str(getattr(monitor, "name", "") or ""), state_name))
            if len(batch) < MONITOR_PAGE_SIZE:
                return alerts
        logger.warning("stopped listing monitors after %d pages", MAX_MONITOR_PAGES)
        return alerts

    def alerts_snapshot(self) -> AlertsSnapshot:
        """Every monitor in Alert (`GET /api/v1/monitor/search?query=status:alert`) and every group in
        Alert of a multi-alert monitor: what `active_alerts` needs for any number of clusters."""
        return AlertsSnapshot(monitors=self._alerting_monitors(), groups=self._alerting_groups())

    def _alerting_monitors(self) -> list[AlertingGroup]:
        found: list[AlertingGroup] = []
        for page in range(MAX_MONITOR_PAGES):
            search = partial(self._monitors.search_monitors, query="status:alert", page=page,
                             per_page=MONITOR_PAGE_SIZE)
            response = self._call("search monitors", search)
            monitors = list(getattr(response, "monitors", None) or [])
            for monitor in monitors:
                status = getattr(monitor, "status", None)
                if str(getattr(status, "value", status)) == "Alert":  # checked here too: the search is a filter
                    found.append(AlertingGroup(monitor_id=int(monitor.id), name=str(getattr(monitor, "name", "") or ""),
                                               group_tags=[str(t) for t in (getattr(monitor, "tags", None) or [])]))
            metadata = getattr(response, "metadata", None)
            page_count = getattr(metadata, "page_count", None) if metadata is not None else None
            if len(monitors) < MONITOR_PAGE_SIZE or (isinstance(page_count, int) and page + 1 >= page_count):
                return found
        logger.warning("stopped searching monitors after %d pages", MAX_MONITOR_PAGES)
        return found

    def _alerting_groups(self) -> list[AlertingGroup]:
        """Every multi-alert monitor group in Alert (`GET /api/v1/monitor/groups/search`, all pages)."""
        alerts: list[AlertingGroup] = []
        for page in range(MAX_MONITOR_PAGES):
            search = partial(self._monitors.search_monitor_groups, query="group_status:alert", page=page,
                             per_page=MONITOR_PAGE_SIZE)
            response = self._call("search monitor groups", search)
            groups = list(getattr(response, "groups", None) or [])
            for group in groups:
                group_tags = [str(t) for t in (getattr(group, "group_tags", None) or [])]
                status = getattr(group, "status", None)
                state_name = str(getattr(status, "value", status))
                if state_name == "Alert":
                    name = f"{getattr(group, 'monitor_name', '') or ''} ({getattr(group, 'group', '')})"
                    alerts.append(AlertingGroup(monitor_id=int(group.monitor_id), name=name, group_tags=group_tags))
            metadata = getattr(response, "metadata", None)
            page_count = getattr(metadata, "page_count", None) if metadata is not None else None
            if len(groups) < MONITOR_PAGE_SIZE or (isinstance(page_count, int) and page + 1 >= page_count):
                return alerts
        logger.warning("stopped searching monitor groups after %d pages", MAX_MONITOR_PAGES)
        return alerts

    def _alert(self, monitor_id: int, name: str, state: str) -> Alert:
        return Alert(monitor_id=monitor_id, name=name, state=state, url=f"{self._app_url}/monitors/{monitor_id}")

    def dashboard_url(self, query: str, start: datetime, end: datetime) -> str:
        """Metrics Explorer link on the configured site showing `query` over [start, end]."""
        params = {"query": query, "from_ts": _ms(start), "to_ts": _ms(end), "live": "false"}
        return f"{self._app_url}/metric/explorer?{urlencode(params)}"

    # ------------------------------------------------------------------ DashboardMarkers

    def post_event(self, event: MarkerEvent) -> str | None:
        """Post `event` (v1 `POST /api/v1/events`); its URL in the event stream when Datadog gives one."""
        body = EventCreateRequest(title=event.title, text=event.text, tags=list(event.tags),
                                  alert_type=EventAlertType(event.alert_type))
        if event.aggregation_key:
            body.aggregation_key = event.aggregation_key
        response = self._call("post event", lambda: self._events.create_event(body))
        posted = getattr(response, "event", None)
        url = getattr(posted, "url", None) if posted is not None else None
        return str(url) if url else None

    def graph_snapshot(self, metric_query: str, start: datetime, end: datetime, title: str) -> str:
        """The URL of a PNG of `metric_query` over [start, end] (v1 `GET /api/v1/graph/snapshot`).

        Datadog renders it shortly after answering; the URL is what the MR shows."""
        response = self._call("graph snapshot", lambda: self._snapshots.get_graph_snapshot(
            start=int(start.timestamp()), end=int(end.timestamp()), metric_query=metric_query, title=title))
        url = getattr(response, "snapshot_url", None)
        if not url:
            raise ExternalServiceError("Datadog graph snapshot returned no snapshot_url")
        return str(url)

    # ------------------------------------------------------------------ internals

    @property
    def _app_url(self) -> str:
        # datadoghq.com -> app.datadoghq.com; us3.datadoghq.com is already the app host.
        host = self._site if self._site.count(".") >= 2 else f"app.{self._site}"
        return f"https://{host}"

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        return self._retry.call(f"Datadog {operation}", lambda: self._once(operation, fn))

    def _once(self, operation: str, fn: Callable[[], T]) -> T:
        """One request, its failure mapped to the errors the retry policy and the ASL know."""
        try:
            with self._slots.held() if self._slots else unlimited():
                return fn()
        except ApiException as e:
            status = int(e.status or 0)
            if status == 429:
                wait = self._rate_limit_wait(e.headers or {})
                raise TransientError("rate limited (HTTP 429)", retry_after=wait) from e
            if status == 0 or status == 408 or status >= 500:
                raise TransientError(f"HTTP {status or 'error'}") from e
            raise ExternalServiceError(
                f"Datadog {operation} refused: HTTP {status} {e.reason or ''}{_errors_of(e)}".rstrip()
            ) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise TransientError(type(e).__name__) from e
        except OpenApiException as e:
            raise ExternalServiceError(f"Datadog {operation} returned an unexpected response: {e}") from e

    def _rate_limit_wait(self, headers: dict[str, str]) -> float | None:
        """Seconds until Datadog's rate-limit window resets, when it says (None: back off)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        reset = lowered.get("x-ratelimit-reset")
        if reset is not None:
            try:
                return max(0.0, float(reset))
            except ValueError:
                pass
        return retry_after_seconds(lowered.get("retry-after"), self._clock.now())


# The Agent tags a cluster's metrics with both names (unless `disable_cluster_name_tag_key`).
_SAME_KEY = {"kube_cluster_name": "cluster_name"}


def cluster_group_matches(group_tags: list[str], cluster_tags: dict[str, str]) -> bool:
    """Whether a multi-alert monitor's group (its `key:value` tags) is about the cluster with `cluster_tags`.

    The group must share at least one tag key with the cluster, and agree on every key it shares:
    `cluster_name:eks-prod-1` (or `kube_cluster_name:eks-prod-1`) matches that cluster only;
    `env:prod,service:api` matches every prod cluster (an env-wide alert blocks them all); a group of
    keys the cluster does not carry (`service:api` alone, or `*`) tells nothing about it.
    """
    wanted = {_SAME_KEY.get(k, k): v for k, v in cluster_tags.items()}
    shared = False
    for tag in group_tags:
        key, sep, value = tag.partition(":")
        key = _SAME_KEY.get(key, key)
        if not sep or key not in wanted:
            continue
        if wanted[key] != value:
            return False
        shared = True
    return shared


def _variable(offset: int, index: int) -> str:
    return f"q{offset + index}"


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("datetimes passed to Datadog must be timezone-aware")
    return int(moment.timestamp() * 1000)


def _plain(value: Any) -> list[Any]:
    """The list inside an SDK list model (which wraps it in `.value`), or [] when unset."""
    if value is None:
        return []
    inner = getattr(value, "value", value)
    return list(inner) if inner is not None else []


def _errors_of(e: ApiException) -> str:
    body = e.body
    if isinstance(body, dict) and body.get("errors"):
        return ": " + "; ".join(str(x) for x in body["errors"])[:300]
    return ""
