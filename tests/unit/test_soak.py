"""The soak loop's check (guard.services.soak) against moto DynamoDB: the length is read at every check,
so a length set before or during the soak moves its end; a shortening below the config is not taken."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from guard.config.loader import load_config
from guard.core.run import ExecutionInput, RunRecord
from guard.errors import InvalidInput
from guard.services.soak import CHECKS_PER_SOAK, MIN_CHECK_SECONDS, SoakService, allowed_length
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from moto import mock_aws

from tests.support.clock import START, FakeClock

CONFIG = load_config(Path(__file__).resolve().parents[2] / "config" / "example.yaml")  # dev-1 soaks 60 min
HOUR = 3600


@pytest.fixture
def state(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        _, table = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), state_name="guard-state")
        yield StateStore(table)


def _run(state: StateStore, soak_minutes: float = 120) -> RunRecord:
    run = RunRecord(run_id="run-1", execution_arn="arn:aws:states:us-east-1:1:execution:m:run-1", batch="dev-1",
                    target_version="1.20.0", clusters=["eks-dev-1"], from_versions={"eks-dev-1": "1.19.3"},
                    gitlab_project="platform/istio-fleet", started_at=START,
                    options=ExecutionInput(batch="dev-1", target_version="1.20.0", soak_period_minutes=soak_minutes))
    state.put_run(run)
    state.acquire_lock("dev-1", "run-1", START, hours=30, execution_arn=run.execution_arn)
    return run


def _soak_to_its_end(service: SoakService, clock: FakeClock, planned: int) -> tuple[float, int]:
    """Run the loop as the state machine does; (seconds soaked, checks made)."""
    began, checks = clock.now(), 0
    while True:
        checks += 1
        result = service.check("run-1", planned)
        if result.done:
            return (clock.now() - began).total_seconds(), checks
        assert 1 <= result.wait_seconds <= max(MIN_CHECK_SECONDS, result.soak_seconds / CHECKS_PER_SOAK) + 1
        clock.advance(result.wait_seconds)


def test_a_planned_soak_lasts_its_length_with_a_bounded_number_of_checks(state):
    # GIVEN a run planned with a 4-hour soak
    _run(state, 240)
    clock = FakeClock()
    # WHEN the loop runs to its end THEN it soaked exactly 4 hours, checking every 5 minutes at most
    soaked, checks = _soak_to_its_end(SoakService(CONFIG, state, clock), clock, 4 * HOUR)
    assert soaked == 4 * HOUR and checks == 4 * 12 + 1


def test_a_length_set_while_soaking_moves_the_end_and_holds_the_lock_longer(state):
    # GIVEN a 2-hour soak that has run for an hour
    run = _run(state, 120)
    clock = FakeClock()
    service = SoakService(CONFIG, state, clock)
    service.check("run-1", 2 * HOUR)
    clock.advance(HOUR)
    lock_before = state.lock("dev-1").expires_at
    # WHEN an operator lengthens it to 5 hours
    state.request_soak(run, 5 * HOUR, "maria set the soak to 5h")
    soaked, _ = _soak_to_its_end(service, clock, 2 * HOUR)
    # THEN it ends 5 hours after it began, and the lock outlives the new end
    assert HOUR + soaked == 5 * HOUR
    record = state.soak("run-1")
    assert record.soak_seconds == 5 * HOUR and record.changes == ["maria set the soak to 5h"]
    assert (record.ended_at - record.started_at).total_seconds() == 5 * HOUR
    assert state.lock("dev-1").expires_at > lock_before
    # AND once it is over, a change is refused as too late (None), and the record keeps its end
    assert state.request_soak(run, 8 * HOUR, "too late") is None
    assert state.soak("run-1").soak_seconds == 5 * HOUR


def test_a_week_long_soak_is_checked_about_checks_per_soak_times(state):
    # GIVEN a 7-day soak WHEN it runs THEN the loop (and so the execution history) stays small
    _run(state, 60 * 24 * 7)
    clock = FakeClock()
    soaked, checks = _soak_to_its_end(SoakService(CONFIG, state, clock), clock, 7 * 24 * HOUR)
    assert soaked == 7 * 24 * HOUR and checks <= CHECKS_PER_SOAK + 1


def test_a_length_set_before_the_soak_starts_is_its_length(state):
    # GIVEN a run planned with 2 hours whose soak has not started
    run = _run(state, 120)
    state.request_soak(run, 4 * HOUR, "set before the soak")
    clock = FakeClock()
    # WHEN the soak runs THEN it lasts the length asked for
    soaked, _ = _soak_to_its_end(SoakService(CONFIG, state, clock), clock, 2 * HOUR)
    assert soaked == 4 * HOUR


def test_a_shortening_above_the_config_counts_and_one_below_is_not_taken(state):
    # GIVEN a run planned with 4 hours on a batch whose config soaks 60 minutes
    run = _run(state, 240)
    # WHEN shortened to 90 minutes (still above the config) THEN it is allowed
    assert allowed_length(CONFIG, run, 4 * HOUR, 90 * 60) == 90 * 60
    # AND below the config's 60 minutes it is refused, naming the rule
    with pytest.raises(InvalidInput, match=r"soak_period_minutes.*execution\.allowed_overrides"):
        allowed_length(CONFIG, run, 4 * HOUR, 10 * 60)
    # AND a record written around the CLI is not taken by the check: the plan's soak holds
    state.request_soak(run, 10 * 60, "around the CLI")
    warnings: list[str] = []
    clock = FakeClock()
    service = SoakService(CONFIG, state, clock, log_warning=lambda message, **_: warnings.append(message))
    soaked, _ = _soak_to_its_end(service, clock, 4 * HOUR)
    assert soaked == 4 * HOUR and warnings
