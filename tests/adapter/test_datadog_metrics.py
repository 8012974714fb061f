"""DatadogMetrics through the real datadog-api-client against the local Datadog simulator."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from guard.adapters.datadog_metrics import DatadogMetrics
from guard.errors import ExternalServiceError, RateLimited, TransientError
from guard.ports import MetricsProvider
from guard.retry import RetryPolicy

from sandbox.sims.datadog_sim import MONITOR_PATH, TIMESERIES_PATH, DatadogSimulator
from tests.support.clock import FakeClock

API_KEY = "test-api-key-0123"
APP_KEY = "test-app-key-4567"
NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)  # 30 s into the 12:00 bucket
START = NOW - timedelta(minutes=10)

ERRORS_Q = "sum:istio.mesh.request.count{cluster:c1,response_code:5*}.as_count()"
LATENCY_Q = "p99:istio.mesh.request.duration{cluster:c1}"
MISSING_Q = "avg:no.such.metric{cluster:c1}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW, on_sleep="stand_still")


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DatadogSimulator]:
    with DatadogSimulator(api_key=API_KEY, app_key=APP_KEY, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def datadog(sim: DatadogSimulator, clock: FakeClock, sleeps: list[float]) -> DatadogMetrics:
    return DatadogMetrics.from_keys(
        API_KEY, APP_KEY, host=sim.url, timeout_seconds=2, clock=clock, retry=RetryPolicy(sleep=sleeps.append)
    )


def _minute(t: datetime) -> float:
    return float(t.minute)


def test_it_is_a_metrics_provider(datadog: DatadogMetrics) -> None:
    provider: MetricsProvider = datadog
    assert provider is datadog


# ---------------------------------------------------------------- query


def test_all_named_queries_go_in_one_request_and_missing_data_is_empty(
    sim: DatadogSimulator, datadog: DatadogMetrics
) -> None:
    # GIVEN two registered series and one query Datadog has no data for
    sim.set_series(ERRORS_Q, _minute)
    sim.set_series(LATENCY_Q, lambda t: 250.0)

    # WHEN GUARD queries all three for the last ten minutes
    result = datadog.query({"errors": ERRORS_Q, "p99 latency": LATENCY_Q, "missing": MISSING_Q}, START, NOW)

    # THEN the simulator saw exactly one POST carrying every query, one formula each
    posts = sim.requests_to(TIMESERIES_PATH, "POST")
    assert len(posts) == 1
    attrs = posts[0].body["data"]["attributes"]
    assert [q["query"] for q in attrs["queries"]] == [ERRORS_Q, LATENCY_Q, MISSING_Q]
    assert {q["data_source"] for q in attrs["queries"]} == {"metrics"}
    assert [f["formula"] for f in attrs["formulas"]] == [q["name"] for q in attrs["queries"]]
    assert (attrs["from"], attrs["to"]) == (int(START.timestamp() * 1000), int(NOW.timestamp() * 1000))
    # AND each name gets its own complete minute buckets, 11:51 .. 11:59
    assert set(result) == {"errors", "p99 latency", "missing"}
    assert [p.ts.strftime("%H:%M") for p in result["errors"]] == [f"11:{m}" for m in range(51, 60)]
    assert [p.value for p in result["errors"]] == [float(m) for m in range(51, 60)]
    assert {p.value for p in result["p99 latency"]} == {250.0}
    assert result["missing"] == []


def test_null_buckets_are_dropped(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN a series with gaps (no data on odd minutes) next to a full one
    sim.set_series(ERRORS_Q, lambda t: None if t.minute % 2 else 1.0)
    sim.set_series(LATENCY_Q, lambda t: 2.0)

    # WHEN both are queried
    result = datadog.query({"errors": ERRORS_Q, "latency": LATENCY_Q}, START, NOW)

    # THEN the gaps are absent, not zeros
    assert [p.ts.minute for p in result["errors"]] == [52, 54, 56, 58]
    assert len(result["latency"]) == 9


def test_no_queries_sends_nothing(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN / WHEN nothing to ask
    result = datadog.query({}, START, NOW)

    # THEN no request is made
    assert result == {}
    assert sim.requests == []


def test_partial_last_bucket_is_returned_low_when_the_simulator_shows_it(clock: FakeClock) -> None:
    # GIVEN a simulator that shows the still-filling bucket, 30 s into a 60 s bucket
    with DatadogSimulator(api_key=API_KEY, app_key=APP_KEY, clock=clock, partial_last_bucket=True) as sim:
        sim.set_series(ERRORS_Q, lambda t: 100.0)
        datadog = DatadogMetrics.from_keys(API_KEY, APP_KEY, host=sim.url, timeout_seconds=2, clock=clock)

        # WHEN queried up to now
        points = datadog.query({"errors": ERRORS_Q}, START, NOW)["errors"]

    # THEN the 12:00 bucket is there, half filled, after nine complete ones
    assert [p.value for p in points] == [100.0] * 9 + [50.0]
    assert points[-1].ts == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------- authentication


def test_keys_are_sent_as_datadog_headers(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN / WHEN any call
    datadog.query({"errors": ERRORS_Q}, START, NOW)
    datadog.active_alerts({"cluster": "c1"})

    # THEN both keys travel in Datadog's headers on every request
    assert len(sim.requests) == 3  # the query, the monitors list, the monitor-groups search
    for request in sim.requests:
        assert request.headers["DD-API-KEY"] == API_KEY
        assert request.headers["DD-APPLICATION-KEY"] == APP_KEY
        assert request.status == 200


@pytest.mark.parametrize("call", ["query", "alerts"])
def test_wrong_key_is_an_external_service_error_that_names_the_operation(
    sim: DatadogSimulator, clock: FakeClock, call: str
) -> None:
    # GIVEN an adapter with a wrong application key
    datadog = DatadogMetrics.from_keys(API_KEY, "wrong-app-key", host=sim.url, timeout_seconds=2, clock=clock)

    # WHEN it calls Datadog
    with pytest.raises(ExternalServiceError) as caught:
        if call == "query":
            datadog.query({"errors": ERRORS_Q}, START, NOW)
        else:
            datadog.active_alerts({"cluster": "c1"})

    # THEN the error names the operation and the status, never a key, and is not retried
    message = str(caught.value)
    assert ("query timeseries" if call == "query" else "list monitors") in message
    assert "403" in message
    assert API_KEY not in message and "wrong-app-key" not in message
    assert isinstance(caught.value.__cause__, Exception)
    assert len(sim.requests) == 1


def test_bad_request_is_an_external_service_error(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN Datadog rejecting the query as malformed
    sim.fail_next(TIMESERIES_PATH, 400)

    # WHEN / THEN
    with pytest.raises(ExternalServiceError, match="query timeseries refused: HTTP 400"):
        datadog.query({"errors": ERRORS_Q}, START, NOW)


# ---------------------------------------------------------------- rate limits and faults


def test_rate_limit_waits_for_the_reset_header_then_succeeds(
    sim: DatadogSimulator, datadog: DatadogMetrics, sleeps: list[float]
) -> None:
    # GIVEN Datadog answering 429 once, resetting in 7 seconds
    sim.set_series(ERRORS_Q, lambda t: 1.0)
    sim.fail_next(TIMESERIES_PATH, 429, headers={"X-RateLimit-Reset": "7"})

    # WHEN GUARD queries
    result = datadog.query({"errors": ERRORS_Q}, START, NOW)

    # THEN it waited exactly the header's time, once, and the retry got the data
    assert sleeps == [7.0]
    assert [r.status for r in sim.requests_to(TIMESERIES_PATH)] == [429, 200]
    assert len(result["errors"]) == 9


def test_rate_limit_falls_back_to_retry_after(
    sim: DatadogSimulator, datadog: DatadogMetrics, sleeps: list[float]
) -> None:
    # GIVEN a 429 with Retry-After and no X-RateLimit-Reset
    sim.add_monitor("Istio 5xx", {"cluster": "c1"})
    sim.fail_next(MONITOR_PATH, 429, headers={"X-RateLimit-Reset": "", "Retry-After": "3"})

    # WHEN alerts are read
    alerts = datadog.active_alerts({"cluster": "c1"})

    # THEN the wait honoured Retry-After
    assert sleeps == [3.0]
    assert [a.name for a in alerts] == ["Istio 5xx"]


def test_repeated_rate_limit_becomes_transient_after_bounded_attempts(
    sim: DatadogSimulator, datadog: DatadogMetrics, sleeps: list[float]
) -> None:
    # GIVEN Datadog rate limiting every request
    sim.fail_next(TIMESERIES_PATH, 429, times=10, headers={"X-RateLimit-Reset": "2"})

    # WHEN GUARD queries
    with pytest.raises(TransientError, match="gave up after 4 attempt"):
        datadog.query({"errors": ERRORS_Q}, START, NOW)

    # THEN it tried four times, waiting between attempts only
    assert len(sim.requests_to(TIMESERIES_PATH)) == 4
    assert sleeps == [2.0, 2.0, 2.0]


def test_rate_limit_reset_beyond_the_wait_cap_is_left_to_the_state_machine(
    sim: DatadogSimulator, datadog: DatadogMetrics, sleeps: list[float]
) -> None:
    # GIVEN a rate limit that resets in ten minutes
    sim.fail_next(TIMESERIES_PATH, 429, headers={"X-RateLimit-Reset": "600"})

    # WHEN GUARD queries
    with pytest.raises(RateLimited) as raised:
        datadog.query({"errors": ERRORS_Q}, START, NOW)

    # THEN the Lambda does not sit there: the error carries the wait for the state machine to wait out
    assert sleeps == []
    assert raised.value.retry_after_seconds == 600
    assert json.loads(str(raised.value))["retry_after_seconds"] == 600


def test_an_hour_long_reset_is_carried_whole_not_turned_into_a_failure(
    sim: DatadogSimulator, datadog: DatadogMetrics, sleeps: list[float]
) -> None:
    # GIVEN an organisation-wide limit that resets in an hour
    sim.fail_next(MONITOR_PATH, 429, headers={"X-RateLimit-Reset": "3600"})

    # WHEN / THEN
    with pytest.raises(RateLimited) as raised:
        datadog.active_alerts({"cluster": "c1"})
    assert raised.value.retry_after_seconds == 3600
    assert sleeps == []


@pytest.mark.parametrize("status", [500, 503])
def test_one_server_error_is_retried_before_anything_is_judged(
    sim: DatadogSimulator, datadog: DatadogMetrics, sleeps: list[float], status: int
) -> None:
    # GIVEN Datadog failing once on its side
    sim.fail_next(TIMESERIES_PATH, status)

    # WHEN GUARD queries
    datadog.query({"errors": ERRORS_Q}, START, NOW)

    # THEN the second attempt answered, after one jittered backoff within the policy's first step
    assert [r.status for r in sim.requests_to(TIMESERIES_PATH)] == [status, 200]
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= RetryPolicy().base_seconds


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(sim: DatadogSimulator, datadog: DatadogMetrics, status: int) -> None:
    # GIVEN Datadog failing on its side, on every attempt
    sim.fail_next(TIMESERIES_PATH, status, times=4)

    # WHEN / THEN
    with pytest.raises(TransientError, match=str(status)):
        datadog.query({"errors": ERRORS_Q}, START, NOW)


def test_timeout_is_transient(sim: DatadogSimulator, clock: FakeClock) -> None:
    # GIVEN Datadog stalling longer than the client's timeout
    datadog = DatadogMetrics.from_keys(API_KEY, APP_KEY, host=sim.url, timeout_seconds=0.3, clock=clock)
    sim.delay_next(TIMESERIES_PATH, 1.5, times=4)

    # WHEN / THEN the call gives up and says it is worth retrying
    with pytest.raises(TransientError, match="query timeseries"):
        datadog.query({"errors": ERRORS_Q}, START, NOW)


def test_connection_refused_is_transient(clock: FakeClock) -> None:
    # GIVEN nothing listening on a loopback port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    datadog = DatadogMetrics.from_keys(
        API_KEY, APP_KEY, host=f"http://127.0.0.1:{port}", timeout_seconds=1, clock=clock
    )

    # WHEN / THEN
    with pytest.raises(TransientError, match="list monitors"):
        datadog.active_alerts({"cluster": "c1"})


# ---------------------------------------------------------------- alerts


def test_active_alerts_are_filtered_by_every_tag_and_by_alert_state(
    sim: DatadogSimulator, datadog: DatadogMetrics
) -> None:
    # GIVEN monitors for several clusters, states and tag sets
    wanted = sim.add_monitor("Istio 5xx c1", {"cluster": "c1", "env": "prod"}, state="Alert")
    sim.add_monitor("Istio latency c1", {"cluster": "c1", "env": "prod"}, state="OK")
    sim.add_monitor("Istio warn c1", ["cluster:c1", "env:prod"], state="Warn")
    sim.add_monitor("Istio 5xx c2", {"cluster": "c2", "env": "prod"}, state="Alert")
    sim.add_monitor("c1 without env", {"cluster": "c1"}, state="Alert")

    # WHEN GUARD asks for alerts on cluster c1 in prod
    alerts = datadog.active_alerts({"cluster": "c1", "env": "prod"})

    # THEN only the alerting monitor carrying both tags comes back, with a link
    assert [(a.monitor_id, a.name, a.state) for a in alerts] == [(wanted, "Istio 5xx c1", "Alert")]
    assert alerts[0].url == f"https://app.datadoghq.com/monitors/{wanted}"
    # AND the tag filter was sent to Datadog rather than listing every monitor
    (request,) = sim.requests_to(MONITOR_PATH, "GET")
    assert request.query["monitor_tags"] == ["cluster:c1,env:prod"]


def test_active_alerts_follow_pages(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN more monitors than one page holds, the alerting one on the second page
    for i in range(100):
        sim.add_monitor(f"quiet {i}", {"cluster": "c1"}, state="OK")
    sim.add_monitor("late alert", {"cluster": "c1"}, state="Alert")

    # WHEN
    alerts = datadog.active_alerts({"cluster": "c1"})

    # THEN both pages were read and the alert found
    assert [a.name for a in alerts] == ["late alert"]
    assert [r.query["page"] for r in sim.requests_to(MONITOR_PATH)] == [["0"], ["1"]]


def test_no_alerts_is_an_empty_list(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN only healthy monitors
    sim.add_monitor("Istio 5xx c1", {"cluster": "c1"}, state="OK")

    # WHEN / THEN
    assert datadog.active_alerts({"cluster": "c1"}) == []


# ---------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("site", "host"),
    [
        ("datadoghq.com", "app.datadoghq.com"),
        ("datadoghq.eu", "app.datadoghq.eu"),
        ("us3.datadoghq.com", "us3.datadoghq.com"),
    ],
)
def test_dashboard_url_opens_the_query_in_metrics_explorer_on_the_site(
    sim: DatadogSimulator, site: str, host: str
) -> None:
    # GIVEN an adapter for a Datadog site
    datadog = DatadogMetrics.from_keys(API_KEY, APP_KEY, site=site, host=sim.url)

    # WHEN a link is built for a query and window
    url = datadog.dashboard_url(ERRORS_Q, START, NOW)

    # THEN it opens Metrics Explorer on that site with the query and the window in ms, offline
    parts = urlsplit(url)
    params = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", host, "/metric/explorer")
    assert params["query"] == [ERRORS_Q]
    assert params["from_ts"] == [str(int(START.timestamp() * 1000))]
    assert params["to_ts"] == [str(int(NOW.timestamp() * 1000))]
    assert params["live"] == ["false"]
    assert sim.requests == []
