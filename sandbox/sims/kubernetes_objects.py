"""State and JSON shapes of the simulated clusters (see `sandbox.sims.kubernetes_sim`).

The objects render in the shapes the real API server returns, complete enough for the
`kubernetes` client's models to deserialize them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Json = dict[str, Any]

ISTIO_PROXY_IMAGE = "docker.io/istio/proxyv2"
ISTIOD_IMAGE = "docker.io/istio/pilot"
# helm-controller v1.0-v1.3 serve all three; v0.37 serves v2beta1 and v2beta2; v1.5 serves v2 only
# (helm.toolkit.fluxcd.io_helmreleases.yaml at each tag).
HELM_VERSIONS_DEFAULT = ("v2beta1", "v2beta2", "v2")
HELM_CONTROLLER_TAG = {("v2beta1", "v2beta2", "v2"): "v1.3.0", ("v2beta1", "v2beta2"): "v0.37.4",
                       ("v2beta2", "v2"): "v1.4.1", ("v2",): "v1.5.0", ("v2beta1",): "v0.36.2"}


def image_ref(repository: str, version: str, variant: str = "", digest: bool = False) -> str:
    """An Istio image reference: `repo:1.24.2`, `repo:1.24.2-debug`, or pinned `repo@sha256:...`."""
    tag = f"{version}-{variant}" if variant else version
    if digest:
        return f"{repository}@sha256:{hashlib.sha256(f'{repository}:{tag}'.encode()).hexdigest()}"
    return f"{repository}:{tag}"


def selector_json(kind: str, labels: dict[str, str]) -> Json:
    """A PDB selector of one of the shapes seen in real clusters (`labels`, `expressions`, `empty`)."""
    if kind == "empty":
        return {}
    if kind == "expressions":
        return {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in labels.items()]
                + [{"key": "job-name", "operator": "DoesNotExist"}]}
    return {"matchLabels": dict(labels)}


def selector_selects(selector: Json | None, labels: dict[str, str]) -> bool:
    """The API server's LabelSelector semantics: null selects nothing, `{}` everything."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


@dataclass
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    owner_kind: str  # ReplicaSet | StatefulSet | DaemonSet | Job
    owner_name: str
    node: str
    containers: list[tuple[str, str]]  # (name, image)
    init_containers: list[tuple[str, str]]
    created_at: datetime
    ready_at: datetime
    template_hash: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    native_sidecars: list[str] = field(default_factory=list)  # init containers with restartPolicy: Always
    finished: str | None = None  # Succeeded | Failed: a completed Job pod
    restart_policy: str = "Always"


@dataclass
class Deployment:
    """A Deployment, StatefulSet or DaemonSet (`kind`): how its pods roll differs, the rest is shared."""

    namespace: str
    name: str
    replicas: int
    containers: list[tuple[str, str]]
    injected: bool
    created_at: datetime
    template_annotations: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    revision: int = 0
    current_hash: str = ""
    kind: str = "Deployment"
    native_sidecar: bool = False  # Istio's ENABLE_NATIVE_SIDECARS: istio-proxy as an init container
    proxy_digest: bool = False  # an admission policy rewrites the proxy image to its digest
    labels: dict[str, str] = field(default_factory=dict)  # metadata labels besides app
    match_labels: dict[str, str] = field(default_factory=dict)  # default {"app": name}
    # A Deployment's spec.strategy: RollingUpdate with this maxUnavailable (the API's default 25%), or Recreate.
    strategy: str = "RollingUpdate"
    max_unavailable: int | str = "25%"

    @property
    def selector(self) -> dict[str, str]:
        return dict(self.match_labels) or {"app": self.name}


@dataclass
class Pdb:
    namespace: str
    name: str
    selector: Json | None  # the LabelSelector as written (matchLabels / matchExpressions / {})
    min_available: int | str | None
    max_unavailable: int | str | None
    created_at: datetime


