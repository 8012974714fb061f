"""Shared test support: real KubernetesApi clients for the Kubernetes simulator."""

from __future__ import annotations

import base64

from guard.adapters.kubernetes_api import KubernetesApi
from guard.core.models import Cluster
from kubernetes import client as k8s

from sandbox.sims.kubernetes_sim import KubernetesSimulator

_PRESIGNED = (
    "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=abc123"
)
TOKEN = "k8s-aws-v1." + base64.urlsafe_b64encode(_PRESIGNED.encode()).decode().rstrip("=")


def api_for(sim: KubernetesSimulator, cluster_id: str) -> KubernetesApi:
    """The real adapter over HTTP to one simulated cluster."""
    config = k8s.Configuration(host=sim.endpoint(cluster_id))
    config.api_key = {"authorization": f"Bearer {TOKEN}"}
    return KubernetesApi(k8s.ApiClient(config))


class SimConnector:
    """ClusterConnector that reaches the simulator (EKS auth is tested in test_eks_connector)."""

    def __init__(self, sim: KubernetesSimulator) -> None:
        self._sim = sim

    def connect(self, cluster: Cluster) -> KubernetesApi:
        return api_for(self._sim, cluster.cluster_id)
