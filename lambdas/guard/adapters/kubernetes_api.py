"""Kubernetes: `KubernetesCluster` (KubernetesApi) and `EvidenceSource` (KubernetesEvidence) on the official client.

Every call carries `_request_timeout` and goes through `_call`, which maps client and
transport failures to the errors Retry/Catch match: 401/403 and other refusals ->
ExternalServiceError, 429/5xx/connection trouble -> TransientError.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from guard.core.evidence import EventInfo
from guard.core.models import Cluster
from guard.errors import ExternalServiceError, TransientError
from guard.outbound import plain_text
from guard.ports import (
    DeploymentInfo,
    HelmReleaseStatus,
    LabelRequirement,
    LabelSelector,
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
# Newest first. helm-controller v0.37 serves v2beta1 and v2beta2, v1.0 adds v2, v1.5 serves v2
# only (VENDOR-FACTS): a version the cluster does not serve answers 404, so ask which it serves.
HELM_VERSIONS = ("v2", "v2beta2", "v2beta1")
HELM_PLURAL = "helmreleases"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
ISTIO_PROXY = "istio-proxy"
ISTIO_REV_LABEL = "istio.io/rev"
SIDECAR_STATUS = "sidecar.istio.io/status"
# Istio publishes each release as `<version>` and `<version>-<variant>` images.
IMAGE_VARIANTS = ("distroless", "debug")
MAX_EVENT_PAGES = 10  # 10 pages of 500: enough evidence, bounded time

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
        self._apis = k8s.ApisApi(api_client)
        self._helm_version: str | None = None

    # ------------------------------------------------------------ KubernetesCluster

    def list_nodes(self) -> list[NodeInfo]:
        return [
            NodeInfo(name=n.metadata.name, ready=_condition(n.status.conditions if n.status else None, "Ready"))
            for n in self._paged("nodes", self._core.list_node)
        ]

    def server_version(self) -> str:
        info = self._call("GET /version", k8s.VersionApi(self.api_client).get_code)
        return str(info.git_version)

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

    def list_statefulsets(self, namespace: str | None = None) -> list[DeploymentInfo]:
        if namespace is None:
            found = self._paged("statefulsets", self._apps.list_stateful_set_for_all_namespaces)
        else:
            found = self._paged(f"statefulsets in {namespace}", self._apps.list_namespaced_stateful_set, namespace)
        return [_deployment_info(s, "StatefulSet") for s in found]

    def list_daemonsets(self, namespace: str | None = None) -> list[DeploymentInfo]:
        if namespace is None:
            found = self._paged("daemonsets", self._apps.list_daemon_set_for_all_namespaces)
        else:
            found = self._paged(f"daemonsets in {namespace}", self._apps.list_namespaced_daemon_set, namespace)
        return [_deployment_info(d, "DaemonSet") for d in found]

    def helm_api_version(self) -> str:
        """The newest helm.toolkit.fluxcd.io version the cluster serves (API discovery, asked once)."""
        if self._helm_version is None:
            groups = self._call("API discovery (/apis)", self._apis.get_api_versions)
            group = next((g for g in groups.groups or [] if g.name == HELM_GROUP), None)
            if group is None:
                raise ExternalServiceError(f"Kubernetes API: {HELM_GROUP} is not served: is Flux's "
                                           "helm-controller installed?")
            served = {v.version for v in group.versions or []}
            version = next((v for v in HELM_VERSIONS if v in served), None)
            if version is None:
                raise ExternalServiceError(f"Kubernetes API: {HELM_GROUP} serves {', '.join(sorted(served))}; "
                                           f"GUARD reads {', '.join(HELM_VERSIONS)}")
            self._helm_version = version
        return self._helm_version

    def get_helm_release(self, namespace: str, name: str) -> HelmReleaseStatus:
        version = self.helm_api_version()
        obj = self._call(
            f"HelmRelease {namespace}/{name} ({HELM_GROUP}/{version})",
            self._custom.get_namespaced_custom_object,
            HELM_GROUP,
            version,
            namespace,
            HELM_PLURAL,
            name,
        )
        if not isinstance(obj, dict):
            raise ExternalServiceError(f"Kubernetes API: HelmRelease {namespace}/{name}: unexpected response")
        return _helm_release_status(obj, namespace, name, version)

    def list_helm_releases(self) -> list[HelmReleaseStatus]:
        version = self.helm_api_version()
        found: list[HelmReleaseStatus] = []
        token: str | None = None
        while True:
            page = self._call(f"HelmReleases ({HELM_GROUP}/{version})", self._custom.list_cluster_custom_object,
                              HELM_GROUP, version, HELM_PLURAL, limit=self.page_size, _continue=token)
            if not isinstance(page, dict):
                raise ExternalServiceError("Kubernetes API: HelmRelease list: unexpected response")
            for obj in page.get("items") or []:
                meta = obj.get("metadata") or {}
                found.append(_helm_release_status(obj, str(meta.get("namespace") or ""), str(meta.get("name") or ""),
                                                  version))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return found

    def restart_deployment(self, namespace: str, name: str, at: datetime) -> None:
        """Rolling restart of a Deployment (see `restart_workload`)."""
        self.restart_workload("Deployment", namespace, name, at)

    def restart_workload(self, kind: str, namespace: str, name: str, at: datetime) -> None:
        """Rolling restart (sets the restartedAt annotation, as `kubectl rollout restart` does).

        Deployments, StatefulSets and DaemonSets all roll their pods on a template change. The
        annotation is derived from `at`, so a retried task with the same `at` does not restart
        the pods a second time.
        """
        patch = {"Deployment": self._apps.patch_namespaced_deployment,
                 "StatefulSet": self._apps.patch_namespaced_stateful_set,
                 "DaemonSet": self._apps.patch_namespaced_daemon_set}.get(kind)
        if patch is None:
            raise ValueError(f"{kind} {namespace}/{name} cannot be restarted (only Deployments, StatefulSets "
                             "and DaemonSets can)")
        stamp = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._call(
            f"{kind} {namespace}/{name}",
            patch,
            name,
            namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
        )

    def close(self) -> None:
        """Release the client's pooled connections."""
        self.api_client.close()

    # ------------------------------------------------------------ plumbing

    def _paged(self, what: str, method: Callable[..., Any], *args: Any, max_pages: int | None = None) -> Iterator[Any]:
        """Every item of a list, following the continue token (at most `max_pages` pages when given)."""
        token: str | None = None
        pages = 0
        while True:
            page = self._call(what, method, *args, limit=self.page_size, _continue=token)
            pages += 1
            yield from page.items or []
            token = page.metadata._continue if page.metadata else None
            if not token or (max_pages is not None and pages >= max_pages):
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


