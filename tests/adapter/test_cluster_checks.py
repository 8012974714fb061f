"""Every built-in check, on a snapshot read through the real kubernetes client from the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from guard.checks import builtin
from guard.checks.snapshot import ClusterSnapshot
from guard.core.models import CheckStatus, Cluster

from sandbox.sims.kubernetes_sim import KubernetesSimulator, Workload
from tests.support.clock import FakeClock
from tests.support.kubernetes import api_for

VERSION = "1.19.3"
CLUSTER = Cluster(cluster_id="c1", batch_id="b", environment="prod", region="us-east-1", gitlab_project="p",
                  flux_config_path="f.yaml", current_istio_version=VERSION)
POLICY = builtin.ZeroDowntimePolicy(pdb_required=True, min_ready_replicas_percent=80)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(clock, pod_ready_seconds=5) as simulator:
        simulator.add_cluster("c1", VERSION, workloads=[Workload("shop", "cart", 3), Workload("shop", "orders", 2)])
        yield simulator


def snapshot(sim: KubernetesSimulator) -> ClusterSnapshot:
    return ClusterSnapshot.read(api_for(sim, "c1"))


def test_a_healthy_cluster_passes_every_precheck(sim: KubernetesSimulator) -> None:
    # GIVEN a healthy cluster with a gateway WHEN its snapshot is checked
    sim.add_gateway("c1")
    snap = snapshot(sim)
    results = [
        builtin.nodes_ready(CLUSTER, snap), builtin.system_pods_ready(CLUSTER, snap),
        builtin.no_crash_loops(CLUSTER, snap), builtin.istiod_ready(CLUSTER, snap, VERSION),
        builtin.proxies_on_version(CLUSTER, snap, VERSION, "proxies"),
        builtin.injection_labels_consistent(CLUSTER, snap),
        builtin.pdbs_present(CLUSTER, snap, POLICY), builtin.ready_replicas(CLUSTER, snap, POLICY),
        builtin.sidecar_injector(CLUSTER, snap), builtin.gateways_ready(CLUSTER, snap),
        builtin.version_skew(CLUSTER, snap, "1.20.0", 1),
    ]
    # THEN every one passes
    assert [r.check_name for r in results if r.status != CheckStatus.PASS] == []


def test_node_not_ready_fails_nodes_ready(sim: KubernetesSimulator) -> None:
    # GIVEN a node that is NotReady
    sim.set_node_ready("c1", sim.node_names("c1")[0], False)
    # WHEN checked THEN nodes_ready fails and names the node
    result = builtin.nodes_ready(CLUSTER, snapshot(sim))
    assert result.status == CheckStatus.FAIL and sim.node_names("c1")[0] in result.message


def test_crash_loop_fails_and_is_named_by_workload(sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN shop/cart crash-looping
    sim.crash_loop("c1", "shop", "cart")
    clock.advance(60)
    result = builtin.no_crash_loops(CLUSTER, snapshot(sim))
    # THEN the check fails, and remembers the workload for the post-check
    assert result.status == CheckStatus.FAIL
    assert result.details["workloads"] == ["shop/cart"]
    # AND after the upgrade only a workload that was not looping before counts as new
    assert builtin.no_new_crash_loops(CLUSTER, snapshot(sim), ["shop/cart"]).status == CheckStatus.PASS
    assert builtin.no_new_crash_loops(CLUSTER, snapshot(sim), []).status == CheckStatus.FAIL


def test_missing_injector_webhook_fails_sidecar_injector(sim: KubernetesSimulator) -> None:
    # GIVEN the istio-sidecar-injector MutatingWebhookConfiguration deleted
    sim.remove_injector_webhook("c1")
    # THEN sidecar_injector fails saying new pods would get no sidecar
    result = builtin.sidecar_injector(CLUSTER, snapshot(sim))
    assert result.status == CheckStatus.FAIL and "no sidecar" in result.message


def test_missing_pdb_fails_when_pdbs_are_required(sim: KubernetesSimulator) -> None:
    # GIVEN shop/orders without its PDB
    sim.remove_pdb("c1", "shop", "orders")
    snap = snapshot(sim)
    # THEN the PDB check fails naming it, and is skipped when PDBs are not required
    assert "shop/orders" in builtin.pdbs_present(CLUSTER, snap, POLICY).message
    relaxed = POLICY.model_copy(update={"pdb_required": False})
    assert builtin.pdbs_present(CLUSTER, snap, relaxed).status == CheckStatus.SKIPPED


def test_min_replicas_override_fails_small_workloads(sim: KubernetesSimulator) -> None:
    # GIVEN min_replicas 3 from the execution input WHEN checked
    result = builtin.ready_replicas(CLUSTER, snapshot(sim), POLICY.model_copy(update={"min_replicas": 3}))
    # THEN the 2-replica workload fails
    assert result.status == CheckStatus.FAIL and "shop/orders has 2 replicas < min_replicas 3" in result.message


def test_version_skew_refuses_proxies_two_minors_behind_an_in_place_target(sim: KubernetesSimulator) -> None:
    # GIVEN proxies on 1.19.3
    snap = snapshot(sim)
    # WHEN the target is 1.21.0 in place THEN the skew check fails; a revision upgrade (skip 2) allows it
    assert builtin.version_skew(CLUSTER, snap, "1.21.0", 1).status == CheckStatus.FAIL
    assert builtin.version_skew(CLUSTER, snap, "1.21.0", 2).status == CheckStatus.PASS


def test_after_the_control_plane_upgrade_proxies_lag_until_restarted(sim: KubernetesSimulator,
                                                                      clock: FakeClock) -> None:
    # GIVEN Flux reconciled 1.20.0 (istiod runs it) but no workload restarted yet
    sim.apply_chart_version("c1", "1.20.0", reconcile_after_seconds=10)
    clock.advance(30)
    snap = snapshot(sim)
    # THEN istiod is on the target, proxies are not, and the data plane is not ahead
    assert builtin.istiod_ready(CLUSTER, snap, "1.20.0").status == CheckStatus.PASS
    assert builtin.proxies_on_version(CLUSTER, snap, "1.20.0", "p").status == CheckStatus.FAIL
    assert builtin.version_skew(CLUSTER, snap, "1.20.0", 1).status == CheckStatus.PASS


def test_gateway_not_ready_fails_gateways_ready(sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN a gateway whose pods crash-loop
    sim.add_gateway("c1")
    sim.crash_loop("c1", "istio-system", "istio-ingressgateway")
    clock.advance(60)
    # THEN gateways_ready fails naming it
    result = builtin.gateways_ready(CLUSTER, snapshot(sim))
    assert result.status == CheckStatus.FAIL and "istio-ingressgateway" in result.message


def test_max_unavailable_passes_the_default_rollouts_and_pdbs_of_one_pod(sim: KubernetesSimulator) -> None:
    # GIVEN istiod (2 replicas, maxUnavailable 25% = 0 pods), a gateway, PDBs with maxUnavailable 1
    sim.add_gateway("c1")
    # WHEN checked with the seed's --max-unavailable 1
    result = builtin.max_unavailable(CLUSTER, snapshot(sim), POLICY.model_copy(update={"max_unavailable": 1}))
    # THEN it passes, counting the PDBs it read
    assert result.status == CheckStatus.PASS, result.message
    assert "PDB(s)" in result.message


def test_max_unavailable_fails_an_istiod_rollout_that_takes_more_pods_down(sim: KubernetesSimulator) -> None:
    # GIVEN istiod patched to roll out with maxUnavailable 2 (its PDB still allows 1), and a gateway that Recreates
    istiod = next(d.name for d in snapshot(sim).deployments if d.name.startswith("istiod"))
    sim.set_rollout_strategy("c1", "istio-system", istiod, max_unavailable=2)
    sim.add_gateway("c1")
    sim.set_rollout_strategy("c1", "istio-system", "istio-ingressgateway", strategy="Recreate")
    # WHEN checked with --max-unavailable 1
    result = builtin.max_unavailable(CLUSTER, snapshot(sim), POLICY.model_copy(update={"max_unavailable": 1}))
    # THEN it fails naming both, with the numbers
    assert result.status == CheckStatus.FAIL
    assert f"istio-system/{istiod} rolls out with maxUnavailable 2 (= 2 of 2 pods)" in result.message
    assert "istio-system/istio-ingressgateway uses the Recreate strategy" in result.message


def test_max_unavailable_fails_a_pdb_that_allows_more_pods_down(clock: FakeClock) -> None:
    # GIVEN a workload of 4 replicas whose PDB says minAvailable 50% (2 of 4 may go)
    with KubernetesSimulator(clock, pod_ready_seconds=5) as sim:
        sim.add_cluster("c1", VERSION, workloads=[Workload("shop", "cart", 4, pdb_min_available="50%")])
        # WHEN checked with --max-unavailable 1, and with 2
        strict = builtin.max_unavailable(CLUSTER, snapshot(sim), POLICY.model_copy(update={"max_unavailable": 1}))
        loose = builtin.max_unavailable(CLUSTER, snapshot(sim), POLICY.model_copy(update={"max_unavailable": 2}))
    # THEN the PDB fails the first and passes the second
    assert strict.status == CheckStatus.FAIL and "(minAvailable 50%) allows 2 of 4 pods of Deployment cart" in \
        strict.message, strict.message
    assert loose.status == CheckStatus.PASS, loose.message


def test_max_unavailable_is_skipped_when_not_asked(sim: KubernetesSimulator) -> None:
    assert builtin.max_unavailable(CLUSTER, snapshot(sim), POLICY).status == CheckStatus.SKIPPED
