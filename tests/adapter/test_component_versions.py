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
