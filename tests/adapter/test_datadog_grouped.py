"""One Datadog request for many clusters: DatadogMetrics.query_groups against the simulator over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from guard.adapters.datadog_metrics import DatadogMetrics
from guard.core.models import Cluster
from guard.datadog_groups import group_queries
from guard.errors import ExternalServiceError, RateLimited
from guard.retry import RetryPolicy
from guard.services.metrics import chunk_windows, read_window, render_queries

from sandbox.sims.datadog_sim import (
    MONITOR_GROUPS_SEARCH_PATH,
    MONITOR_SEARCH_PATH,
    TIMESERIES_PATH,
    DatadogSimulator,
)
from tests.support.clock import FakeClock

NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
START = NOW - timedelta(minutes=10)
RATE = "sum:errors{env:prod,cluster_name:C}.as_count() / sum:hits{env:prod,cluster_name:C}.as_count()"
LATENCY = "avg:latency{cluster:C}"


@pytest.fixture
def sim() -> Iterator[DatadogSimulator]:
    with DatadogSimulator(api_key="k", app_key="a", clock=FakeClock(NOW, on_sleep="stand_still")) as simulator:
        yield simulator


@pytest.fixture
def datadog(sim: DatadogSimulator) -> DatadogMetrics:
    return DatadogMetrics.from_keys("k", "a", host=sim.url, timeout_seconds=2, clock=sim.clock,
                                    retry=RetryPolicy(sleep=lambda _: None))


def _per_cluster(template: str, clusters: list[str]) -> dict[str, str]:
    return {f"id-{c}": template.replace(":C}", f":{c}}}") for c in clusters}


def _serve(sim: DatadogSimulator, cluster: str, errors: float, latency: float) -> None:
    sim.set_series(f"sum:errors{{env:prod,cluster_name:{cluster}}}.as_count()", lambda t: errors)
    sim.set_series(f"sum:hits{{env:prod,cluster_name:{cluster}}}.as_count()", lambda t: 100.0)
    sim.set_series(f"avg:latency{{cluster:{cluster}}}", lambda t: latency)


def test_grouped_queries_answer_per_cluster_in_one_request(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN three clusters with their own error counts and latencies; eks-3 sends no latency at all
    _serve(sim, "eks-1", errors=1.0, latency=200.0)
    _serve(sim, "eks-2", errors=5.0, latency=300.0)
    _serve(sim, "eks-3", errors=2.0, latency=0.0)
    sim.remove_series("avg:latency{cluster:eks-3}")
    clusters = ["eks-1", "eks-2", "eks-3"]
    rate, _ = group_queries("error_rate", _per_cluster(RATE, clusters))
    latency, _ = group_queries("latency", _per_cluster(LATENCY, clusters))
    # WHEN both queries are asked for the three clusters
    rates, latencies = datadog.query_groups(rate + latency, START, NOW)
    # THEN one request was sent, and each cluster got its own series
    assert len(sim.requests_to(TIMESERIES_PATH)) == 1
    assert {c: {p.value for p in points} for c, points in rates.items()} == {
        "id-eks-1": {0.01}, "id-eks-2": {0.05}, "id-eks-3": {0.02}}
    assert {p.value for p in latencies["id-eks-2"]} == {300.0}
    assert len(latencies["id-eks-1"]) == 9  # complete minutes after 11:50:30
    # AND the cluster whose group Datadog did not answer has no data (never a pass on missing data)
    assert latencies["id-eks-3"] == []


def test_the_simulator_answers_one_series_per_group_with_group_tags(sim: DatadogSimulator,
                                                                      datadog: DatadogMetrics) -> None:
    # GIVEN two clusters
    _serve(sim, "eks-1", errors=1.0, latency=200.0)
    _serve(sim, "eks-2", errors=5.0, latency=300.0)
    grouped, _ = group_queries("latency", _per_cluster(LATENCY, ["eks-1", "eks-2"]))
    # WHEN asked grouped
    datadog.query_groups(grouped, START, NOW)
    # THEN Datadog's shape: a series per group, named by group_tags, the formula's index
    series = sim.requests[-1]
    assert series.status == 200
    answer = sim.handle("POST", TIMESERIES_PATH, {"DD-API-KEY": "k", "DD-APPLICATION-KEY": "a"}, series.body)[2]
    tags = [s["group_tags"] for s in answer["data"]["attributes"]["series"]]
    assert tags == [["cluster:eks-1"], ["cluster:eks-2"]]
    assert {s["query_index"] for s in answer["data"]["attributes"]["series"]} == {0}


@pytest.mark.parametrize(("query", "message"), [
    ("avg:latency{env:prod,cluster IN (eks-1,eks-2)} by {cluster}", "cannot be used with"),
    ("avg:latency{!env:prod AND cluster IN (eks-1)} by {cluster}", "cannot be used with"),
    ("avg:latency{cluster IN (eks-1,)} by {cluster}", "empty value"),
    ("avg:latency{env:prod AND (cluster IN (eks-1)} by {cluster}", "unbalanced"),
    ("avg:latency{env:prod AND } by {cluster}", "unable to parse"),
])
def test_the_simulator_refuses_malformed_grouped_filters_as_datadog_does(sim: DatadogSimulator, query: str,
                                                                         message: str) -> None:
    # GIVEN a grouped query mixing the symbolic (, !) and functional (AND, IN) syntaxes, or broken
    body = {"data": {"type": "timeseries_request", "attributes": {
        "from": 0, "to": 60_000, "queries": [{"data_source": "metrics", "query": query, "name": "q0"}],
        "formulas": [{"formula": "q0"}]}}}
    # WHEN sent
    status, _, payload = sim.handle("POST", TIMESERIES_PATH, {"DD-API-KEY": "k", "DD-APPLICATION-KEY": "a"}, body)
    # THEN 400 naming the problem
    assert status == 400
    assert message in payload["errors"][0]


def test_a_series_for_a_group_not_asked_is_refused(sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN a grouped query whose cluster map lacks one of the groups its filter selects
    _serve(sim, "eks-1", errors=1.0, latency=200.0)
    _serve(sim, "eks-2", errors=5.0, latency=300.0)
    grouped, _ = group_queries("latency", _per_cluster(LATENCY, ["eks-1", "eks-2"]))
    narrowed = grouped[0].model_copy(update={"clusters": {"eks-1": "id-eks-1"}})
    # WHEN asked, THEN the adapter refuses an answer wider than its clusters
    with pytest.raises(ExternalServiceError, match="not one of its clusters"):
        datadog.query_groups([narrowed], START, NOW)


TEMPLATES = {
    "error_rate": "sum:errors{env:{environment},cluster_name:{cluster_name}}.as_count() / "
                  "sum:hits{env:{environment},cluster_name:{cluster_name}}.as_count()",
    "latency": "avg:latency{cluster:{cluster_name}}",
    "odd": "avg:queue{cluster:{cluster_name}*}",  # a wildcard selector: cannot be grouped
}


def _constant(value: float) -> Callable[[datetime], float]:
    return lambda _: value


def _cluster(name: str) -> Cluster:
    return Cluster(cluster_id=f"id-{name}", batch_id="prod-1", environment="prod", region="us-east-1",
                   gitlab_project="platform/fleet", flux_config_path=f"clusters/{name}/istio.yaml",
                   current_istio_version="1.20.3", datadog_tags={"cluster_name": name})


def test_a_chunks_windows_are_what_each_cluster_read_alone_would_give(sim: DatadogSimulator,
                                                                      datadog: DatadogMetrics) -> None:
    # GIVEN four clusters with their own series, one of them sending no latency, and a query that cannot be grouped
    names = ["eks-1", "eks-2", "eks-3", "eks-4"]
    for i, name in enumerate(names):
        _serve(sim, name, errors=float(i), latency=100.0 + i)
        sim.set_series(f"avg:queue{{cluster:{name}*}}", _constant(10.0 * i))
    sim.remove_series("avg:latency{cluster:eks-3}")
    clusters = [_cluster(n) for n in names]
    alone = {c.cluster_id: read_window(datadog, render_queries(TEMPLATES, c), START, NOW) for c in clusters}
    sent_alone = len(sim.requests_to(TIMESERIES_PATH))
    # WHEN the chunk's windows are read together
    windows = chunk_windows(datadog, TEMPLATES, clusters, START, NOW)
    together = {c.cluster_id: windows.read(c.cluster_id, render_queries(TEMPLATES, c)) for c in clusters}
    # THEN every cluster's summaries are exactly what its own read gave (the judge sees the same data)
    assert together == alone
    assert together["id-eks-3"]["latency"].points == []  # missing group: no data
    # AND the groupable queries cost one request for the chunk; the wildcard one, one per cluster
    assert sent_alone == 4
    assert len(sim.requests_to(TIMESERIES_PATH)) - sent_alone == 1 + 4
    assert windows.requests == 1


def test_a_rate_limited_grouped_request_is_each_clusters_rate_limit(sim: DatadogSimulator,
                                                                     datadog: DatadogMetrics) -> None:
    # GIVEN Datadog rate-limits the grouped request for longer than a Lambda waits
    for name in ("eks-1", "eks-2"):
        _serve(sim, name, errors=1.0, latency=100.0)
    sim.fail_next(TIMESERIES_PATH, 429, times=10, headers={"X-RateLimit-Reset": "3600"})
    clusters = [_cluster("eks-1"), _cluster("eks-2")]
    templates = {"latency": TEMPLATES["latency"]}
    # WHEN the chunk's windows are read
    windows = chunk_windows(datadog, templates, clusters, START, NOW)
    # THEN each cluster's read raises the rate limit, so its work leaves as it did alone (the state machine waits)
    for cluster in clusters:
        with pytest.raises(RateLimited):
            windows.read(cluster.cluster_id, render_queries(templates, cluster))


def test_a_chunk_asks_for_the_alerting_monitors_once_and_each_cluster_finds_its_own(
        sim: DatadogSimulator, datadog: DatadogMetrics) -> None:
    # GIVEN a multi-alert monitor alerting for eks-2 only, a monitor scoped to eks-3 in Alert, one scoped
    # to eks-1 that is OK, and more alerting monitors than fit a page
    grouped = sim.add_monitor("p95 latency", {"team": "mesh"}, groups={"cluster_name:eks-1": "OK",
                                                                        "cluster_name:eks-2": "Alert"})
    scoped = sim.add_monitor("eks-3 down", {"cluster_name": "eks-3", "env": "prod"})
    sim.add_monitor("eks-1 down", {"cluster_name": "eks-1", "env": "prod"}, state="OK")
    for i in range(120):
        sim.add_monitor(f"other {i}", {"cluster_name": f"other-{i}"})
    clusters = {c: {"cluster_name": c, "env": "prod"} for c in ("eks-1", "eks-2", "eks-3")}
    # WHEN the chunk asks once and each of its clusters uses that answer
    snapshot = datadog.alerts_snapshot()
    together = {c: datadog.active_alerts(tags, snapshot) for c, tags in clusters.items()}
    # THEN the monitors and the groups were searched once each, page by page (121 alerting: 2 pages of 100),
    # whatever the number of clusters
    assert len(sim.requests_to(MONITOR_SEARCH_PATH)) == 2
    assert len(sim.requests_to(MONITOR_GROUPS_SEARCH_PATH)) == 2
    assert {c: [a.monitor_id for a in found] for c, found in together.items()} == {
        "eks-1": [], "eks-2": [grouped], "eks-3": [scoped]}
    # AND each cluster finds what it finds when asked alone
    assert together == {c: datadog.active_alerts(tags) for c, tags in clusters.items()}
