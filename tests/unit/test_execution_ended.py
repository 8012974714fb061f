"""The end of every execution is recorded (services/ending.py) against moto DynamoDB: a run the
workflow could not record (stopped, timed out, failed outside a Catch) is recorded failed with
what ended it; one it recorded keeps its outcome. Either way no lock and no token of the run stays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import boto3
import pytest
from guard.core.models import Cluster
from guard.core.run import ExecutionInput, RunRecord, RunStatus
from guard.errors import ExecutionStopped, ExecutionTimedOut, OutcomeNotRecorded
from guard.ports import FileChange
from guard.services.ending import EndingService, ExecutionEnded
from guard.services.finish import FinishService
from guard.services.outcome import OutcomeRecorder
from guard.stores.failure import FailureStore, RollbackRecord
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, TaskTokenRecord
from guard.vocabulary.outcomes import ChangeKind, Outcome, RollbackStatus
from guard.vocabulary.stages import FailedStage, Stage
from moto import mock_aws

from tests.support.clock import FakeClock

PROJECT = "platform/istio-fleet"
ARN = "arn:aws:states:us-east-1:123456789012:execution:guard-upgrade-batch:run-1"
MR = "https://gitlab.example.com/platform/istio-fleet/-/merge_requests/7"
ROLLBACK_MR = "https://gitlab.example.com/platform/istio-fleet/-/merge_requests/8"


class FakeRepo:
    """Only what OutcomeRecorder uses of `GitOpsRepo`: comments, kept per MR."""

    def __init__(self) -> None:
        self.comments: list[tuple[int, str]] = []

    def comment(self, project: str, iid: int, body: str) -> None:
        self.comments.append((iid, body))


@dataclass
class World:
    service: EndingService
    state: StateStore
    failures: FailureStore
    registry: ClusterRegistry
    repo: FakeRepo
    clock: FakeClock
    notified: list[tuple[str, str, str | None]] = field(default_factory=list)

    def run(self, stage: Stage = Stage.WAITING_FOR_MERGE) -> RunRecord:
        """run-1 of batch b1, holding the lock, its upgrade MR token stored."""
        run = RunRecord(run_id="run-1", execution_arn=ARN, batch="b1", target_version="1.20.0", clusters=["c1"],
                        from_versions={"c1": "1.19.3"}, gitlab_project=PROJECT,
                        options=ExecutionInput(batch="b1", target_version="1.20.0"), started_at=self.clock.now(),
                        stage=stage, merge_request_url=MR, merge_request_iid=7)
        self.state.acquire_lock("b1", "run-1", self.clock.now(), 200, execution_arn=ARN)
        self.state.put_run(run)
        self.state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="tok-upgrade", run_id="run-1"),
                                  self.clock.now(), 100)
        return run


def event(status: str, name: str = "run-1", arn: str = ARN, **extra: object) -> ExecutionEnded:
    """The `detail` of the EventBridge event, as Step Functions sends it."""
    return ExecutionEnded.model_validate({
        "executionArn": arn, "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:guard",
        "name": name, "status": status, "startDate": 1_740_819_600_000, "stopDate": 1_740_823_200_000,
        "input": "{}", "output": None, **extra})


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        ddb = boto3.resource("dynamodb")
        create_tables(ddb, "registry", "state")
        registry, state = ClusterRegistry(ddb.Table("registry"), "example"), StateStore(ddb.Table("state"))
        failures = FailureStore(ddb.Table("state"))
        registry.put(Cluster(cluster_id="c1", batch_id="b1", environment="dev", region="us-east-1",
                             gitlab_project=PROJECT, flux_config_path="f.yaml", current_istio_version="1.19.3"))
        clock, repo = FakeClock(on_sleep="refuse"), FakeRepo()
        notified: list[tuple[str, str, str | None]] = []
        service = EndingService(state, failures, OutcomeRecorder(registry, state, repo, clock),  # type: ignore[arg-type]
                                notify=lambda run_id, name, detail: notified.append((run_id, name, detail)))
        yield World(service, state, failures, registry, repo, clock, notified)


def test_a_stopped_execution_is_recorded_failed_and_leaves_nothing_behind(world: World) -> None:
    # GIVEN run-1 waits on its upgrade MR, holding the lock and a token
    world.run(Stage.WAITING_FOR_MERGE)
    # WHEN its execution is stopped from the console
    result = world.service.ended(event("ABORTED", cause="stopped by alice"))
    # THEN the run is failed with ExecutionStopped, saying when, where and what was said
    run = world.state.get_run("run-1")
    assert (run.status, run.outcome, run.error) == (RunStatus.FAILED, Outcome.FAILED, ExecutionStopped.__name__)
    assert run.failed_stage == FailedStage.MERGE
    assert "stopped at 2025-03-01T10:00:00+00:00" in (run.cause or "") and "alice" in (run.cause or "")
    # AND the lock is free, the token gone, the MR told, people notified
    assert world.state.lock_holder("b1") is None
    assert world.state.get_task_token(MR) is None
    assert result.action == "recorded" and result.tokens_deleted == [MR]
    assert [iid for iid, _ in world.repo.comments] == [7] and "no longer watches" in world.repo.comments[0][1]
    assert [(r, e) for r, e, _ in world.notified] == [("run-1", "failed")]
    # AND the batch result says failed (a prerequisite of another batch is not met by it)
    result_at = world.state.get_batch_result("b1", "1.20.0")
    assert result_at is not None and result_at.status == Outcome.FAILED


def test_a_timed_out_execution_is_recorded_as_timed_out(world: World) -> None:
    world.run(Stage.SOAKING)
    world.service.ended(event("TIMED_OUT"))
    run = world.state.get_run("run-1")
    assert (run.error, run.failed_stage) == (ExecutionTimedOut.__name__, FailedStage.VALIDATE)
    assert world.state.lock_holder("b1") is None


def test_a_failure_outside_every_catch_keeps_the_executions_error(world: World) -> None:
    world.run(Stage.WAITING_FOR_FLUX)
    world.service.ended(event("FAILED", error="States.Runtime", cause="bad path $.x"))
    run = world.state.get_run("run-1")
    assert run.error == "States.Runtime" and "bad path $.x" in (run.cause or "")
    assert world.state.lock_holder("b1") is None


def test_a_success_that_did_not_record_its_run_is_not_called_a_success(world: World) -> None:
    # GIVEN a run still "running" WHEN its execution succeeded THEN GUARD does not claim the upgrade
    world.run(Stage.SOAKING)
    world.service.ended(event("SUCCEEDED"))
    run = world.state.get_run("run-1")
    assert (run.outcome, run.error) == (Outcome.FAILED, OutcomeNotRecorded.__name__)
    assert world.registry.get("c1").current_istio_version == "1.19.3"


def test_the_decision_and_rollback_tokens_of_the_run_are_deleted(world: World) -> None:
    # GIVEN run-1 waits on its rollback MR; a decision token was left on the upgrade MR
    world.run(Stage.WAITING_FOR_ROLLBACK_MERGE)
    now = world.clock.now()
    world.state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="tok-decision", run_id="run-1",
                                               kind=ChangeKind.DECISION), now, 100)
    world.failures.put_rollback(RollbackRecord(run_id="run-1", batch="b1", reason="validation failed",
                                               clusters=["c1"], versions={"c1": "1.19.3"}, rolled_back_from="1.20.0",
                                               status=RollbackStatus.WAITING_FOR_MERGE, merge_request_url=ROLLBACK_MR,
                                               merge_request_iid=8, at=now))
    world.state.put_task_token(TaskTokenRecord(merge_request_url=ROLLBACK_MR, task_token="tok-rollback",
                                               run_id="run-1", kind=ChangeKind.ROLLBACK), now, 100)
    # WHEN the execution is stopped
    world.service.ended(event("ABORTED"))
    # THEN neither token stays, and the run is failed at the rollback
    assert world.state.get_task_token(MR) is None and world.state.get_task_token(ROLLBACK_MR) is None
    assert world.state.get_run("run-1").failed_stage == FailedStage.ROLLBACK


def test_an_event_delivered_twice_records_once(world: World) -> None:
    # GIVEN a stopped execution already recorded by its event
    world.run()
    world.service.ended(event("ABORTED"))
    first = world.state.get_run("run-1")
    # WHEN EventBridge delivers the event again, later
    world.clock.advance(600)
    again = world.service.ended(event("ABORTED"))
    # THEN the record is unchanged, and nobody is told twice
    assert world.state.get_run("run-1") == first
    assert again.action == "cleaned"
    assert len(world.repo.comments) == 1 and len(world.notified) == 1


def test_a_run_the_workflow_recorded_keeps_its_outcome(world: World) -> None:
    # GIVEN RecordFailure recorded run-1 failed at flux, but a crash left the lock and a token behind
    world.run(Stage.WAITING_FOR_FLUX)
    FinishService(world.registry, world.state, None, world.clock).fail("run-1", "flux", {"Error": "FluxSyncTimeout"})
    world.state.acquire_lock("b1", "run-1", world.clock.now(), 200, execution_arn=ARN)
    world.state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="tok", run_id="run-1"),
                               world.clock.now(), 100)
    recorded = world.state.get_run("run-1")
    # WHEN the execution's FAILED event arrives
    result = world.service.ended(event("FAILED", error="FluxSyncTimeout"))
    # THEN the outcome stays, the lock and token are gone, and nobody is told again
    assert world.state.get_run("run-1") == recorded
    assert world.state.lock_holder("b1") is None and world.state.get_task_token(MR) is None
    assert result.action == "cleaned" and world.notified == []


def test_a_successful_run_keeps_its_success(world: World) -> None:
    world.run(Stage.SOAKING)
    FinishService(world.registry, world.state, None, world.clock).succeed("run-1", None)
    world.service.ended(event("SUCCEEDED"))
    run = world.state.get_run("run-1")
    assert run.outcome == Outcome.SUCCEEDED and run.error is None


def test_an_execution_without_a_run_has_nothing_to_do(world: World) -> None:
    # GIVEN Plan refused the execution before any record (BatchLocked, a bad input)
    # WHEN its FAILED event arrives THEN nothing is written, and the lock of the batch stays its holder's
    world.run()
    result = world.service.ended(event("FAILED", name="refused-run", arn=ARN.replace("run-1", "refused-run")))
    assert result.action == "unknown_run"
    assert world.state.lock_holder("b1") == "run-1" and world.notified == []


def test_a_lock_taken_by_a_plan_that_could_not_record_its_run_is_freed(world: World) -> None:
    # GIVEN Plan took the lock of batch b2 for "lost-run", then DynamoDB refused its run record
    world.state.acquire_lock("b2", "lost-run", world.clock.now(), 200, execution_arn=ARN.replace("run-1", "lost-run"))
    # AND another batch is locked by run-1
    world.run()

    # WHEN the FAILED event of that execution arrives, with its input naming the batch
    result = world.service.ended(event("FAILED", name="lost-run", arn=ARN.replace("run-1", "lost-run"),
                                       input='{"batch": "b2", "target_version": "1.20.0"}'))

    # THEN its lock is released (no run to record), and a lock it does not hold stays
    assert result.action == "unknown_run"
    assert world.state.lock_holder("b2") is None
    assert world.state.lock_holder("b1") == "run-1"
    world.service.ended(event("FAILED", name="lost-run", arn=ARN.replace("run-1", "lost-run"),
                              input='{"batch": "b1"}'))
    assert world.state.lock_holder("b1") == "run-1"


def test_a_same_named_execution_of_another_machine_is_not_this_run(world: World) -> None:
    world.run()
    result = world.service.ended(event("ABORTED", arn=ARN.replace("upgrade-batch", "other")))
    assert result.action == "other_execution"
    assert world.state.get_run("run-1").status == RunStatus.RUNNING
    assert world.state.lock_holder("b1") == "run-1"


def test_stopped_after_a_day_says_when(world: World) -> None:
    world.run()
    world.clock.advance(timedelta(days=1).total_seconds())
    world.service.ended(event("ABORTED"))
    assert world.state.get_run("run-1").finished_at == world.clock.now()


def test_a_later_run_s_token_on_the_same_mr_survives_the_end_of_an_earlier_run(world: World) -> None:
    # GIVEN run-1 waited on MR 7, and run-2 (the same batch and version, hence the same branch and MR) waits on it now
    world.run(Stage.WAITING_FOR_MERGE)
    world.state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="tok-run-2", run_id="run-2"),
                               world.clock.now(), 100)
    # WHEN run-1 is recorded failed (RecordFailure), then its execution's end arrives
    FinishService(world.registry, world.state, None, world.clock).fail("run-1", "merge", {"Error": "States.TaskFailed"})
    result = world.service.ended(event("FAILED"))
    # THEN run-2's token is still there: neither the outcome recorder nor the end of run-1 deleted it
    token = world.state.get_task_token(MR)
    assert token is not None and token.run_id == "run-2"
    assert result.tokens_deleted == []


def test_a_stop_closes_the_open_upgrade_mr_and_leaves_an_open_rollback_mr_to_a_person(world: World) -> None:
    from guard.adapters.gitlab_repo import GitLabRepo
    from guard.retry import RetryPolicy

    from sandbox.sims.gitlab_sim import GitLabSimulator

    with GitLabSimulator(token="t") as gitlab:
        # GIVEN an open upgrade MR of run-1 (still waiting on its merge) and, from an earlier run, a
        # rollback MR of run-2 that waits on a person
        gitlab.add_project(PROJECT, {"f.yaml": "x: 1\n"})
        repo = GitLabRepo.from_token(gitlab.url, "t", retry=RetryPolicy(sleep=lambda _: None))
        for branch in ("guard/upgrade", "guard/rollback"):
            repo.ensure_branch(PROJECT, branch, "main")
            repo.commit_files(PROJECT, branch, [FileChange(path="f.yaml", content=branch)], "m")
        upgrade = repo.ensure_merge_request(PROJECT, "guard/upgrade", "main", "Upgrade", "d")
        rollback = repo.ensure_merge_request(PROJECT, "guard/rollback", "main", "Rollback", "d")
        alarms: list[str] = []
        service = EndingService(world.state, world.failures, OutcomeRecorder(world.registry, world.state, repo,
                                                                             world.clock),
                                repo=repo, needs_person=alarms.append)
        run = world.run(Stage.WAITING_FOR_MERGE)
        run.merge_request_iid, run.merge_request_url = upgrade.iid, upgrade.web_url
        world.state.put_run(run)

        # WHEN run-1's execution is stopped from the console
        service.ended(event("ABORTED"))

        # THEN its upgrade MR is closed, and says so; no alarm (nothing of a rollback was left)
        assert {m["iid"]: m["state"] for m in gitlab.merge_requests(PROJECT)} == {upgrade.iid: "closed",
                                                                                   rollback.iid: "opened"}
        assert "GUARD closed it" in gitlab.notes(PROJECT, upgrade.iid)[-1]
        assert alarms == []

        # GIVEN run-2 waiting on its rollback MR
        second = run.model_copy(update={"run_id": "run-2", "execution_arn": ARN.replace("run-1", "run-2"),
                                        "stage": Stage.WAITING_FOR_ROLLBACK_MERGE})
        world.state.put_run(second)
        world.failures.put_rollback(RollbackRecord(
            run_id="run-2", batch="b1", reason="validation failed", clusters=["c1"], versions={"c1": "1.19.3"},
            rolled_back_from="1.20.0", status=RollbackStatus.WAITING_FOR_MERGE, merge_request_url=rollback.web_url,
            merge_request_iid=rollback.iid, at=world.clock.now()))

        # WHEN that execution is stopped
        service.ended(event("ABORTED", name="run-2", arn=second.execution_arn))

        # THEN GUARD never closes the rollback MR: it stays open, says a person must act, and the alarm counts it
        assert {m["iid"]: m["state"] for m in gitlab.merge_requests(PROJECT)}[rollback.iid] == "opened"
        assert "a person must merge it" in gitlab.notes(PROJECT, rollback.iid)[-1]
        assert len(alarms) == 1 and rollback.web_url in alarms[0]