def split_image(image: str) -> tuple[str | None, str | None]:
    """(tag, digest) of an image reference: `reg:5000/istio/proxyv2:1.20.1@sha256:ab` -> ("1.20.1", "sha256:ab")."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    return tag, digest or None


def image_tag(image: str) -> str | None:
    """The version an image's tag names, its variant dropped: `proxyv2:1.24.2-debug` -> `1.24.2`.

    None for a digest-only reference (`proxyv2@sha256:...`): a digest names no version.
    """
    tag, _ = split_image(image)
    if tag is None:
        return None
    stripped = True
    while stripped:
        stripped = False
        for variant in IMAGE_VARIANTS:
            if tag.endswith(f"-{variant}"):
                tag, stripped = tag.removesuffix(f"-{variant}"), True
    return tag


def _proxy_image(pod: Any) -> str | None:
    """The istio-proxy image of a pod: a container, or a native sidecar (an init container with
    `restartPolicy: Always`, Istio's ENABLE_NATIVE_SIDECARS); None when the pod is not injected."""
    spec = pod.spec
    if spec is None:
        return None
    for container in spec.containers or []:
        if container.name == ISTIO_PROXY:
            return str(container.image or "")
    for container in spec.init_containers or []:
        if container.name == ISTIO_PROXY and getattr(container, "restart_policy", None) == "Always":
            return str(container.image or "")
    return None


def _proxy_revision(pod: Any) -> str | None:
    """The revision that injected the pod: its `istio.io/rev` label, else the sidecar status annotation."""
    labels = pod.metadata.labels or {}
    if labels.get(ISTIO_REV_LABEL):
        return str(labels[ISTIO_REV_LABEL])
    raw = (pod.metadata.annotations or {}).get(SIDECAR_STATUS)
    try:
        revision = json.loads(raw).get("revision") if raw else None
    except (ValueError, AttributeError):
        return None  # a hand-edited annotation: the revision is unknown, the pod still injected
    return str(revision) if revision else None


def _owner(pod: Any) -> str | None:
    """`Kind/name` of the workload that owns the pod (a ReplicaSet's Deployment), None for a bare pod."""
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
    proxy = _proxy_image(pod)
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
        proxy_version=image_tag(proxy) if proxy else None,
        proxy_image=proxy,
        proxy_revision=_proxy_revision(pod) if proxy is not None else None,
    )


def _deployment_info(obj: Any, kind: str = "Deployment") -> DeploymentInfo:
    """A Deployment, StatefulSet or DaemonSet (apps/v1); a DaemonSet's replicas are its scheduled pods."""
    spec, status = obj.spec, obj.status
    containers = spec.template.spec.containers if spec and spec.template and spec.template.spec else []
    versions = {c.name: tag for c in containers or [] if c.image and (tag := image_tag(c.image))}
    selector = spec.selector.match_labels if spec and spec.selector else None
    if kind == "DaemonSet":
        replicas = (status.desired_number_scheduled or 0) if status else 0
        ready = (status.number_ready or 0) if status else 0
        updated = status.updated_number_scheduled if status else None
    else:
        replicas = spec.replicas if spec and spec.replicas is not None else 1
        ready = (status.ready_replicas or 0) if status else 0
        updated = status.updated_replicas if status else None
    return DeploymentInfo(
        namespace=obj.metadata.namespace,
        name=obj.metadata.name,
        kind=kind,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=updated,
        image_versions=versions,
        selector=dict(selector or {}),
        labels=dict(obj.metadata.labels or {}),
        **_strategy(spec, kind),
    )


