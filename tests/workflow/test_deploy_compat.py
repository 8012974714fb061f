"""Deploys never break running executions: an execution started on the previous state machine
definition, whose records were written in the previous shapes, finishes on today's code."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from guard.executions import execution_history
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore
from guard.vocabulary.stages import Stage

from sandbox.world import LocalWorld

pytestmark = pytest.mark.workflow
PROJECT = "platform/istio-fleet"
PREVIOUS_DEFINITION = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade_batch.v1.asl.json"


def _deploy_previous_definition(world: LocalWorld) -> str:
    """The definition deployed before this code (commit b7e5f3f), bound to today's functions."""
    awslambda = world.engine.client("lambda")
    definition = PREVIOUS_DEFINITION.read_text()
    for logical, name in world.engine.names.items():
        arn = awslambda.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
        definition = definition.replace("${" + logical + "FunctionArn}", arn)
    assert "${" not in definition
    suffix = uuid.uuid4().hex[:6]  # the engine may be shared by the session
    role = world.engine.client("iam").create_role(RoleName=f"guard-previous-{suffix}", AssumeRolePolicyDocument="{}")
    return str(world.engine.client("stepfunctions").create_state_machine(
        name=f"guard-upgrade-batch-previous-{suffix}", definition=definition, roleArn=role["Role"]["Arn"],
        type="STANDARD")["stateMachineArn"])


def _as_version_1(table: Any, key: dict[str, str], **old: Any) -> None:
    """Rewrite a stored record as the previous code wrote it: no schema version, free strings."""
    item = table.get_item(Key=key, ConsistentRead=True)["Item"]
    doc = {k: v for k, v in json.loads(item["doc"]).items() if k not in ("schema_version", "outcome", "failed_stage")}
    table.put_item(Item={**item, "doc": json.dumps({**doc, **old})})


def _start_previous(world: LocalWorld, soak_minutes: int) -> tuple[str, Any, Any]:
    """Start batch dev-1 on the previous definition; (run id, state table, the MR waiting on its merge)."""
    sfn = world.engine.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=_deploy_previous_definition(world),
                              input=json.dumps({"batch": "dev-1", "target_version": "1.20.0",
                                                "soak_period_minutes": soak_minutes}))["executionArn"]
    table = world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name)
    state = StateStore(table)
    mr = world.wait_until(lambda: world.gitlab.merge_requests(PROJECT), what="the upgrade MR")[0]
    world.wait_until(lambda: state.get_task_token(mr["web_url"]), what="the upgrade's task token")
    return arn, table, mr


def test_an_execution_of_the_previous_definition_with_version_1_records_finishes_on_todays_code(
        world_for: Any) -> None:
    # GIVEN an execution of the previous definition, waiting on its MR, whose run record and task token
    # are in the shapes the previous code wrote (as if it had been deployed while the execution waited)
    world = world_for("default", human={"action": "ignore"})
    arn, table, mr = _start_previous(world, soak_minutes=30)
    run_id, state, sfn = arn.rsplit(":", 1)[-1], StateStore(table), world.engine.client("stepfunctions")
    _as_version_1(table, {"pk": f"RUN#{run_id}", "sk": "META"}, stage="waiting_for_merge")
    _as_version_1(table, {"pk": f"MR#{mr['web_url']}", "sk": "TOKEN"}, kind="upgrade")

    # WHEN the MR is merged and the execution runs to its end on today's handlers
    world.gitlab.merge(PROJECT, mr["iid"])
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what="the execution to end")

    # THEN it succeeded, and what it recorded is in today's shapes
    assert sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED", [
        e["type"] for e in execution_history(sfn, arn)][-5:]
    run = state.get_run(run_id)
    assert (run.schema_version, run.outcome, run.stage) == (2, "succeeded", "done")
    registry = ClusterRegistry(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.table_name),
                               world.config.tenant)
    assert {registry.get(c).current_istio_version for c in run.clusters} == {"1.20.0"}
    assert state.lock_holder("dev-1") is None


def test_a_rollback_waiting_on_its_mr_with_version_1_records_is_verified_on_todays_code(world_for: Any) -> None:
    # GIVEN an execution of the previous definition whose upgrade hurt (eks-dev-2's p95 +25%): it waits on
    # its rollback MR, and the run, rollback and token records are in the previous code's shapes
    world = world_for("latency-regression", human={"action": "ignore"}, rollback_human={"action": "ignore"})
    arn, table, upgrade = _start_previous(world, soak_minutes=20)
    run_id, state, sfn = arn.rsplit(":", 1)[-1], StateStore(table), world.engine.client("stepfunctions")
    world.gitlab.merge(PROJECT, upgrade["iid"])
    mrs = world.wait_until(lambda: world.gitlab.merge_requests(PROJECT)[1:], what="the rollback MR")
    rollback = mrs[0]
    world.wait_until(lambda: state.get_task_token(rollback["web_url"]), what="the rollback's task token")
    # The token is stored as the MR opens, the rollback record and the run's stage after it: rewrite
    # them once the last of those writes is in, or the rewrite races them.
    world.wait_until(lambda: state.get_run(run_id).stage == Stage.WAITING_FOR_ROLLBACK_MERGE,
                     what="the rollback record and the run's stage")
    _as_version_1(table, {"pk": f"RUN#{run_id}", "sk": "META"}, stage="waiting_for_rollback_merge")
    _as_version_1(table, {"pk": f"RUN#{run_id}", "sk": "ROLLBACK"}, status="waiting_for_merge")
    _as_version_1(table, {"pk": f"MR#{rollback['web_url']}", "sk": "TOKEN"}, kind="rollback")

    # WHEN the rollback MR is merged and the execution runs to its end on today's handlers
    world.gitlab.merge(PROJECT, rollback["iid"])
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what="the execution to end")

    # THEN it ended rolled back, verified, with today's records and no lock left
    failed = next(e["executionFailedEventDetails"] for e in execution_history(sfn, arn)
                  if e["type"] == "ExecutionFailed")
    assert failed["error"] == "RolledBack" and "eks-dev-2" in failed["cause"]
    run = state.get_run(run_id)
    assert (run.schema_version, run.outcome, run.failed_stage) == (2, "rolled_back", "validation")
    registry = ClusterRegistry(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.table_name),
                               world.config.tenant)
    assert registry.get("eks-dev-2").current_istio_version == "1.19.3"
    assert state.lock_holder("dev-1") is None
