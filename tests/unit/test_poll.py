"""One poll over a batch's clusters (guard.services.poll.Poll): every cluster read once, many at a time, so that a
poll of thousands of clusters fits in one Lambda call even when each cluster's API takes a while to answer."""

from __future__ import annotations

import threading
import time

import pytest
from guard.core.models import Cluster
from guard.errors import ExternalServiceError, FluxSyncFailed, TransientError
from guard.services.fanout import CLUSTER_READERS
from guard.services.poll import Poll

from tests.support.clock import FakeClock


def cluster(cluster_id: str) -> Cluster:
    return Cluster(cluster_id=cluster_id, batch_id="prod", environment="production", region="eu-west-1",
                   gitlab_project="platform/gitops", flux_config_path=f"clusters/{cluster_id}/istio/helmrelease.yaml",
                   current_istio_version="1.20.3")


class SlowApis:
    """Each cluster's read takes `seconds`, as a remote API server's does; counts the reads in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = self.most = 0
        self.read: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, cluster_id: str, _: Cluster) -> list[str]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.read.append(cluster_id)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        if cluster_id.endswith("7"):
            raise TransientError(f"{cluster_id}: 503 from the API server")
        return [f"{cluster_id}: HelmRelease at 1.20.3"] if int(cluster_id[-2:]) % 2 else []


def test_a_poll_reads_its_clusters_many_at_a_time_and_reports_them_in_order() -> None:
    # GIVEN 100 clusters whose API servers take 50 ms each, and one cluster not in the registry
    ids = [f"eks-{i:02d}" for i in range(100)]
    apis = SlowApis(0.05)
    clusters: dict[str, Cluster | None] = {c: cluster(c) for c in ids} | {"eks-gone": None}

    # WHEN one poll looks at them
    started = time.monotonic()
    result = Poll(FakeClock()).check(None, 30, clusters, apis)
    elapsed = time.monotonic() - started

    # THEN every registered cluster was read once, many at a time but never more than CLUSTER_READERS
    assert sorted(apis.read) == ids
    assert 1 < apis.most <= CLUSTER_READERS
    assert elapsed < 100 * 0.05 / 2, elapsed  # one after another it would take 5 s
    # AND what they wait on comes in the clusters' order: not there yet, unreachable (transient), unregistered
    assert result.waiting_on[:3] == ["eks-01: HelmRelease at 1.20.3", "eks-03: HelmRelease at 1.20.3",
                                     "eks-05: HelmRelease at 1.20.3"]
    assert result.waiting_kinds == {"not there yet": 40, "API unreachable": 10, "not in the registry": 1}
    assert (result.done, result.expired, result.waiting_clusters) == (False, False, 51)


def test_a_cluster_waiting_cannot_help_ends_the_poll_with_its_error() -> None:
    # GIVEN 60 clusters, two of which refuse in a way no wait fixes (a suspended HelmRelease, a 403)
    def read(cluster_id: str, _: Cluster) -> list[str]:
        if cluster_id == "eks-40":
            raise FluxSyncFailed("eks-40: HelmRelease istio-system/istiod is suspended")
        if cluster_id == "eks-45":
            raise ExternalServiceError("eks-45: 403 from the API server")
        return []

    clusters: dict[str, Cluster | None] = {f"eks-{i:02d}": cluster(f"eks-{i:02d}") for i in range(60)}
    # WHEN the poll looks at them THEN it ends with the first of them in the clusters' order
    with pytest.raises(FluxSyncFailed, match="eks-40: HelmRelease istio-system/istiod is suspended"):
        Poll(FakeClock()).check(None, 30, clusters, read)


def test_a_crash_reading_one_cluster_is_not_hidden_as_waiting() -> None:
    # GIVEN a read that crashes on one cluster (a bug, not the cluster's state)
    def read(cluster_id: str, _: Cluster) -> list[str]:
        if cluster_id == "eks-03":
            raise KeyError("status")
        return []

    # WHEN the poll looks THEN the crash comes out as it is
    with pytest.raises(KeyError, match="status"):
        Poll(FakeClock()).check(None, 30, {f"eks-{i:02d}": cluster(f"eks-{i:02d}") for i in range(5)}, read)


def test_all_there_is_done() -> None:
    # GIVEN every cluster at its version WHEN polled THEN the poll is done and waits on nothing
    result = Poll(FakeClock()).check(None, 30, {f"eks-{i}": cluster(f"eks-{i}") for i in range(40)}, lambda c, _: [])
    assert (result.done, result.waiting_count, result.waiting_kinds) == (True, 0, {})