@dataclass
class HelmRelease:
    namespace: str
    name: str
    spec_version: str
    applied_version: str
    created_at: datetime
    generation: int = 1
    observed_generation: int = 1
    reconcile_at: datetime | None = None
    stuck_message: str | None = None
    history: list[Json] = field(default_factory=list)
    suspended: bool = False
    failing_upgrades: int = 0  # upgrades still to fail (then remediated by a rollback)
    reconcile_delay: timedelta = timedelta(seconds=60)  # also the retry interval after a failed upgrade
    stall_after_failures: bool = False  # retries exhausted after the failures: Stalled, no more attempts
    last_failure: str | None = None  # message of the last failed upgrade (Ready=False UpgradeFailed)
    remediated: bool = False
    stalled: bool = False
    attempted_version: str = ""
    chart: str = "istiod"  # base | istiod | cni | ztunnel | gateway
    depends_on: list[tuple[str, str]] = field(default_factory=list)  # (namespace, name): Flux dependsOn
    crds: str | None = None  # spec.upgrade.crds (CreateReplace: Flux replaces the chart's crds/)
    crd_templates: bool = False  # the chart renders its CRDs from templates (base >= 1.24)
    ready_at: datetime | None = None  # when it last became Ready at its spec


@dataclass
class SimCluster:
    cluster_id: str
    nodes: dict[str, bool]
    namespaces: dict[str, dict[str, str]]
    created_at: datetime
    helm_release: HelmRelease
    deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    pdbs: dict[tuple[str, str], Pdb] = field(default_factory=dict)
    crash_loops: dict[tuple[str, str], datetime] = field(default_factory=dict)
    unreachable: bool = False
    injector_webhook: bool = True
    events: list[Json] = field(default_factory=list)
    resource_version: int = 1000
    pod_serial: int = 0
    helm_versions: tuple[str, ...] = HELM_VERSIONS_DEFAULT
    istio_revision: str | None = None  # None: the `default` revision, istiod named `istiod`
    image_variant: str = ""  # "", "debug" or "distroless"
    kubernetes_version: str = "1.29.3"  # what GET /version and the nodes' kubelets report
    # The install's other HelmReleases (base, cni, ztunnel, gateway), by (namespace, name); istiod's is
    # `helm_release`. `crd_version`: the Istio CRDs' version (the base chart's, when Helm upgraded them).
    releases: dict[tuple[str, str], HelmRelease] = field(default_factory=dict)
    crd_version: str | None = None
    # (when, namespace/name, version): each release Flux upgraded, in order
    upgrade_log: list[tuple[datetime, str, str]] = field(default_factory=list)

    def release(self, namespace: str, name: str) -> HelmRelease | None:
        hr = self.helm_release
        return hr if (hr.namespace, hr.name) == (namespace, name) else self.releases.get((namespace, name))

    def all_releases(self) -> list[HelmRelease]:
        return [self.helm_release, *self.releases.values()]

    @property
    def istiod_name(self) -> str:
        return f"istiod-{self.istio_revision}" if self.istio_revision else "istiod"

    @property
    def revision_label(self) -> str:
        return self.istio_revision or "default"

    def crash_started(self, p: Pod) -> datetime | None:
        """When `p` began crash-looping under a `crash_loop` fault, or None."""
        for (ns, prefix), since in self.crash_loops.items():
            if p.namespace == ns and p.name.startswith(prefix):
                return max(since, p.created_at)
        return None

    def pod_ready(self, p: Pod, now: datetime) -> bool:
        return now >= p.ready_at and self.crash_started(p) is None and self.nodes.get(p.node, False)


# ---------------------------------------------------------------- JSON shapes


