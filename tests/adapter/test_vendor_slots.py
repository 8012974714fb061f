"""Per-vendor caps (execution.vendor_concurrency): no more calls in flight than the Lambda's slots,
measured where the vendor sees them (the simulators over HTTP)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from guard.adapters.datadog_metrics import DatadogMetrics
from guard.adapters.gitlab_repo import GitLabRepo
from guard.adapters.kubernetes_api import KubernetesApi
from guard.retry import RetryPolicy
from guard.vendor_slots import VendorSlots
from kubernetes import client as k8s

from sandbox.sims.datadog_sim import TIMESERIES_PATH, DatadogSimulator
from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.adapter.test_kubernetes_api import TOKEN
from tests.support.clock import FakeClock

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class InFlight:
    """Wraps a simulator's `handle` to count the requests it is answering at once."""

    def __init__(self, sim: Any, seconds: float, method: str = "handle") -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()
        inner = getattr(sim, method)

        def handle(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                threading.Event().wait(seconds)  # the vendor takes a while: calls overlap
                return inner(*args, **kwargs)
            finally:
                with self._lock:
                    self.now -= 1

        setattr(sim, method, handle)


@pytest.fixture
def datadog_sim() -> Iterator[DatadogSimulator]:
    with DatadogSimulator(api_key="k", app_key="a") as sim:
        sim.set_series("avg:latency{cluster:c1}", lambda t: 1.0)
        yield sim


def _datadog(sim: DatadogSimulator, slots: VendorSlots | None) -> DatadogMetrics:
    return DatadogMetrics.from_keys("k", "a", host=sim.url, timeout_seconds=5,
                                    retry=RetryPolicy(sleep=lambda _: None), slots=slots)


def _eight_at_once(call: Any) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: call(), range(8)))


@pytest.mark.parametrize("slots", [2, None])
def test_datadog_calls_in_flight_never_exceed_the_slots(datadog_sim: DatadogSimulator, slots: int | None) -> None:
    # GIVEN a Datadog that answers in 0.2 s, and the Lambda's Datadog slots (or none)
    seen = InFlight(datadog_sim, 0.2)
    datadog = _datadog(datadog_sim, VendorSlots("datadog", slots) if slots else None)
    # WHEN 8 clusters' workers query at once
    _eight_at_once(lambda: datadog.query({"latency": "avg:latency{cluster:c1}"}, NOW - timedelta(minutes=5), NOW))
    # THEN Datadog never had more requests in flight than the slots (without a cap, more of the 8 overlap)
    if slots:
        assert seen.most == slots
    else:
        assert seen.most > 2
    assert len(datadog_sim.requests_to(TIMESERIES_PATH)) == 8


def test_gitlab_calls_in_flight_never_exceed_the_slots() -> None:
    # GIVEN a GitLab that answers in 0.2 s and 3 slots for GitLab
    with GitLabSimulator(token="t0k3n") as sim:
        project = "platform/fleet"
        sim.add_project(project, {"a.yaml": "x: 1\n"})
        seen = InFlight(sim, 0.2)
        repo = GitLabRepo.from_token(sim.url, sim.token, timeout_seconds=5, retry=RetryPolicy(sleep=lambda _: None),
                                     slots=VendorSlots("gitlab", 3))
        # WHEN 8 workers read a file at once
        _eight_at_once(lambda: repo.read_file(project, "a.yaml", "main"))
    # THEN at most 3 requests were in flight
    assert seen.most == 3


def test_kubernetes_calls_of_every_cluster_share_the_lambdas_slots() -> None:
    # GIVEN two clusters whose API answers in 0.2 s, and 2 Kubernetes slots shared by their clients
    slots = VendorSlots("kubernetes", 2)
    with KubernetesSimulator(FakeClock(NOW)) as sim:
        for name in ("prod-use1", "prod-euw1"):
            sim.add_cluster(name, "1.20.3", nodes=2, workloads=[])
        seen = InFlight(sim, 0.2, method="_handle")
        apis = [_kubernetes(sim, name, slots) for name in ("prod-use1", "prod-euw1")]
        # WHEN 8 workers list nodes, half on each cluster
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: apis[i % 2].list_nodes(), range(8)))
    # THEN the two clusters together never had more than 2 requests in flight
    assert seen.most == 2


def _kubernetes(sim: KubernetesSimulator, cluster: str, slots: VendorSlots) -> KubernetesApi:
    configuration = k8s.Configuration(host=sim.endpoint(cluster), retries=0)
    configuration.api_key = {"authorization": TOKEN}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return KubernetesApi(k8s.ApiClient(configuration), request_timeout=5, retry=RetryPolicy(sleep=lambda _: None),
                         slots=slots)
