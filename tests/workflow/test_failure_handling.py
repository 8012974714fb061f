"""When an upgrade hurts: analysis, rollback MR, human decisions, notifications, manual rollback."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from guard.core.models import Cluster
from guard.executions import execution_history
from guard.gitops.helm_release import read_chart_version
from guard.services.metrics import render_queries
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore

from sandbox.__main__ import expectation_problems
from sandbox.sims.datadog_sim import TIMESERIES_PATH
from sandbox.world import LocalWorld
from tests.workflow.conftest import Rehearse, guard, scenario

pytestmark = pytest.mark.workflow
PROJECT = "platform/istio-fleet"


def _collect(world: LocalWorld, summary: dict[str, Any], seen: dict[str, Any]) -> None:
    ddb = world.engine.resource("dynamodb")
    registry = ClusterRegistry(ddb.Table(world.config.aws.dynamodb.table_name), world.config.tenant)
    state = StateStore(ddb.Table(world.config.aws.dynamodb.state_table_name))
    mrs = world.gitlab.merge_requests(PROJECT)
    seen["mrs"] = mrs
    seen["notes"] = {mr["iid"]: world.gitlab.notes(PROJECT, mr["iid"]) for mr in mrs}
    seen["running"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1]
                       for c in world.scenario.fleet}
    seen["registry"] = {c.cluster: registry.get(c.cluster) for c in world.scenario.fleet}
    seen["lock"] = state.lock_holder(world.scenario.batch or "")
    seen["main_files"] = {c.cluster: world.gitlab.file_at(PROJECT, f"clusters/{c.cluster}/istio/helmrelease.yaml")
                          for c in world.scenario.fleet}
    seen["llm_prompts"] = [r.prompt_text() for r in world.llm.requests] if world.llm else []
    seen["guard_status"] = guard("status", summary["execution_arn"])  # what CI sees (exit code, output)


Run = Callable[..., tuple[dict[str, Any], dict[str, Any], str]]


@pytest.fixture
def run(rehearse: Rehearse) -> Run:
    """Rehearse a scenario that must meet its `expect` block; returns (summary, what the world saw, progress)."""

    def rehearse_and_collect(name: str, **changes: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
        seen: dict[str, Any] = {}
        summary, progress = rehearse(name, inspect=lambda world, result: _collect(world, result, seen), **changes)
        problems = expectation_problems(scenario(name, **changes), summary["batches"][0])
        assert problems == [], progress
        return summary, seen, progress

    return rehearse_and_collect


def test_regression_is_analysed_rolled_back_by_mr_and_verified(run: Run) -> None:
    # GIVEN eks-dev-2 regresses 25% in p95 latency and the LLM endpoint answers
    # WHEN the batch is rehearsed and the reviewer merges both MRs
    summary, seen, _ = run("latency-regression")

    # THEN a second MR rolled eks-dev-2 (only) back, carrying the failure data and the analysis
    upgrade, rollback = seen["mrs"]
    assert upgrade["state"] == "merged"
    assert rollback["state"] == "merged" and "rollback" in rollback["source_branch"]
    assert "AI Failure Analysis" in rollback["description"] and "latency_p95" in rollback["description"]
    # AND both MRs mention the registry's owners as mentions GitLab notifies (not escaped as untrusted text)
    assert "**Owners:** @platform (eks-dev-1, eks-dev-2), @dev2-oncall (eks-dev-2)" in upgrade["description"]
    assert "**Owners:** @dev2-oncall (eks-dev-2), @platform (eks-dev-2)" in rollback["description"]
    assert read_chart_version(seen["main_files"]["eks-dev-2"]) == "1.19.3"
    assert read_chart_version(seen["main_files"]["eks-dev-1"]) == "1.20.0"
    # AND the clusters run what the repo says, the registry recorded it, the lock is free
    assert seen["running"] == {"eks-dev-1": "1.20.0", "eks-dev-2": "1.19.3"}
    assert seen["registry"]["eks-dev-2"].current_istio_version == "1.19.3"
    assert seen["registry"]["eks-dev-2"].upgrade_history[-1].outcome == "rolled_back"
    assert seen["lock"] is None
    assert summary["rollback"]["status"] == "rolled_back"
    # AND the execution failed as RolledBack, which `guard status` reports with exit code 3
    assert summary["status"] == "FAILED"
    code, out = seen["guard_status"]
    assert code == 3 and "FAILED RolledBack" in out, out
    # AND the LLM saw the violation but no secret
    assert any("latency_p95" in prompt for prompt in seen["llm_prompts"])
    assert not any("glpat-" in prompt or "k8s-aws-v1." in prompt for prompt in seen["llm_prompts"])
    # AND people were told: started, waiting for merge, rolled back, each with the batch and version
    texts = summary["notifications"]
    assert any("started" in t.lower() for t in texts) and any("rolled back" in t.lower() for t in texts)
    assert all("dev-1" in t and "1.20.0" in t for t in texts)
    assert not any("glpat-" in t or "sk-" in t for t in texts)


def test_a_throughput_collapse_is_rolled_back(run: Run) -> None:
    # GIVEN eks-test serves ~97% fewer requests after the upgrade while latency and errors look fine
    summary, seen, _ = run("throughput-collapse")
    # THEN request_count_max_decrease_percent failed it and the rollback MR put it back on the old version
    finding = next(f for f in summary["batches"][0]["clusters"]["eks-test"]["verdict"]["findings"]
                   if f["rule"] == "request_count_max_decrease_percent")
    assert finding["outcome"] == "fail" and "drops beyond -50%" in finding["explanation"]
    assert summary["rollback"]["status"] == "rolled_back"
    assert seen["running"]["eks-test"] == "1.19.3" and seen["lock"] is None


def test_llm_down_still_rolls_back_saying_analysis_unavailable(run: Run) -> None:
    # GIVEN the same regression while the LLM endpoint answers HTTP 500
    summary, seen, _ = run("llm-down")
    # THEN the rollback still happened and its MR says why there is no analysis
    rollback = seen["mrs"][1]
    assert "analysis unavailable" in rollback["description"]
    assert summary["rollback"]["status"] == "rolled_back"


def test_rollback_mr_closed_unmerged_fails_saying_the_bad_version_still_runs(run: Run) -> None:
    # GIVEN the reviewer closes the rollback MR
    summary, seen, _ = run("rollback-mr-closed")
    # THEN the run failed, the clusters still run the new version, the lock is free
    assert summary["batches"][0]["error"] == "RollbackMergeRequestClosed"
    assert seen["running"]["eks-dev-2"] == "1.20.0"
    assert seen["lock"] is None


def test_inconclusive_then_maintainer_proceeds_succeeds(run: Run) -> None:
    # GIVEN latency data that stops after the upgrade (inconclusive) and a Maintainer who answers `/guard proceed`
    summary, seen, progress = run("inconclusive-proceed")
    # THEN the batch was validated twice, the second time after the extra soak, before a person was asked
    assert progress.count("→ ExtraSoak") == 1 and progress.count("→ ValidateChunk") == 2, progress
    assert progress.index("→ ExtraSoak") < progress.index("→ UpgradeHurt")
    # AND the upgrade is accepted: recorded as succeeded, no rollback MR
    assert summary["decision"]["decision"] == "proceed" and summary["decision"]["by"] == "maria"
    assert len(seen["mrs"]) == 1
    assert seen["registry"]["eks-test"].current_istio_version == "1.20.0"
    assert any("decision needed" in t.lower() for t in summary["notifications"])
    # AND nobody is told it was validated: the MR and Slack say who let it through, despite what
    upgrade_notes = seen["notes"][seen["mrs"][0]["iid"]]
    assert any("proceeded by @maria despite inconclusive latency_p95" in n for n in upgrade_notes), upgrade_notes
    assert not any("validated on" in n for n in upgrade_notes), upgrade_notes
    # AND the question mentioned the cluster's owners, so GitLab told them
    question = next(n for n in upgrade_notes if "GUARD needs a decision" in n)
    assert "**Owners:** @test-oncall (eks-test), @platform (eks-test)" in question
    final = summary["notifications"][-1]
    assert "Proceeded by @maria despite inconclusive latency_p95" in final, final
    assert "without a passing validation" in final and "validated:" not in final.lower()
    assert not any("upgrade validated" in t.lower() for t in summary["notifications"])


def test_developer_comment_is_ignored_and_the_decision_times_out_into_a_rollback(run: Run) -> None:
    # GIVEN no metric data and only a Developer who answers `/guard proceed`
    summary, seen, _ = run("no-data")
    # THEN the developer got a reply and was ignored; the timeout rolled back
    upgrade_notes = seen["notes"][seen["mrs"][0]["iid"]]
    assert any("dave" in note and "ignored" in note for note in upgrade_notes)
    assert summary["decision"]["timed_out"] is True and summary["decision"]["by"] is None
    assert summary["rollback"]["status"] == "rolled_back"
    # AND the MRs and Slack say nobody answered, in the words of the decision timeout (0.5 h)
    said = "no Maintainer answered within 30 min: rolled back"
    assert any(said in note for note in upgrade_notes), upgrade_notes
    rollback_mr = seen["mrs"][1]
    assert f"**Decision:** {said}" in rollback_mr["description"]
    assert not any("did not pass validation" in note for note in upgrade_notes)
    rolled_back = next(t for t in summary["notifications"] if "rolled back: batch" in t.lower())
    assert "No Maintainer answered within 30 min: rolled back" in rolled_back, rolled_back
    assert seen["running"]["eks-test"] == "1.19.3"
    # AND the execution failed as RolledBack and released the batch lock
    assert summary["status"] == "FAILED" and seen["guard_status"][0] == 3
    assert seen["lock"] is None


def test_manual_rollback_input_rolls_back_the_last_upgrade(world_for: Any) -> None:
    # GIVEN batch test upgraded to 1.20.0 by an earlier execution
    world = world_for("inconclusive-proceed", decision_comments=[], input={"soak_period_minutes": 5},
                      fleet=[{**scenario("default").fleet[0].model_dump(exclude_unset=True), "cluster": "eks-test",
                              "environment": "test"}])
    sfn = world.engine.client("stepfunctions")
    first = sfn.start_execution(stateMachineArn=world.state_machine_arn, name="upgrade-test",
                                input=json.dumps({"batch": "test", "target_version": "1.20.0"}))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=first)["status"] != "RUNNING", what="the upgrade")
    assert sfn.describe_execution(executionArn=first)["status"] == "SUCCEEDED"

    # WHEN a person asks for a rollback with a reason
    second = sfn.start_execution(stateMachineArn=world.state_machine_arn, name="rollback-test", input=json.dumps(
        {"action": "rollback", "batch": "test", "reason": "customer reports 502s on checkout"}))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=second)["status"] != "RUNNING",
                     what="the rollback")

    # THEN it opened a rollback MR with the reason, the reviewer merged it, and the cluster is back
    assert sfn.describe_execution(executionArn=second)["status"] == "SUCCEEDED"
    rollback = world.gitlab.merge_requests(PROJECT)[-1]
    assert "customer reports 502s" in rollback["description"] and rollback["state"] == "merged"
    assert world.kubernetes.helm_release_versions("eks-test")[1] == "1.19.3"
    entered = [e["stateEnteredEventDetails"]["name"] for e in execution_history(sfn, second)
               if e["type"].endswith("Entered")]
    assert entered[:4] == ["Action", "PlanRollback", "RollbackMergeRequestWanted", "OpenRollback"]


def test_manual_rollback_of_a_batch_never_upgraded_is_refused(world_for: Any) -> None:
    # GIVEN nothing has been upgraded
    world = world_for("mr-closed")
    sfn = world.engine.client("stepfunctions")
    # WHEN a rollback is asked for
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, input=json.dumps(
        {"action": "rollback", "batch": "test", "reason": "just in case"}))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", what="the refusal")
    # THEN it is refused with a readable cause and nothing is opened
    failed = next(e["executionFailedEventDetails"] for e in execution_history(sfn, arn)
                  if e["type"] == "ExecutionFailed")
    assert failed["error"] == "NothingToRollBack" and "stackTrace" not in failed["cause"]
    assert world.gitlab.merge_requests(PROJECT) == []


def test_without_auto_create_mr_the_failure_says_what_to_roll_back_by_hand(rehearse: Rehearse) -> None:
    # GIVEN rollback.auto_create_mr is false and eks-dev-2 regresses
    seen: dict[str, Any] = {}
    summary, progress = rehearse("latency-regression", inspect=lambda world, result: _collect(world, result, seen),
                                 config_overrides={"rollback": {"auto_create_mr": False}}, llm={"mode": "off"})
    # THEN no rollback MR was opened and the cause names the clusters and the versions to go back to
    batch = summary["batches"][0]
    assert batch["error"] == "RollbackNotCreated", progress
    assert "eks-dev-2=1.19.3" in batch["cause"] and "by hand" in batch["cause"]
    assert len(seen["mrs"]) == 1 and seen["lock"] is None


def test_an_inconclusive_batch_whose_data_arrives_during_the_extra_soak_succeeds_without_asking(
        world_for: Any) -> None:
    # GIVEN latency data that stops after the upgrade, so the first validation is inconclusive
    world = world_for("inconclusive-proceed", decision_comments=[])
    sfn = world.engine.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, name="late-data",
                              input=json.dumps({"batch": "test", "target_version": "1.20.0",
                                                "soak_period_minutes": 20}))["executionArn"]
    reads = lambda: world.datadog.requests_to(TIMESERIES_PATH)  # noqa: E731  (precheck, then each validation)
    world.wait_until(lambda: len(reads()) >= 2, what="the first validation's Datadog read")

    # WHEN the missing latency arrives (late ingestion) while GUARD soaks the extra time
    latency = render_queries(world.config.datadog.queries, world_cluster(world))["latency_p95"]
    world.datadog.set_series(latency, lambda bucket: 212.0 * (1 + 0.05 * ((bucket.minute % 5) - 2) / 2))
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", what="the execution")

    # THEN the second validation passed: the upgrade succeeded without asking anyone or rolling back
    entered = [e["stateEnteredEventDetails"]["name"] for e in execution_history(sfn, arn)
               if e["type"].endswith("StateEntered")]
    assert sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED", entered
    assert entered.count("ExtraSoak") == 1 and entered.count("Conclude") == 2
    assert "UpgradeHurt" not in entered and "AwaitDecision" not in entered
    assert len(world.gitlab.merge_requests(PROJECT)) == 1
    # AND the second window ends the extra soak (15 minutes) later and still starts at the Flux sync, so it
    # covers the new period
    first, second = (r.body["data"]["attributes"] for r in reads()[1:3])
    assert int(second["to"]) - int(first["to"]) >= 15 * 60 * 1000
    assert int(second["from"]) == int(first["from"])


def world_cluster(world: LocalWorld) -> Cluster:
    return ClusterRegistry(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.table_name),
                               world.config.tenant).get(
        "eks-test")


@pytest.mark.parametrize("layout", ["single", "whole"])
def test_a_rollback_mr_keeps_a_teammates_commit_made_after_the_upgrade(rehearse: Rehearse, layout: str) -> None:
    # GIVEN eks-dev-2 regresses after the upgrade, and right after the upgrade merges a teammate commits on main:
    # a comment on the line next to istiod's version (a revert of the upgrade commit would conflict there) and a
    # slower reconcile interval
    loaded = scenario("latency-regression").model_dump(exclude_unset=True)
    fleet = [{**spec, "layout": layout} for spec in loaded["fleet"]]
    istiod = {"single": "clusters/eks-dev-2/istio/helmrelease.yaml", "whole": "clusters/eks-dev-2/istio/istiod.yaml"}
    old_interval = {"single": "  interval: 5m\n", "whole": "  interval: 10m\n"}[layout]
    commits = [{"after_merges": 1, "paths": [istiod[layout]], "old": "      chart: istiod\n",
                "new": "      chart: istiod  # from the platform team's mirror\n", "message": "Annotate the chart"},
               {"after_merges": 1, "paths": [istiod[layout]], "old": old_interval, "new": "  interval: 7m\n",
                "message": "Reconcile istiod every 7 minutes"}]
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        _collect(world, summary, seen)
        seen["files"] = world.gitlab.files(PROJECT)
        seen["log"] = [text for _, text in world.human_log]

    # WHEN the batch is rehearsed: the reviewer merges the upgrade, then GUARD's rollback MR
    summary, progress = rehearse("latency-regression", inspect=inspect, fleet=fleet, main_commits=commits)

    # THEN the batch rolled back, through a merged rollback MR
    assert summary["batches"][0]["error"] == "RolledBack", progress
    assert any("a teammate committed on main" in line for line in seen["log"]), progress
    upgrade, rollback = seen["mrs"]
    assert upgrade["state"] == "merged"
    assert rollback["state"] == "merged" and "rollback" in rollback["source_branch"]
    # AND main has eks-dev-2's charts back on 1.19.3 with the teammate's two changes kept, eks-dev-1 untouched
    text = seen["files"][istiod[layout]]
    assert "chart: istiod  # from the platform team's mirror" in text and "  interval: 7m\n" in text
    dev2 = {p: t for p, t in seen["files"].items() if p.startswith("clusters/eks-dev-2/") and "HelmRelease" in t}
    assert dev2 and all('version: "1.19.3"' in t and "1.20.0" not in t for t in dev2.values()), dev2
    assert all("1.19.3" not in t for p, t in seen["files"].items() if p.startswith("clusters/eks-dev-1/"))
    assert seen["running"] == {"eks-dev-1": "1.20.0", "eks-dev-2": "1.19.3"}