def meta(c: SimCluster, name: str, namespace: str | None, created: datetime, **extra: Any) -> Json:
    meta: Json = {
        "name": name,
        "uid": uid(c.cluster_id, namespace or "", name),
        "resourceVersion": str(c.resource_version),
        "creationTimestamp": ts(created),
    }
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def node_json(c: SimCluster, name: str, ready: bool, now: datetime) -> Json:
    heartbeat = ts(now)
    cond = (
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }
        if ready
        else {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
        }
    )
    conditions = [
        {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": ""}
        for t, r in (
            ("MemoryPressure", "SufficientMemory"),
            ("DiskPressure", "NoDiskPressure"),
            ("PIDPressure", "SufficientPID"),
        )
    ] + [cond]
    for cnd in conditions:
        cnd.update({"lastHeartbeatTime": heartbeat, "lastTransitionTime": ts(c.created_at)})
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "m6i.large",
    }
    return {
        "metadata": meta(c, name, None, c.created_at, labels=labels),
        "spec": {"providerID": f"aws:///us-east-1a/i-{short_hash(name, 17)}"},
        "status": {
            "conditions": conditions,
            "nodeInfo": {
                "kubeletVersion": "v1.29.3-eks-ae9a62a",
                "kubeProxyVersion": "v1.29.3-eks-ae9a62a",
                "containerRuntimeVersion": "containerd://1.7.11",
                "osImage": "Amazon Linux 2",
                "kernelVersion": "5.10.213",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "machineID": short_hash(name, 32),
                "systemUUID": short_hash(name + "u", 32),
                "bootID": short_hash(name + "b", 32),
            },
        },
    }


def namespace_json(c: SimCluster, name: str, labels: dict[str, str]) -> Json:
    return {
        "metadata": meta(c, name, None, c.created_at, labels=dict(labels)),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def pod_json(c: SimCluster, p: Pod, now: datetime) -> Json:
    crash_since = c.crash_started(p)
    started = now >= p.ready_at
    ready = c.pod_ready(p, now)
    statuses = []
    for cname, image in p.containers:
        status: Json = {
            "name": cname,
            "image": image,
            "imageID": image_id(image),
            "ready": ready,
            "restartCount": 0,
            "started": started,
            "state": {"running": {"startedAt": ts(p.ready_at)}}
            if started
            else {"waiting": {"reason": "ContainerCreating"}},
        }
        if crash_since is not None and started and cname != "istio-proxy":
            restarts = 1 + int(max(0.0, (now - max(crash_since, p.ready_at)).total_seconds()) // 60)
            status.update(
                restartCount=restarts,
                started=False,
                ready=False,
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 5m0s restarting failed container={cname} pod={p.name}",
                    }
                },
                lastState={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "startedAt": ts(now),
                        "finishedAt": ts(now),
                    }
                },
            )
        statuses.append(status)
    init_statuses = [
        {
            "name": n,
            "image": i,
            "imageID": image_id(i),
            "ready": n in p.native_sidecars and ready,
            "restartCount": 0,
            "started": n in p.native_sidecars and started,
            # A native sidecar keeps running beside the app; a plain init container ran to completion.
            "state": {"running": {"startedAt": ts(p.ready_at)}} if n in p.native_sidecars and started
            and not p.finished else {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": ts(p.created_at),
                    "finishedAt": ts(p.created_at),
                }
            },
        }
        for n, i in p.init_containers
    ]
    if p.finished:
        ready = False
        for st in statuses:
            st.update(ready=False, started=False, state={"terminated": {
                "exitCode": 0 if p.finished == "Succeeded" else 1,
                "reason": "Completed" if p.finished == "Succeeded" else "Error",
                "startedAt": ts(p.created_at), "finishedAt": ts(p.ready_at)}})
    flag = "True" if ready else "False"
    transition = ts(max(p.ready_at, p.created_at))
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(p.created_at)},
        {"type": "Initialized", "status": "True", "lastTransitionTime": ts(p.created_at)},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": transition},
        {"type": "Ready", "status": flag, "lastTransitionTime": transition},
    ]
    owner = {
        "apiVersion": "batch/v1" if p.owner_kind == "Job" else "apps/v1",
        "kind": p.owner_kind,
        "name": p.owner_name,
        "uid": uid(c.cluster_id, p.namespace, p.owner_name),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "metadata": meta(
            c,
            p.name,
            p.namespace,
            p.created_at,
            labels=dict(p.labels),
            annotations=dict(p.annotations),
            ownerReferences=[owner],
            generateName=p.name[: -len(p.name.rsplit("-", 1)[1])],
        ),
        "spec": {
            "nodeName": p.node,
            "containers": [{"name": n, "image": i, "imagePullPolicy": "IfNotPresent"} for n, i in p.containers],
            "initContainers": [{"name": n, "image": i, **({"restartPolicy": "Always"} if n in p.native_sidecars
                                                          else {})} for n, i in p.init_containers],
            "restartPolicy": p.restart_policy,
            "serviceAccountName": "default",
        },
        "status": {
            "phase": p.finished or ("Running" if started else "Pending"),
            "conditions": conditions,
            "hostIP": "10.0.1.10",
            "podIP": f"10.0.{len(p.name) % 250}.{sum(map(ord, p.name)) % 250}",
            "startTime": ts(p.created_at),
            "containerStatuses": statuses,
            "initContainerStatuses": init_statuses,
            "qosClass": "BestEffort",
        },
    }


