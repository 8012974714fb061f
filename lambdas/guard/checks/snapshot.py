"""One read of a cluster's state that every built-in check looks at (few API calls)."""

from __future__ import annotations

from pydantic import BaseModel

from guard.core.istio import find_istiod
from guard.core.models import Cluster, HealthCheckResult
from guard.errors import RateLimited, TransientError
from guard.ports import (
    ClusterConnector,
    DeploymentInfo,
    KubernetesCluster,
    MutatingWebhookInfo,
    NamespaceInfo,
    NodeInfo,
    PdbInfo,
    PodInfo,
)


class ClusterSnapshot(BaseModel):
    nodes: list[NodeInfo]
    namespaces: list[NamespaceInfo]
    pods: list[PodInfo]
    deployments: list[DeploymentInfo]
    pdbs: list[PdbInfo]
    mutating_webhooks: list[MutatingWebhookInfo] = []

    @classmethod
    def read(cls, api: KubernetesCluster) -> ClusterSnapshot:
        return cls(
            nodes=api.list_nodes(),
            namespaces=api.list_namespaces(),
            pods=api.list_pods(),
            deployments=api.list_deployments(),
            pdbs=api.list_pdbs(),
            mutating_webhooks=api.list_mutating_webhooks(),
        )

    def gateways(self) -> list[DeploymentInfo]:
        """Istio gateway Deployments (by the chart's naming) in the usual namespaces."""
        return [d for d in self.deployments
                if d.namespace in ("istio-system", "istio-ingress", "istio-gateways") and "gateway" in d.name]

    def injected_namespaces(self) -> set[str]:
        return {
            n.name for n in self.namespaces
            if n.labels.get("istio-injection") == "enabled" or "istio.io/rev" in n.labels
        }

    def injected_deployments(self) -> list[DeploymentInfo]:
        """Deployments whose pods carry an istio-proxy sidecar."""
        owners = {p.owner for p in self.pods if p.proxy_version}
        return [d for d in self.deployments if f"Deployment/{d.name}" in owners
                and any(p.namespace == d.namespace and p.owner == f"Deployment/{d.name}" and p.proxy_version
                        for p in self.pods)]

    def istiod(self) -> DeploymentInfo | None:
        return find_istiod(self.deployments)


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def read_snapshot(connector: ClusterConnector, cluster: Cluster, when: str) -> ClusterSnapshot | HealthCheckResult:
    """The cluster's snapshot, or an *inconclusive* `api_reachable` result saying it could not be read.

    The API kept failing past the retry policy (guard.retry): that is no answer about the cluster's
    health, so it is neither a pass nor a fail. A precheck stops there (nothing is changed on an
    unknown cluster); a post-check makes the verdict inconclusive, for a person to decide. A long
    rate limit (`RateLimited`) propagates so the state machine waits it out.
    """
    try:
        return ClusterSnapshot.read(connector.connect(cluster))
    except RateLimited:
        raise
    except TransientError as e:
        return HealthCheckResult.inconclusive(cluster.cluster_id, "api_reachable",
                                              f"Kubernetes API unreachable {when}: {e}")
