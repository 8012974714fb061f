"""Built-in prechecks and post-checks: pure functions over a ClusterSnapshot.

Each returns one HealthCheckResult whose `details` carry the numbers behind it, so the
MR's health report and the run record can show why a check passed or failed.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from guard.checks.snapshot import ClusterSnapshot, selector_matches
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.ports import Alert

SYSTEM_NAMESPACES = ("kube-system", "istio-system")


class ZeroDowntimePolicy(BaseModel):
    """Config `execution` merged with the execution input's per-run overrides."""

    pdb_required: bool
    min_ready_replicas_percent: float
    min_replicas: int | None = None
    max_unavailable: int | None = None


def _result(cluster: Cluster, name: str, ok: bool, message: str, **details: object) -> HealthCheckResult:
    return HealthCheckResult(cluster_id=cluster.cluster_id, check_name=name,
                             status=CheckStatus.PASS if ok else CheckStatus.FAIL, message=message,
                             details=dict(details))


def nodes_ready(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    not_ready = [n.name for n in snap.nodes if not n.ready]
    if not snap.nodes:
        return _result(cluster, "nodes_ready", False, "the cluster reports no nodes")
    return _result(cluster, "nodes_ready", not not_ready,
                   f"{len(snap.nodes) - len(not_ready)}/{len(snap.nodes)} nodes Ready"
                   + (f"; not ready: {', '.join(not_ready)}" if not_ready else ""),
                   nodes=len(snap.nodes), not_ready=not_ready)


def system_pods_ready(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    pods = [p for p in snap.pods if p.namespace in SYSTEM_NAMESPACES and p.phase != "Succeeded"]
    bad = [f"{p.namespace}/{p.name}" for p in pods if not p.ready]
    return _result(cluster, "system_pods_ready", not bad,
                   f"{len(pods) - len(bad)}/{len(pods)} kube-system and istio-system pods Ready"
                   + (f"; not ready: {', '.join(bad[:5])}" if bad else ""), not_ready=bad)


def no_crash_loops(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    looping = sorted(f"{p.namespace}/{p.name}" for p in snap.pods if p.crash_looping)
    return _result(cluster, "no_crash_loops", not looping,
                   "no crash-looping pods" if not looping else f"crash-looping: {', '.join(looping[:5])}",
                   crash_looping=looping)


def istiod_ready(cluster: Cluster, snap: ClusterSnapshot, expected_version: str | None = None) -> HealthCheckResult:
    istiod = snap.istiod()
    if istiod is None:
        return _result(cluster, "istiod_ready", False, "no istiod deployment in istio-system")
    version = istiod.image_versions.get("discovery") or next(iter(istiod.image_versions.values()), None)
    ok = istiod.ready_replicas >= max(1, istiod.replicas)
    message = f"istiod {istiod.ready_replicas}/{istiod.replicas} ready, running {version}"
    if expected_version and version != expected_version:
        ok = False
        message += f" (expected {expected_version})"
    return _result(cluster, "istiod_ready", ok, message, ready=istiod.ready_replicas,
                   replicas=istiod.replicas, version=version)


def proxies_on_version(cluster: Cluster, snap: ClusterSnapshot, version: str, name: str) -> HealthCheckResult:
    proxies = [p for p in snap.pods if p.proxy_version]
    off = sorted(f"{p.namespace}/{p.name}@{p.proxy_version}" for p in proxies if p.proxy_version != version)
    return _result(cluster, name, not off,
                   f"{len(proxies) - len(off)}/{len(proxies)} proxies on {version}"
                   + (f"; off: {', '.join(off[:5])}" if off else ""), proxies=len(proxies), off_version=off)


def injection_labels_consistent(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    both = sorted(n.name for n in snap.namespaces
                  if "istio-injection" in n.labels and "istio.io/rev" in n.labels)
    return _result(cluster, "injection_labels", not both,
                   "no namespace carries both istio-injection and istio.io/rev" if not both
                   else f"namespaces with both istio-injection and istio.io/rev: {', '.join(both)}",
                   conflicting=both)


def pdbs_present(cluster: Cluster, snap: ClusterSnapshot, policy: ZeroDowntimePolicy) -> HealthCheckResult:
    if not policy.pdb_required:
        return HealthCheckResult(cluster_id=cluster.cluster_id, check_name="pod_disruption_budgets",
                                 status=CheckStatus.SKIPPED, message="PDBs not required by config")
    workloads = snap.injected_deployments()
    uncovered = []
    for d in workloads:
        pods = [p for p in snap.pods if p.namespace == d.namespace and p.owner == f"Deployment/{d.name}"]
        labels = pods[0].labels if pods else d.selector
        if not any(b.namespace == d.namespace and selector_matches(b.selector, labels) for b in snap.pdbs):
            uncovered.append(f"{d.namespace}/{d.name}")
    return _result(cluster, "pod_disruption_budgets", not uncovered,
                   f"{len(workloads) - len(uncovered)}/{len(workloads)} injected workloads have a PDB"
                   + (f"; missing: {', '.join(uncovered)}" if uncovered else ""), missing=uncovered)


def ready_replicas(cluster: Cluster, snap: ClusterSnapshot, policy: ZeroDowntimePolicy) -> HealthCheckResult:
    low = []
    for d in snap.injected_deployments():
        if d.replicas == 0:
            continue
        percent = 100.0 * d.ready_replicas / d.replicas
        floor = math.ceil(d.replicas * policy.min_ready_replicas_percent / 100)
        if policy.min_replicas is not None and d.replicas < policy.min_replicas:
            low.append(f"{d.namespace}/{d.name} has {d.replicas} replicas < min_replicas {policy.min_replicas}")
        elif d.ready_replicas < floor:
            low.append(f"{d.namespace}/{d.name} {d.ready_replicas}/{d.replicas} ready ({percent:.0f}%) "
                       f"< {policy.min_ready_replicas_percent:g}%")
    return _result(cluster, "ready_replicas", not low,
                   "every injected workload at or above the ready-replica floor" if not low else "; ".join(low),
                   below_floor=low, min_ready_replicas_percent=policy.min_ready_replicas_percent)


def datadog_alerts(cluster: Cluster, alerts: list[Alert], ignore: bool) -> HealthCheckResult:
    names = [f"{a.name} (#{a.monitor_id})" for a in alerts]
    if not alerts:
        return _result(cluster, "datadog_alerts", True, "no Datadog monitor in Alert state")
    if ignore:
        return HealthCheckResult(cluster_id=cluster.cluster_id, check_name="datadog_alerts",
                                 status=CheckStatus.WARN,
                                 message=f"{len(alerts)} monitor(s) alerting, IGNORED by ignore_alerts: "
                                         + ", ".join(names), details={"alerts": names, "ignored": True})
    return _result(cluster, "datadog_alerts", False, f"{len(alerts)} monitor(s) in Alert: " + ", ".join(names),
                   alerts=names)
