"""Datadog: the adapter reads the published v2 timeseries, v1 monitor list and monitor-group search
examples (served as they are), and the simulator's answers have the same shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from guard.adapters.datadog_metrics import DatadogMetrics
from guard.retry import RetryPolicy

from sandbox.sims.datadog_sim import MONITOR_GROUPS_SEARCH_PATH, MONITOR_PATH, TIMESERIES_PATH, DatadogSimulator
from sandbox.sims.loopback import LoopbackHandler, LoopbackServer
from tests.contract.shapes import body_of, check, fixture
from tests.support.clock import FakeClock

TIMESERIES = ["data.type", "data.attributes.times", "data.attributes.times.[]", "data.attributes.series.[].query_index",
              "data.attributes.series.[].group_tags", "data.attributes.values.[].[]"]
MONITORS = ["[].id", "[].name", "[].tags", "[].overall_state", "[].multi", "[].query", "[].type",
            "[].state.groups.*.status", "[].state.groups.*.name"]
GROUPS = ["groups.[].group", "groups.[].group_tags", "groups.[].monitor_id", "groups.[].monitor_name",
          "groups.[].status", "metadata.page_count", "metadata.total_count", "counts.status"]
NULLABLE = frozenset({"groups.[].last_triggered_ts"})
NOW = datetime(2019, 9, 19, 13, 40, tzinfo=UTC)
KEYS = {"DD-API-KEY": "k-api", "DD-APPLICATION-KEY": "k-app"}


class _Replay(LoopbackServer):
    """Answers each path with a published example, as Datadog would."""

    thread_name = "datadog-replay"

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        answers = self.answers

        class Handler(LoopbackHandler):
            def _serve(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = json.dumps(answers[urlsplit(self.path).path]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def replay() -> Iterator[_Replay]:
    answers = {TIMESERIES_PATH: body_of(fixture("datadog_timeseries_response.json")),
               MONITOR_PATH: body_of(fixture("datadog_monitor_list.json")),
               MONITOR_GROUPS_SEARCH_PATH: body_of(fixture("datadog_monitor_groups_search.json"))}
    with _Replay(answers) as server:
        yield server


def _adapter(url: str) -> DatadogMetrics:
    return DatadogMetrics.from_keys("k-api", "k-app", host=url, clock=FakeClock(NOW), retry=RetryPolicy(attempts=1))


def test_the_published_examples_hold_the_contract() -> None:
    for name, contract in (("datadog_timeseries_response.json", TIMESERIES), ("datadog_monitor_list.json", MONITORS),
                           ("datadog_monitor_groups_search.json", GROUPS)):
        published = body_of(fixture(name))
        assert check(contract, published, published, NULLABLE) == [], name


def test_guard_reads_the_published_timeseries_response(replay: _Replay) -> None:
    # WHEN GUARD queries and Datadog answers the published example (ms times, a null bucket)
    points = _adapter(replay.url).query({"cpu": "avg:system.cpu.user{env:production}"}, NOW, NOW)
    # THEN the times are read as milliseconds and the null bucket is left out
    assert [(p.ts, p.value) for p in points["cpu"]] == [
        (datetime.fromtimestamp(1568899800, UTC), 0.5), (datetime.fromtimestamp(1568899920, UTC), 1.5)]


def test_guard_reads_the_published_monitor_group_search(replay: _Replay) -> None:
    # WHEN GUARD asks about eks-prod-1 and Datadog answers the published examples
    alerts = _adapter(replay.url).active_alerts({"env": "prod", "cluster_name": "eks-prod-1"})
    # THEN the group in Alert names the cluster: one alert, from the group search (the list's tags do not match)
    assert [(a.monitor_id, a.name) for a in alerts] == [(12345, "My monitor (cluster_name:eks-prod-1)")]


@pytest.fixture
def sim() -> Iterator[DatadogSimulator]:
    with DatadogSimulator(api_key="k-api", app_key="k-app", clock=FakeClock(NOW)) as simulator:
        simulator.set_series("sum:hits{env:production}.as_count()", lambda t: 3.0)
        simulator.set_series("sum:errors{env:production}.as_count()", lambda t: None if t.minute % 2 else 1.0)
        simulator.add_monitor("My monitor", ["team:mesh"], groups={"cluster_name:eks-prod-1": "Alert",
                                                                  "cluster_name:eks-prod-2": "OK"})
        simulator.add_monitor("single", {"cluster_name": "eks-prod-1"}, state="OK")
        yield simulator


def test_the_simulator_s_timeseries_answer_has_the_published_shape(sim: DatadogSimulator) -> None:
    body = {"data": {"type": "timeseries_request", "attributes": {
        "from": int(NOW.timestamp() * 1000) - 600_000, "to": int(NOW.timestamp() * 1000),
        "queries": [{"data_source": "metrics", "query": "sum:errors{env:production}.as_count()", "name": "a"},
                    {"data_source": "metrics", "query": "sum:hits{env:production}.as_count()", "name": "b"}],
        "formulas": [{"formula": "a / b"}, {"formula": "b"}]}}}
    answer = requests.post(f"{sim.url}{TIMESERIES_PATH}", json=body, headers=KEYS, timeout=5)
    assert answer.status_code == 200
    payload = answer.json()
    assert check(TIMESERIES, body_of(fixture("datadog_timeseries_response.json")), payload) == []
    assert None in payload["data"]["attributes"]["values"][0]  # a bucket without errors is null, as in Datadog


def test_the_simulator_s_monitor_answers_have_the_published_shape(sim: DatadogSimulator) -> None:
    listed = requests.get(f"{sim.url}{MONITOR_PATH}", params={"group_states": "all"}, headers=KEYS, timeout=5).json()
    searched = requests.get(f"{sim.url}{MONITOR_GROUPS_SEARCH_PATH}", params={"query": "group_status:alert"},
                            headers=KEYS, timeout=5).json()
    assert check(MONITORS, body_of(fixture("datadog_monitor_list.json")), listed) == []
    assert check(GROUPS, body_of(fixture("datadog_monitor_groups_search.json")), searched, NULLABLE) == []
    assert [g["group"] for g in searched["groups"]] == ["cluster_name:eks-prod-1"]
