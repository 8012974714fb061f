"""Kubernetes: `KubernetesCluster` (KubernetesApi) and `EvidenceSource` (KubernetesEvidence) on the official client.

Every call carries `_request_timeout` and goes through `_call`, which maps client and
transport failures to the errors Retry/Catch match: 401/403 and other refusals ->
ExternalServiceError, 429/5xx/connection trouble -> TransientError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from guard.core.evidence import EventInfo
from guard.core.models import Cluster
from guard.errors import ExternalServiceError, TransientError
from guard.ports import (
    DeploymentInfo,
    HelmReleaseStatus,
    MutatingWebhookInfo,
    NamespaceInfo,
    NodeInfo,
    PdbInfo,
    PodInfo,
)
from guard.retry import RetryPolicy, policy, retry_after_seconds

if TYPE_CHECKING:  # eks_connector builds KubernetesApi clients: a runtime import would be circular
    from guard.adapters.eks_connector import EksConnector

HELM_GROUP = "helm.toolkit.fluxcd.io"
HELM_VERSION = "v2"
HELM_PLURAL = "helmreleases"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
ISTIO_PROXY = "istio-proxy"

T = TypeVar("T")


class KubernetesApi:
    """One cluster's API through an authenticated `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: k8s.ApiClient, request_timeout: float = 10.0, page_size: int = 500,
                 retry: RetryPolicy | None = None) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self.page_size = page_size
        self.retry = retry or policy()
        self._core = k8s.CoreV1Api(api_client)
        self._apps = k8s.AppsV1Api(api_client)
        self._policy = k8s.PolicyV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._admission = k8s.AdmissionregistrationV1Api(api_client)

    # ------------------------------------------------------------ KubernetesCluster

    def list_nodes(self) -> list[NodeInfo]:
        return [
            NodeInfo(name=n.metadata.name, ready=_condition(n.status.conditions if n.status else None, "Ready"))
            for n in self._paged("nodes", self._core.list_node)
        ]

    def list_pods(self, namespace: str | None = None) -> list[PodInfo]:
        if namespace is None:
            pods = self._paged("pods", self._core.list_pod_for_all_namespaces)
        else:
            pods = self._paged(f"pods in {namespace}", self._core.list_namespaced_pod, namespace)
        return [_pod_info(p) for p in pods]

    def list_deployments(self, namespace: str | None = None) -> list[DeploymentInfo]:
        if namespace is None:
            deps = self._paged("deployments", self._apps.list_deployment_for_all_namespaces)
        else:
            deps = self._paged(f"deployments in {namespace}", self._apps.list_namespaced_deployment, namespace)
        return [_deployment_info(d) for d in deps]

    def list_pdbs(self, namespace: str | None = None) -> list[PdbInfo]:
        if namespace is None:
            pdbs = self._paged("poddisruptionbudgets", self._policy.list_pod_disruption_budget_for_all_namespaces)
        else:
            pdbs = self._paged(
                f"poddisruptionbudgets in {namespace}",
                self._policy.list_namespaced_pod_disruption_budget,
                namespace,
            )
        return [_pdb_info(b) for b in pdbs]

    def list_namespaces(self) -> list[NamespaceInfo]:
        return [
            NamespaceInfo(name=ns.metadata.name, labels=dict(ns.metadata.labels or {}))
            for ns in self._paged("namespaces", self._core.list_namespace)
        ]

    def list_mutating_webhooks(self) -> list[MutatingWebhookInfo]:
        found = []
        for config in self._paged("mutatingwebhookconfigurations",
                                  self._admission.list_mutating_webhook_configuration):
            service = next((w.client_config.service for w in config.webhooks or []
                            if w.client_config and w.client_config.service), None)
            found.append(MutatingWebhookInfo(
                name=config.metadata.name,
                service_namespace=service.namespace if service else None,
                service_name=service.name if service else None,
            ))
        return found

    def get_helm_release(self, namespace: str, name: str) -> HelmReleaseStatus:
        obj = self._call(
            f"HelmRelease {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            HELM_GROUP,
            HELM_VERSION,
            namespace,
            HELM_PLURAL,
            name,
        )
        if not isinstance(obj, dict):
            raise ExternalServiceError(f"Kubernetes API: HelmRelease {namespace}/{name}: unexpected response")
        return _helm_release_status(obj, namespace, name)

    def restart_deployment(self, namespace: str, name: str, at: datetime) -> None:
        """Rolling restart (sets the restartedAt annotation, as `kubectl rollout restart` does).

        The annotation is derived from `at`, so a retried task with the same `at` does not
        restart the pods a second time.
        """
        stamp = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._call(
            f"Deployment {namespace}/{name}",
            self._apps.patch_namespaced_deployment,
            name,
            namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
        )

    def close(self) -> None:
        """Release the client's pooled connections."""
        self.api_client.close()

    # ------------------------------------------------------------ plumbing

    def _paged(self, what: str, method: Callable[..., Any], *args: Any) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self._call(what, method, *args, limit=self.page_size, _continue=token)
            yield from page.items or []
            token = page.metadata._continue if page.metadata else None
            if not token:
                return

    def _call(self, what: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API request, retried as guard.retry says; errors mapped to GUARD's."""
        def once() -> T:
            try:
                return method(*args, _request_timeout=self.request_timeout, **kwargs)
            except ApiException as e:
                raise _api_error(what, e) from e
            except urllib3.exceptions.MaxRetryError as e:
                if isinstance(e.reason, urllib3.exceptions.SSLError):
                    raise ExternalServiceError(f"Kubernetes API: TLS failure reading {what}: {e.reason}") from e
                raise TransientError(f"Kubernetes API unreachable reading {what}: {e.reason}") from e
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
                raise TransientError(f"Kubernetes API unreachable reading {what}: {type(e).__name__}: {e}") from e
        return self.retry.call(f"Kubernetes {what}", once)


# ---------------------------------------------------------------- mapping


def _api_error(what: str, e: ApiException) -> Exception:
    status = e.status or 0
    if status == 0:
        # The client raises status 0 for TLS failures; a retry will not fix a certificate.
        return ExternalServiceError(f"Kubernetes API: {what}: {e.reason}")
    if status in (401, 403):
        return ExternalServiceError(f"Kubernetes API refused access to {what} ({status} {e.reason})")
    if status == 404:
        return ExternalServiceError(f"Kubernetes API: {what} not found (404)")
    if status in (408, 410, 429) or status >= 500:
        # 410: a list continue token expired; listing again from the start works.
        asked = retry_after_seconds((e.headers or {}).get("Retry-After"), datetime.now(UTC))
        return TransientError(f"Kubernetes API: {what}: {status} {e.reason}", retry_after=asked)
    return ExternalServiceError(f"Kubernetes API: {what}: {status} {e.reason}")


def _condition(conditions: list[Any] | None, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions or [])


def image_tag(image: str) -> str | None:
    """Tag of an image reference: `reg:5000/istio/proxyv2:1.20.1@sha256:..` -> `1.20.1`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.rsplit(":", 1)[1]
    return tag.removesuffix("-distroless")


def _proxy_version(pod: Any) -> str | None:
    spec = pod.spec
    if spec is None:
        return None
    # Native sidecars (Istio on Kubernetes >= 1.29) run istio-proxy as an init container.
    for container in [*(spec.containers or []), *(spec.init_containers or [])]:
        if container.name == ISTIO_PROXY and container.image:
            return image_tag(container.image)
    return None


def _owner(pod: Any) -> str | None:
    refs = pod.metadata.owner_references or []
    ref = next((r for r in refs if r.controller), refs[0] if refs else None)
    if ref is None:
        return None
    if ref.kind == "ReplicaSet":
        pod_hash = (pod.metadata.labels or {}).get("pod-template-hash")
        if pod_hash and ref.name.endswith(f"-{pod_hash}"):
            return f"Deployment/{ref.name.removesuffix(f'-{pod_hash}')}"
        if "-" in ref.name:
            return f"Deployment/{ref.name.rsplit('-', 1)[0]}"
    return f"{ref.kind}/{ref.name}"


def _pod_info(pod: Any) -> PodInfo:
    status = pod.status
    statuses = [*(status.container_statuses or []), *(status.init_container_statuses or [])] if status else []
    return PodInfo(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        phase=(status.phase if status else None) or "Unknown",
        ready=_condition(status.conditions if status else None, "Ready"),
        restarts=sum(s.restart_count or 0 for s in statuses),
        crash_looping=any(
            s.state is not None and s.state.waiting is not None and s.state.waiting.reason == "CrashLoopBackOff"
            for s in statuses
        ),
        labels=dict(pod.metadata.labels or {}),
        owner=_owner(pod),
        proxy_version=_proxy_version(pod),
    )


def _deployment_info(dep: Any) -> DeploymentInfo:
    spec = dep.spec
    containers = spec.template.spec.containers if spec and spec.template and spec.template.spec else []
    versions = {c.name: tag for c in containers or [] if c.image and (tag := image_tag(c.image))}
    selector = spec.selector.match_labels if spec and spec.selector else None
    return DeploymentInfo(
        namespace=dep.metadata.namespace,
        name=dep.metadata.name,
        replicas=(spec.replicas if spec and spec.replicas is not None else 1),
        ready_replicas=(dep.status.ready_replicas or 0) if dep.status else 0,
        image_versions=versions,
        selector=dict(selector or {}),
    )


def _pdb_info(pdb: Any) -> PdbInfo:
    spec = pdb.spec
    selector = spec.selector.match_labels if spec and spec.selector else None
    return PdbInfo(
        namespace=pdb.metadata.namespace,
        name=pdb.metadata.name,
        selector=dict(selector or {}),
        min_available=None if spec is None or spec.min_available is None else str(spec.min_available),
        max_unavailable=None if spec is None or spec.max_unavailable is None else str(spec.max_unavailable),
        disruptions_allowed=(pdb.status.disruptions_allowed or 0) if pdb.status else 0,
    )


def _helm_release_status(obj: dict[str, Any], namespace: str, name: str) -> HelmReleaseStatus:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready_cond: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    history = status.get("history") or []
    applied = status.get("lastAttemptedRevision") or (history[0].get("chartVersion") if history else None)
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    # A Ready condition written for an older generation says nothing about the current spec.
    stale = generation is not None and (observed is None or observed < generation)
    message = str(ready_cond.get("message") or "")
    if stale:
        message = f"Flux has not yet reconciled generation {generation} (observed {observed}). {message}".strip()
    return HelmReleaseStatus(
        name=meta.get("name") or name,
        namespace=meta.get("namespace") or namespace,
        ready=ready_cond.get("status") == "True" and not stale,
        chart_version=((spec.get("chart") or {}).get("spec") or {}).get("version"),
        last_applied_version=applied,
        message=message,
    )


# ---------------------------------------------------------------- failure evidence (events, logs)

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
        # The same policy and error mapping as KubernetesApi (429/5xx/connection -> TransientError).
        return self._api._call(what, method, *args, **kwargs)


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
