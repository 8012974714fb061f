"""Built-in prechecks and post-checks: pure functions over a ClusterSnapshot.

Each returns one HealthCheckResult whose `details` carry the numbers behind it, so the
MR's health report and the run record can show why a check passed or failed.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from guard.checks.snapshot import ClusterSnapshot, selector_matches
from guard.core.istio import control_plane_version
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.version import Version
from guard.ports import Alert, DeploymentInfo, PdbInfo, PodInfo

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
    pods = [p for p in snap.pods if p.namespace in SYSTEM_NAMESPACES and not p.finished]
    bad = [f"{p.namespace}/{p.name}" for p in pods if not p.ready]
    return _result(cluster, "system_pods_ready", not bad,
                   f"{len(pods) - len(bad)}/{len(pods)} kube-system and istio-system pods Ready"
                   + (f"; not ready: {', '.join(bad[:5])}" if bad else ""), not_ready=bad)


def _looping_workloads(snap: ClusterSnapshot) -> list[str]:
    """Crash-looping pods named by their workload, which survives pod restarts."""
    return sorted({f"{p.namespace}/{(p.owner or 'Pod/' + p.name).split('/', 1)[1]}"
                   for p in snap.pods if p.crash_looping})


def no_crash_loops(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    looping = sorted(f"{p.namespace}/{p.name}" for p in snap.pods if p.crash_looping)
    return _result(cluster, "no_crash_loops", not looping,
                   "no crash-looping pods" if not looping else f"crash-looping: {', '.join(looping[:5])}",
                   crash_looping=looping, workloads=_looping_workloads(snap))


def no_new_crash_loops(cluster: Cluster, snap: ClusterSnapshot, before: list[str]) -> HealthCheckResult:
    """Post-check: workloads crash-looping now that were not before the upgrade."""
    new = [w for w in _looping_workloads(snap) if w not in before]
    return _result(cluster, "no_new_crash_loops", not new,
                   "no workload started crash-looping after the upgrade" if not new
                   else f"crash-looping since the upgrade: {', '.join(new[:5])}", new=new, before=before)


def sidecar_injector(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    """The injection webhook exists and the service it calls (istiod) is ready to serve it."""
    hooks = [w for w in snap.mutating_webhooks if "sidecar-injector" in w.name]
    if not hooks:
        return _result(cluster, "sidecar_injector", False,
                       "no istio-sidecar-injector MutatingWebhookConfiguration: new pods would get no sidecar")
    hook = hooks[0]
    target = next((d for d in snap.deployments
                   if d.namespace == hook.service_namespace and d.name == hook.service_name), None)
    if target is None:
        return _result(cluster, "sidecar_injector", False,
                       f"{hook.name} calls {hook.service_namespace}/{hook.service_name}, which does not exist")
    served = target.ready_replicas > 0
    return _result(cluster, "sidecar_injector", served,
                   f"{hook.name} served by {target.namespace}/{target.name} "
                   f"({target.ready_replicas}/{target.replicas} ready)", webhook=hook.name)


def gateways_ready(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    gateways = snap.gateways()
    if not gateways:
        return HealthCheckResult(cluster_id=cluster.cluster_id, check_name="gateways_ready",
                                 status=CheckStatus.SKIPPED, message="no Istio gateway deployments")
    bad = [f"{g.namespace}/{g.name} {g.ready_replicas}/{g.replicas}" for g in gateways
           if g.ready_replicas < max(1, g.replicas)]
    return _result(cluster, "gateways_ready", not bad,
                   f"{len(gateways) - len(bad)}/{len(gateways)} gateways ready"
                   + (f"; not ready: {', '.join(bad)}" if bad else ""), not_ready=bad)


def version_skew(cluster: Cluster, snap: ClusterSnapshot, target: str, max_minor_skip: int) -> HealthCheckResult:
    """Istio's skew policy: the data plane is never ahead of the control plane, and after an
    in-place upgrade every proxy may trail the new control plane by at most one minor."""
    istiod = snap.istiod()
    control = control_plane_version(istiod)
    target_v = Version.parse(target)
    ahead, behind = [], []
    for pod in snap.pods:
        if not pod.proxy_version or pod.finished:
            continue
        try:
            proxy = Version.parse(pod.proxy_version)
        except ValueError:
            continue  # a custom tag (e.g. a digest build) says nothing about skew
        if control and proxy > Version.parse(control):
            ahead.append(f"{pod.namespace}/{pod.name}@{proxy}")
        # Revision-based upgrades (max skip 2) keep old proxies on their own control plane.
        if max_minor_skip == 1 and proxy.major == target_v.major and target_v.minor - proxy.minor > 1:
            behind.append(f"{pod.namespace}/{pod.name}@{proxy}")
    problems = []
    if ahead:
        problems.append(f"data plane ahead of the control plane {control}: {', '.join(ahead[:5])}")
    if behind:
        problems.append(f"proxies more than one minor behind {target}, unsupported after an in-place upgrade: "
                        f"{', '.join(behind[:5])}")
    return _result(cluster, "version_skew", not problems,
                   "; ".join(problems) if problems else f"proxies within Istio's supported skew of {target}",
                   ahead=ahead, behind=behind, control_plane=control)


def istiod_ready(cluster: Cluster, snap: ClusterSnapshot, expected_version: str | None = None) -> HealthCheckResult:
    istiod = snap.istiod()
    if istiod is None:
        return _result(cluster, "istiod_ready", False, "no istiod deployment in istio-system")
    version = control_plane_version(istiod) or next(iter(istiod.image_versions.values()), None)
    ok = istiod.ready_replicas >= max(1, istiod.replicas)
    message = f"istiod {istiod.ready_replicas}/{istiod.replicas} ready, running {version}"
    if expected_version and version != expected_version:
        ok = False
        message += f" (expected {expected_version})"
    return _result(cluster, "istiod_ready", ok, message, ready=istiod.ready_replicas,
                   replicas=istiod.replicas, version=version)


def proxies_on_version(cluster: Cluster, snap: ClusterSnapshot, version: str, name: str) -> HealthCheckResult:
    """Every live proxy of a restartable workload runs `version`.

    Completed pods (Succeeded/Failed) serve nothing; Jobs' and bare pods' proxies cannot be
    restarted and take the new version when they run again: both are reported, never held
    against the cluster. A digest-only proxy image names no version: it is counted as unknown
    (a warning), never as "not injected" nor as off the version.
    """
    live = [p for p in snap.pods if p.injected and not p.finished]
    unrestartable = {id(p) for p in snap.unrestartable_proxies()}
    counted = [p for p in live if id(p) not in unrestartable]
    off = sorted(f"{p.namespace}/{p.name}@{p.proxy_version}" for p in counted
                 if p.proxy_version and p.proxy_version != version)
    unknown = sorted(f"{p.namespace}/{p.name}" for p in counted if not p.proxy_version)
    left = sorted(f"{p.namespace}/{p.name}@{p.proxy_version or '?'}" for p in live if id(p) in unrestartable
                  and p.proxy_version != version)
    readable = len(counted) - len(unknown)
    message = f"{readable - len(off)}/{readable} proxies on {version}"
    if off:
        message += f"; off: {', '.join(off[:5])}"
    if unknown:
        message += (f"; version unreadable for {len(unknown)} (digest-only image, revision "
                    f"{_revisions(counted)}): {', '.join(unknown[:5])}")
    if left:
        message += f"; Job or bare pods keep their proxy until they run again: {', '.join(left[:5])}"
    status = CheckStatus.FAIL if off else CheckStatus.WARN if unknown else CheckStatus.PASS
    return HealthCheckResult(cluster_id=cluster.cluster_id, check_name=name, status=status, message=message,
                             details={"proxies": len(counted), "off_version": off, "unknown_version": unknown,
                                      "not_restartable": left})


def _revisions(pods: list[PodInfo]) -> str:
    return ", ".join(sorted({p.proxy_revision or "?" for p in pods if not p.proxy_version})) or "?"


def helm_release_ready(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    """The cluster's Flux HelmRelease exists, is not suspended nor stalled, and is Ready: otherwise
    a merged MR would never be applied, and GUARD would learn it only after the merge."""
    name = f"{cluster.helm_release_namespace}/{cluster.helm_release_name}"
    release = snap.helm_release
    if release is None:
        return _result(cluster, "helm_release", False,
                       f"HelmRelease {name} cannot be read: {snap.helm_release_problem or 'not read'}")
    if release.suspended:
        return _result(cluster, "helm_release", False,
                       f"HelmRelease {name} is suspended (spec.suspend: true): Flux would not apply the change; "
                       "resume it (flux resume helmrelease) first", api_version=release.api_version)
    if release.stalled:
        return _result(cluster, "helm_release", False, f"HelmRelease {name} is stalled: {release.message}",
                       api_version=release.api_version)
    return _result(cluster, "helm_release", release.ready,
                   f"HelmRelease {name} ({release.api_version or '?'}) Ready at {release.last_applied_version or '?'}"
                   if release.ready else
                   f"HelmRelease {name} not Ready ({release.reason or 'no reason'}): {release.message}",
                   api_version=release.api_version, version=release.last_applied_version)


def _covering(snap: ClusterSnapshot, w: DeploymentInfo) -> list[PdbInfo]:
    pods = snap.pods_of(w)
    labels = pods[0].labels if pods else w.selector
    return [b for b in snap.pdbs if b.namespace == w.namespace and selector_matches(b.selector, labels)]


def pdb_disruptions(cluster: Cluster, snap: ClusterSnapshot) -> HealthCheckResult:
    """No injected workload is covered by a PDB that allows no disruption even when every pod is
    healthy (e.g. minAvailable: 1 on one replica): its sidecar restart would wait until the
    restart timeout and fail the upgrade after the change, so say it before."""
    blocked = []
    for w in snap.injected_workloads():
        for pdb in _covering(snap, w):
            if pdb.never_allows_disruption(w.replicas):
                rule = (f"minAvailable {pdb.min_available}" if pdb.min_available is not None
                        else f"maxUnavailable {pdb.max_unavailable}")
                blocked.append(f"{w.kind} {w.namespace}/{w.name} ({w.replicas} replica(s)) by "
                               f"PodDisruptionBudget {pdb.name} ({rule})")
    return _result(cluster, "pdb_disruptions", not blocked,
                   "every injected workload's PDB allows a disruption when healthy" if not blocked
                   else "PDBs that allow no disruption even with every pod healthy, so the sidecar restart "
                        "could never proceed: " + "; ".join(blocked)
                        + " (add a replica or relax the PDB before upgrading)",
                   blocked=blocked)


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
    # Not for DaemonSets: a drain skips their pods (kubectl drain --ignore-daemonsets), so a PDB guards nothing.
    workloads = [w for w in snap.injected_workloads() if w.kind != "DaemonSet"]
    uncovered = [f"{w.namespace}/{w.name}" for w in workloads if not _covering(snap, w)]
    return _result(cluster, "pod_disruption_budgets", not uncovered,
                   f"{len(workloads) - len(uncovered)}/{len(workloads)} injected workloads have a PDB"
                   + (f"; missing: {', '.join(uncovered)}" if uncovered else ""), missing=uncovered)


def ready_replicas(cluster: Cluster, snap: ClusterSnapshot, policy: ZeroDowntimePolicy) -> HealthCheckResult:
    low = []
    for d in snap.injected_workloads():
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


def _scaled(value: str, total: int, round_up: bool) -> int | None:
    """An IntOrString (`2`, `25%`) as pods of `total`; None when unreadable. Kubernetes rounds a rolling
    update's maxUnavailable down and a PDB's percentages up."""
    text = value.strip()
    if text.endswith("%") and text[:-1].isdigit():
        exact = int(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text) if text.isdigit() else None


def _pdb_allows(pdb: PdbInfo, replicas: int) -> int | None:
    """How many of `replicas` pods `pdb` lets be unavailable at once (None: unreadable)."""
    if pdb.max_unavailable is not None:
        return _scaled(pdb.max_unavailable, replicas, round_up=True)
    if pdb.min_available is not None:
        needed = _scaled(pdb.min_available, replicas, round_up=True)
        return None if needed is None else max(0, replicas - needed)
    return None


def max_unavailable(cluster: Cluster, snap: ClusterSnapshot, policy: ZeroDowntimePolicy) -> HealthCheckResult:
    """`--max-unavailable N`: the rolling updates of the Istio deployments (istiod, gateways) and every PDB
    over them or over a workload with a sidecar may take at most N pods down at once."""
    limit = policy.max_unavailable
    if limit is None:
        return HealthCheckResult(cluster_id=cluster.cluster_id, check_name="max_unavailable",
                                 status=CheckStatus.SKIPPED, message="no max_unavailable asked for this run")
    istio = [d for d in [snap.istiod(), *snap.gateways()] if d is not None]
    over: list[str] = []
    for d in istio:
        if d.strategy == "Recreate":
            over.append(f"Deployment {d.namespace}/{d.name} uses the Recreate strategy: all {d.replicas} pods "
                        "go down at once")
            continue
        written = d.max_unavailable or "25%"  # the API's default when the spec leaves it out
        pods = _scaled(written, d.replicas, round_up=False)
        if pods is None or pods > limit:
            over.append(f"Deployment {d.namespace}/{d.name} rolls out with maxUnavailable {written} "
                        f"(= {pods if pods is not None else '?'} of {d.replicas} pods)")
    seen: set[tuple[str, str]] = set()
    for w in [*istio, *snap.injected_workloads()]:
        for pdb in _covering(snap, w):
            if (pdb.namespace, pdb.name) in seen:
                continue
            seen.add((pdb.namespace, pdb.name))
            allowed = _pdb_allows(pdb, w.replicas)
            if allowed is not None and allowed > limit:
                rule = (f"maxUnavailable {pdb.max_unavailable}" if pdb.max_unavailable is not None
                        else f"minAvailable {pdb.min_available}")
                over.append(f"PodDisruptionBudget {pdb.namespace}/{pdb.name} ({rule}) allows {allowed} of "
                            f"{w.replicas} pods of {w.kind} {w.name} down")
    return _result(cluster, "max_unavailable", not over,
                   f"the Istio rollouts and {len(seen)} PDB(s) take at most {limit} pod(s) down at once" if not over
                   else f"more than max_unavailable {limit} pod(s) could go down at once: " + "; ".join(over),
                   max_unavailable=limit, over=over)


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
