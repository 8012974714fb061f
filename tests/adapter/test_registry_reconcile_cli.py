"""`python -m cli registry reconcile --batch B` against a moto registry table and the Kubernetes simulator
(reached over HTTP through the real EKS connector, as from an operator's terminal)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from guard.core.models import Cluster
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.vocabulary.outcomes import OBSERVED
from moto import mock_aws

from cli.__main__ import main
from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.support.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example.yaml"  # table guard-cluster-registry in us-east-1; dev-1 = eks-dev-1, eks-dev-2
TABLE = "guard-cluster-registry"
# Without --config, --tenant says whose registry items (the example tenant's here).
BY_TABLE = ["--table", TABLE, "--region", "us-east-1", "--tenant", "example"]
OLD, NEW = "1.19.3", "1.20.0"


@dataclass
class World:
    registry: ClusterRegistry
    kubernetes: KubernetesSimulator

    def add(self, cluster_id: str, registered: str, runs: str, batch: str = "dev-1") -> None:
        self.kubernetes.add_cluster(cluster_id, runs)
        self.registry.put(Cluster(cluster_id=cluster_id, batch_id=batch, environment="dev", region="us-east-1",
                                  gitlab_project="platform/istio-fleet",
                                  flux_config_path=f"clusters/{cluster_id}/istio/helmrelease.yaml",
                                  current_istio_version=registered, api_endpoint=self.kubernetes.endpoint(cluster_id)))

    def version(self, cluster_id: str) -> str:
        return self.registry.get(cluster_id).current_istio_version


@pytest.fixture(scope="module")
def local_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """example.yaml allowing the clusters' API servers on the local simulator (aws.allowed_api_endpoints)."""
    path = tmp_path_factory.mktemp("config") / "example.yaml"
    path.write_text(CONFIG.read_text().replace("aws:\n", "aws:\n  allowed_api_endpoints: ['127.0.0.1']\n", 1))
    return path


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(), KubernetesSimulator(FakeClock()) as k8s:
        table, _ = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), registry_name=TABLE)
        yield World(ClusterRegistry(table, "example"), k8s)


def test_reconcile_sets_the_batch_to_what_its_clusters_run(world: World, capsys: pytest.CaptureFixture[str],
                                                           local_config: Path) -> None:
    # GIVEN dev-1 registered at OLD while eks-dev-1 runs NEW (eks-dev-2 runs OLD)
    world.add("eks-dev-1", OLD, NEW)
    world.add("eks-dev-2", OLD, OLD)
    # WHEN an operator reconciles dev-1
    code = main(["registry", "reconcile", "--batch", "dev-1", "--config", str(local_config)])
    # THEN it exits 0, the registry says what runs, and the output names the change
    out = capsys.readouterr().out
    assert code == 0, out
    assert (world.version("eks-dev-1"), world.version("eks-dev-2")) == (NEW, OLD)
    assert "2 clusters, 1 updated, 1 unchanged, 0 not observed" in out
    assert f"eks-dev-1: the registry said {OLD}, the cluster runs {NEW}: registry updated" in out
    assert world.registry.get("eks-dev-1").upgrade_history[-1].outcome == OBSERVED


def test_dry_run_reports_and_writes_nothing(world: World, capsys: pytest.CaptureFixture[str],
                                            local_config: Path) -> None:
    # GIVEN dev-1 registered at OLD while both its clusters run NEW
    world.add("eks-dev-1", OLD, NEW)
    world.add("eks-dev-2", OLD, NEW)
    world.add("eks-dev-3", OLD, NEW, batch="dev-2")
    # WHEN reconcile runs as a dry run against the table
    code = main(["registry", "reconcile", "--batch", "dev-1", "--config", str(local_config), "--dry-run"])
    # THEN it says what would change, for dev-1 only, and changes nothing
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 clusters, 2 would update" in out and "would be updated" in out and "eks-dev-3" not in out
    assert "dry run: nothing written" in out
    assert {world.version(c) for c in ("eks-dev-1", "eks-dev-2", "eks-dev-3")} == {OLD}


def test_an_unreachable_cluster_exits_1_and_keeps_its_version(world: World, capsys: pytest.CaptureFixture[str],
                                                              local_config: Path) -> None:
    # GIVEN eks-dev-2's API answers 503
    world.add("eks-dev-1", OLD, NEW)
    world.add("eks-dev-2", OLD, NEW)
    world.kubernetes.set_unreachable("eks-dev-2")
    # WHEN dev-1 is reconciled
    code = main(["registry", "reconcile", "--batch", "dev-1", "--config", str(local_config)])
    # THEN the reachable cluster is corrected, the other kept and reported, and the exit code says not all agreed
    out = capsys.readouterr().out
    assert code == 1, out
    assert (world.version("eks-dev-1"), world.version("eks-dev-2")) == (NEW, OLD)
    assert "eks-dev-2: could not observe its version (cluster unreachable:" in out
    assert f"the registry keeps {OLD}" in out


@pytest.mark.parametrize(("argv", "problem"), [
    (["--batch", "nope", "--config", str(CONFIG)], "--batch: unknown batch 'nope' (tenant 'example' has: test, dev-1"),
    (["--batch", "dev-2", "--config", str(CONFIG)], "batch 'dev-2' lists clusters missing from the registry: "
                                                    "eks-dev-3, eks-dev-4"),
    (["--batch", "nope", *BY_TABLE], "no registry cluster has batch_id 'nope'"),
    (["--batch", " ", *BY_TABLE], "--batch: must not be empty"),
])
def test_bad_batch_exits_2_naming_the_problem(world: World, capsys: pytest.CaptureFixture[str], argv: list[str],
                                              problem: str) -> None:
    # GIVEN only dev-1's clusters are registered
    world.add("eks-dev-1", OLD, NEW)
    world.add("eks-dev-2", OLD, NEW)
    # WHEN reconcile names a batch it cannot find THEN it exits 2, says why, and changes nothing
    assert main(["registry", "reconcile", *argv]) == 2
    assert problem in capsys.readouterr().err
    assert world.version("eks-dev-1") == OLD


def test_batch_is_required(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # WHEN --batch is left out THEN argparse refuses it with exit 2, naming the option
    assert main(["registry", "reconcile", "--config", str(CONFIG)]) == 2
    assert "--batch" in capsys.readouterr().err


def test_without_a_config_no_endpoint_override_is_trusted(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN dev-1's clusters registered with api_endpoint overrides (the local simulator)
    world.add("eks-dev-1", OLD, NEW)
    world.add("eks-dev-2", OLD, NEW)
    # WHEN reconcile runs against the table alone (no tenant config, so no aws.allowed_api_endpoints)
    code = main(["registry", "reconcile", "--batch", "dev-1", *BY_TABLE])
    # THEN no token is sent to them: both are reported not observed, naming the field, and keep their version
    out = capsys.readouterr().out
    assert code == 1 and "2 not observed" in out
    assert "aws.allowed_api_endpoints" in out
    assert (world.version("eks-dev-1"), world.version("eks-dev-2")) == (OLD, OLD)
