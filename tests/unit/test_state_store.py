"""The state table against moto DynamoDB: batch lock and MR task tokens (webhook deliveries: test_webhook.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from guard.errors import BatchLocked
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, TaskTokenRecord
from moto import mock_aws

NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
MR = "https://gitlab.example.com/platform/istio-fleet/-/merge_requests/42"


@pytest.fixture
def state(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        _, table = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), state_name="guard-state")
        yield StateStore(table)


# ---------------------------------------------------------------- batch lock
def test_lock_is_reentrant_for_the_same_run(state):
    # GIVEN run-1 holds dev-1
    state.acquire_lock("dev-1", "run-1", NOW, hours=24)
    # WHEN run-1 asks again (a retried task)
    state.acquire_lock("dev-1", "run-1", NOW + timedelta(minutes=5), hours=24)
    # THEN it still holds it
    assert state.lock_holder("dev-1") == "run-1"


def test_lock_is_refused_for_another_run_naming_the_holder(state):
    # GIVEN run-1 holds dev-1
    state.acquire_lock("dev-1", "run-1", NOW, hours=24)
    # WHEN run-2 asks for it within the TTL
    with pytest.raises(BatchLocked) as caught:
        state.acquire_lock("dev-1", "run-2", NOW + timedelta(hours=1), hours=24)
    # THEN it is told who holds it and since when, and run-1 keeps it
    assert "run-1" in str(caught.value)
    assert NOW.isoformat() in str(caught.value)
    assert state.lock_holder("dev-1") == "run-1"


def test_locks_are_per_batch(state):
    state.acquire_lock("dev-1", "run-1", NOW, hours=24)
    state.acquire_lock("dev-2", "run-2", NOW, hours=24)
    assert (state.lock_holder("dev-1"), state.lock_holder("dev-2")) == ("run-1", "run-2")


def test_expired_lock_is_taken_over(state):
    # GIVEN run-1 took the lock with a 2-hour TTL and died without releasing it
    state.acquire_lock("dev-1", "run-1", NOW, hours=2)
    # WHEN run-2 asks after the TTL
    state.acquire_lock("dev-1", "run-2", NOW + timedelta(hours=2, minutes=1), hours=2)
    # THEN run-2 holds it
    assert state.lock_holder("dev-1") == "run-2"


def test_release_only_by_the_holder(state):
    # GIVEN run-1 holds dev-1
    state.acquire_lock("dev-1", "run-1", NOW, hours=24)
    # WHEN run-2 releases it (a stray finish task), nothing happens
    state.release_lock("dev-1", "run-2")
    assert state.lock_holder("dev-1") == "run-1"
    # WHEN run-1 releases it, twice
    state.release_lock("dev-1", "run-1")
    state.release_lock("dev-1", "run-1")
    # THEN it is free and run-2 can take it
    assert state.lock_holder("dev-1") is None
    state.acquire_lock("dev-1", "run-2", NOW, hours=24)
    assert state.lock_holder("dev-1") == "run-2"


# ---------------------------------------------------------------- MR task tokens
def test_task_token_round_trip(state):
    # GIVEN nobody waits on the MR yet
    assert state.get_task_token(MR) is None
    # WHEN the open-MR task stores its token
    record = TaskTokenRecord(merge_request_url=MR, task_token="AAAA-token==", run_id="run-1", kind="rollback")
    state.put_task_token(record, NOW, hours=72)
    # THEN the webhook finds exactly that token by MR URL
    assert state.get_task_token(MR) == record
    assert state.get_task_token(MR.replace("/42", "/43")) is None
    # AND once answered it is gone
    state.delete_task_token(MR)
    assert state.get_task_token(MR) is None


def test_a_run_deletes_only_its_own_token(state):
    # GIVEN run-2 now waits on the MR that run-1 waited on before (the same branch, a later run)
    state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="token-2", run_id="run-2"), NOW, hours=72)
    # WHEN run-1's cleanup deletes "its" token THEN nothing is deleted and run-2 still waits
    assert state.delete_task_token(MR, run_id="run-1") is False
    assert state.get_task_token(MR).task_token == "token-2"
    # AND a stale copy of another token is not deleted either
    assert state.delete_task_token(MR, task_token="token-1") is False
    # AND run-2's own cleanup deletes it, once
    assert state.delete_task_token(MR, run_id="run-2") is True
    assert state.delete_task_token(MR, run_id="run-2") is False
    assert state.get_task_token(MR) is None


def test_a_token_written_before_run_id_was_kept_at_the_top_level_is_still_matched_by_run(state):
    # GIVEN a token item as earlier versions wrote it: the run id only inside the document
    record = TaskTokenRecord(merge_request_url=MR, task_token="token-1", run_id="run-1")
    boto3.resource("dynamodb", region_name="us-east-1").Table("guard-state").put_item(Item={
        "pk": f"MR#{MR}", "sk": "TOKEN", "doc": record.model_dump_json(), "expires_at": 1})
    # WHEN another run, then its own run, delete it THEN only its own run does
    assert state.delete_task_token(MR, run_id="run-10") is False
    assert state.delete_task_token(MR, run_id="run-1") is True


def test_a_task_in_flight_never_rewrites_an_ended_run_as_running(state):
    from guard.core.run import ExecutionInput, RunRecord, RunStatus
    from guard.errors import RunAlreadyEnded
    from guard.vocabulary.stages import Stage

    # GIVEN a run whose end was recorded (its execution was stopped from the console)
    run = RunRecord(run_id="r1", execution_arn="arn:r1", batch="b1", target_version="1.20.0", clusters=["c1"],
                    from_versions={"c1": "1.19.3"}, gitlab_project="p",
                    options=ExecutionInput(batch="b1", target_version="1.20.0"), started_at=NOW,
                    stage=Stage.SOAKING)
    state.put_run(run)
    state.put_run(run.model_copy(update={"status": RunStatus.FAILED, "error": "ExecutionStopped"}))

    # WHEN a task invoked as the stop came records its progress
    with pytest.raises(RunAlreadyEnded, match="r1"):
        state.put_run(run.model_copy(update={"stage": Stage.RESTARTING_SIDECARS}))

    # THEN the recorded end stays
    kept = state.get_run("r1")
    assert (kept.status, kept.error, kept.stage) == (RunStatus.FAILED, "ExecutionStopped", Stage.SOAKING)
