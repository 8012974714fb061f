"""One read of a cluster's state that every built-in check looks at (few API calls)."""

from __future__ import annotations

from pydantic import BaseModel

from guard.core.istio import find_istiod
from guard.core.models import Cluster, HealthCheckResult
from guard.errors import ExternalServiceError, RateLimited, TransientError
from guard.ports import (
    ClusterConnector,
    DeploymentInfo,
    HelmReleaseStatus,
    KubernetesCluster,
    LabelSelector,
    MutatingWebhookInfo,
    NamespaceInfo,
    NodeInfo,
    PdbInfo,
    PodInfo,
)

# Owners whose pods a rollout restart replaces. Jobs run to completion and bare pods have no
# template: neither can be restarted, and their proxies never hold up a verdict.
RESTARTABLE = ("Deployment", "StatefulSet", "DaemonSet")


class ClusterSnapshot(BaseModel):
    nodes: list[NodeInfo]
    namespaces: list[NamespaceInfo]
    pods: list[PodInfo]
    deployments: list[DeploymentInfo]
    pdbs: list[PdbInfo]
    mutating_webhooks: list[MutatingWebhookInfo] = []
    statefulsets: list[DeploymentInfo] = []
    daemonsets: list[DeploymentInfo] = []
    helm_release: HelmReleaseStatus | None = None
    helm_release_problem: str | None = None  # why the HelmRelease could not be read (404, RBAC, unserved)

    @classmethod
    def read(cls, api: KubernetesCluster, release: tuple[str, str] | None = None) -> ClusterSnapshot:
        """Read the cluster; with `release` (namespace, name) its Flux HelmRelease too."""
        snap = cls(
            nodes=api.list_nodes(),
            namespaces=api.list_namespaces(),
            pods=api.list_pods(),
            deployments=api.list_deployments(),
            pdbs=api.list_pdbs(),
            mutating_webhooks=api.list_mutating_webhooks(),
            statefulsets=api.list_statefulsets(),
            daemonsets=api.list_daemonsets(),
        )
        if release is not None:
            try:
                snap.helm_release = api.get_helm_release(*release)
            except TransientError:
                raise
            except ExternalServiceError as e:
                # Not found, not served or refused: an answer about the cluster, for the checks to report.
                snap.helm_release_problem = str(e)
        return snap

    def gateways(self) -> list[DeploymentInfo]:
        """Istio gateway Deployments (by the chart's naming) in the usual namespaces."""
        return [d for d in self.deployments
                if d.namespace in ("istio-system", "istio-ingress", "istio-gateways") and "gateway" in d.name]

    def injected_namespaces(self) -> set[str]:
        return {
            n.name for n in self.namespaces
            if n.labels.get("istio-injection") == "enabled" or "istio.io/rev" in n.labels
        }

    def pods_of(self, w: DeploymentInfo) -> list[PodInfo]:
        """The pods a workload owns (its ReplicaSets' pods for a Deployment)."""
        owner = f"{w.kind}/{w.name}"
        return [p for p in self.pods if p.namespace == w.namespace and p.owner == owner]

    def injected_workloads(self) -> list[DeploymentInfo]:
        """Deployments, StatefulSets and DaemonSets whose live pods carry an istio-proxy."""
        injected = {(p.namespace, p.owner) for p in self.pods if p.injected and not p.finished}
        return [w for w in [*self.deployments, *self.statefulsets, *self.daemonsets]
                if (w.namespace, f"{w.kind}/{w.name}") in injected]

    def injected_deployments(self) -> list[DeploymentInfo]:
        """Deployments whose pods carry an istio-proxy sidecar."""
        return [w for w in self.injected_workloads() if w.kind == "Deployment"]

    def unrestartable_proxies(self) -> list[PodInfo]:
        """Live injected pods GUARD cannot restart: Jobs' and bare pods (they get the new proxy when re-run)."""
        return [p for p in self.pods if p.injected and not p.finished
                and (p.owner is None or p.owner.split("/", 1)[0] not in RESTARTABLE)]

    def istiod(self) -> DeploymentInfo | None:
        release = self.helm_release.name if self.helm_release else None
        return find_istiod(self.deployments, release=release)


def selector_matches(selector: LabelSelector | dict[str, str] | None, labels: dict[str, str]) -> bool:
    """A label selector applied to a pod's labels: `{}` matches every pod, None (null) matches none."""
    if selector is None:
        return False
    if isinstance(selector, dict):
        selector = LabelSelector(match_labels=selector)
    return selector.matches(labels)


def read_snapshot(connector: ClusterConnector, cluster: Cluster, when: str) -> ClusterSnapshot | HealthCheckResult:
    """The cluster's snapshot, or an *inconclusive* `api_reachable` result saying it could not be read.

    The API kept failing past the retry policy (guard.retry): that is no answer about the cluster's
    health, so it is neither a pass nor a fail. A precheck stops there (nothing is changed on an
    unknown cluster); a post-check makes the verdict inconclusive, for a person to decide. A long
    rate limit (`RateLimited`) propagates so the state machine waits it out.
    """
    try:
        return ClusterSnapshot.read(connector.connect(cluster),
                                    release=(cluster.helm_release_namespace, cluster.helm_release_name))
    except RateLimited:
        raise
    except TransientError as e:
        return HealthCheckResult.inconclusive(cluster.cluster_id, "api_reachable",
                                              f"Kubernetes API unreachable {when}: {e}")