def deployment_json(c: SimCluster, d: Deployment, now: datetime) -> Json:
    """apps/v1 Deployment, StatefulSet or DaemonSet, as `d.kind` says."""
    pods = pods_of(c, d)
    ready = sum(1 for p in pods if c.pod_ready(p, now))
    updated = sum(1 for p in pods if p.template_hash == d.current_hash)
    current_labels = {"app": d.name, **d.labels}
    template = {
        "metadata": {"labels": dict(d.selector), "annotations": dict(d.template_annotations)},
        "spec": {"containers": [{"name": n, "image": i} for n, i in d.containers]},
    }
    meta_json = meta(c, d.name, d.namespace, d.created_at, labels=current_labels, generation=d.generation,
                     annotations={"deployment.kubernetes.io/revision": str(d.revision)}
                     if d.kind == "Deployment" else {})
    if d.kind == "DaemonSet":
        return {
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta_json,
            "spec": {"selector": {"matchLabels": dict(d.selector)}, "template": template,
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}},
            "status": {"currentNumberScheduled": len(c.nodes), "desiredNumberScheduled": len(c.nodes),
                       "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                       "numberUnavailable": max(0, len(c.nodes) - ready), "updatedNumberScheduled": updated,
                       "observedGeneration": d.generation},
        }
    if d.kind == "StatefulSet":
        status_sts: Json = {"observedGeneration": d.generation, "replicas": len(pods), "currentReplicas":
                            len(pods) - updated, "updatedReplicas": updated, "availableReplicas": ready,
                            "currentRevision": f"{d.name}-{d.current_hash}", "updateRevision":
                            f"{d.name}-{d.current_hash}", "collisionCount": 0}
        if ready:
            status_sts["readyReplicas"] = ready
        return {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta_json,
            "spec": {"replicas": d.replicas, "serviceName": d.name, "podManagementPolicy": "OrderedReady",
                     "selector": {"matchLabels": dict(d.selector)}, "template": template,
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}},
            "status": status_sts,
        }
    status: Json = {
        "observedGeneration": d.generation,
        "replicas": len(pods),
        "updatedReplicas": updated,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if ready >= d.replicas - 1 else "False",
                "reason": "MinimumReplicasAvailable",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if updated == len(pods) else "ReplicaSetUpdated",
            },
        ],
    }
    if ready:
        status.update(readyReplicas=ready, availableReplicas=ready)
    if len(pods) - ready:
        status["unavailableReplicas"] = len(pods) - ready
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta_json,
        "spec": {
            "replicas": d.replicas,
            "selector": {"matchLabels": dict(d.selector)},
            "strategy": {"type": "Recreate"} if d.strategy == "Recreate" else {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": d.max_unavailable},
            },
            "template": template,
        },
        "status": status,
    }


