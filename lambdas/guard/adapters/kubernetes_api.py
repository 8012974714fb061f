"""Kubernetes: `KubernetesCluster` (KubernetesApi) and `EvidenceSource` (KubernetesEvidence) on the official client.

Requests go through the client's `ApiClient` (its configuration, bearer-token auth, TLS, urllib3 pool
and `ApiException`s), by path: `param_serialize` builds the request and `call_api` sends it, and the
JSON answer is read as plain dicts. The generated typed API classes (`CoreV1Api`...) and models are not
used: in kubernetes 37 they are pydantic models and `validate_call` methods built at import, 650-700 ms
of a cold start for the dozen endpoints GUARD reads (docs/scale.md, "Cold start and bundle size").

Every request carries `_request_timeout` and goes through `_request`, which maps client and transport
failures to the errors Retry/Catch match: 401/403 and other refusals -> ExternalServiceError,
429/5xx/connection trouble -> TransientError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes.client.api_client import ApiClient
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
from guard.vendor_slots import VendorSlots, unlimited

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
# The API paths GUARD reads: a list of everything, or of one namespace's (`{namespace}`).
CORE, APPS = "/api/v1", "/apis/apps/v1"
POLICY, ADMISSION = "/apis/policy/v1", "/apis/admissionregistration.k8s.io/v1"
# The workloads a rolling restart patches, by kind.
RESTARTABLE = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
# What the generated client sends with every request of these endpoints: JSON answers, bearer token.
ACCEPT_JSON = "application/json"
AUTH_SETTINGS = ["BearerToken"]

Json = dict[str, Any]


class KubernetesApi:
    """One cluster's API through an authenticated `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: ApiClient, request_timeout: float = 10.0, page_size: int = 500,
                 retry: RetryPolicy | None = None, slots: VendorSlots | None = None) -> None:
        self.api_client = api_client
        self.slots = slots  # execution.vendor_concurrency: held for one request, never across a wait
        self.request_timeout = request_timeout
        self.page_size = page_size
        self.retry = retry or policy()
        self._helm_version: str | None = None

    # ------------------------------------------------------------ KubernetesCluster

    def list_nodes(self) -> list[NodeInfo]:
        return [NodeInfo(name=_meta(n).get("name") or "", ready=_condition(_status(n).get("conditions"), "Ready"))
                for n in self._paged("nodes", f"{CORE}/nodes")]

    def server_version(self) -> str:
        return str(self._get("GET /version", "/version").get("gitVersion"))

    def list_pods(self, namespace: str | None = None) -> list[PodInfo]:
        return [_pod_info(p) for p in self._list("pods", CORE, "pods", namespace)]

    def list_deployments(self, namespace: str | None = None) -> list[DeploymentInfo]:
        return [_deployment_info(d) for d in self._list("deployments", APPS, "deployments", namespace)]

    def list_pdbs(self, namespace: str | None = None) -> list[PdbInfo]:
        return [_pdb_info(b) for b in self._list("poddisruptionbudgets", POLICY, "poddisruptionbudgets", namespace)]

    def list_namespaces(self) -> list[NamespaceInfo]:
        return [NamespaceInfo(name=_meta(ns).get("name") or "", labels=dict(_meta(ns).get("labels") or {}))
                for ns in self._paged("namespaces", f"{CORE}/namespaces")]

    def list_mutating_webhooks(self) -> list[MutatingWebhookInfo]:
        found = []
        for config in self._paged("mutatingwebhookconfigurations", f"{ADMISSION}/mutatingwebhookconfigurations"):
            service = next((s for w in config.get("webhooks") or []
                            if (s := (w.get("clientConfig") or {}).get("service"))), None)
            found.append(MutatingWebhookInfo(
                name=_meta(config).get("name") or "",
                service_namespace=service.get("namespace") if service else None,
                service_name=service.get("name") if service else None,
            ))
        return found

    def list_statefulsets(self, namespace: str | None = None) -> list[DeploymentInfo]:
        return [_deployment_info(s, "StatefulSet") for s in self._list("statefulsets", APPS, "statefulsets", namespace)]

    def list_daemonsets(self, namespace: str | None = None) -> list[DeploymentInfo]:
        return [_deployment_info(d, "DaemonSet") for d in self._list("daemonsets", APPS, "daemonsets", namespace)]

    def helm_api_version(self) -> str:
        """The newest helm.toolkit.fluxcd.io version the cluster serves (API discovery, asked once)."""
        if self._helm_version is None:
            groups = self._get("API discovery (/apis)", "/apis")
            group = next((g for g in groups.get("groups") or [] if g.get("name") == HELM_GROUP), None)
            if group is None:
                raise ExternalServiceError(f"Kubernetes API: {HELM_GROUP} is not served: is Flux's "
                                           "helm-controller installed?")
            served = {v.get("version") for v in group.get("versions") or []}
            version = next((v for v in HELM_VERSIONS if v in served), None)
            if version is None:
                listed = ", ".join(sorted(map(str, served)))
                raise ExternalServiceError(f"Kubernetes API: {HELM_GROUP} serves {listed}; "
                                           f"GUARD reads {', '.join(HELM_VERSIONS)}")
            self._helm_version = version
        return self._helm_version

    def get_helm_release(self, namespace: str, name: str) -> HelmReleaseStatus:
        version = self.helm_api_version()
        obj = self._get(f"HelmRelease {namespace}/{name} ({HELM_GROUP}/{version})",
                        f"/apis/{HELM_GROUP}/{version}/namespaces/{{namespace}}/{HELM_PLURAL}/{{name}}",
                        {"namespace": namespace, "name": name})
        return _helm_release_status(obj, namespace, name, version)

    def list_helm_releases(self) -> list[HelmReleaseStatus]:
        version = self.helm_api_version()
        found: list[HelmReleaseStatus] = []
        for obj in self._paged(f"HelmReleases ({HELM_GROUP}/{version})", f"/apis/{HELM_GROUP}/{version}/{HELM_PLURAL}"):
            meta = _meta(obj)
            found.append(_helm_release_status(obj, str(meta.get("namespace") or ""), str(meta.get("name") or ""),
                                              version))
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
        plural = RESTARTABLE.get(kind)
        if plural is None:
            raise ValueError(f"{kind} {namespace}/{name} cannot be restarted (only Deployments, StatefulSets "
                             "and DaemonSets can)")
        stamp = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._request(f"{kind} {namespace}/{name}", "PATCH", f"{APPS}/namespaces/{{namespace}}/{plural}/{{name}}",
                      {"namespace": namespace, "name": name}, body=body,
                      content_type="application/strategic-merge-patch+json")

    def close(self) -> None:
        """Release the client's pooled connections."""
        self.api_client.close()

    # ------------------------------------------------------------ plumbing

    def _list(self, what: str, group: str, plural: str, namespace: str | None) -> Iterator[Json]:
        """Every item of a list of `plural` in all namespaces, or in `namespace`."""
        if namespace is None:
            return self._paged(what, f"{group}/{plural}")
        return self._paged(f"{what} in {namespace}", f"{group}/namespaces/{{namespace}}/{plural}",
                           {"namespace": namespace})

    def _paged(self, what: str, path: str, path_params: dict[str, str] | None = None,
               max_pages: int | None = None) -> Iterator[Json]:
        """Every item of a list, following the continue token (at most `max_pages` pages when given)."""
        token: str | None = None
        pages = 0
        while True:
            query: list[tuple[str, Any]] = [("limit", self.page_size)]
            if token:
                query.append(("continue", token))
            page = self._get(what, path, path_params, query)
            pages += 1
            yield from (i for i in page.get("items") or [] if isinstance(i, dict))
            token = _meta(page).get("continue")
            if not token or (max_pages is not None and pages >= max_pages):
                return

    def _get(self, what: str, path: str, path_params: dict[str, str] | None = None,
             query: list[tuple[str, Any]] | None = None) -> Json:
        """A GET whose answer is one JSON object."""
        data = self._request(what, "GET", path, path_params, query)
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise ExternalServiceError(f"Kubernetes API: {what}: the answer is not JSON") from e
        if not isinstance(obj, dict):
            raise ExternalServiceError(f"Kubernetes API: {what}: unexpected response ({type(obj).__name__})")
        return obj

    def _request(self, what: str, method: str, path: str, path_params: dict[str, str] | None = None,
                 query: list[tuple[str, Any]] | None = None, *, body: Json | None = None,
                 content_type: str | None = None, accept: str = ACCEPT_JSON) -> bytes:
        """One API request's body, retried as guard.retry says; errors mapped to GUARD's."""
        headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}

        def once() -> bytes:
            with self.slots.held() if self.slots else unlimited():
                return attempt()

        def attempt() -> bytes:
            try:
                # The client quotes the path parameters, adds the bearer token (refreshed by the
                # configuration's hook) and sends through its pool, as its generated methods do.
                request = self.api_client.param_serialize(
                    method=method, resource_path=path, path_params=path_params, query_params=query or [],
                    header_params=dict(headers), body=body, auth_settings=AUTH_SETTINGS)
                response = self.api_client.call_api(*request, _request_timeout=self.request_timeout)
                data = response.read()
                if not 200 <= response.status <= 299:  # the generated methods raise the same way
                    text = data.decode("utf-8", "replace")
                    raise ApiException.from_response(http_resp=response, body=text, data=None)
                return bytes(data or b"")
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


