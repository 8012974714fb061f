"""After the merge: a cluster is upgraded only when every component of the install runs the target,
istiod and then the gateways' proxies, read through the real kubernetes client from the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from guard.core.models import Cluster
from guard.services.versions import VersionReader

from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.support.clock import FakeClock
from tests.support.kubernetes import SimConnector, api_for

OLD, NEW = "1.23.2", "1.24.0"
CLUSTER = Cluster(cluster_id="c1", batch_id="b", environment="prod", region="us-east-1", gitlab_project="p",
                  flux_config_path="f.yaml", current_istio_version=OLD)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(clock, pod_ready_seconds=5) as simulator:
        simulator.add_cluster("c1", OLD)
        simulator.add_gateway("c1")
        yield simulator


def test_a_cluster_whose_gateway_stays_old_is_not_upgraded(sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN Flux applied NEW: the HelmRelease is Ready at NEW and istiod runs it
    sim.apply_chart_version("c1", NEW, reconcile_after_seconds=10)
    clock.advance(60)
    reader = VersionReader(SimConnector(sim), {"c1": NEW})
    # WHEN GUARD looks THEN the gateway's proxies still on OLD keep the cluster from counting as upgraded
    waiting = reader.waiting("c1", CLUSTER)
    assert waiting and "gateway istio-system/istio-ingressgateway proxies at " + OLD in waiting[0]
    # AND once the gateway rolled onto NEW (its chart bumped: here a restart re-injects it) the cluster is upgraded
    api_for(sim, "c1").restart_workload("Deployment", "istio-system", "istio-ingressgateway",
                                        clock.now() + timedelta(seconds=1))
    clock.advance(120)
    assert reader.waiting("c1", CLUSTER) == []


def ambient(sim: KubernetesSimulator, cluster: str, *, crds: str | None = "CreateReplace") -> None:
    """base, istiod, cni, ztunnel and the gateway, chained by dependsOn as Istio's upgrade guide orders them."""
    sim.add_component(cluster, "base", crds=crds)
    sim.add_component(cluster, "istiod", depends_on=["istio-base"])
    sim.add_component(cluster, "cni", depends_on=["istiod"])
    sim.add_component(cluster, "ztunnel", depends_on=["istiod"])
    sim.add_component(cluster, "gateway", name="gateway-east", depends_on=["istiod", "istio-cni", "ztunnel"])


def test_flux_upgrades_five_charts_in_dependency_order_and_each_is_verified(clock: FakeClock) -> None:
    with KubernetesSimulator(clock, pod_ready_seconds=5) as sim:
        # GIVEN an ambient install whose five HelmReleases all get NEW at once, the gateway's delay shortest
        sim.add_cluster("c2", OLD)
        ambient(sim, "c2")
        for name, delay in (("istio-base", 30), ("istiod", 20), ("istio-cni", 20), ("ztunnel", 20),
                            ("gateway-east", 5)):
            sim.apply_release_version("c2", "istio-system", name, NEW, reconcile_after_seconds=delay)
        reader = VersionReader(SimConnector(sim), {"c2": NEW})
        cluster = CLUSTER.model_copy(update={"cluster_id": "c2"})
        # WHEN only the gateway's delay has passed THEN nothing moved: it waits for istiod, which waits for base
        clock.advance(10)
        assert sim.upgrades("c2") == []
        assert reader.waiting("c2", cluster)
        # WHEN everything is due THEN Flux went base -> istiod -> cni/ztunnel -> gateway, and the CRDs moved
        clock.advance(300)
        order = [name for _, name, _ in sim.upgrades("c2")]
        assert order[:2] == ["istio-system/istio-base", "istio-system/istiod"]
        assert set(order[2:4]) == {"istio-system/istio-cni", "istio-system/ztunnel"}
        assert order[4] == "istio-system/gateway-east"
        assert sim.crd_version("c2") == NEW
        # AND GUARD verifies each component's running version: nothing left to wait for
        assert reader.waiting("c2", cluster) == []


def test_base_without_create_replace_leaves_the_crds_and_a_stale_gateway_is_reported(clock: FakeClock) -> None:
    with KubernetesSimulator(clock, pod_ready_seconds=5) as sim:
        # GIVEN a pre-1.24 base chart (CRDs in crds/) without upgrade.crds, and only base + istiod bumped
        sim.add_cluster("c3", OLD)
        ambient(sim, "c3", crds=None)
        sim.apply_release_version("c3", "istio-system", "istio-base", NEW, reconcile_after_seconds=5)
        sim.apply_release_version("c3", "istio-system", "istiod", NEW, reconcile_after_seconds=5)
        clock.advance(300)
        # THEN the CRDs stayed, and GUARD names every release still on OLD, in upgrade order
        assert sim.crd_version("c3") == OLD
        reader = VersionReader(SimConnector(sim), {"c3": NEW})
        cluster = CLUSTER.model_copy(update={"cluster_id": "c3"})
        waiting = reader.waiting("c3", cluster)
        assert [w.split("(", 1)[1].split(")")[0] for w in waiting] == ["cni", "ztunnel", "gateway"]
        # AND once those releases are bumped too and Flux applied them, nothing is left to wait for
        for name in ("istio-cni", "ztunnel", "gateway-east"):
            sim.apply_release_version("c3", "istio-system", name, NEW, reconcile_after_seconds=5)
        assert reader.waiting("c3", cluster)
        clock.advance(300)
        assert reader.waiting("c3", cluster) == []
