"""Say where to act: every state output a person opens in the console names the MR and the run's stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from guard.executions import execution_history

from sandbox.world import LocalWorld
from tests.workflow.conftest import Rehearse

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
