"""GUARD's checks, Flux reading and sidecar waves on clusters shaped like real ones (simulator over HTTP):
StatefulSets, DaemonSets and Jobs with sidecars, revisioned istiod, image variants, digest-pinned proxies,
PDB selectors of every form, old helm-controllers and suspended HelmReleases."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from guard.checks import builtin
from guard.checks.snapshot import ClusterSnapshot
from guard.core.models import CheckStatus, Cluster
from guard.errors import FluxSyncFailed, SidecarRestartFailed
from guard.services.versions import VersionReader
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from moto import mock_aws

from sandbox.sims.kubernetes_sim import KubernetesSimulator, Workload
from tests.adapter.test_sidecar_waves import service
from tests.support.clock import FakeClock
from tests.support.kubernetes import SimConnector, api_for

OLD, NEW = "1.19.3", "1.20.0"
REAL = [Workload("shop", "cart", 3), Workload("shop", "search", 2, proxy_digest=True, pdb_selector="expressions"),
        Workload("data", "redis", 3, kind="StatefulSet", pdb_selector="empty"),
        Workload("obs", "agent", kind="DaemonSet", native_sidecar=True)]


def cluster(cluster_id: str = "c1") -> Cluster:
    return Cluster(cluster_id=cluster_id, batch_id="b", environment="prod", region="us-east-1", gitlab_project="p",
                   flux_config_path="f.yaml", current_istio_version=OLD)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ClusterRegistry, StateStore]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ddb = boto3.resource("dynamodb")
        create_tables(ddb, "registry", "state")
        yield ClusterRegistry(ddb.Table("registry"), "example"), StateStore(ddb.Table("state"))


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(clock, pod_ready_seconds=20) as simulator:
        simulator.add_cluster("c1", OLD, workloads=REAL, istio_revision="stable", image_variant="debug",
                              helm_versions=["v2beta1", "v2beta2"])
        simulator.add_job("c1", "shop", "report", completed=True)
        yield simulator


def snapshot(sim: KubernetesSimulator) -> ClusterSnapshot:
    return ClusterSnapshot.read(api_for(sim, "c1"), release=("istio-system", "istiod"))


def test_a_realistic_healthy_cluster_passes_its_prechecks(sim: KubernetesSimulator) -> None:
    # GIVEN a revisioned istiod (istiod-stable, -debug images), an old helm-controller (no v2), a StatefulSet,
    # a DaemonSet with native sidecars, digest-pinned proxies and a completed Job's pod
    snap = snapshot(sim)
    c = cluster()
    # WHEN the prechecks run
    results = {r.check_name: r for r in [
        builtin.helm_release_ready(c, snap), builtin.istiod_ready(c, snap, OLD),
        builtin.proxies_on_version(c, snap, OLD, "proxies"), builtin.sidecar_injector(c, snap),
        builtin.pdbs_present(c, snap, builtin.ZeroDowntimePolicy(pdb_required=True, min_ready_replicas_percent=80)),
        builtin.pdb_disruptions(c, snap), builtin.injection_labels_consistent(c, snap),
        builtin.version_skew(c, snap, NEW, 1)]}
    # THEN none fails: istiod is found by label and revision, the HelmRelease is read through v2beta2
    assert {n: r.message for n, r in results.items() if not r.passed} == {}
    assert results["helm_release"].details["api_version"] == "v2beta2"
    assert "running 1.19.3" in results["istiod_ready"].message
    # AND the digest-pinned proxies are counted as unreadable (a warning), never as "not injected"
    assert results["proxies"].status == CheckStatus.WARN
    assert len(results["proxies"].details["unknown_version"]) == 2
    assert {w.kind for w in snap.injected_workloads()} == {"Deployment", "StatefulSet", "DaemonSet"}


def test_after_the_upgrade_every_workload_kind_is_restarted_and_no_job_blocks_the_verdict(
        sim: KubernetesSimulator, clock: FakeClock, stores: tuple[ClusterRegistry, StateStore]) -> None:
    # GIVEN the control plane upgraded to 1.20.0, and a Job still running on the old proxy
    sim.add_job("c1", "shop", "reindex", completed=False)
    sim.apply_chart_version("c1", NEW, reconcile_after_seconds=0)
    waves = service(stores, sim, clock, sidecar_restart_wave_size=2)
    done: dict = {}
    # WHEN the sidecar waves run until done (bounded)
    for _ in range(40):
        if not waves.advance("r1", "upgrade", "c1", cluster(), NEW, done, clock.now(), []):
            break
        clock.advance(30)
    # THEN the StatefulSet, the DaemonSet, and the Deployments (digest-pinned included) were restarted
    assert set(done) == {"shop/cart", "shop/search", "data/StatefulSet/redis", "obs/DaemonSet/agent"}
    # AND every restartable proxy runs 1.20.0; the post-check passes (digest ones as a warning)
    result = builtin.proxies_on_version(cluster(), snapshot(sim), NEW, "proxies_on_target_version")
    assert result.passed and result.details["off_version"] == []
    assert [p.split("@")[0].split("/")[1][:7] for p in result.details["not_restartable"]] == ["reindex"]


def test_a_pdb_that_never_allows_a_disruption_is_reported_at_once(sim: KubernetesSimulator, clock: FakeClock,
                                                                  stores: tuple[ClusterRegistry, StateStore]) -> None:
    # GIVEN a 1-replica workload whose PDB says minAvailable: 1
    sim.add_cluster("c2", OLD, workloads=[Workload("shop", "solo", 1, pdb_min_available=1)])
    snap = ClusterSnapshot.read(api_for(sim, "c2"))
    # WHEN prechecked THEN the precheck fails and says why and what to do
    result = builtin.pdb_disruptions(cluster("c2"), snap)
    assert result.status == CheckStatus.FAIL and "shop/solo" in result.message and "minAvailable 1" in result.message
    # AND the restart wave fails at once instead of waiting for the restart timeout
    sim.apply_chart_version("c2", NEW, reconcile_after_seconds=0)
    with pytest.raises(SidecarRestartFailed, match="allows no disruption even with all 1 pod"):
        service(stores, sim, clock).advance("r1", "upgrade", "c2", cluster("c2"), NEW, {},
                                           clock.now(), [])


def test_flux_is_read_through_the_served_version_and_a_suspension_is_named(sim: KubernetesSimulator) -> None:
    # GIVEN clusters whose helm-controller serves only v2beta1, and the v2beta1+v2beta2 one
    sim.add_cluster("c0", OLD, helm_versions=["v2beta1"])
    reader = VersionReader(SimConnector(sim), {"c0": NEW, "c1": NEW})
    # WHEN the change is applied and reconciled THEN both are read (no 404 on v2) and reach the target
    for cid in ("c0", "c1"):
        sim.apply_chart_version(cid, NEW, reconcile_after_seconds=0)
        assert reader.waiting(cid, cluster(cid)) == []
    # GIVEN a HelmRelease suspended before the next change WHEN Flux is waited on
    sim.suspend_helm_release("c1")
    sim.apply_chart_version("c1", "1.20.1", reconcile_after_seconds=0)
    # THEN the poll fails at once and names the suspension
    with pytest.raises(FluxSyncFailed, match=r"suspended \(spec.suspend: true\)"):
        VersionReader(SimConnector(sim), {"c1": "1.20.1"}).waiting("c1", cluster())
    assert builtin.helm_release_ready(cluster(), snapshot(sim)).status == CheckStatus.FAIL


def test_a_failed_upgrade_is_remediated_then_retried_and_a_stalled_one_fails_fast(
        sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN an upgrade that fails once (rolled back by Flux) before its retry succeeds
    sim.fail_upgrades("c1", 1)
    sim.apply_chart_version("c1", NEW, reconcile_after_seconds=60)
    reader = VersionReader(SimConnector(sim), {"c1": NEW})
    clock.advance(61)
    # THEN while remediated GUARD keeps waiting and says why; after the retry it is at the target
    [why] = reader.waiting("c1", cluster())
    assert "UpgradeFailed" in why or "upgrade failed" in why
    clock.advance(60)
    assert reader.waiting("c1", cluster()) == []
    # GIVEN a next upgrade whose retries are exhausted THEN the poll fails at once, naming the stall
    sim.fail_upgrades("c1", 1, stall=True)
    sim.apply_chart_version("c1", "1.20.1", reconcile_after_seconds=0)
    with pytest.raises(FluxSyncFailed, match="stalled"):
        VersionReader(SimConnector(sim), {"c1": "1.20.1"}).waiting("c1", cluster())


def test_events_are_followed_across_pages(sim: KubernetesSimulator) -> None:
    # GIVEN more events than one page holds
    from guard.adapters.kubernetes_api import KubernetesEvidence

    api = api_for(sim, "c1")
    api.page_size = 2
    for i in range(5):
        sim.crash_loop("c1", "shop", f"cart{i}")
    # WHEN listed THEN every page is read
    assert len(KubernetesEvidence(api).list_events("shop")) == 5
