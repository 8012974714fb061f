"""Sidecar restarts in waves (rollout sequencing) against the Kubernetes simulator, state on moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from guard.config import parse_config
from guard.core.models import Cluster
from guard.core.run import ExecutionInput, RunRecord
from guard.errors import SidecarRestartTimeout
from guard.services.rollback import RollbackService
from guard.services.sidecars import SidecarRolloutService
from guard.stores.failure import FailureStore, RollbackRecord
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import RollbackStatus
from moto import mock_aws

from sandbox.sims.kubernetes_sim import KubernetesSimulator, Workload
from tests.support.clock import FakeClock
from tests.support.kubernetes import SimConnector, api_for

OLD, NEW = "1.19.3", "1.20.0"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(clock, pod_ready_seconds=20) as simulator:
        simulator.add_cluster("c1", OLD, workloads=[Workload("shop", "cart", 3), Workload("shop", "orders", 2),
                                                    Workload("shop", "search", 2)])
        yield simulator


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ClusterRegistry, StateStore]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ddb = boto3.resource("dynamodb")
        create_tables(ddb, "registry", "state")
        yield ClusterRegistry(ddb.Table("registry"), "example"), StateStore(ddb.Table("state"))


def service(stores: tuple[ClusterRegistry, StateStore], sim: KubernetesSimulator, clock: FakeClock,
            **execution: Any) -> SidecarRolloutService:
    registry, state = stores
    config = parse_config({"batches": [{"name": "b", "clusters": ["c1"]}],
                           "execution": {"sidecar_restart_wave_size": 1, **execution}})
    registry.put(Cluster(cluster_id="c1", batch_id="b", environment="prod", region="us-east-1",
                         gitlab_project="p", flux_config_path="f.yaml", current_istio_version=OLD))
    state.put_run(RunRecord(run_id="r1", execution_arn="arn", batch="b", target_version=NEW, clusters=["c1"],
                            from_versions={"c1": OLD}, gitlab_project="p",
                            options=ExecutionInput(batch="b", target_version=NEW), started_at=clock.now()))
    return SidecarRolloutService(config, registry, state, SimConnector(sim), clock)


def upgraded_control_plane(sim: KubernetesSimulator, clock: FakeClock) -> None:
    sim.apply_chart_version("c1", NEW, reconcile_after_seconds=5)
    clock.advance(60)


def test_waves_restart_one_workload_at_a_time_until_every_proxy_runs_the_target(
        stores: tuple[ClusterRegistry, StateStore], sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN istiod on 1.20.0 and three workloads whose proxies still run 1.19.3, waves of one
    upgraded_control_plane(sim, clock)
    waves = service(stores, sim, clock)

    # WHEN polled every 30 s
    restarted_per_poll, deadline, poll = [], None, None
    for _ in range(20):
        poll = waves.poll("r1", deadline)
        deadline = poll.deadline
        restarted_per_poll.append(poll.restarted)
        if poll.done:
            break
        clock.advance(30)

    # THEN each wave restarted one workload and waited for it before the next
    assert poll is not None and poll.done
    assert [r for r in restarted_per_poll if r] == [["c1:shop/cart"], ["c1:shop/orders"], ["c1:shop/search"]]
    assert set(sim.proxy_versions("c1").values()) == {NEW}
    # AND a poll after the end restarts nothing again
    assert waves.poll("r1", deadline).restarted == []


def test_each_wave_is_an_item_of_its_own_and_the_run_record_does_not_grow(
        stores: tuple[ClusterRegistry, StateStore], sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN istiod on 1.20.0 and three workloads to restart, waves of two
    upgraded_control_plane(sim, clock)
    waves = service(stores, sim, clock, sidecar_restart_wave_size=2)
    _, state = stores
    # WHEN polled until done
    poll = waves.poll("r1", None)
    while not poll.done:
        clock.advance(30)
        poll = waves.poll("r1", poll.deadline)
    # THEN the two waves are recorded, each workload with when it was restarted, and the run record holds none
    restarts = state.sidecar_restarts("r1", "upgrade")
    assert sorted(restarts["c1"]) == ["shop/cart", "shop/orders", "shop/search"]
    assert len(set(restarts["c1"].values())) == 2
    assert state.get_run("r1").sidecar_restarts == {}


def test_restarts_kept_in_a_run_record_written_before_are_not_repeated(
        stores: tuple[ClusterRegistry, StateStore], sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN a run record written before waves had items of their own: shop/cart already restarted onto 1.20.0
    upgraded_control_plane(sim, clock)
    waves = service(stores, sim, clock)
    _, state = stores
    api_for(sim, "c1").restart_workload("Deployment", "shop", "cart", clock.now())
    run = state.get_run("r1")
    run.sidecar_restarts = {"c1": {"shop/cart": clock.now()}}
    state.put_run(run)
    clock.advance(60)
    # WHEN polled until done
    restarted: list[str] = []
    poll = waves.poll("r1", None)
    restarted += poll.restarted
    while not poll.done:
        clock.advance(30)
        poll = waves.poll("r1", poll.deadline)
        restarted += poll.restarted
    # THEN shop/cart is not restarted again; the others are
    assert restarted == ["c1:shop/orders", "c1:shop/search"]


def test_a_workload_below_its_ready_floor_is_not_restarted_and_times_out(
        stores: tuple[ClusterRegistry, StateStore], sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN shop/orders crash-looping (0/2 ready, below the 80% floor) after the control plane upgrade
    upgraded_control_plane(sim, clock)
    sim.crash_loop("c1", "shop", "orders")
    waves = service(stores, sim, clock, sidecar_restart_wave_size=5, sidecar_restart_timeout_minutes=5)

    # WHEN polled
    poll = waves.poll("r1", None)

    # THEN the healthy workloads are restarted, the unhealthy one is held back with the reason
    assert sorted(poll.restarted) == ["c1:shop/cart", "c1:shop/search"]
    assert any("shop/orders has 0/2 ready, below the floor of 2" in w for w in poll.waiting_on)
    # AND past the deadline the batch fails naming it
    clock.advance(6 * 60)
    with pytest.raises(SidecarRestartTimeout, match="shop/orders"):
        waves.poll("r1", poll.deadline)


def test_a_rollback_restarts_the_proxies_back_onto_the_previous_version_before_it_is_verified(
        stores: tuple[ClusterRegistry, StateStore], sim: KubernetesSimulator, clock: FakeClock) -> None:
    # GIVEN an upgrade whose waves moved every proxy to 1.20.0, then a merged rollback MR back to 1.19.3
    upgraded_control_plane(sim, clock)
    waves = service(stores, sim, clock, enable_rollout_sequencing=True, sidecar_restart_wave_size=3)
    poll = waves.poll("r1", None)
    while not poll.done:
        clock.advance(30)
        poll = waves.poll("r1", poll.deadline)
    assert set(sim.proxy_versions("c1").values()) == {NEW}
    registry, state = stores
    failures = FailureStore(boto3.resource("dynamodb").Table("state"))
    failures.put_rollback(RollbackRecord(run_id="r1", batch="b", reason="p95 +30%", clusters=["c1"],
                                         versions={"c1": OLD}, rolled_back_from=NEW,
                                         status=RollbackStatus.WAITING_FOR_MERGE, at=clock.now()))
    sim.apply_chart_version("c1", OLD, reconcile_after_seconds=5)
    config = parse_config({"batches": [{"name": "b", "clusters": ["c1"]}],
                           "execution": {"enable_rollout_sequencing": True, "sidecar_restart_wave_size": 3}})
    rollback = RollbackService(config, registry, state, failures, None, clock, connector=SimConnector(sim))

    # WHEN the rollback is verified, poll after poll
    verify = rollback.verify("r1", None)
    while not verify.done:
        clock.advance(30)
        verify = rollback.verify("r1", verify.deadline)

    # THEN it was only verified once every proxy ran the previous version again (none left ahead of istiod)
    assert (verify.status, verify.error) == (RollbackStatus.ROLLED_BACK, "RolledBack")
    assert set(sim.proxy_versions("c1").values()) == {OLD}
    assert sorted(state.sidecar_restarts("r1", "rollback")["c1"]) == ["shop/cart", "shop/orders", "shop/search"]
