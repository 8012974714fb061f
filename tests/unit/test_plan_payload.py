"""The plan is state data that every later state carries: it must not grow with the batch (Step Functions keeps
256 KB of a state). It names the first clusters and counts them; the run record holds every one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from guard.config.models import TenantConfig
from guard.core.models import Cluster, UpgradeRecord
from guard.core.run import MAX_CHUNKS, ManualRollbackInput, Plan
from guard.digest import FIRST
from guard.services.plan import BatchPlanner, parse_input
from guard.stores.failure import FailureStore
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from moto import mock_aws

from tests.support.clock import FakeClock

NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)


def names(count: int, length: int) -> list[str]:
    """`count` distinct cluster ids of exactly `length` characters (EKS allows 100)."""
    return [f"eks-{'x' * (length - 9)}-{i:04d}" for i in range(count)]


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "guard-cluster-registry",
                            "guard-state")


def planner(tables: Any, clusters: list[str], *, upgraded: bool = False,
            execution: dict[str, Any] | None = None) -> tuple[BatchPlanner, StateStore, FailureStore]:
    """A planner for one batch `fleet` of these clusters, registered at 1.19.3 (or, `upgraded`, at 1.20.0 by a
    succeeded run `run-earlier`, so that a manual rollback has something to undo)."""
    registry_table, state_table = tables
    registry, state = ClusterRegistry(registry_table, "default"), StateStore(state_table)
    for cluster_id in clusters:
        registry.put(Cluster(cluster_id=cluster_id, batch_id="fleet", environment="dev", region="us-east-1",
                             gitlab_project="platform/istio-fleet", current_istio_version="1.19.3",
                             flux_config_path=f"clusters/{cluster_id}/istio/helmrelease.yaml"))
        if upgraded:
            registry.record_upgrade(cluster_id, UpgradeRecord(run_id="run-earlier", from_version="1.19.3",
                                                              to_version="1.20.0", outcome="succeeded",
                                                              at=datetime(2024, 5, 1, tzinfo=UTC)), "1.20.0")
    config = TenantConfig.model_validate({"batches": [{"name": "fleet", "clusters": clusters}],
                                          "execution": execution or {}})
    failures = FailureStore(state_table)
    return BatchPlanner(config, registry, state, FakeClock(NOW), failures=failures), state, failures


def size(plan: Plan) -> int:
    """The bytes the plan takes in the state (the Plan task's result, as the ASL stores it at `$.plan`)."""
    return len(json.dumps(plan.payload(), separators=(",", ":")).encode())


def test_an_upgrade_plan_of_2000_long_cluster_ids_stays_a_few_kb_and_the_run_keeps_every_cluster(tables):
    # GIVEN a batch of 2,000 clusters whose ids are 100 characters long (~200 KB of ids)
    clusters = names(2_000, 100)
    plan_of, state, _ = planner(tables, clusters)

    # WHEN it is planned
    plan = plan_of.plan(parse_input({"batch": "fleet", "target_version": "1.20.0"}), "run-1", "arn:exec:run-1")

    # THEN the plan names the first clusters, counts them all and numbers the chunks, in under 3 KB
    assert (plan.clusters, plan.cluster_count, plan.chunks) == (clusters[:FIRST], 2_000, list(range(80)))
    assert size(plan) < 3_000, size(plan)
    # AND every cluster is in the run record, in order, each in exactly one chunk
    run = state.get_run("run-1")
    assert run.clusters == clusters
    assert [c for chunk in plan.chunks for c in run.chunk(chunk)] == clusters


def test_the_plan_grows_only_by_its_chunk_numbers(tables):
    # GIVEN a batch of 50 clusters and one of 2,000 (same id length)
    small, state, _ = planner(tables, names(50, 24))
    plan_50 = small.plan(parse_input({"batch": "fleet", "target_version": "1.20.0"}), "run-50", "arn:exec:run-50")
    state.release_lock("fleet", "run-50")
    large, _, _ = planner(tables, names(2_000, 24))
    plan_2000 = large.plan(parse_input({"batch": "fleet", "target_version": "1.20.0"}), "run-2k", "arn:exec:run-2k")

    # THEN forty times the clusters add 78 chunk numbers and digits, not the clusters: a few hundred bytes
    assert size(plan_2000) - size(plan_50) < 400, (size(plan_50), size(plan_2000))


def test_a_small_chunk_size_on_a_large_batch_is_raised_to_keep_the_history_within_its_limit(tables):
    # GIVEN a batch of 2,000 clusters and a config asking for one cluster a chunk (2,000 chunks a stage, 7 history
    # events each, three stages: past Step Functions' 25,000 events)
    clusters = names(2_000, 24)
    plan_of, state, _ = planner(tables, clusters, execution={"cluster_chunk_size": 1})

    # WHEN it is planned
    plan = plan_of.plan(parse_input({"batch": "fleet", "target_version": "1.20.0"}), "run-1", "arn:exec:run-1")

    # THEN the run has MAX_CHUNKS chunks of 4 clusters, recorded in the run, and every cluster is in exactly one
    run = state.get_run("run-1")
    assert (len(plan.chunks), run.cluster_chunk_size) == (MAX_CHUNKS, 4)
    assert [c for chunk in plan.chunks for c in run.chunk(chunk)] == clusters


def test_a_chunk_size_that_keeps_within_the_bound_is_used_as_configured(tables):
    # GIVEN 120 clusters and 7 a chunk WHEN planned THEN the run keeps 7 a chunk: 18 chunks
    plan_of, state, _ = planner(tables, names(120, 24), execution={"cluster_chunk_size": 7})
    plan = plan_of.plan(parse_input({"batch": "fleet", "target_version": "1.20.0"}), "run-1", "arn:exec:run-1")
    assert (len(plan.chunks), state.get_run("run-1").cluster_chunk_size) == (18, 7)


def test_a_manual_rollback_plan_of_2000_clusters_names_the_first_and_the_rollback_record_keeps_all(tables):
    # GIVEN 2,000 clusters with 100-character ids upgraded 1.19.3 -> 1.20.0 by a run that succeeded
    clusters = names(2_000, 100)
    plan_of, state, failures = planner(tables, clusters, upgraded=True)

    # WHEN a person asks for a manual rollback of the batch
    plan = plan_of.plan_rollback(ManualRollbackInput(action="rollback", batch="fleet", reason="p99"),
                                 run_id="manual-1", execution_arn="arn:exec:manual-1")

    # THEN `rollback_to` is there (the ASL tests IsPresent) with the first clusters' versions, and the plan is small
    assert plan.rollback_to == dict.fromkeys(clusters[:FIRST], "1.19.3")
    assert (plan.clusters, plan.cluster_count) == (clusters[:FIRST], 2_000)
    assert size(plan) < 3_000, size(plan)
    # AND the run and the rollback record hold every cluster and the version it goes back to
    assert state.get_run("manual-1").from_versions == dict.fromkeys(clusters, "1.19.3")
    rollback = failures.get_rollback("manual-1")
    assert rollback is not None and rollback.versions == dict.fromkeys(clusters, "1.19.3")


def test_a_plan_made_before_the_count_counts_the_clusters_it_lists():
    # GIVEN `$.plan` as a plan made before `cluster_count` (it listed every cluster)
    old = {"run_id": "r", "batch": "dev", "target_version": "1.20.0", "clusters": ["a", "b", "c"],
           "flux_poll_seconds": 30, "schema_version": 2}
    # WHEN it is read THEN its count is its clusters'
    assert Plan.model_validate(old).cluster_count == 3
