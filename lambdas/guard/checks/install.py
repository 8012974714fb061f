"""Prechecks on a cluster's Istio install as Git describes it (guard.gitops.istio_install):
the upgrade order Flux will follow, the CRDs, and the Kubernetes version the target supports."""

from __future__ import annotations

from guard.core.compatibility import Support, support
from guard.core.models import CheckStatus, HealthCheckResult
from guard.core.version import Version
from guard.gitops.istio_install import Component, Install

# From Istio 1.24 the base chart renders its CRDs from templates by default (`base.enableCRDTemplates`
# true); before, they sit in the chart's `crds/`, which Helm installs once and never upgrades.
CRD_TEMPLATES_BY_DEFAULT = Version(1, 24, 0)


def _result(cluster_id: str, name: str, status: CheckStatus, message: str, **details: object) -> HealthCheckResult:
    return HealthCheckResult(cluster_id=cluster_id, check_name=name, status=status, message=message,
                             details=dict(details))


def _after(install: Install, c: Component) -> set[str]:
    """Refs of every release `c` waits for, directly or through others (Install.dependencies: HelmRelease
    dependsOn, and Flux Kustomization dependsOn on one that waits for its releases)."""
    by_ref = {(x.namespace, x.name): x for x in install.components}
    seen: set[tuple[str, str]] = set()
    todo = install.dependencies(c)
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        if ref in by_ref:
            todo += install.dependencies(by_ref[ref])
    return {f"{ns}/{name}" for ns, name in seen}


def upgrade_order(install: Install) -> HealthCheckResult:
    """Flux's dependsOn must make base → istiod → ztunnel/cni → gateways happen in that order."""
    missing: list[str] = []
    for c in install.components:
        waits_for = _after(install, c)
        # The components of the rank just below c's that exist in this install (skipping absent ranks).
        lower = [x for x in install.components if x.rank < c.rank]
        if not lower:
            continue
        nearest = max(x.rank for x in lower)
        for x in lower:
            if x.rank == nearest and x.ref not in waits_for:
                also = (f" (or make Flux Kustomization {c.kustomization} dependsOn {x.kustomization}, which must "
                        "have `wait: true`)" if c.kustomization and x.kustomization
                        and c.kustomization != x.kustomization else "")
                missing.append(f"HelmRelease {c.ref} ({c.component}, {c.release_path}) must wait for {x.ref} "
                               f"({x.component}): add `dependsOn: [{{name: {x.name}, namespace: {x.namespace}}}]`"
                               + also)
    order = " → ".join(f"{c.component}:{c.ref}" for c in install.components)
    if missing:
        return _result(install.cluster_id, "istio_upgrade_order", CheckStatus.FAIL,
                       "Flux may upgrade the Istio charts out of order: " + "; ".join(missing), order=order)
    return _result(install.cluster_id, "istio_upgrade_order", CheckStatus.PASS,
                   f"Flux dependsOn upgrades {len(install.components)} chart(s) in order: {order}", order=order)


# Istio's ambient data plane (ztunnel, the CNI node agent) may trail the control plane by at most one
# minor version, never run ahead of it, and is upgraded after istiod (Istio's Helm upgrade guide).
AMBIENT_MAX_TRAIL = 1