def pdb_json(c: SimCluster, b: Pdb, now: datetime) -> Json:
    matching = [p for p in c.pods if p.namespace == b.namespace and not p.finished
                and selector_selects(b.selector, p.labels)]
    healthy = sum(1 for p in matching if c.pod_ready(p, now))
    # The disruption controller counts the scale of the controllers owning the selected pods.
    owners = [d for d in c.deployments.values() if any(p in matching for p in pods_of(c, d))]
    expected = sum(d.replicas if d.kind != "DaemonSet" else len(c.nodes) for d in owners) or len(matching)
    if b.min_available is not None:
        desired = scaled(b.min_available, expected)
    else:
        desired = max(0, expected - scaled(b.max_unavailable or 0, expected))
    spec: Json = {} if b.selector is None else {"selector": b.selector}
    if b.min_available is not None:
        spec["minAvailable"] = b.min_available
    if b.max_unavailable is not None:
        spec["maxUnavailable"] = b.max_unavailable
    return {
        "metadata": meta(c, b.name, b.namespace, b.created_at, generation=1),
        "spec": spec,
        "status": {
            "observedGeneration": 1,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": max(0, healthy - desired),
            "expectedPods": expected,
            "conditions": [
                {
                    "type": "DisruptionAllowed",
                    "status": "True" if healthy > desired else "False",
                    "reason": "SufficientPods" if healthy > desired else "InsufficientPods",
                    "message": "",
                    "lastTransitionTime": ts(now),
                    "observedGeneration": 1,
                }
            ],
        },
    }


def helm_release_json(hr: HelmRelease, at: datetime, api_version: str = "v2",
                      storage: str = "v2") -> Json:
    """The HelmRelease as `api_version` serves it. Flux's CRD has no conversion webhook, so every
    served version shows the same object: its status fields are those of the controller's own
    (storage) version, `storage`: v2beta1 writes lastAppliedRevision, v2beta2 and v2 the history."""
    now = ts(at)
    pending = hr.generation > hr.observed_generation and not hr.suspended
    conditions: list[Json]
    observed = hr.observed_generation
    if hr.stuck_message is not None:
        # A stuck release has seen the latest spec and failed on it.
        observed = hr.generation
        conditions = [
            {"type": "Ready", "status": "False", "reason": "ArtifactFailed", "message": hr.stuck_message},
            {"type": "Released", "status": "True", "reason": "UpgradeSucceeded", "message": "release is up to date"},
        ]
    elif hr.stalled:
        observed = hr.generation  # a terminal error is recorded against the generation that caused it
        conditions = [
            {"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": hr.last_failure or ""},
            {"type": "Stalled", "status": "True", "reason": "RetriesExceeded",
             "message": "Failed to upgrade after 1 attempt(s)"},
            {"type": "Released", "status": "False", "reason": "UpgradeFailed", "message": hr.last_failure or ""},
            {"type": "Remediated", "status": "True", "reason": "RollbackSucceeded",
             "message": f"Helm rollback to previous release {hr.namespace}/{hr.name}.v{len(hr.history)} "
                        f"with chart {hr.chart}@{hr.applied_version} succeeded"},
        ]
    elif pending and hr.last_failure is not None:
        # An upgrade failed and was rolled back; the controller retries at its interval.
        conditions = [
            {"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": hr.last_failure},
            {"type": "Released", "status": "False", "reason": "UpgradeFailed", "message": hr.last_failure},
            {"type": "Remediated", "status": "True", "reason": "RollbackSucceeded",
             "message": f"Helm rollback to previous release {hr.namespace}/{hr.name}.v{len(hr.history)} "
                        f"with chart {hr.chart}@{hr.applied_version} succeeded"},
        ]
    elif pending:
        conditions = [
            {"type": "Reconciling", "status": "True", "reason": "Progressing",
             "message": "Running 'upgrade' action with timeout of 5m0s"},
            {"type": "Ready", "status": "Unknown", "reason": "Progressing",
             "message": "Running 'upgrade' action with timeout of 5m0s"},
            {"type": "Released", "status": "True", "reason": "UpgradeSucceeded",
             "message": f"Helm upgrade succeeded for release {hr.namespace}/{hr.name}.v{len(hr.history)} "
                        f"with chart {hr.chart}@{hr.applied_version}"},
        ]
    else:
        message = (f"Helm upgrade succeeded for release {hr.namespace}/{hr.name}.v{len(hr.history)} "
                   f"with chart {hr.chart}@{hr.applied_version}")
        conditions = [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": message},
                      {"type": "Released", "status": "True", "reason": "UpgradeSucceeded", "message": message}]
    for cond in conditions:
        cond.update(lastTransitionTime=now, observedGeneration=observed)
    status: Json = {
        "observedGeneration": observed,
        "lastAttemptedRevision": hr.attempted_version or hr.applied_version,
        "helmChart": f"flux-system/{hr.namespace}-{hr.name}",
        "conditions": conditions,
    }
    if storage == "v2beta1":
        status.update(lastAppliedRevision=hr.applied_version, lastReleaseRevision=len(hr.history),
                      lastAttemptedValuesChecksum=hashlib.sha1(hr.name.encode()).hexdigest())
        if hr.last_failure is not None:
            status.update(failures=1, upgradeFailures=1)
    else:
        status.update(lastAttemptedGeneration=observed, history=[dict(h) for h in hr.history])
        if hr.last_failure is not None:
            status["upgradeFailures"] = 1
    spec: Json = {
        "interval": "10m",
        "releaseName": hr.name,
        "chart": {
            "spec": {
                "chart": hr.chart,
                "version": hr.spec_version,
                "sourceRef": {"kind": "HelmRepository", "name": "istio", "namespace": "flux-system"},
                "interval": "1h",
            }
        },
        "upgrade": {"remediation": {"retries": 1}} | ({"crds": hr.crds} if hr.crds else {}),
        "values": {"pilot": {"autoscaleMin": 2}} if hr.chart == "istiod" else {},
    }
    if hr.depends_on:
        spec["dependsOn"] = [{"name": name, "namespace": ns} for ns, name in hr.depends_on]
    if hr.suspended:
        spec["suspend"] = True
    return {
        "apiVersion": f"helm.toolkit.fluxcd.io/{api_version}",
        "kind": "HelmRelease",
        "metadata": {
            "name": hr.name,
            "namespace": hr.namespace,
            "generation": hr.generation,
            "creationTimestamp": ts(hr.created_at),
            "labels": {
                "kustomize.toolkit.fluxcd.io/name": "istio",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
            },
        },
        "spec": spec,
        "status": status,
    }


