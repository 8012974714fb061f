"""Tenants sharing one registry table: each store builds only its own tenant's keys, lists only its own
clusters, and `guard registry migrate` moves items written before tenant keys (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from guard.core.models import Cluster
from guard.errors import UnknownCluster
from guard.stores.registry import ClusterRegistry, registry_key
from guard.stores.registry_migration import migrate_to_tenant_keys
from guard.stores.schema import create_tables
from moto import mock_aws

from cli.guard import main

TABLE = "guard-cluster-registry"


def cluster(cluster_id: str, batch: str = "prod", version: str = "1.19.3") -> Cluster:
    return Cluster(cluster_id=cluster_id, batch_id=batch, environment="prod", region="us-east-1",
                   gitlab_project="platform/istio-fleet", current_istio_version=version,
                   flux_config_path=f"clusters/{cluster_id}/istio/helmrelease.yaml",
                   aws_role_arn=f"arn:aws:iam::123456789012:role/guard-{cluster_id}")


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        registry, _ = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), TABLE)
        yield registry


def test_two_tenants_share_a_table_without_seeing_each_other(table: Any) -> None:
    # GIVEN team-a and team-b on one registry table, both with a cluster called eks-prod-1
    team_a, team_b = ClusterRegistry(table, "team-a"), ClusterRegistry(table, "team-b")
    team_a.put(cluster("eks-prod-1", version="1.19.3"))
    team_a.put(cluster("eks-team-a-2"))
    team_b.put(cluster("eks-prod-1", version="1.18.0"))
    # WHEN each reads THEN each sees only its own items, under its own prefixed key
    assert team_a.get("eks-prod-1").current_istio_version == "1.19.3"
    assert team_b.get("eks-prod-1").current_istio_version == "1.18.0"
    assert [c.cluster_id for c in team_a.all()] == ["eks-prod-1", "eks-team-a-2"]
    assert [c.cluster_id for c in team_b.all()] == ["eks-prod-1"]
    with pytest.raises(UnknownCluster):
        team_b.get("eks-team-a-2")
    keys = sorted(i["cluster_id"] for i in table.scan()["Items"])
    assert keys == ["team-a#eks-prod-1", "team-a#eks-team-a-2", "team-b#eks-prod-1"]


@pytest.mark.parametrize("cluster_id", ["team-b#eks-prod-1", "#", ""])
def test_a_store_never_builds_a_key_outside_its_tenant(cluster_id: str) -> None:
    # GIVEN a cluster id that tries to name another tenant's key WHEN a key is built THEN it is refused
    with pytest.raises(UnknownCluster):
        registry_key("team-a", cluster_id)


@pytest.mark.parametrize("tenant", ["Team-A", "team-a#", "", "team-b#eks"])
def test_a_store_refuses_a_tenant_that_is_not_a_tenant_name(tenant: str) -> None:
    with pytest.raises(ValueError):
        ClusterRegistry(object(), tenant)


def _legacy(table: Any, c: Cluster) -> None:
    """An item as GUARD wrote it before tenant keys."""
    table.put_item(Item={"cluster_id": c.cluster_id, "batch_id": c.batch_id, "environment": c.environment,
                         "current_istio_version": c.current_istio_version, "doc": c.model_dump_json()})


def test_migration_moves_legacy_items_to_the_tenant_and_is_safe_to_repeat(table: Any) -> None:
    # GIVEN two items written before tenant keys, and one item of another tenant
    _legacy(table, cluster("eks-prod-1"))
    _legacy(table, cluster("eks-prod-2", version="1.20.0"))
    ClusterRegistry(table, "team-b").put(cluster("eks-b-1"))
    team_a = ClusterRegistry(table, "team-a")
    assert team_a.all() == []  # invisible to the tenant until migrated
    # WHEN a dry run looks THEN it reports the two and writes nothing
    dry = migrate_to_tenant_keys(table, "team-a", dry_run=True)
    assert sorted(dry.moved) == ["eks-prod-1", "eks-prod-2"]
    assert len(table.scan()["Items"]) == 3
    # WHEN migrated
    report = migrate_to_tenant_keys(table, "team-a")
    # THEN both are team-a's, unchanged, the legacy keys are gone, team-b's item is untouched
    assert sorted(report.moved) == ["eks-prod-1", "eks-prod-2"] and report.other_tenants == 1
    assert [c.cluster_id for c in team_a.all()] == ["eks-prod-1", "eks-prod-2"]
    assert team_a.get("eks-prod-2").current_istio_version == "1.20.0"
    assert sorted(i["cluster_id"] for i in table.scan()["Items"]) == [
        "team-a#eks-prod-1", "team-a#eks-prod-2", "team-b#eks-b-1"]
    assert [c.cluster_id for c in ClusterRegistry(table, "team-b").all()] == ["eks-b-1"]
    # AND a second run moves nothing
    again = migrate_to_tenant_keys(table, "team-a")
    assert again.moved == [] and sorted(again.already) == ["eks-prod-1", "eks-prod-2"]


def test_migration_leaves_a_conflicting_item_and_says_so(table: Any) -> None:
    # GIVEN a legacy item and, already under the new key, a different document (imported after the deploy)
    _legacy(table, cluster("eks-prod-1", version="1.18.0"))
    ClusterRegistry(table, "team-a").put(cluster("eks-prod-1", version="1.19.3"))
    # WHEN migrated THEN neither is overwritten or deleted, and the report names the cluster
    report = migrate_to_tenant_keys(table, "team-a")
    assert report.moved == [] and "eks-prod-1" in report.skipped
    assert "already holds a different document" in report.summary(dry_run=False)
    assert ClusterRegistry(table, "team-a").get("eks-prod-1").current_istio_version == "1.19.3"
    assert len(table.scan()["Items"]) == 2


def test_registry_migrate_command(table: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the seed's team-a config (no tenant: key, table guard-cluster-registry) and a legacy item
    config = tmp_path / "team-a-config.yaml"
    config.write_text(f"aws:\n  region: us-east-1\n  dynamodb:\n    table_name: {TABLE}\n"
                      "batches:\n  - name: team-a-prod\n    clusters: [eks-prod-1]\n")
    _legacy(table, cluster("eks-prod-1"))
    # WHEN `guard registry migrate --config` runs THEN the item becomes team-a's (the tenant of the file name)
    assert main(["registry", "migrate", "--config", str(config)]) == 0
    assert "moved 1 item(s)" in capsys.readouterr().out
    assert ClusterRegistry(table, "team-a").get("eks-prod-1").cluster_id == "eks-prod-1"
    # AND export with the same config lists it
    assert main(["registry", "export", "-", "--config", str(config)]) == 0
    assert "eks-prod-1" in capsys.readouterr().out


def test_many_clusters_are_read_in_batches_of_keys_in_the_order_asked(table: Any) -> None:
    # GIVEN 250 clusters of team-a and one of team-b (more than two BatchGetItem requests' worth of keys)
    team_a = ClusterRegistry(table, "team-a")
    ids = [f"eks-{i:03d}" for i in range(250)]
    for cluster_id in ids:
        team_a.put(cluster(cluster_id))
    ClusterRegistry(table, "team-b").put(cluster("eks-b-only"))
    asked = [*reversed(ids), "eks-missing", "eks-b-only", ids[0]]
    # WHEN team-a reads them all at once, with an unknown id, another tenant's and a duplicate
    found = team_a.get_many(asked)
    # THEN every one of its own comes back once, in the order asked; the others are absent
    assert list(found) == list(reversed(ids))
    assert all(found[c].cluster_id == c for c in ids)