def _meta(obj: Json) -> Json:
    return obj.get("metadata") or {}


def _spec(obj: Json) -> Json:
    return obj.get("spec") or {}


def _status(obj: Json) -> Json:
    return obj.get("status") or {}


def _condition(conditions: list[Any] | None, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions or [] if isinstance(c, dict))


def _time(value: object) -> datetime | None:
    """An RFC 3339 time of the API (`2025-03-01T09:00:00Z`, or with microseconds for MicroTime)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


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


def _proxy_image(pod: Json) -> str | None:
    """The istio-proxy image of a pod: a container, or a native sidecar (an init container with
    `restartPolicy: Always`, Istio's ENABLE_NATIVE_SIDECARS); None when the pod is not injected."""
    spec = _spec(pod)
    for container in spec.get("containers") or []:
        if container.get("name") == ISTIO_PROXY:
            return str(container.get("image") or "")
    for container in spec.get("initContainers") or []:
        if container.get("name") == ISTIO_PROXY and container.get("restartPolicy") == "Always":
            return str(container.get("image") or "")
    return None


def _proxy_revision(pod: Json) -> str | None:
    """The revision that injected the pod: its `istio.io/rev` label, else the sidecar status annotation."""
    labels = _meta(pod).get("labels") or {}
    if labels.get(ISTIO_REV_LABEL):
        return str(labels[ISTIO_REV_LABEL])
    raw = (_meta(pod).get("annotations") or {}).get(SIDECAR_STATUS)
    try:
        revision = json.loads(raw).get("revision") if raw else None
    except (ValueError, AttributeError):
        return None  # a hand-edited annotation: the revision is unknown, the pod still injected
    return str(revision) if revision else None


def _owner(pod: Json) -> str | None:
    """`Kind/name` of the workload that owns the pod (a ReplicaSet's Deployment), None for a bare pod."""
    refs = [r for r in _meta(pod).get("ownerReferences") or [] if isinstance(r, dict)]
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is None:
        return None
    kind, name = ref.get("kind"), str(ref.get("name") or "")
    if kind == "ReplicaSet":
        pod_hash = (_meta(pod).get("labels") or {}).get("pod-template-hash")
        if pod_hash and name.endswith(f"-{pod_hash}"):
            return f"Deployment/{name.removesuffix(f'-{pod_hash}')}"
        if "-" in name:
            return f"Deployment/{name.rsplit('-', 1)[0]}"
    return f"{kind}/{name}"


def _pod_info(pod: Json) -> PodInfo:
    meta, status = _meta(pod), _status(pod)
    proxy = _proxy_image(pod)
    statuses = [s for s in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
                if isinstance(s, dict)]
    return PodInfo(
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        phase=status.get("phase") or "Unknown",
        ready=_condition(status.get("conditions"), "Ready"),
        restarts=sum(s.get("restartCount") or 0 for s in statuses),
        crash_looping=any(((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
                          for s in statuses),
        labels=dict(meta.get("labels") or {}),
        owner=_owner(pod),
        proxy_version=image_tag(proxy) if proxy else None,
        proxy_image=proxy,
        proxy_revision=_proxy_revision(pod) if proxy is not None else None,
    )


def _deployment_info(obj: Json, kind: str = "Deployment") -> DeploymentInfo:
    """A Deployment, StatefulSet or DaemonSet (apps/v1); a DaemonSet's replicas are its scheduled pods."""
    spec, status = _spec(obj), _status(obj)
    containers = _spec(spec.get("template") or {}).get("containers") or []
    versions = {c.get("name"): tag for c in containers if c.get("image") and (tag := image_tag(c["image"]))}
    selector = (spec.get("selector") or {}).get("matchLabels")
    if kind == "DaemonSet":
        replicas = status.get("desiredNumberScheduled") or 0
        ready = status.get("numberReady") or 0
        updated = status.get("updatedNumberScheduled")
    else:
        replicas = spec["replicas"] if spec.get("replicas") is not None else 1
        ready = status.get("readyReplicas") or 0
        updated = status.get("updatedReplicas")
    return DeploymentInfo(
        namespace=_meta(obj).get("namespace") or "",
        name=_meta(obj).get("name") or "",
        kind=kind,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=updated,
        image_versions=versions,
        selector=dict(selector or {}),
        labels=dict(_meta(obj).get("labels") or {}),
        **_strategy(spec, kind),
    )


def _strategy(spec: Json, kind: str) -> dict[str, Any]:
    """The rollout strategy's type and maxUnavailable (Deployment `strategy`, DaemonSet `updateStrategy`)."""
    strategy = spec.get("updateStrategy" if kind == "DaemonSet" else "strategy")
    if kind == "StatefulSet" or not isinstance(strategy, dict):
        return {}
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable")
    return {"strategy": strategy.get("type"), "max_unavailable": None if value is None else str(value)}


def _label_selector(selector: Json | None) -> LabelSelector | None:
    """meta/v1 LabelSelector -> ours; None stays None (a PDB with a null selector covers no pod)."""
    if selector is None:
        return None
    return LabelSelector(
        match_labels=dict(selector.get("matchLabels") or {}),
        match_expressions=[LabelRequirement(key=e.get("key"), operator=e.get("operator"),
                                            values=list(e.get("values") or []))
                           for e in selector.get("matchExpressions") or []],
    )


def _pdb_info(pdb: Json) -> PdbInfo:
    spec, status = _spec(pdb), _status(pdb)
    return PdbInfo(
        namespace=_meta(pdb).get("namespace") or "",
        name=_meta(pdb).get("name") or "",
        selector=_label_selector(spec.get("selector")),
        min_available=None if spec.get("minAvailable") is None else str(spec["minAvailable"]),
        max_unavailable=None if spec.get("maxUnavailable") is None else str(spec["maxUnavailable"]),
        disruptions_allowed=status.get("disruptionsAllowed") or 0,
        current_healthy=status.get("currentHealthy"),
        expected_pods=status.get("expectedPods"),
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

    def list_pods(self, namespace: str | None = None) -> list[PodInfo]:
        return self._api.list_pods(namespace)

    def list_events(self, namespace: str) -> list[EventInfo]:
        # Events page like any list (limit + continue, in no time order); bounded, as evidence need not be all.
        found = self._api._paged(f"events in {namespace}", f"{CORE}/namespaces/{{namespace}}/events",
                                 {"namespace": namespace}, max_pages=MAX_EVENT_PAGES)
        return [_event_info(e, namespace) for e in found]

    def pod_log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        # Raw bytes, never parsed: a log line can look like JSON. The same policy and error mapping as
        # KubernetesApi (429/5xx/connection -> TransientError).
        data = self._api._request(f"log of {namespace}/{pod}/{container}", "GET",
                                  f"{CORE}/namespaces/{{namespace}}/pods/{{name}}/log",
                                  {"namespace": namespace, "name": pod},
                                  [("container", container), ("tailLines", lines), ("limitBytes", MAX_LOG_BYTES)],
                                  accept="text/plain")
        return data.decode("utf-8", errors="replace")


class KubernetesEvidenceConnector:
    """`EvidenceConnector` over an `EksConnector` (role, endpoint and token logic reused as is)."""

    def __init__(self, connector: EksConnector) -> None:
        self._connector = connector

    def connect(self, cluster: Cluster) -> KubernetesEvidence:
        return KubernetesEvidence(self._connector.connect(cluster))


def _event_info(event: Json, namespace: str) -> EventInfo:
    obj = event.get("involvedObject")
    seen = _time(event.get("lastTimestamp")) or _time(event.get("eventTime")) or _time(event.get("firstTimestamp"))
    if seen is None:
        seen = _time(_meta(event).get("creationTimestamp"))
    return EventInfo(
        namespace=_meta(event).get("namespace") or namespace,
        involved_object=f"{obj.get('kind')}/{obj.get('name')}" if isinstance(obj, dict) else "?",
        reason=event.get("reason") or "",
        message=plain_text(event.get("message") or "", 1_000),  # redacted before the cut (guard.outbound)
        type=event.get("type") or "Normal",
        count=event.get("count") or 1,
        last_seen=seen,
    )
