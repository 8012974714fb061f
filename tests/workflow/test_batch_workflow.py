"""Every path of statemachines/upgrade_batch.asl.json, run for real on the local engine."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from guard.executions import execution_history
from guard.gitops.helm_release import read_chart_version
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore

from sandbox.__main__ import expectation_problems
from sandbox.world import LocalWorld
from tests.workflow.conftest import HANG, Rehearse, guard, scenario

pytestmark = pytest.mark.workflow


def _stores(world: LocalWorld) -> tuple[ClusterRegistry, StateStore]:
    ddb = world.engine.resource("dynamodb")
    return (ClusterRegistry(ddb.Table(world.config.aws.dynamodb.table_name), world.config.tenant),
            StateStore(ddb.Table(world.config.aws.dynamodb.state_table_name)))


def test_happy_path_upgrades_the_batch_and_records_it(rehearse: Rehearse) -> None:
    # GIVEN two healthy dev clusters on 1.19.3 whose metrics stay within ±10% noise
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        registry, state = _stores(world)
        seen["versions"] = {c: registry.get(c).current_istio_version for c in ("eks-dev-1", "eks-dev-2")}
        seen["history"] = registry.get("eks-dev-1").upgrade_history
        seen["lock"] = state.lock_holder("dev-1")
        seen["file"] = world.gitlab.file_at("platform/istio-fleet", "clusters/eks-dev-1/istio/helmrelease.yaml")
        seen["notes"] = world.gitlab.notes("platform/istio-fleet", 1)
        seen["description"] = world.gitlab.merge_requests("platform/istio-fleet")[0].get("description", "")
        # what CI sees when it follows the run with `guard status --wait` (not a TTY)
        seen["guard"] = guard("status", summary["execution_arn"], "--wait", "--timeout", HANG)

    # WHEN the batch is rehearsed and the reviewer merges the MR
    summary, progress = rehearse("default", inspect=inspect)

    # THEN the execution walks prechecks -> MR -> merge -> Flux -> soak -> validation -> success
    assert summary["status"] == "SUCCEEDED", progress
    assert expectation_problems(scenario("default"), summary["batches"][0]) == []
    order = [line.split("→ ")[1].split()[0] for line in progress.splitlines() if "→ " in line]
    for earlier, later in [("Plan", "Prechecks"), ("Prechecks", "OpenMergeRequest"),
                           ("OpenMergeRequest", "Soak"), ("Soak", "Validate"), ("Validate", "RecordSuccess")]:
        assert order.index(earlier) < order.index(later)
    # AND the registry, the Git repo and the MR say what happened; the lock is free again
    assert seen["versions"] == {"eks-dev-1": "1.20.0", "eks-dev-2": "1.20.0"}
    assert seen["history"][-1].outcome == "succeeded" and seen["history"][-1].from_version == "1.19.3"
    assert seen["lock"] is None
    assert read_chart_version(seen["file"]) == "1.20.0"
    assert "# upgraded by GUARD merge requests" in seen["file"]
    assert any("validated on 1.20.0" in note for note in seen["notes"])
    assert "eks-dev-1" in seen["description"] and "✓" in seen["description"]
    # AND every verdict carries its numbers; the state payload stays small
    verdict = summary["batches"][0]["clusters"]["eks-dev-2"]["verdict"]
    assert verdict["outcome"] == "pass"
    latency = next(f for f in verdict["findings"] if f["query_name"] == "latency_p95")
    assert latency["baseline"] and latency["current"] and latency["threshold"] == 10
    assert summary["max_state_payload_bytes"] < 4096
    # AND the tenant's custom check ran and is in the report; the sidecars were restarted onto 1.20.0
    prechecks = {c["check"]: c for c in summary["batches"][0]["clusters"]["eks-dev-1"]["prechecks"]}
    assert prechecks["database_connectivity"]["status"] == "pass"
    assert "database_connectivity" in seen["description"]
    post = {c["check"]: c["status"] for c in verdict["post_checks"]}
    assert post["proxies_on_target_version"] == "pass" and post["no_new_crash_loops"] == "pass"
    # (the merge's webhook, and the Note Hooks GitLab sends for GUARD's own comments: all answered 200)
    assert summary["webhook_responses"] and set(summary["webhook_responses"]) == {200}
    # AND the CLI follows it in plain lines and exits 0
    code, out = seen["guard"]
    assert code == 0, out
    assert "→ Plan" in out and "→ Validate" in out and "SUCCEEDED" in out
    assert "\r" not in out


# latency-regression and no-data end in a rollback: test_failure_handling.py runs them end to end
# with these same checks (expect block, FAILED, lock released) and more.
@pytest.mark.parametrize("name", ["precheck-crashloop", "firing-monitor", "missing-pdb", "no-baseline", "mr-closed",
                                  "mr-timeout", "flux-suspended"])
def test_failure_paths_end_failed_with_an_actionable_cause_and_release_the_lock(rehearse: Rehearse, name: str) -> None:
    # GIVEN a scenario that must fail (its `expect` block names the error and what the cause mentions)
    expected = scenario(name)
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        _, state = _stores(world)
        seen["lock"] = state.lock_holder(expected.batch)
        seen["mrs"] = world.gitlab.merge_requests("platform/istio-fleet")
        seen["versions"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1] for c in expected.fleet}

    # WHEN it is rehearsed
    summary, progress = rehearse(name, inspect=inspect)

    # THEN the execution failed with the expected error and cause, and released the batch lock
    batch = summary["batches"][0]
    assert summary["status"] == "FAILED", progress
    assert expectation_problems(expected, batch) == [], progress
    assert seen["lock"] is None
    if batch["error"] == "PrecheckFailed":
        # AND a failed precheck (a cluster check, or a baseline that cannot be judged) never opened an MR nor
        # touched a cluster
        assert seen["mrs"] == []
        assert all(v == "1.19.3" for v in seen["versions"].values())
    if batch["error"] in ("MergeRequestClosed", "MergeRequestTimeout"):
        assert all(v == "1.19.3" for v in seen["versions"].values())
        assert batch["merge_request_url"] in batch["cause"] or "timed out" in batch["cause"]
    if batch["error"] == "MergeRequestTimeout":
        # AND GitLab confirmed the MR unmerged before "nothing was deployed" was said; GUARD closed it
        assert "GUARD closed it" in batch["cause"] and "nothing was deployed" in batch["cause"]
        assert [mr["state"] for mr in seen["mrs"]] == ["closed"]


def test_a_realistic_cluster_upgrades_with_no_false_rollback(rehearse: Rehearse) -> None:
    # GIVEN clusters with StatefulSet, DaemonSet and Job sidecars, native sidecars, a revisioned istiod with
    # -debug images, digest-pinned proxies, PDBs with matchExpressions and {}, and helm-controllers that do
    # not serve helm.toolkit.fluxcd.io/v2 (one fails its first upgrade and is remediated by Flux)
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["mrs"] = world.gitlab.merge_requests("platform/istio-fleet")
        seen["proxies"] = {c: world.kubernetes.proxy_versions(c, live_only=True) for c in ("eks-dev-1", "eks-dev-2")}
        seen["running"] = {c: world.kubernetes.helm_release_versions(c)[1] for c in ("eks-dev-1", "eks-dev-2")}

    # WHEN it is rehearsed
    summary, progress = rehearse("realistic-cluster", inspect=inspect)

    # THEN the upgrade succeeds with one MR and no rollback, both clusters run 1.20.0
    batch = summary["batches"][0]
    assert summary["status"] == "SUCCEEDED", progress
    assert expectation_problems(scenario("realistic-cluster"), batch) == []
    assert [mr["source_branch"] for mr in seen["mrs"] if "/rollback-" in mr["source_branch"]] == []
    assert seen["running"] == {"eks-dev-1": "1.20.0", "eks-dev-2": "1.20.0"}
    # AND the StatefulSet and the DaemonSet were restarted onto the new (-debug) proxy
    assert "restarted eks-dev-1:data/StatefulSet/redis" in progress
    assert "restarted eks-dev-1:observability/DaemonSet/log-agent" in progress
    tagged = {v for v in seen["proxies"]["eks-dev-1"].values() if not v.startswith("sha256:")}
    assert tagged == {"1.20.0-debug"} or tagged == {"1.20.0-debug", "1.19.3-debug"}
    # AND the prechecks read each HelmRelease through a version its cluster serves
    checks = {c: {r["check"]: r for r in batch["clusters"][c]["prechecks"]} for c in ("eks-dev-1", "eks-dev-2")}
    assert checks["eks-dev-1"]["helm_release"]["status"] == "pass"
    assert "(v2beta2)" in checks["eks-dev-1"]["helm_release"]["message"]
    assert "(v2beta1)" in checks["eks-dev-2"]["helm_release"]["message"]
    # AND the digest-pinned proxies made the post-check a warning, not a failure
    post = {c["check"]: c["status"] for c in batch["clusters"]["eks-dev-1"]["verdict"]["post_checks"]}
    assert post["proxies_on_target_version"] == "warn"


@pytest.mark.parametrize("bad_input, error, mentions", [
    ({"batch": "no-such-batch", "target_version": "1.20.0"}, "UnknownBatch", "no-such-batch"),
    ({"batch": "dev-1", "target_version": "1.20"}, "InvalidInput", "target_version"),
    ({"batch": "dev-1", "target_version": "1.18.0"}, "VersionNotAllowed", "downgrade"),
    ({"batch": "dev-1", "target_version": "1.22.0"}, "VersionNotAllowed", "skips 3 minor"),
    ({"target_version": "1.20.0"}, "InvalidInput", "batch"),
    ({"batch": "dev-1", "target_version": "1.20.0", "soak_minutes": 5}, "InvalidInput", "soak_minutes"),
    ({"batch": "dev-1", "target_version": "1.20.0"}, "PrerequisiteNotMet", "test"),
])
def test_bad_input_fails_at_the_first_state_naming_the_problem_and_changes_nothing(
        world_for: Any, bad_input: dict[str, Any], error: str, mentions: str) -> None:
    # GIVEN the default fleet (batch dev-1 on 1.19.3), whose prerequisite `test` has not run
    world = world_for("default", succeeded_before=[])
    sfn = world.engine.client("stepfunctions")

    # WHEN an execution starts with bad input
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, input=json.dumps(bad_input))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what="the execution to end")

    # THEN it failed in Plan with an error naming the problem
    events = execution_history(sfn, arn)
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    failed = next(e["executionFailedEventDetails"] for e in events if e["type"] == "ExecutionFailed")
    assert entered == ["Action", "Plan", "ReadRefusal", "Refused"]
    assert failed["error"] == error
    assert mentions in failed["cause"]
    assert "stackTrace" not in failed["cause"]
    # AND nothing changed: no run record, no lock, no MR
    _, state = _stores(world)
    assert state.find_run(arn.rsplit(":", 1)[-1]) is None
    assert state.lock_holder("dev-1") is None
    assert world.gitlab.merge_requests("platform/istio-fleet") == []


@pytest.mark.parametrize("raw_input, mentions", [
    ([{"batch": "dev-1", "target_version": "1.20.0"}], "got array"),
    ("dev-1", "got string"),
    (42, "got number"),
    (None, "got null"),
    ({"batch": "d" * 200_000, "target_version": "1.20.0"}, "batch: String should have at most"),
    ({"batch": "dev-1", "target_version": "\uff11.\uff12\uff10.\uff10"}, "ASCII"),
    ({"action": "rollback", "batch": "dev-1", "reason": "r" * 200_000}, "reason: String should have at most"),
], ids=["array", "string", "number", "null", "200KB-batch-name", "full-width-version", "200KB-rollback-reason"])
def test_input_that_is_not_a_small_object_fails_in_plan_with_invalid_input_and_changes_nothing(
        world_for: Any, raw_input: Any, mentions: str) -> None:
    # GIVEN the default fleet (batch dev-1 on 1.19.3)
    world = world_for("default", succeeded_before=[])
    sfn = world.engine.client("stepfunctions")

    # WHEN an execution starts with an input that is not an object, is huge, or spells its version oddly
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, input=json.dumps(raw_input))["executionArn"]
    world.wait_until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what="the execution to end")

    # THEN it failed in Plan (or PlanRollback) with InvalidInput naming the problem, in a short cause
    events = execution_history(sfn, arn)
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    failed = next(e["executionFailedEventDetails"] for e in events if e["type"] == "ExecutionFailed")
    assert sfn.describe_execution(executionArn=arn)["status"] == "FAILED"
    assert entered[-3:-2] in (["Plan"], ["PlanRollback"]) and entered[-2:] == ["ReadRefusal", "Refused"], entered
    assert failed["error"] == "InvalidInput", failed
    assert mentions in failed["cause"]
    assert len(failed["cause"]) < 2_000
    # AND the refusal states carried no copy of the input
    refusal_inputs = [e["stateEnteredEventDetails"].get("input", "") for e in events
                      if e["type"].endswith("StateEntered")
                      and e["stateEnteredEventDetails"]["name"] in ("ReadRefusal", "Refused")]
    assert all(len(i) < 4_000 for i in refusal_inputs)
    # AND nothing changed: no run record, no lock, no MR
    _, state = _stores(world)
    assert state.find_run(arn.rsplit(":", 1)[-1]) is None
    assert state.lock_holder("dev-1") is None
    assert world.gitlab.merge_requests("platform/istio-fleet") == []


def test_webhook_with_wrong_or_missing_token_gets_401_and_resumes_nothing(world_for: Any) -> None:
    # GIVEN an execution waiting on its MR (the reviewer does nothing)
    world = world_for("mr-closed", human={"action": "ignore"})
    sfn = world.engine.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn,
                              input=json.dumps({"batch": "test", "target_version": "1.20.0"}))["executionArn"]
    mr = world.wait_until(lambda: world.gitlab.merge_requests("platform/istio-fleet"), what="the MR")[0]
    _, state = _stores(world)
    world.wait_until(lambda: state.get_task_token(mr["web_url"]), what="the task token")
    assert world.webhook is not None
    body = {"object_kind": "merge_request", "user": {"username": "mallory"},
            "object_attributes": {"iid": mr["iid"], "action": "merge", "url": mr["web_url"],
                                  "merge_commit_sha": "f" * 40}}

    # WHEN someone posts a merge event with a wrong token, and with none
    wrong = requests.post(f"{world.webhook.url}/webhooks/gitlab", json=body, timeout=5,
                          headers={"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": "guess"})
    missing = requests.post(f"{world.webhook.url}/webhooks/gitlab", json=body, timeout=5,
                            headers={"X-Gitlab-Event": "Merge Request Hook"})

    # THEN both get 401, the execution still waits, and the token is still there
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    assert state.get_task_token(mr["web_url"]) is not None
    # AND the real merge, signed by GitLab, resumes it (the same delivery twice is harmless)
    world.gitlab.merge("platform/istio-fleet", mr["iid"])
    world.wait_until(lambda: any(e["type"] == "TaskSucceeded" and "merge_commit_sha" in
                                 e["taskSucceededEventDetails"].get("output", "")
                                 for e in execution_history(sfn, arn)),
                     what="the merge to resume the execution")
    delivery = world.gitlab.hook_deliveries[-1]
    again = requests.post(f"{world.webhook.url}/webhooks/gitlab", json=delivery.payload, timeout=5, headers={
        "X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": world.webhook_token,
        "X-Gitlab-Event-UUID": delivery.event_uuid})
    assert again.status_code == 200
    sfn.stop_execution(executionArn=arn)


def test_a_lost_merge_webhook_is_found_by_the_reconciler_and_the_upgrade_is_validated(rehearse: Rehearse) -> None:
    # GIVEN the reviewer merges the MR and GitLab's merge webhook never arrives (lost-merge-webhook.yaml)
    expected = scenario("lost-merge-webhook")
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        _, state = _stores(world)
        seen["lock"] = state.lock_holder(expected.batch)
        seen["deliveries"] = list(world.gitlab.hook_deliveries)
        seen["reconciled"] = [text for _, text in world.human_log if "reconciler found" in text]
        seen["versions"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1] for c in expected.fleet}

    # WHEN it is rehearsed (the reconciler runs every gitlab.reconcile_minutes of scenario time)
    summary, progress = rehearse("lost-merge-webhook", inspect=inspect)

    # THEN no merge webhook was delivered, yet the run resumed on the reconciler's word and was validated
    batch = summary["batches"][0]
    assert summary["status"] == "SUCCEEDED", progress
    assert expectation_problems(expected, batch) == [], progress
    assert not [d for d in seen["deliveries"] if d.event == "Merge Request Hook"]
    assert set(summary["webhook_responses"]) <= {200}  # only Note Hooks of GUARD's own comments
    assert len(seen["reconciled"]) == 1 and "merge delivered" in seen["reconciled"][0], progress
    assert seen["versions"] == {"eks-test": "1.20.0"}
    assert seen["lock"] is None


def test_a_fast_forward_merge_without_a_merge_commit_is_still_a_merge(rehearse: Rehearse) -> None:
    # GIVEN a project that merges by fast-forward: GitLab sends `merge_commit_sha: null`
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        registry, _ = _stores(world)
        seen["versions"] = {c: registry.get(c).current_istio_version for c in ("eks-dev-1", "eks-dev-2")}
        seen["merge_sha"] = [d.payload["object_attributes"]["merge_commit_sha"] for d in world.gitlab.hook_deliveries
                             if d.payload.get("object_kind") == "merge_request"]

    # WHEN the reviewer merges the upgrade MR
    summary, progress = rehearse("default", inspect=inspect, human={"action": "merge", "after_seconds": 300,
                                                                    "fast_forward": True})

    # THEN the execution resumes, validates and records the upgrade like any merge
    assert seen["merge_sha"] == [None]
    assert summary["status"] == "SUCCEEDED", progress
    assert seen["versions"] == {"eks-dev-1": "1.20.0", "eks-dev-2": "1.20.0"}
