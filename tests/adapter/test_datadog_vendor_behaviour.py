"""DatadogMetrics against the simulator's real-Datadog behaviour: formulas, point caps, rate-limit
headers and multi-alert monitors."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from datadog_api_client import ApiClient, Configuration
from guard.adapters.datadog_metrics import DatadogMetrics, cluster_group_matches
from guard.core.run import MetricSummary
from guard.errors import RateLimited
from guard.judge import JudgeSettings, bucket_seconds
from guard.retry import RetryPolicy

from sandbox.sims.datadog_sim import TIMESERIES_PATH, DatadogSimulator, RateLimit
from tests.support.clock import FakeClock

API_KEY, APP_KEY = "k-api", "k-app"
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
ERRORS = "sum:trace.http.request.errors{env:prod,cluster_name:eks-1}.as_count()"
HITS = "sum:trace.http.request.hits{env:prod,cluster_name:eks-1}.as_count()"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW, on_sleep="stand_still")


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DatadogSimulator]:
    with DatadogSimulator(api_key=API_KEY, app_key=APP_KEY, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def datadog(sim: DatadogSimulator, clock: FakeClock) -> DatadogMetrics:
    return DatadogMetrics.from_keys(API_KEY, APP_KEY, host=sim.url, timeout_seconds=2, clock=clock,
                                    retry=RetryPolicy(sleep=lambda s: None))


def _raw_query(sim: DatadogSimulator, body: dict[str, Any]) -> requests.Response:
    """A request as any client would send it (the SDK would check the body before sending)."""
    return requests.post(f"{sim.url}{TIMESERIES_PATH}", json=body, timeout=5,
                         headers={"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY})


def _request(query: str, formulas: list[str] | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"from": 0, "to": 60_000, "queries": [
        {"data_source": "metrics", "query": query, "name": "a"}]}
    if formulas is not None:
        attributes["formulas"] = [{"formula": f} for f in formulas]
    return {"data": {"type": "timeseries_request", "attributes": attributes}}


# ---------------------------------------------------------------- formulas


@pytest.mark.parametrize("query", [f"{ERRORS} / {HITS}", f"abs({ERRORS})", f"top({ERRORS}, 5, 'mean', 'desc')"])
def test_the_simulator_refuses_arithmetic_and_functions_in_a_metrics_query_as_datadog_does(
        sim: DatadogSimulator, query: str) -> None:
    # GIVEN a request that puts arithmetic or a function inside the metrics query (argo-rollouts #2813)
    # WHEN it is sent  THEN 400 with Datadog's message
    answer = _raw_query(sim, _request(query))
    assert answer.status_code == 400
    assert answer.json() == {
        "errors": ["Functions are not supported in metrics data source field. Use the formulas payload."]}


def test_a_formula_naming_an_unknown_query_is_refused(sim: DatadogSimulator) -> None:
    answer = _raw_query(sim, _request(ERRORS, ["a / b"]))
    assert answer.status_code == 400
    assert "unknown query name 'b'" in answer.text


def test_a_ratio_query_is_sent_as_two_queries_and_a_formula_and_reads_the_ratio(
        sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN errors and hits served per minute, and GUARD's error_rate query written as "errors / hits"
    sim.set_series(ERRORS, lambda t: 2.0)
    sim.set_series(HITS, lambda t: 1000.0)
    sim.set_series("avg:latency{cluster_name:eks-1}", lambda t: 250.0)

    # WHEN GUARD reads a window of it with another query
    points = datadog.query({"error_rate": f"{ERRORS} / {HITS}", "latency": "avg:latency{cluster_name:eks-1}"},
                           NOW - timedelta(minutes=5), NOW)

    # THEN one request carried three metric queries and one formula per GUARD query
    (request,) = sim.requests_to(TIMESERIES_PATH)
    attributes = request.body["data"]["attributes"]
    assert [q["query"] for q in attributes["queries"]] == [ERRORS, HITS, "avg:latency{cluster_name:eks-1}"]
    assert [f["formula"] for f in attributes["formulas"]] == ["q0 / q1", "q2"]
    # ...and each GUARD query got its own series back
    assert [p.value for p in points["error_rate"]] == [0.002] * 5
    assert [p.value for p in points["latency"]] == [250.0] * 5


def test_a_ratio_whose_denominator_has_no_data_has_no_points(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    sim.set_series(ERRORS, lambda t: 2.0)
    points = datadog.query({"error_rate": f"{ERRORS} / {HITS}"}, NOW - timedelta(minutes=5), NOW)
    assert points == {"error_rate": []}


# ---------------------------------------------------------------- points per series


def test_a_long_window_comes_back_in_coarser_buckets_and_the_judge_reads_their_width(
        sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN a per-minute count metric and a two-day window (2,880 minutes: over Datadog's 1,500 points)
    sim.set_series(HITS, lambda t: 10.0)
    start = NOW - timedelta(days=2)

    # WHEN GUARD reads it
    points = datadog.query({"hits": HITS}, start, NOW)["hits"]

    # THEN Datadog's cap held: 2-minute buckets, each the sum of its two minutes
    assert len(points) <= 1500
    assert {(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(points)} == {120.0}
    assert {p.value for p in points} == {20.0}
    # ...and the judge infers that width from the returned times, not from the configured interval
    summary = MetricSummary(query=HITS, start=start, end=NOW, points=[(p.ts.timestamp(), p.value) for p in points],
                            url="")
    assert bucket_seconds(summary, JudgeSettings(interval_seconds=60))[0] == 120


# ---------------------------------------------------------------- rate limits


def test_rate_limits_are_hourly_per_organisation_with_datadog_headers(clock: FakeClock) -> None:
    # GIVEN an organisation allowed 2 timeseries queries an hour, and two clients with their own keys' copies
    limit = RateLimit("query_timeseries", 2, 3600, r"^/api/v2/query/timeseries$")
    with DatadogSimulator(api_key=API_KEY, app_key=APP_KEY, clock=clock, rate_limits=(limit,)) as sim:
        clients = [DatadogMetrics.from_keys(API_KEY, APP_KEY, host=sim.url, clock=clock,
                                            retry=RetryPolicy(sleep=lambda s: None, attempts=1)) for _ in range(2)]
        # WHEN the two clients query twice between them, then once more, 15 minutes into the hour
        clock.advance(15 * 60)
        clients[0].query({"hits": HITS}, NOW, NOW)
        clients[1].query({"hits": HITS}, NOW, NOW)
        with pytest.raises(RateLimited) as raised:
            clients[0].query({"hits": HITS}, NOW, NOW)

        # THEN every answer carried the headers, and the third waits for the calendar hour's end (45 min),
        # left to the state machine (too long to sleep in a Lambda)
        first, second, third = sim.requests_to(TIMESERIES_PATH)
        assert (first.status, second.status, third.status) == (200, 200, 429)
        assert [r.response_headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
        assert third.response_headers["X-RateLimit-Period"] == "3600"
        assert third.response_headers["X-RateLimit-Reset"] == str(45 * 60)
        assert json.loads(str(raised.value))["retry_after_seconds"] == 45 * 60

        # WHEN the hour turns  THEN the budget is back
        clock.advance(45 * 60)
        clients[1].query({"hits": HITS}, NOW, NOW)
        assert sim.requests_to(TIMESERIES_PATH)[-1].status == 200


# ---------------------------------------------------------------- monitors


def test_a_multi_alert_monitor_alerts_only_for_the_cluster_whose_group_alerts(
        sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN a team-tagged multi-alert monitor by cluster_name, alerting for eks-prod-2 only
    sim.add_monitor("Istio 5xx by cluster", ["team:mesh"], groups={
        "cluster_name:eks-prod-1": "OK", "cluster_name:eks-prod-2": "Alert"})

    # WHEN GUARD asks about each cluster
    prod1 = datadog.active_alerts({"env": "prod", "cluster_name": "eks-prod-1"})
    prod2 = datadog.active_alerts({"env": "prod", "cluster_name": "eks-prod-2"})

    # THEN only eks-prod-2 is alerting, named by its group
    assert prod1 == []
    assert [a.name for a in prod2] == ["Istio 5xx by cluster (cluster_name:eks-prod-2)"]


def test_single_alert_monitors_scoped_by_tags_still_count_once(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN a simple monitor carrying the cluster's tags (it also shows as group "*" in the search)
    sim.add_monitor("eks-1 latency", {"env": "prod", "cluster_name": "eks-1"}, state="Alert")
    alerts = datadog.active_alerts({"env": "prod", "cluster_name": "eks-1"})
    assert [a.name for a in alerts] == ["eks-1 latency"]


@pytest.mark.parametrize(
    ("group", "matches"),
    [
        (["cluster_name:eks-1"], True),
        (["kube_cluster_name:eks-1"], True),
        (["cluster_name:eks-1", "service:api"], True),
        (["env:prod"], True),
        (["cluster_name:eks-2"], False),
        (["env:prod", "cluster_name:eks-2"], False),
        (["service:api"], False),
        (["*"], False),
    ],
)
def test_which_groups_are_about_the_cluster(group: list[str], matches: bool) -> None:
    assert cluster_group_matches(group, {"env": "prod", "cluster_name": "eks-1"}) is matches


def test_group_states_on_the_monitor_list_follow_the_real_shape(sim: DatadogSimulator) -> None:
    # GIVEN a multi-alert monitor  WHEN listed with group_states=all through the SDK
    sim.add_monitor("by cluster", ["team:mesh"], groups={"cluster_name:a": "Alert", "cluster_name:b": "OK"})
    config = Configuration(host=sim.url)
    config.api_key["apiKeyAuth"], config.api_key["appKeyAuth"] = API_KEY, APP_KEY
    from datadog_api_client.v1.api.monitors_api import MonitorsApi

    with ApiClient(config) as client:
        (monitor,) = MonitorsApi(client).list_monitors(group_states="all")
    # THEN the overall state is the worst group's and each group has its own state
    assert str(monitor.overall_state) == "Alert"
    assert {name: str(g.status) for name, g in monitor.state.groups.items()} == {
        "cluster_name:a": "Alert", "cluster_name:b": "OK"}
    assert monitor.multi is True
