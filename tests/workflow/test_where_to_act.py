"""Say where to act: every state output a person opens in the console names the MR and the run's stage."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from guard.executions import execution_history

from sandbox.engine import LocalEngine
from sandbox.rehearsal import run_scenario
from sandbox.sims.datadog_sim import EVENTS_PATH, SNAPSHOT_PATH
from sandbox.world import LocalWorld
from tests.workflow.conftest import Rehearse, scenario

pytestmark = pytest.mark.workflow
ASL = Path(__file__).resolve().parents[2] / "statemachines" / "upgrade_batch.asl.json"
TOP_LEVEL = set(json.loads(ASL.read_text())["States"])  # a Map's inner states show their item, not the run


def _values(data: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in `data`."""
    if isinstance(data, dict):
        return [v for k, v in data.items() if k == key] + [x for v in data.values() for x in _values(v, key)]
    if isinstance(data, list):
        return [x for v in data for x in _values(v, key)]
    return []


def where_missing(events: list[dict[str, Any]]) -> list[str]:
    """The top-level states that exited, once the MR was open, without an MR URL or a stage in their output."""
    missing, opened = [], False
    for event in events:
        if not event["type"].endswith("StateExited"):
            continue
        details = event["stateExitedEventDetails"]
        opened = opened or details["name"] == "OpenMergeRequest"
        if not opened or details["name"] not in TOP_LEVEL:
            continue
        output = json.loads(details.get("output") or "null")
        urls = [u for u in _values(output, "merge_request_url") if isinstance(u, str) and "/merge_requests/" in u]
        stages = [s for s in _values(output, "stage") if isinstance(s, str) and s]
        if not urls or not stages:
            missing.append(f"{details['name']} (url: {bool(urls)}, stage: {bool(stages)})")
    return missing


def _history(seen: dict[str, Any]) -> Any:
    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        sfn = world.engine.client("stepfunctions")
        seen["events"] = execution_history(sfn, summary["execution_arn"])
        seen["described"] = sfn.describe_execution(executionArn=summary["execution_arn"])
        seen["datadog_events"] = list(world.datadog.events)
        seen["mrs"] = world.gitlab.merge_requests(world.scenario.gitlab_project)
    return inspect


def test_a_validated_upgrade_names_its_mr_and_stage_in_every_state_output_and_at_the_end(rehearse: Rehearse) -> None:
    # GIVEN a healthy batch WHEN it is rehearsed to success
    seen: dict[str, Any] = {}
    summary, progress = rehearse("default", inspect=_history(seen))
    assert summary["status"] == "SUCCEEDED", progress
    # THEN every state output after the MR opened says where to act and where the run is
    assert where_missing(seen["events"]) == []
    # AND so does the execution's output
    output = json.loads(seen["described"]["output"])
    url = summary["batches"][0]["merge_request_url"]
    assert output["summary"]["merge_request_url"] == url and output["summary"]["stage"] == "done"
    assert output["summary"]["validated"] is True


def test_a_rolled_back_upgrade_names_its_mrs_in_every_state_output_and_in_the_failure(rehearse: Rehearse) -> None:
    # GIVEN a regression on eks-dev-2 WHEN the rehearsal rolls it back
    seen: dict[str, Any] = {}
    summary, progress = rehearse("latency-regression", inspect=_history(seen))
    assert summary["status"] == "FAILED", progress
    # THEN every state output after the MR opened names an MR and the stage (the rollback's, once it is open)
    assert where_missing(seen["events"]) == []
    verify = [json.loads(e["stateExitedEventDetails"]["output"])["verify"] for e in seen["events"]
              if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "VerifyRollback"]
    rollback_url = summary["rollback"]["merge_request_url"]
    assert verify and all(v["merge_request_url"] == rollback_url for v in verify)
    assert verify[-1]["stage"] == "done"
    # AND the failure the console shows names the rollback MR
    assert rollback_url in summary["batches"][0]["cause"]