def ambient_skew(install: Install, target: str) -> HealthCheckResult:
    """ztunnel and cni stay within one minor behind istiod through the whole upgrade.

    Flux upgrades istiod first (istio_upgrade_order) while ztunnel and cni still run the version Git
    has for them now, so that version may be at most one minor behind the target; the plan may not
    take them ahead of the control plane (no istiod to upgrade with them, or an istiod Git leaves
    behind); and a data plane already ahead of the target would be downgraded under a newer istiod.
    """
    agents = [c for c in install.components if c.component in ("ztunnel", "cni")]
    if not agents:
        return _result(install.cluster_id, "istio_ambient_skew", CheckStatus.PASS,
                       "no ztunnel or cni HelmRelease (not an ambient install)")
    try:
        goal = Version.parse(target)
    except ValueError as e:
        return _result(install.cluster_id, "istio_ambient_skew", CheckStatus.FAIL, str(e))
    problems: list[str] = []
    if not any(c.component == "istiod" for c in install.components):
        problems.append(f"{', '.join(c.ref for c in agents)} would move to {target} with no istiod HelmRelease in "
                        "the cluster's Flux path to upgrade first: the data plane may not run ahead of the control "
                        "plane; put istiod's HelmRelease in the same Flux path")
    for c in agents:
        where = f"{c.component} {c.ref} ({c.location.field} in {c.location.path})"
        try:
            now = Version.parse(c.location.current.removeprefix("v"))
        except ValueError:
            problems.append(f"{where} is {c.location.current!r}, not a version GUARD can compare with {target}")
            continue
        if now.major != goal.major or goal.minor - now.minor > AMBIENT_MAX_TRAIL:
            problems.append(f"{where} is at {now}: while Flux upgrades istiod to {target} first, it would trail the "
                            f"control plane by {goal.minor - now.minor} minor versions (at most "
                            f"{AMBIENT_MAX_TRAIL} is supported); upgrade the cluster one minor at a time")
        elif now > goal:
            problems.append(f"{where} is at {now}, ahead of the target {target}: the data plane may not run ahead "
                            "of istiod")
    if problems:
        return _result(install.cluster_id, "istio_ambient_skew", CheckStatus.FAIL,
                       "the ambient data plane would leave Istio's supported skew: " + "; ".join(problems))
    return _result(install.cluster_id, "istio_ambient_skew", CheckStatus.PASS,
                   f"{', '.join(c.ref for c in agents)} trail istiod by at most {AMBIENT_MAX_TRAIL} minor version "
                   "while Flux upgrades them after it")


def crds_upgraded(install: Install, target: str) -> HealthCheckResult:
    """The Istio CRDs move to the target: the base chart templates them, or Flux replaces `crds/`."""
    bases = [c for c in install.components if c.component == "base"]
    if not bases:
        return _result(install.cluster_id, "istio_crds_upgraded", CheckStatus.WARN,
                       "no HelmRelease of Istio's base chart in the cluster's Flux path: GUARD does not upgrade the "
                       "CRDs; they must be managed elsewhere (add a base HelmRelease that istiod dependsOn)")
    problems, how = [], []
    for base in bases:
        if base.crds_policy == "CreateReplace":
            how.append(f"{base.ref}: spec.upgrade.crds CreateReplace")
        elif base.crd_templates is True:
            how.append(f"{base.ref}: values base.enableCRDTemplates true")
        elif base.crd_templates is None and Version.parse(target) >= CRD_TEMPLATES_BY_DEFAULT:
            how.append(f"{base.ref}: the {target} base chart templates its CRDs")
        else:
            problems.append(f"HelmRelease {base.ref} ({base.release_path}) keeps the CRDs in the chart's crds/, "
                            "which Helm never upgrades: add `spec.upgrade.crds: CreateReplace` (or set values "
                            "`base.enableCRDTemplates: true`)")
    if problems:
        return _result(install.cluster_id, "istio_crds_upgraded", CheckStatus.FAIL,
                       "the CRDs would stay on the old version: " + "; ".join(problems))
    return _result(install.cluster_id, "istio_crds_upgraded", CheckStatus.PASS,
                   "the CRDs are upgraded with the base chart (" + "; ".join(how) + ")")


def kubernetes_compatible(cluster_id: str, target: str, server_version: str) -> HealthCheckResult:
    """The target Istio supports the cluster's Kubernetes (GUARD's table, guard.core.compatibility)."""
    try:
        verdict, why = support(target, server_version)
    except ValueError as e:
        return _result(cluster_id, "kubernetes_compatible", CheckStatus.FAIL, str(e))
    status = {Support.SUPPORTED: CheckStatus.PASS, Support.TESTED: CheckStatus.WARN}.get(verdict, CheckStatus.FAIL)
    return _result(cluster_id, "kubernetes_compatible", status, why, kubernetes=server_version, support=str(verdict))
