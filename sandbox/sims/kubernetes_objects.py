"""State and JSON shapes of the simulated clusters (see `sandbox.sims.kubernetes_sim`).

The objects render in the shapes the real API server returns, complete enough for the
`kubernetes` client's models to deserialize them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

ISTIO_PROXY_IMAGE = "docker.io/istio/proxyv2"
ISTIOD_IMAGE = "docker.io/istio/pilot"


@dataclass
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    owner_kind: str  # ReplicaSet | DaemonSet
    owner_name: str
    node: str
    containers: list[tuple[str, str]]  # (name, image)
    init_containers: list[tuple[str, str]]
    created_at: datetime
    ready_at: datetime
    template_hash: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Deployment:
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

    @property
    def selector(self) -> dict[str, str]:
        return {"app": self.name}


@dataclass
class Pdb:
    namespace: str
    name: str
    selector: dict[str, str]
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
            "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
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
            "imageID": f"{i.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(i.encode()).hexdigest()}",
            "ready": True,
            "restartCount": 0,
            "state": {
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
    flag = "True" if ready else "False"
    transition = ts(max(p.ready_at, p.created_at))
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(p.created_at)},
        {"type": "Initialized", "status": "True", "lastTransitionTime": ts(p.created_at)},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": transition},
        {"type": "Ready", "status": flag, "lastTransitionTime": transition},
    ]
    owner = {
        "apiVersion": "apps/v1",
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
            "initContainers": [{"name": n, "image": i} for n, i in p.init_containers],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
        "status": {
            "phase": "Running" if started else "Pending",
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
    pods = [p for p in c.pods if p.owner_kind == "ReplicaSet" and owned_by(p, d)]
    ready = sum(1 for p in pods if c.pod_ready(p, now))
    updated = sum(1 for p in pods if p.template_hash == d.current_hash)
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
        "metadata": meta(
            c,
            d.name,
            d.namespace,
            d.created_at,
            labels={"app": d.name},
            generation=d.generation,
            annotations={"deployment.kubernetes.io/revision": str(d.revision)},
        ),
        "spec": {
            "replicas": d.replicas,
            "selector": {"matchLabels": dict(d.selector)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": dict(d.selector), "annotations": dict(d.template_annotations)},
                "spec": {"containers": [{"name": n, "image": i} for n, i in d.containers]},
            },
        },
        "status": status,
    }


def pdb_json(c: SimCluster, b: Pdb, now: datetime) -> Json:
    matching = [p for p in c.pods if p.namespace == b.namespace and b.selector.items() <= p.labels.items()]
    healthy = sum(1 for p in matching if c.pod_ready(p, now))
    dep = c.deployments.get((b.namespace, b.name))
    expected = dep.replicas if dep is not None else len(matching)
    if b.min_available is not None:
        desired = scaled(b.min_available, expected)
    else:
        desired = max(0, expected - scaled(b.max_unavailable or 0, expected))
    spec: Json = {"selector": {"matchLabels": dict(b.selector)}}
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


def helm_release_json(hr: HelmRelease, at: datetime) -> Json:
    now = ts(at)
    ready: Json
    if hr.stuck_message is not None:
        ready = {
            "type": "Ready",
            "status": "False",
            "reason": "ArtifactFailed",
            "message": hr.stuck_message,
        }
    else:
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "UpgradeSucceeded",
            "message": f"Helm upgrade succeeded for release {hr.namespace}/{hr.name}.v{len(hr.history)} "
            f"with chart istiod@{hr.applied_version}",
        }
    released: Json = (
        {**ready, "type": "Released"}
        if hr.stuck_message is None
        else {
            "type": "Released",
            "status": "True",
            "reason": "UpgradeSucceeded",
            "message": "release is up to date",
        }
    )
    # A stuck release has seen the latest spec and failed on it; otherwise the status is the
    # last reconcile's, stale while a spec change waits for its reconcile.
    observed = hr.generation if hr.stuck_message is not None else hr.observed_generation
    for cond in (ready, released):
        cond.update(lastTransitionTime=now, observedGeneration=observed)
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
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
        "spec": {
            "interval": "10m",
            "releaseName": hr.name,
            "chart": {
                "spec": {
                    "chart": "istiod",
                    "version": hr.spec_version,
                    "sourceRef": {"kind": "HelmRepository", "name": "istio", "namespace": "flux-system"},
                    "interval": "1h",
                }
            },
            "values": {"pilot": {"autoscaleMin": 2}},
        },
        "status": {
            "observedGeneration": observed,
            "lastAttemptedGeneration": observed,
            "lastAttemptedRevision": hr.applied_version,
            "helmChart": f"flux-system/{hr.namespace}-{hr.name}",
            "conditions": [ready, released],
            "history": [dict(h) for h in hr.history],
        },
    }


# ---------------------------------------------------------------- helpers


def owned_by(p: Pod, dep: Deployment) -> bool:
    return p.namespace == dep.namespace and p.owner_name.rsplit("-", 1)[0] == dep.name


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
        "chartName": "istiod",
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
