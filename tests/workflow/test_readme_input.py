"""The README's console input ("Starting an upgrade"), copied from the README itself, passes its own
prerequisites on the example fleet: Plan and the prechecks accept it and GUARD opens the upgrade MR."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from guard.executions import execution_history

pytestmark = pytest.mark.workflow
README = Path(__file__).resolve().parents[2] / "README.md"
PROJECT = "platform/istio-fleet"


def readme_input() -> dict[str, Any]:
    """The JSON block under the README's "Starting an upgrade" heading."""
    section = README.read_text().split("## Starting an upgrade", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block, "the README's 'Starting an upgrade' section has no ```json block"
    loaded: dict[str, Any] = json.loads(block.group(1))
    return loaded


def test_the_readme_console_input_passes_its_prerequisites_on_the_example_fleet(world_for: Any) -> None:
    # GIVEN the README's input, and the example fleet (config/example.yaml) where the batches its batch
    # depends on (batch_order) have reached the target version, and its cluster has PDBs and is healthy
    given = readme_input()
    canary = {"cluster": "eks-prod-canary", "istio_version": "1.19.3", "environment": "prod",
              "workloads": [{"namespace": "shop", "name": "cart", "replicas": 3},
                            {"namespace": "shop", "name": "checkout", "replicas": 3}],
              "metrics": {"latency_p95": {"before": 212, "after": 214},
                          "error_rate": {"before": 0.0004, "after": 0.0004},
                          "request_count": {"before": 5000}}}
    world = world_for("default", batch=given["batch"], target_version=given["target_version"], fleet=[canary],
                      succeeded_before=["staging-us", "staging-eu"], human={"action": "ignore"})
    sfn = world.engine.client("stepfunctions")
    # WHEN it is started as the console would, the JSON exactly as the README shows it
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, input=json.dumps(given))["executionArn"]
    # THEN GUARD opens the upgrade MR (Plan, the prerequisites and every precheck passed)...
    mrs = world.wait_until(
        lambda: world.gitlab.merge_requests(PROJECT)
        or (None if sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
            else [{"ended": sfn.describe_execution(executionArn=arn)}]),
        what="the upgrade MR (or the end of the execution)")
    described = sfn.describe_execution(executionArn=arn)
    assert described["status"] == "RUNNING", (described.get("error"), described.get("cause"))
    assert "ended" not in mrs[0]
    # ...for the batch and version the README names, and nothing failed on the way
    assert given["target_version"] in mrs[0]["title"] or given["target_version"] in mrs[0]["description"]
    failed = [e["type"] for e in execution_history(sfn, arn) if e["type"].endswith("Failed")]
    assert not failed, failed