def _strategy(spec: Any, kind: str) -> dict[str, Any]:
    """The rollout strategy's type and maxUnavailable (Deployment `strategy`, DaemonSet `updateStrategy`)."""
    strategy = getattr(spec, "update_strategy" if kind == "DaemonSet" else "strategy", None) if spec else None
    if kind == "StatefulSet" or strategy is None:
        return {}
    rolling = getattr(strategy, "rolling_update", None)
    value = getattr(rolling, "max_unavailable", None) if rolling is not None else None
    return {"strategy": strategy.type, "max_unavailable": None if value is None else str(value)}


def _label_selector(selector: Any) -> LabelSelector | None:
    """meta/v1 LabelSelector -> ours; None stays None (a PDB with a null selector covers no pod)."""
    if selector is None:
        return None
    return LabelSelector(
        match_labels=dict(selector.match_labels or {}),
        match_expressions=[LabelRequirement(key=e.key, operator=e.operator, values=list(e.values or []))
                           for e in selector.match_expressions or []],
    )


def _pdb_info(pdb: Any) -> PdbInfo:
    spec, status = pdb.spec, pdb.status
    return PdbInfo(
        namespace=pdb.metadata.namespace,
        name=pdb.metadata.name,
        selector=_label_selector(spec.selector if spec else None),
        min_available=None if spec is None or spec.min_available is None else str(spec.min_available),
        max_unavailable=None if spec is None or spec.max_unavailable is None else str(spec.max_unavailable),
        disruptions_allowed=(status.disruptions_allowed or 0) if status else 0,
        current_healthy=status.current_healthy if status else None,
        expected_pods=status.expected_pods if status else None,
    )


def _chart_version(revision: object) -> str | None:
    """A chart version from a Flux revision; with chartRef to an OCIRepository it is `<version>+<digest>`."""
    return str(revision).split("+", 1)[0] if revision else None


def _helm_release_status(obj: dict[str, Any], namespace: str, name: str, api_version: str = "") -> HelmReleaseStatus:
    """The fields GUARD reads, from any served version.

    The version running: v2 and v2beta2 keep `status.history` (newest first; a remediation adds a
    `deployed` snapshot of the previous chart); v2beta1 has `status.lastAppliedRevision`.
    `lastAttemptedRevision` is written *before* the Helm action, so it only counts once Ready.
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    ready_cond: dict[str, Any] = conditions.get("Ready") or {}
    history = [h for h in status.get("history") or [] if isinstance(h, dict)]
    deployed = next((h for h in history if h.get("status") == "deployed"), None)
    applied = _chart_version(deployed.get("chartVersion") if deployed else status.get("lastAppliedRevision"))
    if applied is None and ready_cond.get("status") == "True":
        applied = _chart_version(status.get("lastAttemptedRevision"))
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    # A Ready condition written for an older generation says nothing about the current spec.
    stale = generation is not None and (observed is None or observed < generation)
    suspended = spec.get("suspend") is True
    stalled = (conditions.get("Stalled") or {}).get("status") == "True"
    message = str(ready_cond.get("message") or "")
    if stalled:
        message = f"Stalled: {(conditions.get('Stalled') or {}).get('message') or message}"
    elif stale:
        message = f"Flux has not yet reconciled generation {generation} (observed {observed}). {message}".strip()
    if suspended:
        # A suspended release returns early: its status stays as it was, whatever the spec says now.
        message = f"suspended (spec.suspend: true): Flux does not reconcile it. {message}".strip()
    return HelmReleaseStatus(
        name=meta.get("name") or name,
        namespace=meta.get("namespace") or namespace,
        ready=ready_cond.get("status") == "True" and not stale and not suspended,
        chart_version=((spec.get("chart") or {}).get("spec") or {}).get("version"),
        chart=((spec.get("chart") or {}).get("spec") or {}).get("chart") or (deployed or {}).get("chartName"),
        last_applied_version=applied,
        message=message,
        suspended=suspended,
        stalled=stalled,
        reason=str(ready_cond.get("reason") or ""),
        api_version=api_version,
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
        # Events page like any list (limit + continue, in no time order); bounded, as evidence need not be all.
        found = self._api._paged(f"events in {namespace}", self._core.list_namespaced_event, namespace,
                                 max_pages=MAX_EVENT_PAGES)
        return [_event_info(e, namespace) for e in found]

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
        message=plain_text(event.message or "", 1_000),  # redacted before the cut (guard.outbound)
        type=event.type or "Normal",
        count=event.count or 1,
        last_seen=seen,
    )
