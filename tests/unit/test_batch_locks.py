"""The batch lock cannot strand a batch: it holds its execution and an expiry longer than the
longest run, and a lock whose execution has ended is taken over, with an audit record.

moto DynamoDB for the state table; moto Step Functions for real executions (one running, one
stopped), and a stub for what moto cannot say (an execution Step Functions no longer knows).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.config.models import TenantConfig
from guard.errors import BatchLocked
from guard.ports import ExecutionStatus
from guard.services.locks import BatchLocks, lock_hours, longest_run_hours
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from moto import mock_aws

NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
DEFINITION = '{"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": true}}}'


@pytest.fixture
def aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def state(aws):
    _, table = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), state_name="guard-state")
    return StateStore(table)


@pytest.fixture
def sfn(aws):
    client = boto3.client("stepfunctions", region_name="us-east-1")
    machine = client.create_state_machine(name="guard-upgrade-batch", definition=DEFINITION,
                                          roleArn="arn:aws:iam::123456789012:role/sfn")["stateMachineArn"]

    def start(name: str) -> str:
        return str(client.start_execution(stateMachineArn=machine, name=name)["executionArn"])

    return client, start


class StubExecutions:
    """`guard.ports.Executions` answering one status for every execution, and counting the questions."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.asked: list[str] = []

    def describe_execution(self, execution_arn: str) -> ExecutionStatus:
        self.asked.append(execution_arn)
        return ExecutionStatus(execution_arn=execution_arn, status=self.status)


def test_the_lock_holds_the_execution_arn_and_its_expiry(state):
    # GIVEN a free batch
    # WHEN run-1 takes it for 200 hours with its execution
    BatchLocks(state).acquire("dev-1", "run-1", "arn:exec:run-1", NOW, hours=200)
    # THEN the lock names the execution and expires 200 hours later
    lock = state.lock("dev-1")
    assert lock is not None and lock.execution_arn == "arn:exec:run-1"
    assert lock.expires_at == int((NOW + timedelta(hours=200)).timestamp())


def test_a_lock_whose_execution_was_stopped_is_taken_over_and_audited(state, sfn):
    # GIVEN run-1's execution holds dev-1, then is stopped from the console (no Catch runs)
    client, start = sfn
    first = start("run-1")
    locks = BatchLocks(state, StepFunctionsCallbacks(client))
    locks.acquire("dev-1", "run-1", first, NOW, hours=200)
    client.stop_execution(executionArn=first)
    # WHEN run-2 asks for the lock
    audit = locks.acquire("dev-1", "run-2", start("run-2"), NOW + timedelta(hours=1), hours=200)
    # THEN run-2 holds it, and the audit record says from whom and why
    assert state.lock_holder("dev-1") == "run-2"
    assert audit is not None and audit.taken_from == "run-1" and audit.taken_from_execution == first
    assert "ABORTED" in audit.reason
    assert [a.taken_by for a in state.lock_audits("dev-1")] == ["run-2"]


def test_a_lock_whose_execution_still_runs_is_refused(state, sfn):
    # GIVEN run-1's execution holds dev-1 and still runs
    client, start = sfn
    locks = BatchLocks(state, StepFunctionsCallbacks(client))
    locks.acquire("dev-1", "run-1", start("run-1"), NOW, hours=200)
    # WHEN run-2 asks for the lock
    with pytest.raises(BatchLocked, match="run-1"):
        locks.acquire("dev-1", "run-2", start("run-2"), NOW + timedelta(hours=1), hours=200)
    # THEN run-1 keeps it and nothing is audited
    assert state.lock_holder("dev-1") == "run-1"
    assert state.lock_audits("dev-1") == []


def test_a_lock_whose_execution_step_functions_no_longer_knows_is_taken_over(state, sfn):
    # GIVEN run-1 holds dev-1 with an execution that does not exist (a deleted state machine)
    client, _ = sfn
    locks = BatchLocks(state, StepFunctionsCallbacks(client))
    gone = "arn:aws:states:us-east-1:123456789012:execution:guard-upgrade-batch:never-was"
    locks.acquire("dev-1", "run-1", gone, NOW, hours=200)
    # WHEN run-2 asks for the lock
    audit = locks.acquire("dev-1", "run-2", None, NOW, hours=200)
    # THEN it is taken over, saying the execution is gone
    assert state.lock_holder("dev-1") == "run-2"
    assert audit is not None and "GONE" in audit.reason


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"])
def test_every_ended_status_frees_the_lock(state, status):
    # GIVEN run-1 holds dev-1 and Step Functions says its execution ended with `status`
    executions = StubExecutions(status)
    BatchLocks(state, executions).acquire("dev-1", "run-1", "arn:exec:run-1", NOW, hours=200)
    # WHEN run-2 asks for the lock
    BatchLocks(state, executions).acquire("dev-1", "run-2", "arn:exec:run-2", NOW, hours=200)
    # THEN it holds it, after asking about run-1's execution only
    assert state.lock_holder("dev-1") == "run-2"
    assert executions.asked == ["arn:exec:run-1"]


@pytest.mark.parametrize("status", ["RUNNING", "PENDING_REDRIVE"])
def test_a_holder_that_may_still_run_keeps_the_lock(state, status):
    executions = StubExecutions(status)
    BatchLocks(state, executions).acquire("dev-1", "run-1", "arn:exec:run-1", NOW, hours=200)
    with pytest.raises(BatchLocked):
        BatchLocks(state, executions).acquire("dev-1", "run-2", "arn:exec:run-2", NOW, hours=200)
    assert state.lock_holder("dev-1") == "run-1"


def test_a_lock_taken_before_arns_were_kept_waits_for_its_expiry(state):
    # GIVEN a lock without an execution ARN (taken by an older GUARD)
    state.acquire_lock("dev-1", "run-1", NOW, hours=200)
    executions = StubExecutions("ABORTED")
    # WHEN run-2 asks within the expiry
    with pytest.raises(BatchLocked):
        BatchLocks(state, executions).acquire("dev-1", "run-2", "arn:exec:run-2", NOW, hours=200)
    # THEN nothing is asked of Step Functions, and after the expiry run-2 gets it
    assert executions.asked == []
    BatchLocks(state, executions).acquire("dev-1", "run-2", "arn:exec:run-2", NOW + timedelta(hours=201), 200)
    assert state.lock_holder("dev-1") == "run-2"


def test_the_lock_outlives_the_longest_run():
    # GIVEN the default config and the longest soak an execution input may ask for (7 days)
    config = TenantConfig.model_validate({"batches": [{"name": "dev-1", "clusters": ["dev-a"]}]})
    week = 60 * 24 * 7
    # WHEN the lock's expiry is computed
    hours = lock_hours(config, week)
    # THEN it is longer than every wait at its timeout, one after the other
    # (merge, Flux, sidecar waves, soak, the extra soak of a revalidation, decision, rollback merge and verify)
    waits = 72 + 0.25 + 0.5 + 24 * 7 + 0.25 + 24 + 72 + 0.25
    assert longest_run_hours(config, week) == pytest.approx(waits)
    assert hours > waits
    # AND the default soak's run is covered too, never below the configured floor
    assert lock_hours(config, 60) >= max(config.execution.lock_ttl_hours, longest_run_hours(config, 60))
