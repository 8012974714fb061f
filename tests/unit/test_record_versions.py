"""Deploys never break running executions: records and plans of schema version 1 are read by today's code."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from guard.config.models import TenantConfig
from guard.core.run import Plan, RunRecord, RunStatus
from guard.services.plan import revalidate_seconds
from guard.stores.failure import RollbackRecord
from guard.stores.state import BatchResult, TaskTokenRecord
from guard.vocabulary.outcomes import (
    ChangeKind,
    Outcome,
    RollbackStatus,
)
from guard.vocabulary.stages import FailedStage, Stage

STARTED = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def v1_run(status: str, stage: str, merge_request_iid: int | None = 12) -> str:
    """A run record exactly as version 1 wrote it: no schema_version, one `stage` for everything."""
    return json.dumps({
        "run_id": "run-v1", "execution_arn": "arn:aws:states:us-east-1:1:execution:m:run-v1", "batch": "dev",
        "target_version": "1.20.0", "clusters": ["eks-dev-1"], "from_versions": {"eks-dev-1": "1.19.3"},
        "gitlab_project": "platform/istio-fleet", "options": {"batch": "dev", "target_version": "1.20.0"},
        "status": status, "stage": stage, "started_at": STARTED.isoformat(), "sidecar_restarts": {},
        "merge_request_iid": merge_request_iid,
    })


@pytest.mark.parametrize(("status", "old_stage", "stage", "failed_stage", "outcome"), [
    ("running", "waiting_for_merge", Stage.WAITING_FOR_MERGE, None, None),
    ("running", "waiting_for_rollback_merge", Stage.WAITING_FOR_ROLLBACK_MERGE, None, None),
    ("running", "rollback", Stage.ROLLBACK_PLANNED, None, None),
    ("succeeded", "done", Stage.DONE, None, Outcome.SUCCEEDED),
    ("failed", "flux", Stage.DONE, FailedStage.FLUX, Outcome.FAILED),
    ("failed", "merge_timeout", Stage.DONE, FailedStage.MERGE_TIMEOUT, Outcome.FAILED),
    ("failed", "rolled_back", Stage.DONE, FailedStage.VALIDATION, Outcome.ROLLED_BACK),
    ("failed", "rollback_failed", Stage.DONE, FailedStage.VALIDATION, Outcome.ROLLBACK_FAILED),
    ("failed", "something-new", Stage.DONE, FailedStage.UNKNOWN, Outcome.FAILED),
])
def test_a_version_1_run_record_is_read_into_stage_failed_stage_and_outcome(status, old_stage, stage, failed_stage,
                                                                               outcome):
    # GIVEN a run record written by version 1, whose `stage` mixed progress, failures and rollback outcomes
    # WHEN today's code reads it
    run = RunRecord.model_validate_json(v1_run(status, old_stage))

    # THEN each meaning lands in its own field, and writing it back writes version 2
    assert (run.status, run.stage, run.failed_stage, run.outcome) == (RunStatus(status), stage, failed_stage,
                                                                      outcome)
    assert json.loads(run.model_dump_json())["schema_version"] == 2
    assert RunRecord.model_validate_json(run.model_dump_json()) == run


def test_a_version_1_manual_rollback_plan_reads_as_the_one_plan_model():
    # GIVEN `$.plan` as version 1's PlanRollback built it by hand (one timeout under two names)
    old = {"run_id": "m-1", "batch": "dev", "target_version": "1.20.0", "clusters": ["eks-dev-1"],
           "rollback_to": {"eks-dev-1": "1.19.3"}, "merge_timeout_seconds": 259200,
           "rollback_timeout_seconds": 259200, "rollback_mr": True, "flux_poll_seconds": 60}

    # WHEN it is read as a Plan
    plan = Plan.model_validate(old)

    # THEN it is a rollback plan with the same waits, and its payload keeps every key the ASL reads
    assert plan.rollback_to == {"eks-dev-1": "1.19.3"} and plan.rollback_timeout_seconds == 259200
    assert set(old) <= set(plan.payload())


def test_a_version_1_manual_rollback_record_did_not_fail_at_validation():
    # GIVEN a finished manual rollback as version 1 stored it (it never had an upgrade MR iid of its own)
    # WHEN it is read THEN it is rolled back, with no failed stage
    run = RunRecord.model_validate_json(v1_run("failed", "rolled_back", merge_request_iid=None))
    assert (run.outcome, run.failed_stage, run.where) == (Outcome.ROLLED_BACK, None, "done")


def test_a_record_built_by_todays_code_is_not_taken_for_version_1():
    # GIVEN a finished record built in code, without naming the schema version
    run = RunRecord.model_validate({**json.loads(v1_run("failed", "done")), "outcome": "rolled_back",
                                    "failed_stage": None})
    # THEN its outcome is kept as given
    assert (run.outcome, run.failed_stage, run.schema_version) == (Outcome.ROLLED_BACK, None, 2)


def test_an_upgrade_plan_has_no_rollback_key_for_the_state_machine_to_mistake():
    # GIVEN an upgrade plan (the ASL's RequestedRollback tests `$.plan.rollback_to` IsPresent)
    plan = Plan(run_id="r", batch="dev", target_version="1.20.0", clusters=["a"], flux_poll_seconds=30)

    # WHEN it becomes the task's output THEN `rollback_to` is absent, not null, and the schema version is there
    assert "rollback_to" not in plan.payload() and plan.payload()["schema_version"] == 2


def test_version_1_tokens_batch_results_and_rollback_records_read_as_typed_values():
    # GIVEN the other records version 1 wrote (free strings, no schema_version)
    token = TaskTokenRecord.model_validate_json(json.dumps(
        {"merge_request_url": "https://gitlab/x/-/merge_requests/7", "task_token": "t", "run_id": "r",
         "kind": "rollback"}))
    result = BatchResult.model_validate_json(json.dumps(
        {"batch": "dev", "target_version": "1.20.0", "status": "rolled_back", "run_id": "r",
         "at": STARTED.isoformat()}))
    rollback = RollbackRecord.model_validate_json(json.dumps(
        {"run_id": "r", "batch": "dev", "reason": "p95", "clusters": ["a"], "versions": {"a": "1.19.3"},
         "rolled_back_from": "1.20.0", "status": "waiting_for_merge", "at": STARTED.isoformat()}))

    # WHEN today's code reads them THEN their words are the vocabulary's, and they write version 2
    assert (token.kind, result.status, rollback.status) == (ChangeKind.ROLLBACK, Outcome.ROLLED_BACK,
                                                             RollbackStatus.WAITING_FOR_MERGE)
    assert {token.schema_version, result.schema_version, rollback.schema_version} == {2}


@pytest.mark.parametrize("minutes, expected", [(15, 900), (0.5, 30), (0, None)])
def test_the_plan_carries_the_extra_soak_of_a_revalidation_only_when_it_is_on(minutes, expected):
    # GIVEN validation.revalidate_after_minutes
    config = TenantConfig.model_validate({"batches": [{"name": "dev", "clusters": ["a"]}],
                                          "validation": {"revalidate_after_minutes": minutes}})
    # WHEN an upgrade plan is made
    plan = Plan(run_id="r", batch="dev", target_version="1.20.0", clusters=["a"], flux_poll_seconds=30,
                revalidate_seconds=revalidate_seconds(config))
    # THEN its payload has it in seconds, or leaves it out (the ASL tests IsPresent), as version 1 plans do
    assert plan.payload().get("revalidate_seconds") == expected
    assert ("revalidate_seconds" in plan.payload()) is (expected is not None)
