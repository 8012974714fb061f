"""Datadog `MetricsProvider`: v2 timeseries formula queries and v1 monitors.

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
from datadog_api_client.v1.api.monitors_api import MonitorsApi
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
from guard.errors import ConfigError, ExternalServiceError, TransientError
from guard.ports import Alert, Clock, Point
from guard.retry import RetryPolicy, policy, retry_after_seconds

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
    ) -> None:
        # Every call must be bounded: the SDK reads its timeout from the configuration.
        if not api_client.configuration.request_timeout:
            api_client.configuration.request_timeout = DEFAULT_TIMEOUT_SECONDS
        self._metrics = MetricsApi(api_client)
        self._monitors = MonitorsApi(api_client)
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
        )

    # ------------------------------------------------------------------ MetricsProvider

    def query(self, queries: dict[str, str], start: datetime, end: datetime) -> dict[str, list[Point]]:
        """Points of each named query in [start, end], all in one request. Missing data -> []."""
        if not queries:
            return {}
        names = list(queries)
        # Formula variables must be identifiers; GUARD's query names need not be.
        attributes = TimeseriesFormulaRequestAttributes(
            _from=_ms(start),
            to=_ms(end),
            queries=TimeseriesFormulaRequestQueries(
                [
                    MetricsTimeseriesQuery(
                        data_source=MetricsDataSource.METRICS, query=queries[n], name=f"q{i}"
                    )
                    for i, n in enumerate(names)
                ]
            ),
            formulas=[QueryFormula(formula=f"q{i}") for i in range(len(names))],
        )
        if self._interval_ms:
            attributes.interval = self._interval_ms
        body = TimeseriesFormulaQueryRequest(
            data=TimeseriesFormulaRequest(
                type=TimeseriesFormulaRequestType.TIMESERIES_REQUEST, attributes=attributes
            )
        )
        response = self._call("query timeseries", lambda: self._metrics.query_timeseries_data(body))

        result: dict[str, list[Point]] = {n: [] for n in names}
        data = getattr(response, "data", None)
        attrs = getattr(data, "attributes", None) if data is not None else None
        if attrs is None:
            errors = getattr(response, "errors", None)
            if errors:
                raise ExternalServiceError(f"Datadog query timeseries returned errors: {errors}")
            return result

        times = _plain(getattr(attrs, "times", None))
        series = _plain(getattr(attrs, "series", None))
        values = _plain(getattr(attrs, "values", None))
        seen: dict[int, int] = {}
        for position, one in enumerate(series):
            index = int(one.query_index)
            if not 0 <= index < len(names) or position >= len(values):
                raise ExternalServiceError(
                    f"Datadog query timeseries returned an unexpected series #{position}"
                )
            seen[index] = seen.get(index, 0) + 1
            if seen[index] > 1:
                raise ConfigError(
                    f"Datadog query {names[index]!r} returned several series; a GUARD query must "
                    f"aggregate to one series (no 'by {{...}}'): {queries[names[index]]}"
                )
            result[names[index]] = [
                Point(ts=datetime.fromtimestamp(t / 1000, UTC), value=float(v))
                for t, v in zip(times, _plain(values[position]), strict=False)
                if v is not None
            ]
        return result

    def active_alerts(self, tags: dict[str, str]) -> list[Alert]:
        """Monitors whose overall state is Alert and that carry every one of `tags`."""
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
                    alerts.append(
                        Alert(
                            monitor_id=int(monitor.id),
                            name=str(getattr(monitor, "name", "") or ""),
                            state=state_name,
                            url=f"{self._app_url}/monitors/{int(monitor.id)}",
                        )
                    )
            if len(batch) < MONITOR_PAGE_SIZE:
                return alerts
        logger.warning("stopped listing monitors after %d pages", MAX_MONITOR_PAGES)
        return alerts

    def dashboard_url(self, query: str, start: datetime, end: datetime) -> str:
        """Metrics Explorer link on the configured site showing `query` over [start, end]."""
        params = {"query": query, "from_ts": _ms(start), "to_ts": _ms(end), "live": "false"}
        return f"{self._app_url}/metric/explorer?{urlencode(params)}"

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