def test_datadog_shows_where_the_upgrade_happened_and_the_rollback_mr_shows_the_failing_graphs(
        rehearse: Rehearse) -> None:
    # GIVEN a regression of latency_p95 on eks-dev-2 WHEN the rehearsal rolls it back
    seen: dict[str, Any] = {}
    summary, progress = rehearse("latency-regression", inspect=_history(seen))
    assert summary["rollback"]["status"] == "rolled_back", progress
    # THEN Datadog got an event at the merge, at the soak's start and at the verdict, in that order, each
    # tagged with the batch, the version, the run and the clusters
    titles = [e["title"] for e in seen["datadog_events"]]
    assert titles == ["Istio 1.20.0 merged on batch dev-1", "Istio 1.20.0 soak started on batch dev-1",
                      "Istio 1.20.0 validation fail on batch dev-1"], titles
    run_id = summary["execution_arn"].rsplit(":", 1)[-1]
    for event in seen["datadog_events"]:
        assert {"guard_batch:dev-1", "istio_version:1.20.0", f"guard_run:{run_id}", "cluster:eks-dev-1",
                "cluster:eks-dev-2"} <= set(event["tags"])
    assert seen["datadog_events"][-1]["alert_type"] == "error"
    # AND the rollback MR shows latency_p95 before and after as Datadog snapshots, with the explorer link
    rollback = seen["mrs"][1]["description"]
    assert "## Graphs of the failing queries" in rollback and "### `eks-dev-2`: latency_p95" in rollback
    assert rollback.count("](https://p.datadoghq.com/snapshot/") == 2 and "\\![" not in rollback
    assert "![latency_p95 before the upgrade](" in rollback and "![latency_p95 after the upgrade](" in rollback
    assert "Metrics Explorer](https://app.datadoghq.com/metric/explorer?" in rollback


def test_a_datadog_that_refuses_snapshots_and_events_never_holds_the_rollback_back(engine: LocalEngine) -> None:
    # GIVEN Datadog answers 500 to every snapshot and event (its metrics still answer)
    def break_markers(world: LocalWorld) -> None:
        world.datadog.fail_next(SNAPSHOT_PATH, 500, times=1000)
        world.datadog.fail_next(EVENTS_PATH, 500, times=1000)

    seen: dict[str, Any] = {}
    summary = run_scenario(scenario("latency-regression"), out=io.StringIO(), on_world=break_markers,
                           inspect=_history(seen), engine=engine)
    # THEN the rollback went through as usual, and its MR says why the graphs are missing
    assert summary["rollback"]["status"] == "rolled_back"
    assert seen["datadog_events"] == []
    rollback = seen["mrs"][1]["description"]
    assert "_Graphs incomplete: the before snapshot could not be made; the after snapshot could not be made._" \
        in rollback
    assert "Metrics Explorer](https://app.datadoghq.com/metric/explorer?" in rollback



def test_a_failure_after_the_mr_opened_names_the_mr_and_the_failed_stage(rehearse: Rehearse) -> None:
    # GIVEN the reviewer closes the MR instead of merging it
    seen: dict[str, Any] = {}
    summary, progress = rehearse("mr-closed", inspect=_history(seen))
    assert summary["status"] == "FAILED", progress
    # THEN RecordFailure's output, and every state after it, names the MR and the failed stage
    exits = [e["stateExitedEventDetails"] for e in seen["events"] if e["type"].endswith("StateExited")]
    recorded = next(i for i, d in enumerate(exits) if d["name"] == "RecordFailure")
    url = summary["batches"][0]["merge_request_url"]
    for details in exits[recorded:]:
        failure = json.loads(details["output"])["failure"]
        assert (failure["merge_request_url"], failure["stage"]) == (url, "merge"), details["name"]
    # AND the execution's cause, all the console shows of a failed run, names the MR to act on
    assert url in summary["batches"][0]["cause"]
