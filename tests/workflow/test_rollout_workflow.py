"""statemachines/rollout.asl.json on the local engine: real child executions of the batch machine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from guard.executions import execution_history
from guard.stores.rollouts import RolloutStore

from sandbox.rollout_rehearsal import rollout_expectation_problems
from sandbox.world import LocalWorld
from tests.workflow.conftest import Rehearse, scenario

pytestmark = pytest.mark.workflow


def test_nine_batch_dag_runs_as_one_rollout_with_independent_batches_overlapping(rehearse: Rehearse) -> None:
    # GIVEN the seed's "Batch Dependencies" fleet: nine batches, fifteen clusters, all healthy
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["running"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1]
                           for c in world.scenario.fleet}

    # WHEN the whole tenant is rolled out in one execution
    summary, progress = rehearse("rollout-batch-dependencies", inspect=inspect)

    # THEN every batch succeeded, listed in a valid order, each as its own child execution
    assert summary["status"] == "SUCCEEDED", progress
    assert rollout_expectation_problems(scenario("rollout-batch-dependencies"), summary) == [], progress
    order = [b["batch"] for b in summary["batches"]]
    assert order == ["test", "dev-1", "dev-2", "staging-us", "staging-eu", "prod-canary", "prod-us-1",
                     "prod-us-2", "prod-eu"]
    assert summary["order_valid"]
    assert all(b["execution_arn"].endswith(f"--{b['batch']}") for b in summary["batches"])
    # AND independent batches ran at the same time, dependent ones never did
    assert ["staging-us", "staging-eu"] in summary["overlapping"]
    assert ["prod-us-2", "prod-eu"] in summary["overlapping"]
    assert len(summary["overlapping"]) == 2
    # AND the canary soaked longer than the others; every cluster now runs the target
    soaks = {b["batch"]: b["soak_period_minutes"] for b in summary["batches"]}
    assert soaks["prod-canary"] > soaks["prod-us-1"]
    assert set(seen["running"].values()) == {"1.20.0"}
    assert len(summary["merge_requests"]) == 9
    # AND the rollout's own history and payloads stay far below the Step Functions limits
    # (~230 events of real work plus ~9 per poll of a waiting iteration; docs/rollout.md "State and limits")
    assert summary["history_events"] < 1500
    assert summary["max_state_payload_bytes"] < 8192


def test_a_failed_canary_is_rolled_back_and_stops_the_rollout_before_production(rehearse: Rehearse) -> None:
    # GIVEN the canary's p95 latency rises 37% after the upgrade
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["running"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1]
                           for c in world.scenario.fleet}

    summary, progress = rehearse("rollout-canary-fails", inspect=inspect)
    # THEN the rollout fails, the canary was rolled back, and production never started
    assert summary["status"] == "FAILED", progress
    assert rollout_expectation_problems(scenario("rollout-canary-fails"), summary) == [], progress
    by_batch = {b["batch"]: b for b in summary["batches"]}
    assert by_batch["prod-canary"]["status"] == "rolled_back"
    assert "eks-prod-canary" in by_batch["prod-canary"]["reason"]
    assert "latency_p95" in by_batch["prod-canary"]["reason"]
    for batch in ("prod-us-1", "prod-us-2", "prod-eu"):
        assert by_batch[batch]["status"] == "skipped"
        assert by_batch[batch]["reason"] == "depends on 'prod-canary', which rolled back"
        assert "execution_arn" not in by_batch[batch]
    # AND the canary runs its old version again; production was never touched
    assert seen["running"]["eks-prod-canary"] == "1.19.3"
    assert all(seen["running"][c] == "1.19.3" for c in seen["running"] if c.startswith("eks-prod-"))
    assert seen["running"]["eks-staging-eu-west-1"] == "1.20.0"
    # AND the cause carries the whole per-batch list for CI and people
    assert summary["error"] == "RolloutRolledBack"
    cause = json.loads(summary["cause"])
    assert cause["counts"] == {"succeeded": 5, "rolled_back": 1, "skipped": 3}


def test_a_dependent_starts_when_its_own_prerequisite_succeeded_not_when_its_wave_ends(rehearse: Rehearse) -> None:
    # GIVEN test soaks long, dev-1 is quick, dev-2 depends only on dev-1
    summary, progress = rehearse("rollout-independent-branches")
    # THEN everything succeeded in a valid order, and dev-2 started (and ran) while test was still soaking
    assert summary["status"] == "SUCCEEDED", progress
    assert rollout_expectation_problems(scenario("rollout-independent-branches"), summary) == [], progress
    by_batch = {b["batch"]: b for b in summary["batches"]}
    assert by_batch["dev-2"]["start_s"] > by_batch["dev-1"]["end_s"]
    assert by_batch["dev-2"]["start_s"] < by_batch["test"]["end_s"], progress
    assert ["test", "dev-2"] in summary["overlapping"]
    assert "▶ start dev-2" in progress


@pytest.mark.parametrize("rollout_input, error, mentions", [
    ({"target_version": "1.20.0", "batches": ["nope"]}, "UnknownBatch", "nope"),
    ({"target_version": "1.20"}, "InvalidInput", "target_version"),
    ({"target_version": "1.20.0", "batches": ["dev-1"]}, "PrerequisiteNotMet", "'test'"),
])
def test_a_bad_rollout_is_refused_at_the_first_state(world_for: Any, rollout_input: dict[str, Any], error: str,
                                                     mentions: str) -> None:
    # GIVEN the default world (test has not run at 1.20.0)
    world = world_for("default", succeeded_before=[])
    sfn = world.engine.client("stepfunctions")
    # WHEN a rollout starts with bad input
    arn = sfn.start_execution(stateMachineArn=world.rollout_state_machine_arn,
                              input=json.dumps(rollout_input))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what="the rollout to end")
    # THEN it failed in StartRollout naming the problem, started no child, recorded nothing
    events = execution_history(sfn, arn)
    failed = next(e["executionFailedEventDetails"] for e in events if e["type"] == "ExecutionFailed")
    assert (failed["error"], mentions in failed["cause"]) == (error, True), failed
    assert sfn.list_executions(stateMachineArn=world.state_machine_arn)["executions"] == []
    table = world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name)
    assert RolloutStore(table).find(arn.rsplit(":", 1)[-1]) is None
