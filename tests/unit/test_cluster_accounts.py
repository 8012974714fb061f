"""Plan refuses a cluster whose role GUARD may not assume (aws.cluster_accounts), before anything changes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from guard.config import load_config
from guard.config.accounts import account_problems, role_account
from guard.config.models import TenantConfig
from guard.core.models import Cluster, UpgradeRecord
from guard.core.run import ManualRollbackInput
from guard.errors import ConfigError
from guard.services.plan import BatchPlanner, parse_input
from guard.stores.failure import FailureStore
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from moto import mock_aws

from tests.support.clock import FakeClock

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
OWN = "123456789012"


def role(account: str, cluster_id: str) -> str:
    return f"arn:aws:iam::{account}:role/guard-{cluster_id}"


def cluster(cluster_id: str, role_arn: str | None, history: list[UpgradeRecord] | None = None) -> Cluster:
    return Cluster(cluster_id=cluster_id, batch_id="dev-1", environment="dev", region="us-east-1",
                   gitlab_project="platform/istio-fleet", aws_role_arn=role_arn,
                   flux_config_path=f"clusters/{cluster_id}/istio/helmrelease.yaml",
                   current_istio_version="1.20.0" if history else "1.19.3", upgrade_history=history or [])


def config(accounts: list[str] | None) -> TenantConfig:
    example = load_config(EXAMPLE)
    # dev-1 without its prerequisite, so only the accounts decide.
    return example.model_copy(update={"aws": example.aws.model_copy(update={"cluster_accounts": accounts}),
                                      "batch_order": {}})


@pytest.fixture
def tables(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "guard-cluster-registry",
                            "guard-state")


def seed(tables: Any, dev_2_role: str | None, history: bool = False) -> tuple[ClusterRegistry, StateStore, Any]:
    registry_table, state_table = tables
    registry = ClusterRegistry(registry_table, "example")
    done = [UpgradeRecord(run_id="run-0", from_version="1.19.3", to_version="1.20.0", outcome="succeeded",
                          at=datetime(2024, 5, 1, tzinfo=UTC))] if history else None
    registry.put(cluster("eks-dev-1", role("111122223333", "eks-dev-1"), done))
    registry.put(cluster("eks-dev-2", dev_2_role, done))
    return registry, StateStore(state_table), state_table


def items(state_table: Any) -> list[dict[str, Any]]:
    return sorted(state_table.scan(ConsistentRead=True)["Items"], key=lambda i: (i["pk"], i["sk"]))


def refused(action: str, planner: BatchPlanner) -> str:
    with pytest.raises(ConfigError) as caught:
        if action == "plan":
            planner.plan(parse_input({"batch": "dev-1", "target_version": "1.20.0"}), "run-1", "arn:exec:run-1")
        else:
            planner.plan_rollback(ManualRollbackInput(action="rollback", batch="dev-1", reason="hurts"),
                                  "run-1", "arn:exec:run-1")
    return str(caught.value)


def no_account() -> str:
    raise AssertionError("the own account is not needed when aws.cluster_accounts is set")


@pytest.mark.parametrize("action", ["plan", "plan_rollback"])
def test_cluster_in_an_unlisted_account_is_refused_before_anything_changes(tables, action):
    # GIVEN a tenant listing 111122223333, and batch dev-1 with eks-dev-2's role in 999988887777
    registry, state, state_table = seed(tables, role("999988887777", "eks-dev-2"), history=action != "plan")
    planner = BatchPlanner(config(["111122223333"]), registry, state, FakeClock(NOW),
                           failures=FailureStore(state_table), own_account=no_account)
    # WHEN an upgrade (or a manual rollback) of dev-1 is planned
    message = refused(action, planner)
    # THEN it is refused naming the batch, the cluster, its account and the config key
    assert "batch 'dev-1'" in message
    assert "cluster eks-dev-2" in message and "account 999988887777" in message
    assert "aws.cluster_accounts lists 111122223333" in message
    assert "eks-dev-1" not in message
    # AND nothing changed: no lock, no run record, no rollback record
    assert state.lock_holder("dev-1") is None
    assert state.find_run("run-1") is None
    assert items(state_table) == []


@pytest.mark.parametrize("action", ["plan", "plan_rollback"])
def test_without_cluster_accounts_only_the_account_guard_runs_in_is_allowed(tables, action):
    # GIVEN a tenant that leaves aws.cluster_accounts out, GUARD running in 111122223333,
    # and eks-dev-2's role in another account, 444455556666
    registry, state, state_table = seed(tables, role("444455556666", "eks-dev-2"), history=action != "plan")
    planner = BatchPlanner(config(None), registry, state, FakeClock(NOW), failures=FailureStore(state_table),
                           own_account=lambda: "111122223333")
    # WHEN dev-1 is planned THEN it is refused, saying only the own account is allowed, and nothing changed
    message = refused(action, planner)
    assert "cluster eks-dev-2" in message and "account 444455556666" in message
    assert "only the account GUARD runs in (111122223333)" in message
    assert items(state_table) == []


def test_a_role_arn_that_is_not_an_iam_role_is_refused(tables):
    # GIVEN eks-dev-2 whose aws_role_arn is not an IAM role ARN
    registry, state, state_table = seed(tables, "arn:aws:iam::111122223333:user/guard-eks-dev-2")
    planner = BatchPlanner(config(["111122223333"]), registry, state, FakeClock(NOW), own_account=no_account)
    # WHEN dev-1 is planned THEN it is refused naming the cluster and the ARN, and nothing changed
    message = refused("plan", planner)
    assert "cluster eks-dev-2: aws_role_arn 'arn:aws:iam::111122223333:user/guard-eks-dev-2' is not an IAM role" \
        in message
    assert items(state_table) == []


def test_clusters_in_listed_accounts_or_without_a_role_are_planned(tables):
    # GIVEN eks-dev-1 in a listed account and eks-dev-2 reached with GUARD's own role (no aws_role_arn)
    registry, state, _ = seed(tables, None)
    planner = BatchPlanner(config(["111122223333"]), registry, state, FakeClock(NOW), own_account=no_account)
    # WHEN dev-1 is planned THEN the run is planned and locked
    plan = planner.plan(parse_input({"batch": "dev-1", "target_version": "1.20.0"}), "run-1", "arn:exec:run-1")
    assert plan.clusters == ["eks-dev-1", "eks-dev-2"]
    assert state.lock_holder("dev-1") == "run-1"


def test_own_account_is_asked_only_when_a_role_must_be_checked():
    # GIVEN clusters without roles and no aws.cluster_accounts
    # WHEN checked THEN the account GUARD runs in is never looked up (no STS call for role-less fleets)
    assert account_problems([cluster("eks-dev-1", None)], None, no_account) == []
    # AND a listed account is accepted whatever GUARD's own account is
    assert account_problems([cluster("eks-dev-1", role(OWN, "eks-dev-1"))], [OWN], no_account) == []


@pytest.mark.parametrize("arn", ["arn:aws:iam::111122223333:role/guard-x", "arn:aws-cn:iam::111122223333:role/guard-x",
                                 "arn:aws-us-gov:iam::111122223333:role/guard-x.y@z"])
def test_role_account_reads_the_account_of_a_guard_role(arn):
    assert role_account(arn) == "111122223333"


@pytest.mark.parametrize("arn", ["arn:aws:iam::*:role/guard-x", "arn:aws:iam:us-east-1:111122223333:role/guard-x",
                                 "arn:aws:sts::111122223333:assumed-role/guard-x/s", "arn:aws:iam::111122223333:role/",
                                 "arn:aws:iam::111122223333:role/guard-x\n"])
def test_role_account_refuses_what_is_not_an_iam_role_arn(arn):
    with pytest.raises(ValueError, match="not an IAM role ARN"):
        role_account(arn)
