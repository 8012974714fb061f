"""Datadog events and graph snapshots (DashboardMarkers) through the real datadog-api-client against the
local Datadog simulator, which refuses what Datadog refuses; and the best-effort markers service on top."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from guard.adapters.datadog_metrics import DatadogMetrics
from guard.core.run import ClusterVerdict, ExecutionInput, MetricFinding, MetricSummary, RunRecord, VerdictOutcome
from guard.errors import ExternalServiceError
from guard.ports import DashboardMarkers, MarkerEvent
from guard.retry import RetryPolicy
from guard.services.markers import UpgradeMarkers, graphs_markdown

from sandbox.sims.datadog_sim import EVENTS_PATH, SNAPSHOT_PATH, DatadogSimulator
from tests.support.clock import FakeClock

API_KEY = "test-api-key-0123"
APP_KEY = "test-app-key-4567"
NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
QUERY = "avg:trace.http.request.duration.by.service.95p{env:dev,cluster_name:eks-dev-2}"


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
    return DatadogMetrics.from_keys(API_KEY, APP_KEY, host=sim.url, timeout_seconds=2, clock=clock,
                                    retry=RetryPolicy(sleep=sleeps.append, attempts=3))


def _post(sim: DatadogSimulator, body: dict[str, Any], *, app_key: bool = False) -> requests.Response:
    headers = {"DD-API-KEY": API_KEY} | ({"DD-APPLICATION-KEY": APP_KEY} if app_key else {})
    return requests.post(f"{sim.url}{EVENTS_PATH}", json=body, headers=headers, timeout=5)


def test_it_is_the_dashboard_markers_port(datadog: DatadogMetrics) -> None:
    port: DashboardMarkers = datadog
    assert port is datadog


def test_an_event_is_posted_with_its_tags_and_answered_as_datadog_does(datadog: DatadogMetrics,
                                                                       sim: DatadogSimulator) -> None:
    # WHEN GUARD posts an event through the SDK
    url = datadog.post_event(MarkerEvent(title="Istio 1.20.0 merged on batch dev-1", text="merged",
                                         tags=["guard_batch:dev-1", "cluster:eks-dev-1"], alert_type="info",
                                         aggregation_key="run-1"))
    # THEN Datadog stored it with its tags and answered with the event's URL
    assert url and url.startswith("https://app.datadoghq.com/event/event?id=")
    (event,) = sim.events
    assert event["tags"] == ["guard_batch:dev-1", "cluster:eks-dev-1"] and event["aggregation_key"] == "run-1"
    assert sim.requests_to(EVENTS_PATH)[0].status == 202


@pytest.mark.parametrize(("body", "refused"), [
    ({"title": "t" * 101, "text": "x"}, "'title' is limited to 100 characters"),
    ({"title": "t", "text": "x" * 4001}, "'text' is limited to 4000 characters"),
    ({"text": "x"}, "'title' is required"),
    ({"title": "t", "text": "x", "alert_type": "fatal"}, "invalid alert_type"),
    ({"title": "t", "text": "x", "aggregation_key": "k" * 101}, "'aggregation_key' is limited"),
    ({"title": "t", "text": "x", "tags": ["t" * 201]}, "'tags' must be"),
    ({"title": "t", "text": "x", "date_happened": int(NOW.timestamp()) - 19 * 3600}, "no older than 18 hours"),
    ({"title": "t", "text": "x", "date_happened": "now"}, "must be an integer"),
])
def test_the_simulator_refuses_an_event_datadog_refuses(sim: DatadogSimulator, body: dict[str, Any],
                                                        refused: str) -> None:
    # GIVEN an event Datadog would refuse WHEN it is posted THEN 400 with Datadog's error shape; nothing stored
    response = _post(sim, body)
    assert response.status_code == 400 and refused in response.json()["errors"][0]
    assert sim.events == []


def test_an_event_needs_the_api_key_only(sim: DatadogSimulator) -> None:
    assert _post(sim, {"title": "t", "text": "x"}).status_code == 202
    assert requests.post(f"{sim.url}{EVENTS_PATH}", json={"title": "t", "text": "x"},
                         headers={"DD-API-KEY": "wrong"}, timeout=5).status_code == 403


def test_a_graph_snapshot_returns_the_png_url_for_the_window(datadog: DatadogMetrics, sim: DatadogSimulator) -> None:
    # WHEN GUARD asks for a snapshot of a query over an hour
    url = datadog.graph_snapshot(QUERY, NOW - timedelta(hours=1), NOW, "eks-dev-2 latency_p95 before")
    # THEN Datadog's snapshot host answers, for exactly that query and window (POSIX seconds)
    assert url.startswith("https://p.datadoghq.com/snapshot/view/") and url.endswith(".png")
    (taken,) = sim.snapshots
    assert (taken["metric_query"], taken["end"] - taken["start"]) == (QUERY, 3600)


@pytest.mark.parametrize(("query", "start_offset", "refused"), [
    ("not a query", 3600, "Error parsing query"),
    ("avg:a.b{env:dev", 3600, "Error parsing query"),
    (QUERY, 0, "start must be before end"),
])
def test_a_snapshot_datadog_refuses_is_a_named_error(datadog: DatadogMetrics, query: str, start_offset: int,
                                                     refused: str) -> None:
    with pytest.raises(ExternalServiceError, match=f"graph snapshot refused: HTTP 400.*{refused}"):
        datadog.graph_snapshot(query, NOW - timedelta(seconds=start_offset), NOW, "t")


def test_a_snapshot_without_a_query_is_refused(sim: DatadogSimulator) -> None:
    response = requests.get(f"{sim.url}{SNAPSHOT_PATH}", params={"start": 1, "end": 2},
                            headers={"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY}, timeout=5)
    assert response.status_code == 400 and "metric_query or graph_def is required" in response.json()["errors"][0]


def test_a_failing_snapshot_is_retried_per_the_policy(datadog: DatadogMetrics, sim: DatadogSimulator,
                                                      sleeps: list[float]) -> None:
    # GIVEN Datadog answers 503 once
    sim.fail_next(SNAPSHOT_PATH, 503)
    # THEN the second attempt gets the snapshot, after one backoff
    assert datadog.graph_snapshot(QUERY, NOW - timedelta(hours=1), NOW, "t")
    assert len(sleeps) == 1 and len(sim.requests_to(SNAPSHOT_PATH)) == 2


# ------------------------------------------------------------------ the best-effort service


def _run() -> RunRecord:
    return RunRecord(run_id="run-1", execution_arn="arn:x", batch="dev-1", target_version="1.20.0",
                     clusters=["eks-dev-2"], from_versions={"eks-dev-2": "1.19.3"}, gitlab_project="p",
                     options=ExecutionInput(batch="dev-1", target_version="1.20.0"), started_at=NOW,
                     merge_request_url="https://gitlab.example/p/-/merge_requests/1")


def _failing() -> tuple[list[ClusterVerdict], dict[str, dict[str, MetricSummary]]]:
    before = MetricSummary(query=QUERY, start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1))
    after = MetricSummary(query=QUERY, start=NOW - timedelta(minutes=30), end=NOW)
    verdict = ClusterVerdict(cluster_id="eks-dev-2", outcome=VerdictOutcome.FAIL, current={"latency_p95": after},
                             findings=[MetricFinding(query_name="latency_p95", query=QUERY, rule="max_increase",
                                                     outcome=VerdictOutcome.FAIL, explanation="+27%")])
    return [verdict], {"eks-dev-2": {"latency_p95": before}}


def test_graphs_show_before_and_after_each_failing_query(datadog: DatadogMetrics) -> None:
    verdicts, baselines = _failing()
    graphs, left_out = UpgradeMarkers(datadog, "t").failing_graphs(_run(), verdicts, baselines)
    assert left_out == 0 and graphs[0].before and graphs[0].after and graphs[0].note is None
    text = graphs_markdown(graphs, left_out)
    assert f"![latency_p95 before the upgrade]({graphs[0].before})" in text
    assert "Metrics Explorer" in text and "from_ts=" in text


def test_a_snapshot_datadog_keeps_failing_never_raises_and_is_noted(datadog: DatadogMetrics,
                                                                     sim: DatadogSimulator) -> None:
    # GIVEN Datadog answers 500 to every snapshot, and 400 to events
    sim.fail_next(SNAPSHOT_PATH, 500, times=100)
    sim.fail_next(EVENTS_PATH, 400, times=100)
    warnings: list[str] = []
    markers = UpgradeMarkers(datadog, "t", lambda message, **_: warnings.append(message))
    # WHEN graphs and events are asked for
    verdicts, baselines = _failing()
    graphs, _ = markers.failing_graphs(_run(), verdicts, baselines)
    markers.merged(_run())
    # THEN nothing raised: the MR says the graphs are missing and why; the log says what failed
    assert graphs[0].before is None and "before snapshot could not be made" in (graphs[0].note or "")
    assert "Graphs incomplete" in graphs_markdown(graphs, 0)
    assert "Datadog graph snapshot not made" in warnings and "Datadog event not posted" in warnings


def test_an_event_never_mentions_anyone_even_quoting_a_cause(datadog: DatadogMetrics, sim: DatadogSimulator) -> None:
    # GIVEN a verdict summary that quotes cluster text with an @-handle
    UpgradeMarkers(datadog, "t").verdict(_run(), VerdictOutcome.FAIL, "pod said @pagerduty-oncall wake up")
    # THEN the event carries the words, never a Datadog @-notification
    (event,) = sim.events
    assert "@pagerduty" not in event["text"] and "pagerduty-oncall" in event["text"]
    assert event["alert_type"] == "error" and "guard_batch:dev-1" in event["tags"]
