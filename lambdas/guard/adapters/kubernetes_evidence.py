"""`EvidenceSource` on the official kubernetes client: events and pod log tails.

Built by composition on the `KubernetesApi` that `EksConnector` returns, so it shares its
`ApiClient` (endpoint, CA, the renewing EKS token) and its request timeout; nothing about
reaching a cluster is duplicated here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from guard.adapters.eks_connector import EksConnector
from guard.adapters.kubernetes_api import KubernetesApi, _api_error
from guard.core.evidence import EventInfo
from guard.core.models import Cluster
from guard.errors import TransientError
from guard.ports import PodInfo

T = TypeVar("T")
MAX_LOG_BYTES = 64_000


class KubernetesEvidence:
    """Events and logs of one cluster, through the same client as its `KubernetesApi`."""

    def __init__(self, api: KubernetesApi) -> None:
        self._api = api
        self._core = k8s.CoreV1Api(api.api_client)

    def list_pods(self, namespace: str | None = None) -> list[PodInfo]:
        return self._api.list_pods(namespace)

    def list_events(self, namespace: str) -> list[EventInfo]:
        found = self._call(f"events in {namespace}", self._core.list_namespaced_event, namespace, limit=500)
        return [_event_info(e, namespace) for e in found.items or []]

    def pod_log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        # Raw bytes: the client would otherwise try to parse a log that happens to look like JSON.
        response: Any = self._call(f"log of {namespace}/{pod}/{container}", self._core.read_namespaced_pod_log, pod,
                              namespace, container=container, tail_lines=lines, limit_bytes=MAX_LOG_BYTES,
                              _preload_content=False)
        try:
            return bytes(response.data or b"").decode("utf-8", errors="replace")
        finally:
            response.release_conn()

    def _call(self, what: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The same error mapping as KubernetesApi: 429/5xx/connection -> TransientError.
        try:
            return method(*args, _request_timeout=self._api.request_timeout, **kwargs)
        except ApiException as e:
            raise _api_error(what, e) from e
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
            raise TransientError(f"Kubernetes API unreachable reading {what}: {type(e).__name__}") from e


class KubernetesEvidenceConnector:
    """`EvidenceConnector` over an `EksConnector` (role, endpoint and token logic reused as is)."""

    def __init__(self, connector: EksConnector) -> None:
        self._connector = connector

    def connect(self, cluster: Cluster) -> KubernetesEvidence:
        return KubernetesEvidence(self._connector.connect(cluster))


def _event_info(event: Any, namespace: str) -> EventInfo:
    obj = event.involved_object
    seen: datetime | None = event.last_timestamp or event.event_time or event.first_timestamp
    if seen is None and event.metadata is not None:
        seen = event.metadata.creation_timestamp
    return EventInfo(
        namespace=(event.metadata.namespace if event.metadata else None) or namespace,
        involved_object=f"{obj.kind}/{obj.name}" if obj else "?",
        reason=event.reason or "",
        message=(event.message or "")[:1_000],
        type=event.type or "Normal",
        count=event.count or 1,
        last_seen=seen,
    )
