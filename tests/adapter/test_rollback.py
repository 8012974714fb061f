"""Rollback MR, its verification and manual rollback: real python-gitlab against the GitLab simulator,
the kubernetes client against the Kubernetes simulator, DynamoDB on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from guard.core.models import UpgradeRecord
from guard.core.run import ManualRollbackInput
from guard.errors import (
    NothingToRollBack,
    RollbackMergeRequestClosed,
    RollbackMergeRequestTimeout,
    TaskTokenNotStored,
    TransientError,
)
from guard.gitops.helm_release import read_chart_version
from guard.ports import FileChange
from guard.services.change import rollback_branch
from guard.services.plan import BatchPlanner
from guard.services.rollback import RollbackService
from guard.services.webhook import WebhookService
from guard.stores.failure import AnalysisRecord, FailureStore
from guard.stores.state import StateStore
from guard.vocabulary.stages import Stage
from moto import mock_aws

from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.adapter.failure_world import (
    CLUSTERS,
    NEW,
    OLD,
    PROJECT,
    RELEASE,
    RUN_ID,
    TOKEN,
    World,
    build,
    path,
    refusing_writes,
)
from tests.support.clock import FakeClock


@pytest.fixture
def aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def sims() -> Iterator[tuple[GitLabSimulator, KubernetesSimulator, FakeClock]]:
    clock = FakeClock()
    with GitLabSimulator(token=TOKEN, clock=clock) as gitlab, KubernetesSimulator(clock, pod_ready_seconds=5) as k8s:
        yield gitlab, k8s, clock


def world_with(sims, **config) -> World:
    gitlab, k8s, clock = sims
    return build(gitlab, k8s, clock, **config)


@pytest.fixture
def world(aws, sims) -> World:
    return world_with(sims)


def service(w: World, **kwargs) -> RollbackService:
    return RollbackService(w.config, w.registry, w.state, w.failures, w.repo, w.clock,
                           connector=w.connector, **kwargs)


def planner(w: World) -> BatchPlanner:
    return BatchPlanner(w.config, w.registry, w.state, w.clock, failures=w.failures)


def manual(reason: str) -> ManualRollbackInput:
    return ManualRollbackInput(action="rollback", batch="prod-canary", reason=reason)


def analysed(w: World) -> None:
    w.failures.put_analysis(AnalysisRecord(
        run_id=RUN_ID, available=True, provider="openai", model="gpt-4o", at=w.clock.now(),
        summary="p95 latency rose 24% after istiod 1.21.0.", root_cause="Larger xDS pushes restart sidecars.",
        evidence=["latency_p95 212.6 → 264.5"], recommended_actions=["Roll back", "Raise proxy CPU limits"]))


def test_rollback_mr_restores_the_failing_cluster_only_keeping_the_file_as_it_was(world):
    # GIVEN a merged upgrade where eks-prod-1 failed validation and the analysis is stored
    analysed(world)

    # WHEN the rollback is opened
    opened = service(world).open(RUN_ID, "token-rb-1")

    # THEN one MR from the deterministic branch sets eks-prod-1 back, byte for byte as before the upgrade
    branch = rollback_branch("guard/istio-upgrade", "prod-canary", RUN_ID)
    assert branch == "guard/istio-upgrade/rollback-prod-canary-7f3a9c2e-" + branch.rsplit("-", 1)[1]
    assert opened.status == "waiting_for_merge" and opened.versions == {"eks-prod-1": OLD}
    assert world.gitlab.file_at(PROJECT, path("eks-prod-1"), branch) == RELEASE.format(cluster="eks-prod-1",
                                                                                        version=OLD)
    # AND the passing cluster is left on the new version
    assert read_chart_version(world.gitlab.file_at(PROJECT, path("eks-prod-2"), branch) or "") == NEW
    rollback_mr = next(m for m in world.gitlab.merge_requests(PROJECT) if m["source_branch"] == branch)
    assert rollback_mr["title"] == f"Roll back Istio {NEW} → {OLD} on batch prod-canary"
    assert opened.merge_request_url == rollback_mr["web_url"]
    # AND the description carries the violation numbers and the analysis in the seed's shape
    text = rollback_mr["description"]
    assert "| latency_p95 | fail | 212.6 | 264.5 | 10 | latency_p95 212.6 → 264.5 (+24.4%) exceeds +10% |" in text
    for heading in ("## AI Failure Analysis", "### Summary", "### Root Cause Analysis", "### Recommended Actions"):
        assert heading in text
    assert "Larger xDS pushes restart sidecars." in text and "1. Roll back" in text
    # AND the token waits on the rollback MR, the run says so, the upgrade MR links to it
    token = world.state.get_task_token(rollback_mr["web_url"])
    assert token is not None and (token.kind, token.task_token, token.run_id) == ("rollback", "token-rb-1", RUN_ID)
    assert world.run().stage == Stage.WAITING_FOR_ROLLBACK_MERGE
    assert any(rollback_mr["web_url"] in n for n in world.gitlab.notes(PROJECT, world.upgrade_iid))


def test_a_retried_open_reuses_the_branch_and_mr_without_a_new_commit(world):
    # GIVEN the rollback MR is open
    first = service(world).open(RUN_ID, "token-1")
    commits = sum(1 for r in world.gitlab.requests if r.method == "POST" and r.path.endswith("/commits"))

    # WHEN the task runs again with a new token
    again = service(world).open(RUN_ID, "token-2")

    # THEN the same MR is returned, nothing is committed twice, and the new token replaces the old
    assert again.merge_request_url == first.merge_request_url
    assert len(world.gitlab.merge_requests(PROJECT)) == 2  # the upgrade MR and one rollback MR
    assert sum(1 for r in world.gitlab.requests if r.method == "POST" and r.path.endswith("/commits")) == commits
    assert world.state.get_task_token(first.merge_request_url or "").task_token == "token-2"


def test_without_an_analysis_the_mr_says_analysis_unavailable(world):
    # GIVEN the LLM was down: the stored analysis is unavailable
    world.failures.put_analysis(AnalysisRecord(run_id=RUN_ID, available=False, reason="openai timed out",
                                               at=world.clock.now()))

    # WHEN the rollback is opened
    opened = service(world).open(RUN_ID, "t")

    # THEN the MR still opens, and says why there is no analysis
    mr = next(m for m in world.gitlab.merge_requests(PROJECT) if m["web_url"] == opened.merge_request_url)
    assert "analysis unavailable: openai timed out" in mr["description"]


def test_batch_scope_rolls_back_every_cluster(aws, sims):
    # GIVEN rollback.scope is batch
    w = world_with(sims, rollback={"scope": "batch"})

    # WHEN the rollback is opened
    opened = service(w).open(RUN_ID, "t")

    # THEN both clusters go back
    branch = rollback_branch(w.config.gitlab.branch_prefix, "prod-canary", RUN_ID)
    assert opened.versions == dict.fromkeys(CLUSTERS, OLD) and opened.cluster_count == len(CLUSTERS)
    assert all(read_chart_version(w.gitlab.file_at(PROJECT, path(c), branch) or "") == OLD for c in CLUSTERS)


def test_the_rollback_tasks_result_names_the_first_clusters_whatever_the_batchs_size(aws, sims):
    # GIVEN a batch rollback of 300 clusters with 63-character ids (the task's result lands in its
    # TaskSubmitted event, which holds 256 KB like any state's data)
    w = world_with(sims, rollback={"scope": "batch"})
    run = w.run()
    more = [f"eks-{'x' * 50}-{i:08d}" for i in range(300 - len(CLUSTERS))]
    w.repo.commit_files(PROJECT, "main", [FileChange(path=path(c), content=RELEASE.format(cluster=c, version=NEW))
                                          for c in more], "more clusters")
    template = w.registry.get(CLUSTERS[0])
    for c in more:
        w.registry.put(template.model_copy(update={"cluster_id": c, "flux_config_path": path(c)}))
    w.state.put_run(run.model_copy(update={"clusters": [*run.clusters, *more],
                                           "from_versions": {**run.from_versions, **dict.fromkeys(more, OLD)}}))

    # WHEN the rollback is opened
    opened = service(w).open(RUN_ID, "t")

    # THEN the result names the first 10 clusters and their versions, counts all 300, and stays small
    assert (len(opened.clusters), opened.cluster_count, len(opened.versions)) == (10, 300, 10)
    assert len(json.dumps(opened.model_dump(mode="json"))) < 2_000
    # AND the rollback record holds every cluster's version
    assert w.failures.get_rollback(RUN_ID).versions == dict.fromkeys([*CLUSTERS, *more], OLD)


def test_whether_to_open_a_rollback_mr_is_carried_by_the_plan(aws, sims):
    # GIVEN rollback.auto_create_mr is false (the state machine alone decides on it: RollbackMergeRequestWanted)
    w = world_with(sims, rollback={"auto_create_mr": False})
    for c in CLUSTERS:
        w.registry.record_upgrade(c, UpgradeRecord(run_id="run-earlier", from_version=OLD, to_version=NEW,
                                                   outcome="succeeded", at=datetime(2025, 2, 1, tzinfo=UTC)), NEW)
    w.state.release_lock("prod-canary", RUN_ID)

    # WHEN a manual rollback is planned
    plan = planner(w).plan_rollback(manual("why"), run_id="manual-0", execution_arn="arn:x")

    # THEN the plan says no MR, and carries no null key the state machine could mistake for a value
    assert plan.rollback_mr is False
    assert plan.payload()["rollback_mr"] is False and None not in plan.payload().values()


def test_manual_approval_is_stated_in_the_mr(aws, sims):
    # GIVEN rollback.require_manual_approval
    w = world_with(sims, rollback={"require_manual_approval": True})

    # WHEN the rollback is opened THEN its description asks a Maintainer to review and merge
    opened = service(w).open(RUN_ID, "t")
    mr = next(m for m in w.gitlab.merge_requests(PROJECT) if m["web_url"] == opened.merge_request_url)
    assert "**Manual approval required**" in mr["description"]


def test_closing_the_rollback_mr_fails_the_wait_with_its_own_error(world):
    # GIVEN the rollback MR waits for a merge
    opened = service(world).open(RUN_ID, "token-rb")
    iid = int((opened.merge_request_url or "").rsplit("/", 1)[1])
    world.gitlab.add_hook(PROJECT, "http://127.0.0.1:9/unused", "hook")  # payloads are recorded

    # WHEN a reviewer closes it and the webhook receives the close
    world.gitlab.close(PROJECT, iid)
    payload = world.gitlab.hook_deliveries[-1].payload
    result = WebhookService(world.state, world.sfn, world.clock).handle("Merge Request Hook", "d-1",
                                                                        json.dumps(payload))

    # THEN the execution is failed with RollbackMergeRequestClosed, saying the clusters stay on the new version
    assert result.status == 200
    assert [f["error"] for f in world.sfn.failures] == ["RollbackMergeRequestClosed"]
    assert "stay on the new version" in world.sfn.failures[0]["cause"]


def test_verify_records_rolled_back_once_flux_runs_the_previous_version(world):
    # GIVEN the rollback MR was merged
    opened = service(world).open(RUN_ID, "t")
    iid = int((opened.merge_request_url or "").rsplit("/", 1)[1])
    world.gitlab.merge(PROJECT, iid)

    # WHEN Flux has not reconciled yet, the first poll waits and sets the deadline
    first = service(world).verify(RUN_ID, None)
    assert not first.done and "eks-prod-1" in first.waiting_on[0]

    # AND once Flux applies the previous version and istiod rolls
    world.kubernetes.apply_chart_version("eks-prod-1", OLD, reconcile_after_seconds=10)
    world.clock.advance(60)
    done = service(world).verify(RUN_ID, first.deadline, {"merge_commit_sha": "abc"})

    # THEN the outcome is rolled back, everywhere a person looks
    assert (done.done, done.status, done.error) == (True, "rolled_back", "RolledBack")
    assert "eks-prod-1 → 1.20.3" in (done.cause or "")
    run = world.run()
    assert (run.status.value, run.outcome, run.stage, run.error) == ("failed", "rolled_back", "done", "RolledBack")
    assert world.state.get_batch_result("prod-canary", NEW).status == "rolled_back"
    history = world.registry.get("eks-prod-1").upgrade_history
    assert [(h.from_version, h.to_version, h.outcome) for h in history] == [(NEW, OLD, "rolled_back")]
    assert world.state.lock_holder("prod-canary") is None
    assert any(n.startswith("✅ GUARD") for n in world.gitlab.notes(PROJECT, iid))
    # AND a retried poll returns the same outcome without writing history twice
    assert service(world).verify(RUN_ID, first.deadline).status == "rolled_back"
    assert len(world.registry.get("eks-prod-1").upgrade_history) == 1


def test_a_retried_verify_after_a_crash_releases_the_lock_and_comments_once(world):
    # GIVEN the rollback was verified, but the task died after storing the outcome and before the lock
    # was released (the state machine retries the task)
    opened = service(world).open(RUN_ID, "t")
    iid = int((opened.merge_request_url or "").rsplit("/", 1)[1])
    world.gitlab.merge(PROJECT, iid)
    world.kubernetes.apply_chart_version("eks-prod-1", OLD, reconcile_after_seconds=0)
    world.clock.advance(60)
    done = service(world).verify(RUN_ID, None)
    world.state.acquire_lock("prod-canary", RUN_ID, world.clock.now(), 1)
    notes = len(world.gitlab.notes(PROJECT, iid))

    # WHEN the retry runs
    again = service(world).verify(RUN_ID, done.deadline)

    # THEN it reports the same outcome, the lock is free, and the MR got no second comment
    assert (again.done, again.status, again.error) == (True, "rolled_back", "RolledBack")
    assert world.state.lock_holder("prod-canary") is None
    assert len(world.gitlab.notes(PROJECT, iid)) == notes


def test_verify_past_the_deadline_records_rollback_failed(world):
    # GIVEN the rollback was merged but Flux is stuck
    service(world).open(RUN_ID, "t")
    world.kubernetes.set_flux_stuck("eks-prod-1")
    first = service(world).verify(RUN_ID, None)

    # WHEN the deadline passes
    # (the Flux wait plus the sidecar waves' own time, since rollout sequencing is on by default)
    world.clock.advance((world.config.validation.flux_sync_timeout_minutes
                         + world.config.execution.sidecar_restart_timeout_minutes) * 60 + 1)
    done = service(world).verify(RUN_ID, first.deadline)

    # THEN the run ends rollback_failed, saying what each cluster still waits on
    assert (done.status, done.error) == ("rollback_failed", "RollbackFailed")
    assert "not verified within 45 min: eks-prod-1: HelmRelease" in (done.cause or "")
    assert world.state.get_batch_result("prod-canary", NEW).status == "rollback_failed"
    assert world.registry.get("eks-prod-1").current_istio_version == OLD  # unchanged: never set to NEW


def test_manual_rollback_plans_the_batch_s_last_succeeded_upgrade(world):
    # GIVEN the batch's last upgrade (OLD -> NEW) succeeded and is deployed
    for c in CLUSTERS:
        world.registry.record_upgrade(c, UpgradeRecord(run_id="run-earlier", from_version=OLD, to_version=NEW,
                                                       outcome="succeeded", at=datetime(2025, 2, 1, tzinfo=UTC)),
                                      NEW)
    world.state.release_lock("prod-canary", RUN_ID)

    # WHEN someone asks for a manual rollback of the batch
    plan = planner(world).plan_rollback(manual("p99 alerts from the payments team"), run_id="manual-1",
                                        execution_arn="arn:x")

    # THEN the plan rolls both clusters back from NEW to OLD, holds the lock, and the MR opens for the batch
    assert (plan.target_version, plan.clusters, plan.rollback_to) == (NEW, list(CLUSTERS), dict.fromkeys(CLUSTERS, OLD))
    assert world.state.lock_holder("prod-canary") == "manual-1"
    opened = service(world).open("manual-1", "t")
    assert opened.versions == dict.fromkeys(CLUSTERS, OLD)
    mr = next(m for m in world.gitlab.merge_requests(PROJECT) if m["web_url"] == opened.merge_request_url)
    assert "(manual rollback)" in mr["description"] and "p99 alerts from the payments team" in mr["description"]


def test_manual_rollback_without_a_deployed_upgrade_is_refused(world):
    # GIVEN a batch with no succeeded upgrade in its history
    # WHEN / THEN nothing is planned and the lock is not taken
    with pytest.raises(NothingToRollBack, match="prod-canary"):
        planner(world).plan_rollback(manual("why"), run_id="manual-2", execution_arn="arn:x")
    assert world.state.lock_holder("prod-canary") == RUN_ID


# ------------------------------------------------------------------ GUARD stops watching a rollback MR: never closed


def test_a_rollback_mr_whose_wait_timed_out_is_left_open_with_a_comment_and_an_alarm(world):
    # GIVEN the rollback MR is open and nobody merged it
    alarms: list[str] = []
    opened = service(world, needs_person=alarms.append).open(RUN_ID, "token-rb")
    url = opened.merge_request_url or ""
    iid = int(url.rsplit("/", 1)[1])

    # WHEN the wait times out
    with pytest.raises(RollbackMergeRequestTimeout, match="left it open for a person") as raised:
        service(world, needs_person=alarms.append).after_timeout(RUN_ID)

    # THEN the MR stays open, saying GUARD stopped watching and a person must act; the alarm is raised once
    assert world.repo.get_merge_request(PROJECT, iid).state == "opened"
    assert "GUARD stopped watching" in world.gitlab.notes(PROJECT, iid)[-1]
    assert "a person must act" in world.gitlab.notes(PROJECT, iid)[-1]
    assert len(alarms) == 1 and url in alarms[0]
    # AND the error says the clusters still run the version that failed validation; the dead token is gone
    assert f"still run {NEW}" in str(raised.value)
    assert world.state.get_task_token(url) is None


def test_a_rollback_mr_merged_but_unseen_when_the_wait_timed_out_is_verified(world):
    # GIVEN the rollback MR was merged, but its webhook never arrived
    alarms: list[str] = []
    opened = service(world).open(RUN_ID, "token-rb")
    url = opened.merge_request_url or ""
    sha = world.gitlab.merge(PROJECT, int(url.rsplit("/", 1)[1]), deliver_hooks=False)

    # WHEN the wait times out
    merged = service(world, needs_person=alarms.append).after_timeout(RUN_ID)

    # THEN the execution goes on as if the merge had been delivered: no alarm, and the rollback is verified
    assert (merged.merge_commit_sha, merged.merge_request_url) == (sha, url)
    assert alarms == []
    world.kubernetes.apply_chart_version("eks-prod-1", OLD, reconcile_after_seconds=0)
    world.clock.advance(60)
    done = service(world).verify(RUN_ID, None, merged.model_dump())
    assert (done.done, done.status) == (True, "rolled_back")


def test_a_rollback_mr_closed_but_unseen_when_the_wait_timed_out_fails_as_closed(world):
    opened = service(world).open(RUN_ID, "token-rb")
    world.gitlab.close(PROJECT, int((opened.merge_request_url or "").rsplit("/", 1)[1]), deliver_hooks=False)
    with pytest.raises(RollbackMergeRequestClosed, match=f"still run {NEW}"):
        service(world).after_timeout(RUN_ID)


def test_a_rollback_mr_whose_token_could_not_be_stored_is_left_open_with_a_comment_and_an_alarm(world):
    # GIVEN DynamoDB refuses the task token
    alarms: list[str] = []
    rollbacks = RollbackService(world.config, world.registry, StateStore(refusing_writes()), world.failures,
                                world.repo, world.clock, needs_person=alarms.append)

    # WHEN the rollback is opened THEN the task fails naming why, so the execution fails clearly
    with pytest.raises(TaskTokenNotStored, match="left open, unwatched"):
        rollbacks.open(RUN_ID, "token-rb")

    # AND the rollback MR is open, saying GUARD is not watching it and a person must act; the alarm is raised
    rollback_mr = next(m for m in world.gitlab.merge_requests(PROJECT) if "rollback" in m["source_branch"])
    assert rollback_mr["state"] == "opened"
    assert "GUARD is not watching it" in world.gitlab.notes(PROJECT, rollback_mr["iid"])[-1]
    assert len(alarms) == 1 and rollback_mr["web_url"] in alarms[0]


def test_a_rollback_task_that_fails_after_storing_its_token_leaves_no_token_behind(world):
    # GIVEN DynamoDB refuses the rollback record (after the MR and its token were stored)
    rollbacks = RollbackService(world.config, world.registry, world.state, FailureStore(refusing_writes("ROLLBACK")),
                                world.repo, world.clock)

    # WHEN the rollback is opened THEN the task fails, and no token is left on the rollback MR
    with pytest.raises(TransientError):
        rollbacks.open(RUN_ID, "token-rb")
    rollback_mr = next(m for m in world.gitlab.merge_requests(PROJECT) if "rollback" in m["source_branch"])
    assert world.state.get_task_token(rollback_mr["web_url"]) is None


def test_a_timed_out_rollback_wait_leaves_no_token_even_when_gitlab_cannot_be_asked(world):
    opened = service(world).open(RUN_ID, "token-rb")
    world.gitlab.fail_next("GET", r"/merge_requests/\d+$", 503, times=10)  # longer than the retry policy tries
    with pytest.raises(TransientError):
        service(world).after_timeout(RUN_ID)
    assert world.state.get_task_token(opened.merge_request_url or "") is None
