"""The first state: a bad input names its field; every refusal leaves nothing behind; a good plan locks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from guard.config import load_config
from guard.core.models import Cluster
from guard.core.run import ManualRollbackInput
from guard.errors import (
    BatchLocked,
    InvalidInput,
    PrerequisiteNotMet,
    UnknownBatch,
    UnknownCluster,
    VersionNotAllowed,
)
from guard.services.plan import BatchPlanner, parse_input, parse_model
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import BatchResult, StateStore
from moto import mock_aws

from tests.support.clock import FakeClock

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)


# ---------------------------------------------------------------- parse_input
@pytest.mark.parametrize("raw", [None, "dev-1", ["dev-1"], 42])
def test_input_must_be_an_object(raw):
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        parse_input(raw)


def test_unknown_field_is_named():
    # GIVEN a CI job that misspells soak_period_minutes
    # WHEN the input is parsed
    with pytest.raises(InvalidInput) as caught:
        parse_input({"batch": "dev-1", "target_version": "1.20.0", "soak_minutes": 30})
    # THEN the field is named as unknown
    assert "soak_minutes: unknown key" in str(caught.value)


def test_missing_batch_is_named():
    with pytest.raises(InvalidInput) as caught:
        parse_input({"target_version": "1.20.0"})
    assert "batch: Field required" in str(caught.value)


def test_malformed_version_is_named():
    with pytest.raises(InvalidInput) as caught:
        parse_input({"batch": "dev-1", "target_version": "1.20"})
    message = str(caught.value)
    assert "target_version:" in message
    assert "'1.20'" in message
    assert "MAJOR.MINOR.PATCH" in message


def test_negative_soak_is_named():
    with pytest.raises(InvalidInput) as caught:
        parse_input({"batch": "dev-1", "target_version": "1.20.0", "soak_period_minutes": -5})
    assert "soak_period_minutes:" in str(caught.value)


def test_good_input_is_normalised():
    request = parse_input({"batch": "dev-1", "target_version": " 1.20.0 ", "ignore_alerts": True})
    assert request.target_version == "1.20.0"
    assert request.ignore_alerts is True
    assert request.soak_period_minutes is None


@pytest.mark.parametrize(("raw", "kind"), [(None, "null"), ("dev-1", "string"), (["dev-1"], "array"), (42, "number"),
                                           (True, "boolean")])
def test_input_that_is_not_an_object_names_the_json_type_it_got(raw, kind):
    with pytest.raises(InvalidInput) as caught:
        parse_input(raw)
    assert str(caught.value) == f"execution input must be a JSON object, got {kind}"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("batch", 7, "batch: Input should be a valid string, got number"),
    ("batch", ["dev-1"], "batch: Input should be a valid string, got array"),
    ("target_version", None, "target_version: Input should be a valid string, got null"),
    ("ignore_alerts", {"yes": 1}, "ignore_alerts: Input should be a valid boolean, got object"),
    ("soak_period_minutes", "soon", "soak_period_minutes: Input should be a valid number"),
    ("min_replicas", [], "min_replicas: Input should be a valid integer, got array"),
    ("requested_by", 12, "requested_by: Input should be a valid string, got number"),
])
def test_a_field_of_the_wrong_type_names_the_field_and_the_type_it_got(field, value, expected):
    # GIVEN an input whose one field has the wrong JSON type
    raw: dict[str, Any] = {"batch": "dev-1", "target_version": "1.20.0", field: value}
    # WHEN it is parsed
    with pytest.raises(InvalidInput) as caught:
        parse_input(raw)
    # THEN the message names the field and what arrived
    assert expected in str(caught.value)


@pytest.mark.parametrize(("field", "limit"), [("batch", 128), ("target_version", 32), ("requested_by", 256)])
def test_an_oversized_string_is_refused_without_being_quoted(field, limit):
    # GIVEN a 200 KB value in a string field
    raw = {"batch": "dev-1", "target_version": "1.20.0", field: "9" * 200_000}
    # WHEN it is parsed
    with pytest.raises(InvalidInput) as caught:
        parse_input(raw)
    # THEN the message names the field and its bound, and stays short
    message = str(caught.value)
    assert f"{field}: String should have at most {limit} characters" in message
    assert len(message) < 300


def test_a_huge_unknown_key_and_many_problems_give_a_short_message():
    # GIVEN an input with a 100 KB key and 500 unknown keys
    raw: dict[str, Any] = {"batch": "dev-1", "target_version": "1.20.0", "k" * 100_000: 1,
                           **{f"extra{i}": i for i in range(500)}}
    with pytest.raises(InvalidInput) as caught:
        parse_input(raw)
    message = str(caught.value)
    # THEN the key is quoted shortened with its length, only the first problems are listed, and the rest counted
    assert "…' (100000 characters): unknown key" in message
    assert "… and 491 more" in message
    assert len(message) < 2_000


@pytest.mark.parametrize("version", ["\uff11.\uff12\uff10.\uff10", "1.\u0662\u0660.0", "1.20.\u09e6"])
def test_a_version_in_non_ascii_digits_is_refused(version):
    # GIVEN a target version written with full-width, Arabic-Indic or Bengali digits (int() would read them)
    with pytest.raises(InvalidInput) as caught:
        parse_input({"batch": "dev-1", "target_version": version})
    # THEN it is refused as not being ASCII MAJOR.MINOR.PATCH
    assert "target_version:" in str(caught.value)
    assert "ASCII digits" in str(caught.value)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"action": "rollback", "batch": "dev-1", "reason": "r" * 2_001}, "reason: String should have at most 2000"),
    ({"action": "rollback", "batch": "b" * 129, "reason": "bad"}, "batch: String should have at most 128"),
    ({"action": "rollback", "batch": "dev-1", "reason": "bad", "requested_by": "x" * 257},
     "requested_by: String should have at most 256"),
    ({"action": "rollback", "batch": "dev-1", "reason": ["bad"]}, "reason: Input should be a valid string, got array"),
    ({"action": "upgrade", "batch": "dev-1", "reason": "bad"}, "action: Input should be 'rollback', got 'upgrade'"),
    ({"action": None, "batch": "dev-1", "reason": "bad"}, "action: Input should be 'rollback', got null"),
])
def test_a_bad_manual_rollback_input_names_the_problem(raw, expected):
    with pytest.raises(InvalidInput) as caught:
        parse_model(ManualRollbackInput, raw, "rollback input")
    assert expected in str(caught.value)
    assert len(str(caught.value)) < 500


# ---------------------------------------------------------------- BatchPlanner against moto DynamoDB
@pytest.fixture
def tables(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "guard-cluster-registry",
                            "guard-state")


@pytest.fixture
def world(tables):
    registry_table, state_table = tables
    registry = ClusterRegistry(registry_table, "example")
    state = StateStore(state_table)
    for cluster_id, batch in [("eks-test", "test"), ("eks-dev-1", "dev-1"), ("eks-dev-2", "dev-1"),
                              ("eks-staging-us-east-1", "staging-us"), ("eks-staging-us-west-2", "staging-us"),
                              ("eks-staging-eu-west-1", "staging-eu"), ("eks-prod-canary", "prod-canary")]:
        registry.put(cluster(cluster_id, batch))
    config = load_config(EXAMPLE)
    # Some tests shorten the soak through the input: the config allows it (refusals: test_input_overrides.py).
    config.execution.allowed_overrides = ["soak_period_minutes"]
    planner = BatchPlanner(config, registry, state, FakeClock(NOW))
    return planner, registry, state, state_table


def cluster(cluster_id: str, batch: str, version: str = "1.19.3") -> Cluster:
    return Cluster(cluster_id=cluster_id, batch_id=batch, environment="dev", region="us-east-1",
                   gitlab_project="platform/istio-fleet",
                   flux_config_path=f"clusters/{cluster_id}/istio/helmrelease.yaml",
                   current_istio_version=version)


def request(batch: str = "dev-1", version: str = "1.20.0", **extra: Any):
    return parse_input({"batch": batch, "target_version": version, **extra})


def succeeded(state: StateStore, batch: str, version: str = "1.20.0", status: str = "succeeded") -> None:
    state.put_batch_result(BatchResult(batch=batch, target_version=version, status=status, run_id=f"run-{batch}",
                                       at=NOW - timedelta(days=1)))


def items(state_table) -> list[dict[str, Any]]:
    return sorted(state_table.scan(ConsistentRead=True)["Items"], key=lambda i: (i["pk"], i["sk"]))


def assert_nothing_left(state: StateStore, state_table, before: list[dict[str, Any]], batch: str, run_id: str,
                        lock_holder: str | None = None) -> None:
    assert state.find_run(run_id) is None, "a refused plan left a run record"
    assert state.lock_holder(batch) == lock_holder, "a refused plan changed the batch lock"
    assert items(state_table) == before, "a refused plan wrote to the state table"


def test_unknown_batch_lists_the_known_ones(world):
    # GIVEN the example tenant
    planner, _, state, table = world
    before = items(table)
    # WHEN an execution names a batch it does not define
    with pytest.raises(UnknownBatch) as caught:
        planner.plan(request("dev-3"), "run-1", "arn:exec:run-1")
    # THEN the error names it and lists the batches there are, and nothing was written
    message = str(caught.value)
    assert "'dev-3'" in message
    for known in ("test", "dev-1", "dev-2", "prod-canary", "prod-eu"):
        assert known in message
    assert_nothing_left(state, table, before, "dev-3", "run-1")


def test_cluster_missing_from_the_registry(world):
    # GIVEN batch dev-2 whose clusters were never imported into the registry
    planner, _, state, table = world
    succeeded(state, "dev-1")
    before = items(table)
    # WHEN it is planned
    with pytest.raises(UnknownCluster) as caught:
        planner.plan(request("dev-2"), "run-1", "arn:exec:run-1")
    # THEN both missing clusters are named, and nothing was written
    assert "eks-dev-3, eks-dev-4" in str(caught.value)
    assert_nothing_left(state, table, before, "dev-2", "run-1")


def test_downgrade_names_the_cluster(world):
    # GIVEN eks-dev-2 already on 1.20.1
    planner, registry, state, table = world
    registry.put(cluster("eks-dev-2", "dev-1", "1.20.1"))
    succeeded(state, "test")
    before = items(table)
    # WHEN dev-1 is asked to go to 1.20.0
    with pytest.raises(VersionNotAllowed) as caught:
        planner.plan(request("dev-1", "1.20.0"), "run-1", "arn:exec:run-1")
    # THEN the refusal names that cluster and why; the other cluster is not blamed
    message = str(caught.value)
    assert "eks-dev-2: 1.20.0 is a downgrade from 1.20.1" in message
    assert "eks-dev-1" not in message
    assert_nothing_left(state, table, before, "dev-1", "run-1")


def test_minor_skip_names_the_clusters(world):
    planner, _, state, table = world
    succeeded(state, "test", "1.21.0")
    before = items(table)
    with pytest.raises(VersionNotAllowed) as caught:
        planner.plan(request("dev-1", "1.21.0"), "run-1", "arn:exec:run-1")
    assert "eks-dev-1: 1.19.3 -> 1.21.0 skips 2 minor versions" in str(caught.value)
    assert_nothing_left(state, table, before, "dev-1", "run-1")


def test_unmet_prerequisite_names_it(world):
    # GIVEN test has not been upgraded to 1.20.0 (batch_order: dev-1 needs test)
    planner, _, state, table = world
    succeeded(state, "test", "1.19.3")  # at another version: does not count
    before = items(table)
    # WHEN dev-1 is planned
    with pytest.raises(PrerequisiteNotMet) as caught:
        planner.plan(request("dev-1"), "run-1", "arn:exec:run-1")
    # THEN the prerequisite is named and nothing was written
    assert "requires 'test' to have succeeded at 1.20.0" in str(caught.value)
    assert "it has not run at 1.20.0" in str(caught.value)
    assert_nothing_left(state, table, before, "dev-1", "run-1")


def test_failed_prerequisite_says_it_failed(world):
    planner, _, state, _ = world
    succeeded(state, "test", status="failed")
    with pytest.raises(PrerequisiteNotMet) as caught:
        planner.plan(request("dev-1"), "run-1", "arn:exec:run-1")
    assert "its last run at 1.20.0 failed" in str(caught.value)


def test_held_lock_names_the_holder(world):
    # GIVEN another execution holds dev-1's lock
    planner, _, state, table = world
    succeeded(state, "test")
    state.acquire_lock("dev-1", "run-other", NOW - timedelta(hours=1), 24)
    before = items(table)
    # WHEN a second execution plans dev-1
    with pytest.raises(BatchLocked) as caught:
        planner.plan(request("dev-1"), "run-1", "arn:exec:run-1")
    # THEN it is refused, naming the holder; the holder keeps the lock; no run record appears
    assert "run-other" in str(caught.value)
    assert_nothing_left(state, table, before, "dev-1", "run-1", lock_holder="run-other")


def test_good_plan_locks_records_and_uses_the_input_soak(world):
    # GIVEN test succeeded at 1.20.0
    planner, _, state, _ = world
    succeeded(state, "test")
    # WHEN dev-1 is planned with a 30-minute soak in the input
    plan = planner.plan(request("dev-1", soak_period_minutes=30, requested_by="ci"), "run-1", "arn:exec:run-1")
    # THEN the plan carries references and the input's soak
    assert plan.run_id == "run-1"
    assert plan.clusters == ["eks-dev-1", "eks-dev-2"]
    assert plan.target_version == "1.20.0"
    assert plan.soak_seconds == 30 * 60
    assert plan.merge_timeout_seconds == 72 * 3600
    assert plan.max_concurrency == 5
    # AND the lock is held by this run, and the run record says where each cluster came from
    assert state.lock_holder("dev-1") == "run-1"
    run = state.get_run("run-1")
    assert run.execution_arn == "arn:exec:run-1"
    assert run.from_versions == {"eks-dev-1": "1.19.3", "eks-dev-2": "1.19.3"}
    assert run.gitlab_project == "platform/istio-fleet"
    assert run.options.requested_by == "ci"
    assert run.status == "running"


def test_a_retried_plan_lands_in_the_same_place(world):
    # GIVEN a plan that already ran for run-1
    planner, _, state, table = world
    succeeded(state, "test")
    first = planner.plan(request("dev-1"), "run-1", "arn:exec:run-1")
    after_first = items(table)
    # WHEN Step Functions retries the task
    second = planner.plan(request("dev-1"), "run-1", "arn:exec:run-1")
    # THEN the same plan comes back and the table is unchanged
    assert second == first
    assert items(table) == after_first


def test_soak_falls_back_to_the_batch_then_the_config(world):
    planner, _, state, _ = world
    for batch in ("test", "dev-1", "dev-2", "staging-us", "staging-eu"):
        succeeded(state, batch)
    # GIVEN prod-canary sets 240 minutes itself, and dev-1 sets nothing (config: 60)
    canary = planner.plan(request("prod-canary"), "run-canary", "arn:exec:run-canary")
    dev = planner.plan(request("dev-1"), "run-dev", "arn:exec:run-dev")
    # THEN the batch's soak wins over the config's, and the config's applies otherwise
    assert canary.soak_seconds == 240 * 60
    assert dev.soak_seconds == 60 * 60


def test_input_soak_of_zero_is_respected(world):
    # GIVEN an explicit 0 in the input (not "unset") for the 4-hour canary
    planner, _, state, _ = world
    for batch in ("test", "dev-1", "dev-2", "staging-us", "staging-eu"):
        succeeded(state, batch)
    plan = planner.plan(request("prod-canary", soak_period_minutes=0), "run-1", "arn:exec:run-1")
    assert plan.soak_seconds == 0
