"""A cluster whose role GUARD may not assume (aws.cluster_accounts) is refused in Plan, on the real ASL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from guard.executions import execution_history
from guard.stores.state import StateStore

from tests.workflow.conftest import scenario

pytestmark = pytest.mark.workflow


def test_cluster_in_an_unlisted_account_fails_in_plan_and_changes_nothing(world_for: Any) -> None:
    # GIVEN the default fleet (example config: cluster accounts 111122223333 and 444455556666),
    # with eks-dev-2's role in 999988887777
    fleet = [spec.model_dump(exclude_unset=True) for spec in scenario("default").fleet]
    for spec in fleet:
        spec["role_arn"] = f"arn:aws:iam::{'999988887777' if spec['cluster'] == 'eks-dev-2' else '111122223333'}" \
                           f":role/guard-{spec['cluster']}"
    world = world_for("default", fleet=fleet)
    sfn = world.engine.client("stepfunctions")

    # WHEN an upgrade of dev-1 starts
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn,
                              input=json.dumps({"batch": "dev-1", "target_version": "1.20.0"}))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what="the execution to end")

    # THEN it failed in Plan with ConfigError naming the cluster, its account and the config key
    events = execution_history(sfn, arn)
    failed = next(e["executionFailedEventDetails"] for e in events if e["type"] == "ExecutionFailed")
    assert "Plan" in [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    assert failed["error"] == "ConfigError"
    for mention in ("eks-dev-2", "999988887777", "aws.cluster_accounts"):
        assert mention in failed["cause"]
    # AND nothing changed: no run record, no lock, no MR
    state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    assert state.find_run(arn.rsplit(":", 1)[-1]) is None
    assert state.lock_holder("dev-1") is None
    assert world.gitlab.merge_requests("platform/istio-fleet") == []
