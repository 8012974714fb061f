"""A local Kubernetes API server playing many EKS clusters, for adapter tests and the rehearsal.

One stdlib HTTP server on 127.0.0.1 serves every cluster under its own path prefix
(`/clusters/<cluster_id>`); the kubernetes client appends API paths to its `host`, so
`sim.endpoint(cluster_id)` is what a `Configuration.host` (or `Cluster.api_endpoint`) gets.

Cluster state moves with the passed-in `guard.clock.Clock`: a chart change reconciles once
its delay has elapsed on that clock, pods turn ready after `pod_ready_seconds`. Nothing runs
in the background; each request (and each scenario call) first brings the cluster up to
`clock.now()`, applying the due events at the virtual time they were due.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from guard.ports import Clock

from sandbox.sims.kubernetes_objects import (
    HELM_CONTROLLER_TAG,
    HELM_VERSIONS_DEFAULT,
    ISTIO_PROXY_IMAGE,
    ISTIOD_IMAGE,
    Deployment,
    HelmRelease,
    Json,
    Pdb,
    Pod,
    SimCluster,
    deployment_json,
    helm_release_json,
    history_entry,
    image_ref,
    meta,
    namespace_json,
    node_json,
    pdb_json,
    pod_json,
    pods_of,
    selector_json,
    short_hash,
    ts,
)
from sandbox.sims.loopback import LoopbackHandler, LoopbackServer

TOKEN_PREFIX = "k8s-aws-v1."
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_PAGE_DEFAULT = 500
_LOG_LENGTH = 2000


class Workload(NamedTuple):
    """An application workload to create; a plain 5-tuple in this order works too."""

    namespace: str
    name: str
    replicas: int = 2  # a DaemonSet runs one pod per node whatever this says
    injected: bool = True
    has_pdb: bool = True
    pdb_min_available: int | str | None = None  # None -> maxUnavailable: 1
    kind: str = "Deployment"  # Deployment | StatefulSet | DaemonSet
    native_sidecar: bool = False  # istio-proxy as an init container with restartPolicy: Always
    proxy_digest: bool = False  # the proxy image is rewritten to its digest (e.g. by an admission policy)
    pdb_selector: str = "labels"  # labels (matchLabels) | expressions (matchExpressions) | empty ({})


class SimRequest(NamedTuple):
    """One request the simulator answered (for tests asserting on what the client sent)."""

    cluster_id: str
    method: str
    path: str
    query: str
    content_type: str | None
    status: int


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.headers = headers or {}


class _Fault(NamedTuple):
    cluster_id: str | None
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: int | None


HELM_GROUP = "helm.toolkit.fluxcd.io"
_RELEASE_NAMES = {"base": "istio-base", "cni": "istio-cni", "gateway": "istio-ingressgateway"}
# chart -> (DaemonSet, image repository, container, selector labels) of the ambient node agents
_NODE_AGENTS = {
    "cni": ("istio-cni-node", "docker.io/istio/install-cni", "install-cni", {"k8s-app": "istio-cni-node"}),
    "ztunnel": ("ztunnel", "docker.io/istio/ztunnel", "istio-proxy", {"app": "ztunnel"}),
}
_WORKLOAD_KINDS = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}
_REASONS = {429: "TooManyRequests", 500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable",
            504: "Timeout", 401: "Unauthorized", 403: "Forbidden"}


# ---------------------------------------------------------------- the simulator


class KubernetesSimulator(LoopbackServer):
    """Kubernetes API of many clusters on one loopback HTTP server.

    Use as a context manager (or call `start()` / `stop()`). `strict_tokens` checks that the
    bearer token is an aws-iam-authenticator token: `k8s-aws-v1.` + base64url of a presigned
    STS GetCallerIdentity URL that signs the `x-k8s-aws-id` header.
    """

    thread_name = "kubernetes-sim"

    def __init__(self, clock: Clock, pod_ready_seconds: float = 5.0, strict_tokens: bool = True) -> None:
        self.clock = clock
        self.pod_ready = timedelta(seconds=pod_ready_seconds)
        self.strict_tokens = strict_tokens
        self.requests: deque[SimRequest] = deque(maxlen=_LOG_LENGTH)
        self.request_count = 0  # every request answered, past the log's length too (the fleet benchmark)
        self._clusters: dict[str, SimCluster] = {}
        self._faults: list[_Fault] = []  # one entry per request still to fail, in order
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("_BoundHandler", (_Handler,), {"sim": self})

    def endpoint(self, cluster_id: str) -> str:
        """API server URL of one cluster (a path prefix on the shared server)."""
        return f"{self.url}/clusters/{cluster_id}"

    # ------------------------------------------------------------ building clusters

    def add_cluster(
        self,
        cluster_id: str,
        istio_version: str,
        nodes: int = 3,
        workloads: Iterable[Workload | tuple[Any, ...]] = (),
        istio_revision: str | None = None,
        image_variant: str = "",
        helm_versions: Iterable[str] = HELM_VERSIONS_DEFAULT,
    ) -> None:
        """Create a healthy cluster running Istio `istio_version`, with `workloads` in app namespaces.

        `istio_revision`: istiod installed with a revision (`istiod-<rev>`, namespaces labelled
        `istio.io/rev`); `image_variant`: Istio images tagged `<version>-<variant>` (debug,
        distroless); `helm_versions`: the helm.toolkit.fluxcd.io versions its helm-controller serves.
        """
        now = self.clock.now()
        born = now - timedelta(days=30)
        node_names = [f"ip-10-0-{i + 1}-{10 + i}.ec2.internal" for i in range(nodes)]
        hr = HelmRelease("istio-system", "istiod", istio_version, istio_version, created_at=born)
        hr.history.append(history_entry(hr, istio_version, 1, born))
        served = tuple(v for v in HELM_VERSIONS_DEFAULT if v in set(helm_versions))
        if not served:
            raise ValueError(f"helm_versions: none of {', '.join(HELM_VERSIONS_DEFAULT)}")
        c = SimCluster(
            cluster_id=cluster_id,
            nodes=dict.fromkeys(node_names, True),
            namespaces={},
            created_at=born,
            helm_release=hr,
            helm_versions=served,
            istio_revision=istio_revision,
            image_variant=image_variant,
        )
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease", "istio-system", "flux-system"):
            c.namespaces[ns] = {"kubernetes.io/metadata.name": ns}
        with self._lock:
            if cluster_id in self._clusters:
                raise ValueError(f"cluster {cluster_id} exists already")
            self._clusters[cluster_id] = c
            for ds in ("aws-node", "kube-proxy"):
                for node in node_names:
                    image = f"602401143452.dkr.ecr.us-east-1.amazonaws.com/eks/{ds}:v1.29.0"
                    self._new_pod(c, "kube-system", ds, {"k8s-app": ds}, "DaemonSet", ds, [(ds, image)], [], born)
                    c.pods[-1].node = node
            self._add_deployment(c, "kube-system", "coredns", 2, [("coredns", "coredns/coredns:v1.11.1")], False, born)
            flux_tag = HELM_CONTROLLER_TAG.get(served, "v1.3.0")
            for ctl in ("source-controller", "kustomize-controller", "helm-controller"):
                image = f"ghcr.io/fluxcd/{ctl}:{flux_tag if ctl == 'helm-controller' else 'v1.3.0'}"
                self._add_deployment(c, "flux-system", ctl, 1, [("manager", image)], False, born)
            rev = c.revision_label
            istiod = Deployment(
                "istio-system", c.istiod_name, 2,
                [("discovery", image_ref(ISTIOD_IMAGE, istio_version, image_variant))], False, created_at=born,
                labels={"app": "istiod", "istio.io/rev": rev, "istio": "pilot", "app.kubernetes.io/name": "istiod",
                        "app.kubernetes.io/version": istio_version, "helm.toolkit.fluxcd.io/name": hr.name,
                        "helm.toolkit.fluxcd.io/namespace": hr.namespace},
                match_labels={"app": "istiod", "istio.io/rev": rev})
            self._place(c, istiod, born)
            self._add_pdb(c, "istio-system", c.istiod_name, istiod.selector, 1, None, born)
            for raw in workloads:
                w = raw if isinstance(raw, Workload) else Workload(*raw)
                labels = c.namespaces.setdefault(w.namespace, {"kubernetes.io/metadata.name": w.namespace})
                if w.injected:
                    rev_label = {"istio.io/rev": istio_revision} if istio_revision else {}
                    labels.update(rev_label or {"istio-injection": "enabled"})
                image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{w.namespace}/{w.name}:1.0.0"
                dep = Deployment(w.namespace, w.name, w.replicas, [(w.name, image)], w.injected, created_at=born,
                                 kind=w.kind, native_sidecar=w.native_sidecar, proxy_digest=w.proxy_digest)
                self._place(c, dep, born)
                if w.has_pdb:
                    max_unavailable = 1 if w.pdb_min_available is None else None
                    self._add_pdb(c, w.namespace, w.name, selector_json(w.pdb_selector, dep.selector),
                                  w.pdb_min_available, max_unavailable, born)

    def apply_chart_version(self, cluster_id: str, version: str, reconcile_after_seconds: float) -> None:
        """Flux applies a new chart version: the spec changes now, the release follows after the delay.

        When it reconciles (unless stuck) the HelmRelease reports Ready at `version` and istiod
        rolls to that image. Sidecars keep their version until their Deployment restarts.
        """
        with self._lock:
            c = self._advanced(cluster_id)
            hr = c.helm_release
            if hr.spec_version == version:
                return
            hr.spec_version = version
            hr.generation += 1
            hr.stalled, hr.last_failure = False, None  # a new spec resets the retries
            hr.reconcile_at = self.clock.now() + timedelta(seconds=reconcile_after_seconds)
            hr.reconcile_delay = timedelta(seconds=reconcile_after_seconds)
            self._bump(c)

    def add_job(self, cluster_id: str, namespace: str, name: str, completed: bool = True,
                native_sidecar: bool = True) -> None:
        """A Job's pod with a sidecar: Succeeded when `completed` (a finished run), else still Running.

        Istio's native sidecar lets a Job's pod complete; GUARD can restart neither kind of pod.
        """
        with self._lock:
            c = self._advanced(cluster_id)
            at = c.created_at if completed else self.clock.now()
            labels = {"job-name": name, "batch.kubernetes.io/job-name": name}
            self._new_pod(c, namespace, name, labels, "Job", name, [(name, "busybox:1.36")], [], at)
            pod = c.pods[-1]
            pod.ready_at = at
            pod.restart_policy = "Never"
            self._inject(c, pod, native_sidecar=native_sidecar, digest=False)
            if completed:
                pod.finished = "Succeeded"
            self._bump(c)

    def suspend_helm_release(self, cluster_id: str, suspended: bool = True) -> None:
        """`spec.suspend`: Flux returns early and leaves the release and its status as they are."""
        with self._lock:
            c = self._advanced(cluster_id)
            hr = c.helm_release
            hr.suspended = suspended
            hr.generation += 1  # a spec change; the controller does not observe it while suspended
            if not suspended:
                hr.reconcile_at = hr.reconcile_at or self.clock.now()
            self._bump(c)

    def fail_upgrades(self, cluster_id: str, times: int = 1, stall: bool = False) -> None:
        """The next `times` upgrades fail (Ready=False UpgradeFailed) and are remediated by a rollback
        (Remediated=True); the controller then retries. With `stall` the retries are exhausted
        instead: Stalled=True, and nothing happens until the spec changes."""
        with self._lock:
            c = self._advanced(cluster_id)
            c.helm_release.failing_upgrades = times
            c.helm_release.stall_after_failures = stall
            self._bump(c)

    # ------------------------------------------------------------ faults

    def set_kubernetes_version(self, cluster_id: str, version: str) -> None:
        """The Kubernetes version the API server reports (`GET /version`), e.g. `1.31.2`."""
        with self._lock:
            self._advanced(cluster_id).kubernetes_version = version

    def set_unreachable(self, cluster_id: str, unreachable: bool = True) -> None:
        """Every request to the cluster answers 503 while set."""
        with self._lock:
            self._advanced(cluster_id).unreachable = unreachable

    def fail_next(self, cluster_id: str | None, path_regex: str, status: int, times: int = 1,
                  method: str = "GET", retry_after: int | None = None) -> None:
        """Answer the next `times` requests to `cluster_id` (None: any cluster) whose API path (after
        `/clusters/<id>`, e.g. `/api/v1/pods`) matches `path_regex` with a Kubernetes `Status` of `status`
        (and `Retry-After` when given), as an API server under load or a flaky proxy does."""
        with self._lock:
            self._faults.extend([_Fault(cluster_id, method.upper(), re.compile(path_regex), status, retry_after)]
                                * times)

    def faults_left(self) -> int:
        """How many injected failures have not been served yet."""
        with self._lock:
            return len(self._faults)

    def _take_fault(self, cluster_id: str, method: str, route: str) -> _Fault | None:
        for i, fault in enumerate(self._faults):
            if fault.cluster_id in (None, cluster_id) and fault.method == method and fault.pattern.search(route):
                return self._faults.pop(i)
        return None

    def set_node_ready(self, cluster_id: str, node: str, ready: bool) -> None:
        """Mark a node (Not)Ready; pods on a NotReady node are not ready either."""
        with self._lock:
            c = self._advanced(cluster_id)
            if node not in c.nodes:
                raise KeyError(f"cluster {cluster_id} has no node {node}")
            c.nodes[node] = ready
            self._bump(c)

    def crash_loop(self, cluster_id: str, namespace: str, pod_prefix: str, enabled: bool = True) -> None:
        """Pods in `namespace` whose name starts with `pod_prefix` crash-loop, also pods created later."""
        with self._lock:
            c = self._advanced(cluster_id)
            if enabled:
                c.crash_loops.setdefault((namespace, pod_prefix), self.clock.now())
                _event(c, namespace, "Pod", f"{pod_prefix}-*", "BackOff", "Warning",
                       "Back-off restarting failed container", self.clock.now())
            else:
                c.crash_loops.pop((namespace, pod_prefix), None)
            self._bump(c)

    def set_flux_stuck(self, cluster_id: str, stuck: bool = True, message: str | None = None) -> None:
        """The HelmRelease stops reconciling: Ready=False with `message`, the release stays where it is."""
        with self._lock:
            c = self._advanced(cluster_id)
            hr = c.helm_release
            if stuck:
                hr.stuck_message = message or (
                    f"HelmChart 'flux-system/{hr.namespace}-{hr.name}' is not ready: chart pull error: "
                    f"failed to get chart version for remote reference: no chart name found"
                )
            else:
                hr.stuck_message = None
                if hr.reconcile_at is not None:
                    hr.reconcile_at = max(hr.reconcile_at, self.clock.now())
            self._bump(c)

    def remove_injector_webhook(self, cluster_id: str) -> None:
        """Delete the istio-sidecar-injector MutatingWebhookConfiguration (new pods get no sidecar)."""
        with self._lock:
            self._advanced(cluster_id).injector_webhook = False
            self._bump(self._clusters[cluster_id])

    def set_rollout_strategy(self, cluster_id: str, namespace: str, name: str, max_unavailable: int | str = "25%",
                             strategy: str = "RollingUpdate") -> None:
        """Set a Deployment's spec.strategy (RollingUpdate with `max_unavailable`, or Recreate), as `kubectl
        patch` would; istiod is `istio-system/<istiod name>`."""
        with self._lock:
            c = self._advanced(cluster_id)
            d = c.deployments[(namespace, name)]
            d.strategy, d.max_unavailable = strategy, max_unavailable
            d.generation += 1

    def add_gateway(self, cluster_id: str, name: str = "istio-ingressgateway", replicas: int = 2) -> None:
        """An Istio gateway Deployment in istio-system (its proxy follows the control plane on restart)."""
        with self._lock:
            c = self._advanced(cluster_id)
            dep = self._place(c, Deployment("istio-system", name, replicas, [], True, created_at=c.created_at,
                                            match_labels={"app": name, "istio": name.removeprefix("istio-")}),
                              c.created_at)
            # The gateway Helm chart ships a PodDisruptionBudget too.
            self._add_pdb(c, "istio-system", name, {"matchLabels": dep.selector}, None, 1, c.created_at)

    def remove_pdb(self, cluster_id: str, namespace: str, name: str) -> None:
        with self._lock:
            c = self._advanced(cluster_id)
            if c.pdbs.pop((namespace, name), None) is None:
                raise KeyError(f"cluster {cluster_id} has no PDB {namespace}/{name}")
            self._bump(c)

    # ------------------------------------------------------------ inspection (for scenario assertions)

    def cluster_ids(self) -> list[str]:
        with self._lock:
            return list(self._clusters)

    def node_names(self, cluster_id: str) -> list[str]:
        with self._lock:
            return list(self._advanced(cluster_id).nodes)

    def helm_release_versions(self, cluster_id: str) -> tuple[str, str]:
        """(spec version, version the release actually runs)."""
        with self._lock:
            hr = self._advanced(cluster_id).helm_release
            return hr.spec_version, hr.applied_version

    def proxy_versions(self, cluster_id: str, live_only: bool = False) -> dict[str, str]:
        """Pod name -> istio-proxy version (its tag, variant included; the digest of a pinned image),
        injected pods only; `live_only` leaves out completed pods."""
        with self._lock:
            c = self._advanced(cluster_id)
            return {
                f"{p.namespace}/{p.name}": img.split("@", 1)[1] if "@" in img else img.rsplit(":", 1)[1]
                for p in c.pods
                for n, img in [*p.containers, *p.init_containers]
                if n == "istio-proxy" and not (live_only and p.finished)
            }

    def proxy_image_for(self, cluster_id: str, version: str, digest: bool = False) -> str:
        """The proxy image a pod injected at `version` gets in this cluster (variant, digest)."""
        with self._lock:
            c = self._advanced(cluster_id)
            return image_ref(ISTIO_PROXY_IMAGE, version, c.image_variant, digest)

    # ------------------------------------------------------------ internals: state changes

    def _advanced(self, cluster_id: str) -> SimCluster:
        c = self._clusters.get(cluster_id)
        if c is None:
            raise KeyError(f"unknown cluster {cluster_id}")
        self._advance(c, self.clock.now())
        return c

    def _advance(self, c: SimCluster, now: datetime) -> None:
        hr = c.helm_release
        while (hr.reconcile_at is not None and hr.stuck_message is None and not hr.suspended
               and hr.failing_upgrades > 0 and now >= hr.reconcile_at):
            # The upgrade fails; remediation rolls back to the last release; a retry follows, or
            # with the retries exhausted the release stalls until its spec changes.
            at = hr.reconcile_at
            hr.failing_upgrades -= 1
            hr.attempted_version = hr.spec_version
            hr.last_failure = (f"Helm upgrade failed for release {hr.namespace}/{hr.name} with chart "
                               f"istiod@{hr.spec_version}: context deadline exceeded")
            failed = history_entry(hr, hr.spec_version, len(hr.history) + 1, at)
            failed["status"] = "failed"
            hr.history.insert(0, failed)
            back = history_entry(hr, hr.applied_version, len(hr.history) + 1, at)
            hr.history.insert(0, back)
            for entry in hr.history[1:]:
                if entry["status"] == "deployed":
                    entry["status"] = "superseded"
            _event(c, hr.namespace, "HelmRelease", hr.name, "UpgradeFailed", "Warning", hr.last_failure, at)
            _event(c, hr.namespace, "HelmRelease", hr.name, "RollbackSucceeded", "Normal",
                   f"Helm rollback to previous release succeeded with chart istiod@{hr.applied_version}", at)
            if hr.stall_after_failures and hr.failing_upgrades == 0:
                hr.stalled, hr.reconcile_at = True, None
            else:
                hr.reconcile_at = at + hr.reconcile_delay
            self._bump(c)
        self._reconcile_components(c, now)
        deps_at = self._dependencies_ready(c, hr)
        if (hr.reconcile_at is not None and hr.stuck_message is None and not hr.suspended
                and deps_at is not None and now >= max(hr.reconcile_at, deps_at)):
            at = max(hr.reconcile_at, deps_at)
            hr.reconcile_at = None
            hr.ready_at = at
            c.upgrade_log.append((at, f"{hr.namespace}/{hr.name}", hr.spec_version))
            hr.last_failure = None
            hr.attempted_version = hr.spec_version
            hr.applied_version = hr.spec_version
            hr.observed_generation = hr.generation
            hr.history.insert(0, history_entry(hr, hr.spec_version, len(hr.history) + 1, at))
            _event(c, hr.namespace, "HelmRelease", hr.name, "UpgradeSucceeded", "Normal",
                   f"Helm upgrade succeeded for release {hr.namespace}/{hr.name} with chart istiod@{hr.spec_version}",
                   at)
            for entry in hr.history[1:]:
                if entry["status"] == "deployed":
                    entry["status"] = "superseded"
            istiod = c.deployments.get(("istio-system", c.istiod_name))
            if istiod is not None:
                istiod.containers = [("discovery", image_ref(ISTIOD_IMAGE, hr.applied_version, c.image_variant))]
                istiod.labels["app.kubernetes.io/version"] = hr.applied_version
                self._rollout(c, istiod, at)
            self._bump(c)
        self._reconcile_components(c, now)
        for dep in c.deployments.values():
            pods = pods_of(c, dep)
            new = [p for p in pods if p.template_hash == dep.current_hash]
            old = [p for p in pods if p.template_hash != dep.current_hash]
            if dep.kind == "Deployment":
                # A rolling update removes the old ReplicaSet's pods once every new pod is ready.
                if old and new and all(c.pod_ready(p, now) for p in new):
                    gone = {id(p) for p in old}
                    c.pods = [p for p in c.pods if id(p) not in gone]
                    self._bump(c)
                continue
            # StatefulSets (highest ordinal first) and DaemonSets (maxUnavailable 1) replace one pod
            # at a time: the next once every replaced pod is ready.
            while old and all(c.pod_ready(p, now) for p in new):
                at = max((p.ready_at for p in new), default=now)
                self._replace_one(c, dep, old, at)
                pods = pods_of(c, dep)
                new = [p for p in pods if p.template_hash == dep.current_hash]
                old = [p for p in pods if p.template_hash != dep.current_hash]

    # ------------------------------------------------------------ the install's other releases

    def add_component(self, cluster_id: str, chart: str, name: str | None = None, *, namespace: str = "istio-system",
                      version: str | None = None, depends_on: Iterable[str] = (), crds: str | None = None,
                      crd_templates: bool = False) -> None:
        """Another Istio chart installed by Flux: `base` (the CRDs), `cni` (DaemonSet istio-cni-node),
        `ztunnel` (DaemonSet ztunnel), `gateway` (an injected Deployment); `istiod` only sets the
        dependsOn of istiod's release. `depends_on`: names of releases in `namespace` it waits for."""
        with self._lock:
            c = self._advanced(cluster_id)
            deps = [(namespace, d) for d in depends_on]
            if chart == "istiod":
                c.helm_release.depends_on = deps
                return
            version = version or c.helm_release.applied_version
            name = name or _RELEASE_NAMES.get(chart, chart)
            born = c.created_at
            hr = HelmRelease(namespace, name, version, version, created_at=born, chart=chart, depends_on=deps,
                             crds=crds, crd_templates=crd_templates, ready_at=born)
            hr.history.append(history_entry(hr, version, 1, born))
            c.releases[(namespace, name)] = hr
            if chart == "base":
                c.crd_version = version
            elif chart in _NODE_AGENTS:
                ds_name, image, container, labels = _NODE_AGENTS[chart]
                containers = [(container, image_ref(image, version, c.image_variant))]
                self._place(c, Deployment(namespace, ds_name, 0, containers, False, created_at=born, kind="DaemonSet",
                                          match_labels=labels, labels={"app.kubernetes.io/version": version}), born)
            elif chart == "gateway":
                self.add_gateway(cluster_id, name)
                c.deployments[(namespace, name)].template_annotations["helm.sh/chart"] = f"gateway-{version}"
            self._bump(c)

    def apply_release_version(self, cluster_id: str, namespace: str, name: str, version: str,
                              reconcile_after_seconds: float) -> None:
        """Flux applies a new chart version to release `namespace/name` (istiod's: `apply_chart_version`)."""
        with self._lock:
            c = self._advanced(cluster_id)
            if (namespace, name) == (c.helm_release.namespace, c.helm_release.name):
                self.apply_chart_version(cluster_id, version, reconcile_after_seconds)
                return
            hr = c.releases.get((namespace, name))
            if hr is None:
                raise KeyError(f"cluster {cluster_id} has no HelmRelease {namespace}/{name}")
            if hr.spec_version == version:
                return
            hr.spec_version = version
            hr.generation += 1
            hr.reconcile_at = self.clock.now() + timedelta(seconds=reconcile_after_seconds)
            hr.reconcile_delay = timedelta(seconds=reconcile_after_seconds)
            self._bump(c)

    def release_versions(self, cluster_id: str) -> dict[str, tuple[str, str]]:
        """namespace/name -> (spec version, applied version) of every Istio release."""
        with self._lock:
            c = self._advanced(cluster_id)
            return {f"{hr.namespace}/{hr.name}": (hr.spec_version, hr.applied_version) for hr in c.all_releases()}

    def upgrades(self, cluster_id: str) -> list[tuple[datetime, str, str]]:
        """(when, namespace/name, version) of each release upgrade Flux made, in order."""
        with self._lock:
            return list(self._advanced(cluster_id).upgrade_log)

    def crd_version(self, cluster_id: str) -> str | None:
        with self._lock:
            return self._advanced(cluster_id).crd_version

    @staticmethod
    def _dependencies_ready(c: SimCluster, hr: HelmRelease) -> datetime | None:
        """When every release `hr` dependsOn was last Ready at its spec, or None while one is not (Flux
        requeues it: "dependency 'ns/name' is not ready"); the epoch for none."""
        at = c.created_at
        for ns, name in hr.depends_on:
            dep = c.release(ns, name)
            if (dep is None or dep.reconcile_at is not None or dep.applied_version != dep.spec_version
                    or dep.stuck_message is not None or dep.stalled or dep.ready_at is None):
                return None
            at = max(at, dep.ready_at)
        return at

    def _reconcile_components(self, c: SimCluster, now: datetime) -> None:
        """Upgrade each due release (not istiod's) once its dependencies are Ready, dependencies first."""
        progressed = True
        while progressed:
            progressed = False
            for hr in c.releases.values():
                deps_at = self._dependencies_ready(c, hr)
                if hr.reconcile_at is None or hr.suspended or deps_at is None:
                    continue
                at = max(hr.reconcile_at, deps_at)
                if now < at:
                    continue
                hr.reconcile_at, hr.ready_at = None, at
                hr.attempted_version = hr.applied_version = hr.spec_version
                hr.observed_generation = hr.generation
                hr.history.insert(0, history_entry(hr, hr.spec_version, len(hr.history) + 1, at))
                for entry in hr.history[1:]:
                    if entry["status"] == "deployed":
                        entry["status"] = "superseded"
                c.upgrade_log.append((at, f"{hr.namespace}/{hr.name}", hr.spec_version))
                _event(c, hr.namespace, "HelmRelease", hr.name, "UpgradeSucceeded", "Normal",
                       f"Helm upgrade succeeded for release {hr.namespace}/{hr.name} with chart "
                       f"{hr.chart}@{hr.spec_version}", at)
                self._apply_component(c, hr, at)
                progressed = True
                self._bump(c)

    def _apply_component(self, c: SimCluster, hr: HelmRelease, at: datetime) -> None:
        version = hr.applied_version
        if hr.chart == "base":
            # Helm upgrades templated CRDs like any resource; those in crds/ only with Flux's CreateReplace.
            if hr.crd_templates or hr.crds == "CreateReplace":
                c.crd_version = version
        elif hr.chart in _NODE_AGENTS:
            ds_name, image, container, _ = _NODE_AGENTS[hr.chart]
            ds = c.deployments.get((hr.namespace, ds_name))
            if ds is not None:
                ds.containers = [(container, image_ref(image, version, c.image_variant))]
                ds.labels["app.kubernetes.io/version"] = version
                self._rollout(c, ds, at)
        elif hr.chart == "gateway":
            gw = c.deployments.get((hr.namespace, hr.name))
            if gw is not None:  # the chart's new template rolls the pods; injection gives them istiod's proxy
                gw.template_annotations["helm.sh/chart"] = f"gateway-{version}"
                self._rollout(c, gw, at)

    def _add_deployment(
        self,
        c: SimCluster,
        namespace: str,
        name: str,
        replicas: int,
        containers: list[tuple[str, str]],
        injected: bool,
        born: datetime,
    ) -> Deployment:
        return self._place(c, Deployment(namespace, name, replicas, containers, injected, created_at=born), born)

    def _place(self, c: SimCluster, dep: Deployment, born: datetime) -> Deployment:
        """Add a workload with its first pods, long up."""
        c.deployments[(dep.namespace, dep.name)] = dep
        self._rollout(c, dep, born)
        for p in pods_of(c, dep):
            p.ready_at = born  # the initial pods are long up
        return dep

    def _add_pdb(
        self,
        c: SimCluster,
        namespace: str,
        name: str,
        selector: Json | dict[str, str] | None,
        min_available: int | str | None,
        max_unavailable: int | str | None,
        born: datetime,
    ) -> None:
        if isinstance(selector, dict) and not {"matchLabels", "matchExpressions"} & set(selector) and selector:
            selector = {"matchLabels": dict(selector)}
        c.pdbs[(namespace, name)] = Pdb(namespace, name, selector, min_available, max_unavailable, born)

    def _rollout(self, c: SimCluster, dep: Deployment, at: datetime) -> None:
        """Create the pods of the workload's current template unless they exist.

        A Deployment starts a whole new ReplicaSet; a StatefulSet or DaemonSet replaces its pods
        one at a time (the first now, the others in `_advance` as each turns ready)."""
        template = json.dumps([dep.containers, sorted(dep.template_annotations.items())])
        new_hash = short_hash(template, 10)
        if new_hash == dep.current_hash:
            return
        dep.current_hash = new_hash
        if dep.revision > 0 and dep.kind == "Deployment":
            _event(c, dep.namespace, "Deployment", dep.name, "ScalingReplicaSet", "Normal",
                   f"Scaled up replica set {dep.name}-{new_hash} to {dep.replicas}", at)
        dep.revision += 1
        if dep.revision > 1:
            dep.generation += 1
        old = pods_of(c, dep)
        if dep.kind != "Deployment" and old:
            self._replace_one(c, dep, old, at)
            self._bump(c)
            return
        if dep.kind == "DaemonSet":
            for node in c.nodes:
                self._workload_pod(c, dep, at, node=node)
        else:
            for ordinal in range(dep.replicas):
                self._workload_pod(c, dep, at, ordinal=ordinal)
        self._bump(c)

    def _replace_one(self, c: SimCluster, dep: Deployment, old: list[Pod], at: datetime) -> None:
        """Delete one old pod of a StatefulSet (highest ordinal) or DaemonSet and create its successor."""
        victim = sorted(old, key=lambda p: p.name)[-1]
        c.pods = [p for p in c.pods if p is not victim]
        if dep.kind == "StatefulSet":
            self._workload_pod(c, dep, at, ordinal=int(victim.name.rsplit("-", 1)[1]))
        else:
            self._workload_pod(c, dep, at, node=victim.node)
        _event(c, dep.namespace, dep.kind, dep.name, "SuccessfulDelete", "Normal",
               f"delete Pod {victim.name} in {dep.kind} {dep.name} successful", at)
        self._bump(c)

    def _workload_pod(self, c: SimCluster, dep: Deployment, at: datetime, ordinal: int = 0,
                      node: str | None = None) -> None:
        """One pod of the workload's current template, injected by the control plane running now."""
        labels = dict(dep.selector)
        if dep.kind == "Deployment":
            owner_kind, owner_name = "ReplicaSet", f"{dep.name}-{dep.current_hash}"
            labels["pod-template-hash"] = dep.current_hash
        else:
            owner_kind, owner_name = dep.kind, dep.name
            labels["controller-revision-hash"] = f"{dep.name}-{dep.current_hash}"
        if dep.kind == "StatefulSet":
            labels["statefulset.kubernetes.io/pod-name"] = f"{dep.name}-{ordinal}"
        self._new_pod(c, dep.namespace, owner_name, labels, owner_kind, owner_name, list(dep.containers), [], at,
                      dep.current_hash)
        pod = c.pods[-1]
        if dep.kind == "StatefulSet":
            pod.name = f"{dep.name}-{ordinal}"
        if node is not None:
            pod.node = node
        pod.annotations = dict(dep.template_annotations)
        if dep.injected:
            self._inject(c, pod, native_sidecar=dep.native_sidecar, digest=dep.proxy_digest)

    def _inject(self, c: SimCluster, pod: Pod, native_sidecar: bool, digest: bool) -> None:
        """What Istio's injection webhook adds to a new pod, at the control plane's current version."""
        proxy = image_ref(ISTIO_PROXY_IMAGE, c.helm_release.applied_version, c.image_variant, digest)
        pod.init_containers.append(("istio-init", proxy))
        if native_sidecar:
            pod.init_containers.append(("istio-proxy", proxy))
            pod.native_sidecars.append("istio-proxy")
        else:
            pod.containers.append(("istio-proxy", proxy))
        pod.labels.update({
            "security.istio.io/tlsMode": "istio",
            "service.istio.io/canonical-name": pod.labels.get("app", pod.owner_name),
            "service.istio.io/canonical-revision": "latest",
            "istio.io/rev": c.revision_label,
        })
        pod.annotations["sidecar.istio.io/status"] = json.dumps(
            {"initContainers": ["istio-init", *pod.native_sidecars], "containers": [] if native_sidecar
             else ["istio-proxy"], "volumes": ["istio-envoy", "istio-data", "istio-podinfo", "istio-token",
                                               "istiod-ca-cert"], "imagePullSecrets": None,
             "revision": c.revision_label})

    def _new_pod(
        self,
        c: SimCluster,
        namespace: str,
        base: str,
        labels: dict[str, str],
        owner_kind: str,
        owner_name: str,
        containers: list[tuple[str, str]],
        init: list[tuple[str, str]],
        at: datetime,
        template_hash: str | None = None,
    ) -> None:
        c.pod_serial += 1
        nodes = list(c.nodes)
        suffix = short_hash(f"{c.cluster_id}/{c.pod_serial}", 5)
        c.pods.append(
            Pod(
                namespace=namespace,
                name=f"{base}-{suffix}",
                labels=dict(labels),
                owner_kind=owner_kind,
                owner_name=owner_name,
                node=nodes[c.pod_serial % len(nodes)] if nodes else "",
                containers=list(containers),
                init_containers=list(init),
                created_at=at,
                ready_at=at + self.pod_ready,
                template_hash=template_hash,
            )
        )

    def _bump(self, c: SimCluster) -> None:
        c.resource_version += 1

    # ------------------------------------------------------------ internals: HTTP

    def _handle(self, method: str, path: str, query: str, headers: Any, body: bytes) -> tuple[int, Json | str]:
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "clusters":
            raise _ApiError(404, "NotFound", f"no cluster prefix in {path}")
        cluster_id, rest = parts[1], parts[2:]
        with self._lock:
            c = self._clusters.get(cluster_id)
            if c is None:
                raise _ApiError(404, "NotFound", f"unknown cluster {cluster_id}")
            if c.unreachable:
                raise _ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            fault = self._take_fault(cluster_id, method, "/" + "/".join(rest))
            if fault is not None:
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                raise _ApiError(fault.status, _REASONS.get(fault.status, "InternalError"),
                                f"injected fault: {fault.status}", headers=extra)
            self._authenticate(headers.get("Authorization"))
            now = self.clock.now()
            self._advance(c, now)
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            if method == "GET":
                return 200, self._get(c, rest, params, now)
            if method == "PATCH":
                return 200, self._patch(c, rest, headers.get("Content-Type"), body, now)
            raise _ApiError(405, "MethodNotAllowed", f"{method} is not supported by the simulator")

    def _authenticate(self, header: str | None) -> None:
        if not header or not header.startswith("Bearer "):
            raise _ApiError(401, "Unauthorized", "Unauthorized")
        token = header.removeprefix("Bearer ").strip()
        if not token.startswith(TOKEN_PREFIX):
            raise _ApiError(401, "Unauthorized", "Unauthorized")
        if self.strict_tokens and not _valid_presigned_identity_url(token.removeprefix(TOKEN_PREFIX)):
            raise _ApiError(401, "Unauthorized", "Unauthorized")

    def _get(self, c: SimCluster, rest: list[str], params: dict[str, str], now: datetime) -> Json | str:
        route = "/".join(rest)
        if route == "version":
            major, minor = c.kubernetes_version.split(".")[:2]
            return {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{c.kubernetes_version}-eks-1234567",
                "gitCommit": short_hash(c.kubernetes_version, 40),
                "gitTreeState": "clean",
                "buildDate": "2026-10-01T00:00:00Z",
                "goVersion": "go1.22.5",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if route == "api/v1/nodes":
            return self._list(c, "NodeList", "v1", [node_json(c, n, r, now) for n, r in c.nodes.items()], params)
        if route == "api/v1/namespaces":
            items = [namespace_json(c, n, labels) for n, labels in c.namespaces.items()]
            return self._list(c, "NamespaceList", "v1", items, params)
        if route == "apis":
            return _api_group_list(c)
        if route == f"apis/{HELM_GROUP}":
            return _helm_group(c)
        if route == "apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations":
            items = [_injector_webhook_json(c)] if c.injector_webhook else []
            return self._list(c, "MutatingWebhookConfigurationList", "admissionregistration.k8s.io/v1", items, params)
        ns, kind, name = _split_route(rest)
        if kind == "events" and name is None and ns is not None:
            items = [e for e in c.events if e["metadata"]["namespace"] == ns]
            return self._list(c, "EventList", "v1", items, params)
        if kind == "pods" and name is not None and rest[-1] == "log":
            return _pod_log(c, ns or "", name, int(params.get("tailLines") or 100), now)
        if kind == "pods" and name is None:
            items = [pod_json(c, p, now) for p in c.pods if ns is None or p.namespace == ns]
            return self._list(c, "PodList", "v1", items, params)
        if kind in _WORKLOAD_KINDS and rest[:3] == ["apis", "apps", "v1"]:
            wanted = _WORKLOAD_KINDS[kind]
            deps = [d for d in c.deployments.values() if d.kind == wanted and (ns is None or d.namespace == ns)]
            if name is None:
                items = [deployment_json(c, d, now) for d in deps]
                return self._list(c, f"{wanted}List", "apps/v1", items, params)
            dep = c.deployments.get((ns or "", name))
            if dep is None or dep.kind != wanted:
                raise _ApiError(404, "NotFound", f'{kind}.apps "{name}" not found')
            return deployment_json(c, dep, now)
        if kind == "poddisruptionbudgets" and name is None:
            items = [pdb_json(c, b, now) for b in c.pdbs.values() if ns is None or b.namespace == ns]
            return self._list(c, "PodDisruptionBudgetList", "policy/v1", items, params)
        if kind == "helmreleases" and name is None and rest[1] == HELM_GROUP:
            if rest[2] not in c.helm_versions:
                raise _ApiError(404, "NotFound", "the server could not find the requested resource")
            items = [helm_release_json(hr, now, api_version=rest[2], storage=c.helm_versions[-1])
                     for hr in c.all_releases() if ns is None or hr.namespace == ns]
            return self._list(c, "HelmReleaseList", f"{HELM_GROUP}/{rest[2]}", items, params)
        if kind == "helmreleases" and name is not None and rest[1] == HELM_GROUP:
            # A version the helm-controller's CRD does not serve is no resource at all: 404.
            if rest[2] not in c.helm_versions:
                raise _ApiError(404, "NotFound", "the server could not find the requested resource")
            found = c.release(ns or "", name)
            if found is None:
                raise _ApiError(404, "NotFound", f'helmreleases.helm.toolkit.fluxcd.io "{name}" not found')
            hr = found
            return helm_release_json(hr, now, api_version=rest[2], storage=c.helm_versions[-1])
        raise _ApiError(404, "NotFound", f"the server could not find the requested resource ({route})")

    def _patch(self, c: SimCluster, rest: list[str], content_type: str | None, body: bytes, now: datetime) -> Json:
        ns, kind, name = _split_route(rest)
        if kind not in _WORKLOAD_KINDS or ns is None or name is None or rest[:3] != ["apis", "apps", "v1"]:
            raise _ApiError(405, "MethodNotAllowed", "the simulator only patches deployments, statefulsets "
                                                     "and daemonsets")
        media = (content_type or "").split(";")[0].strip()
        if media not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
            raise _ApiError(415, "UnsupportedMediaType", f"unsupported patch type {media!r}")
        dep = c.deployments.get((ns, name))
        if dep is None or dep.kind != _WORKLOAD_KINDS[kind]:
            raise _ApiError(404, "NotFound", f'{kind}.apps "{name}" not found')
        try:
            patch = json.loads(body or b"{}")
            annotations = patch["spec"]["template"]["metadata"]["annotations"]
            unsupported = _without_path(patch, ("spec", "template", "metadata", "annotations"))
        except (ValueError, KeyError, TypeError) as e:
            raise _ApiError(422, "Invalid", "the simulator only patches spec.template.metadata.annotations") from e
        if unsupported or not isinstance(annotations, dict):
            raise _ApiError(422, "Invalid", "the simulator only patches spec.template.metadata.annotations")
        for key, value in annotations.items():
            if value is None:
                dep.template_annotations.pop(key, None)
            else:
                dep.template_annotations[key] = str(value)
        self._rollout(c, dep, now)
        return deployment_json(c, dep, now)

    def _list(self, c: SimCluster, kind: str, api_version: str, items: list[Json], params: dict[str, str]) -> Json:
        start = int(base64.urlsafe_b64decode(params["continue"]).decode()) if params.get("continue") else 0
        limit = int(params.get("limit") or _PAGE_DEFAULT)
        page = items[start : start + limit]
        meta: Json = {"resourceVersion": str(c.resource_version)}
        if start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": page}


class _Handler(LoopbackHandler):
    sim: KubernetesSimulator
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        extra: dict[str, str] = {}
        try:
            status, payload = self.sim._handle(method, url.path, url.query, self.headers, body)
        except _ApiError as e:
            status, extra = e.code, e.headers
            payload = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": e.message,
                "reason": e.reason,
                "code": e.code,
            }
        parts = url.path.split("/")
        cluster = parts[2] if len(parts) > 2 else ""
        self.sim.requests.append(
            SimRequest(cluster, method, url.path, url.query, self.headers.get("Content-Type"), status)
        )
        with self.sim._lock:
            self.sim.request_count += 1
        # Pod logs are plain text; everything else is JSON.
        text = isinstance(payload, str)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet (and never echo Authorization headers)."""


# ---------------------------------------------------------------- helpers


def _split_route(rest: list[str]) -> tuple[str | None, str | None, str | None]:
    """(namespace, plural, name) of an API path after the group/version prefix."""
    if rest[:2] == ["api", "v1"]:
        tail = rest[2:]
    elif len(rest) >= 3 and rest[0] == "apis":
        tail = rest[3:]
    else:
        return None, None, None
    if len(tail) >= 3 and tail[0] == "namespaces":
        return tail[1], tail[2], tail[3] if len(tail) > 3 else None
    if len(tail) == 1:
        return None, tail[0], None
    return None, None, None


def _event(c: SimCluster, namespace: str, kind: str, name: str, reason: str, type_: str, message: str,
           at: datetime) -> None:
    """Record a core/v1 Event the way the controllers would."""
    c.events.append({
        "metadata": meta(c, f"{name}.{short_hash(f'{reason}/{at.isoformat()}/{len(c.events)}', 16)}", namespace, at),
        "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
        "reason": reason, "message": message, "type": type_, "count": 1,
        "firstTimestamp": ts(at), "lastTimestamp": ts(at), "source": {"component": "guard-sim"},
    })


def _pod_log(c: SimCluster, namespace: str, name: str, tail: int, now: datetime) -> str:
    """The last lines an istiod pod would log: version, pushes, and rejected configs while pods loop."""
    pod = next((p for p in c.pods if p.namespace == namespace and p.name == name), None)
    if pod is None:
        raise _ApiError(404, "NotFound", f'pods "{name}" not found')
    version = next((img.rsplit(":", 1)[1] for _, img in pod.containers if ":" in img), "unknown")
    lines = [f"{ts(pod.created_at)}\tinfo\tistiod version: {version}"]
    lines += [f"{ts(pod.created_at)}\tinfo\tads\tPush debounce stable[{i}] for config ServiceEntry"
              for i in range(1, 6)]
    if c.crash_loops:
        lines.append(f"{ts(now)}\twarn\tads\tconnection reset by peer from a restarting sidecar")
    return "\n".join(lines[-tail:]) + "\n"


def _group_json(name: str, versions: tuple[str, ...]) -> Json:
    return {"name": name, "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{name}/{versions[-1]}", "version": versions[-1]}}


def _api_group_list(c: SimCluster) -> Json:
    """GET /apis (APIGroupList): the groups this cluster serves, Flux's with its CRD's served versions."""
    groups = [_group_json("apps", ("v1",)), _group_json("policy", ("v1",)),
              _group_json("admissionregistration.k8s.io", ("v1",)), _group_json("batch", ("v1",)),
              _group_json(HELM_GROUP, c.helm_versions),
              _group_json("source.toolkit.fluxcd.io", ("v1beta2", "v1"))]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _helm_group(c: SimCluster) -> Json:
    """GET /apis/helm.toolkit.fluxcd.io (APIGroup)."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_json(HELM_GROUP, c.helm_versions)}


def _injector_webhook_json(c: SimCluster) -> Json:
    service = {"namespace": "istio-system", "name": c.istiod_name, "path": "/inject", "port": 443}
    suffix = f"-{c.istio_revision}" if c.istio_revision else ""
    return {
        "metadata": meta(c, f"istio-sidecar-injector{suffix}", None, c.created_at),
        "webhooks": [{
            "name": f"{ns}.sidecar-injector.istio.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": service, "caBundle": ""},
            "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
        } for ns in ("namespace", "object")],
    }


def _without_path(doc: Any, path: tuple[str, ...]) -> bool:
    """True when `doc` holds anything besides the single nested key `path`."""
    for key in path:
        if not isinstance(doc, dict) or set(doc) != {key}:
            return True
        doc = doc[key]
    return False


def _valid_presigned_identity_url(encoded: str) -> bool:
    try:
        url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except ValueError:
        return False
    parts = urlsplit(url)
    query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
    signed = query.get("x-amz-signedheaders", "").split(";")
    return (
        (parts.scheme == "https" or parts.hostname in ("127.0.0.1", "localhost"))
        # Real tokens presign sts.<region>.amazonaws.com; the rehearsal's point at the local AWS emulator.
        and ((parts.hostname or "").startswith("sts.") or parts.hostname in ("127.0.0.1", "localhost"))
        and query.get("action") == "GetCallerIdentity"
        and "x-k8s-aws-id" in signed
        and bool(query.get("x-amz-signature"))
    )