# ---------------------------------------------------------------- helpers


def owned_by(p: Pod, dep: Deployment) -> bool:
    if p.namespace != dep.namespace:
        return False
    if dep.kind == "Deployment":
        return p.owner_kind == "ReplicaSet" and p.owner_name.rsplit("-", 1)[0] == dep.name
    return p.owner_kind == dep.kind and p.owner_name == dep.name


def pods_of(c: SimCluster, dep: Deployment) -> list[Pod]:
    return [p for p in c.pods if owned_by(p, dep)]


def image_id(image: str) -> str:
    """What the kubelet reports as `imageID`: the repository pinned to the digest it pulled."""
    if "@" in image:
        return image
    return f"{image.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def scaled(value: int | str, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return -(-int(value[:-1]) * total // 100)  # Kubernetes rounds percentages up
    return int(value)


def history_entry(hr: HelmRelease, version: str, release: int, at: datetime) -> Json:
    digest = "sha256:" + hashlib.sha256(f"{hr.name}{version}".encode()).hexdigest()
    return {
        "name": hr.name,
        "namespace": hr.namespace,
        "version": release,
        "status": "deployed",
        "chartName": hr.chart,
        "chartVersion": version,
        "appVersion": version,
        "configDigest": digest,
        "digest": digest,
        "firstDeployed": ts(hr.created_at),
        "lastDeployed": ts(at),
    }


def short_hash(text: str, length: int) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the letters Kubernetes uses for generated names
    n = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    out = []
    for _ in range(length):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "".join(out)


def uid(*parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def ts(at: datetime) -> str:
    return (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%dT%H:%M:%SZ")
