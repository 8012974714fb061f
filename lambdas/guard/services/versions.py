"""Is a cluster running the version its change asked for? The one reading behind the Flux
sync poll, the rollback verification and the registry's observations alike: the HelmRelease
reconciled (Ready) at the version, and istiod running it with every replica ready."""

from __future__ import annotations

from pydantic import BaseModel, Field

from guard.core.istio import (
    CHARTS,
    COMPONENT_RANK,
    GATEWAY_NAMESPACES,
    ISTIO_NAMESPACE,
    control_plane_version,
    daemonset_version,
    find_istiod,
    is_cni_node,
    is_gateway,
    is_ztunnel,
)
from guard.core.models import Cluster
from guard.errors import FluxSyncFailed, GuardError
from guard.ports import ClusterConnector, DeploymentInfo, HelmReleaseStatus, KubernetesCluster


def _release_at(release: HelmReleaseStatus, version: str | None) -> bool:
    return bool(version) and release.ready and release.last_applied_version == version


def _istiod_at(istiod: DeploymentInfo | None, version: str | None) -> bool:
    return (bool(version) and istiod is not None and control_plane_version(istiod) == version
            and istiod.ready_replicas >= istiod.replicas)


def _release_words(release: HelmReleaseStatus, version: str) -> str:
    return (f"HelmRelease {release.namespace}/{release.name} ({release.chart}) at "
            f"{release.last_applied_version or '?'} ready={release.ready}, expected {version}"
            + (f" ({release.message})" if release.message else ""))


def _istiod_words(istiod: DeploymentInfo | None) -> str:
    ready = f"{istiod.ready_replicas}/{istiod.replicas}" if istiod else "0/0"
    return f"istiod runs {control_plane_version(istiod) or 'nothing'} ({ready} ready)"


def components_behind(api: KubernetesCluster, version: str) -> list[str]:
    """The install's components past istiod that do not run `version` yet, in upgrade order: the ztunnel
    and CNI DaemonSets (image tag, every pod updated and ready), then each gateway Deployment's proxies
    (every pod's istio-proxy at `version` and ready). Components the cluster does not run are not asked for."""
    behind: list[str] = []
    daemonsets = api.list_daemonsets()
    for label, pick in (("ztunnel", is_ztunnel), ("CNI", is_cni_node)):
        for ds in (d for d in daemonsets if pick(d)):
            running = daemonset_version(ds)
            updated = ds.updated_replicas if ds.updated_replicas is not None else ds.replicas
            if running != version or ds.ready_replicas < ds.replicas or updated < ds.replicas:
                behind.append(f"{label} DaemonSet {ds.namespace}/{ds.name} runs {running or '?'} "
                              f"({ds.ready_replicas}/{ds.replicas} ready), expected {version}")
    for namespace in GATEWAY_NAMESPACES:
        gateways = [d for d in api.list_deployments(namespace) if is_gateway(d)]
        if not gateways:
            continue
        pods = api.list_pods(namespace)
        for gw in gateways:
            mine = [p for p in pods if not p.finished and gw.selector
                    and all(p.labels.get(k) == v for k, v in gw.selector.items())]
            old = sorted({p.proxy_version or "?" for p in mine if p.proxy_version != version})
            unready = [p for p in mine if not p.ready]
            if old or unready or not mine:
                behind.append(f"gateway {gw.namespace}/{gw.name} proxies at {', '.join(old) or version} "
                              f"({len(mine) - len(unready)}/{len(mine)} ready), expected {version}")
    return behind


def running_components(api: KubernetesCluster, istiod: DeploymentInfo | None) -> dict[str, str]:
    """What each component of the install runs, as the registry records it (components the cluster does
    not run are absent; a gateway's pods on several versions show them all, comma-separated)."""
    found: dict[str, str] = {}
    if (control := control_plane_version(istiod)) is not None:
        found["istiod"] = control
    for ds in api.list_daemonsets():
        label = "ztunnel" if is_ztunnel(ds) else "cni" if is_cni_node(ds) else None
        if label and (running := daemonset_version(ds)):
            found[label] = running
    for namespace in GATEWAY_NAMESPACES:
        gateways = [d for d in api.list_deployments(namespace) if is_gateway(d)]
        if not gateways:
            continue
        pods = api.list_pods(namespace)
        for gw in gateways:
            versions = sorted({p.proxy_version for p in pods if p.proxy_version and not p.finished and gw.selector
                               and all(p.labels.get(k) == v for k, v in gw.selector.items())})
            if versions:
                found[f"gateway {gw.namespace}/{gw.name}"] = ", ".join(versions)
    return found


class ObservedVersion(BaseModel):
    """What one cluster was seen to run. `version` is set only when the cluster settles on one
    (the HelmRelease Ready at it, istiod running it with every replica ready; or, when the
    HelmRelease cannot be read, istiod alone, with `problem` saying so); otherwise `problem` says
    why not, and `reachable` whether the cluster answered at all."""

    cluster_id: str
    version: str | None = None
    problem: str | None = None
    reachable: bool = True
    # What each component runs: "istiod", "ztunnel", "cni", "gateway <namespace>/<name>" -> version.
    components: dict[str, str] = Field(default_factory=dict)


class VersionReader:
    """Reads one cluster at a time through `connector` (a `Poll`'s `read`)."""

    def __init__(self, connector: ClusterConnector, expected: dict[str, str] | None = None) -> None:
        self._connector = connector
        self._expected = expected or {}

    def waiting(self, cluster_id: str, cluster: Cluster) -> list[str]:
        """Why `cluster` does not run its expected version yet (empty when it does).

        Raises FluxSyncFailed when waiting cannot help: the HelmRelease is suspended (Flux leaves
        it, and its status, as they are) or stalled (Flux stopped retrying until the spec changes).
        """
        version = self._expected[cluster_id]
        api = self._connector.connect(cluster)
        release = api.get_helm_release(cluster.helm_release_namespace, cluster.helm_release_name)
        if release.suspended and not _release_at(release, version):
            raise FluxSyncFailed(f"{cluster_id}: HelmRelease {release.namespace}/{release.name} is suspended "
                                 f"(spec.suspend: true): Flux will not apply {version} until it is resumed "
                                 "(flux resume helmrelease)")
        if release.stalled and not _release_at(release, version):
            raise FluxSyncFailed(f"{cluster_id}: HelmRelease {release.namespace}/{release.name} is stalled, "
                                 f"Flux stopped retrying {version}: {release.message}")
        # Every Istio chart's HelmRelease, in upgrade order: base (the CRDs) first, then istiod's, the rest after.
        others = [r for r in api.list_helm_releases() if r.chart in CHARTS
                  and (r.namespace, r.name) != (release.namespace, release.name)]
        others.sort(key=lambda r: (COMPONENT_RANK[CHARTS[r.chart or ""]], r.namespace, r.name))
        early = [r for r in others if CHARTS[r.chart or ""] == "base"]
        late = [r for r in others if r not in early]
        behind = [_release_words(r, version) for r in early if not _release_at(r, version)]
        if behind:
            return [f"{cluster_id}: {line}" for line in behind]
        if not _release_at(release, version):
            return [f"{cluster_id}: HelmRelease {release.namespace}/{release.name} at "
                    f"{release.last_applied_version or '?'} ready={release.ready}, expected {version}"
                    + (f" ({release.message})" if release.message else "")]
        istiod = find_istiod(api.list_deployments(ISTIO_NAMESPACE), release=release.name)
        if not _istiod_at(istiod, version):
            return [f"{cluster_id}: {_istiod_words(istiod)}, expected {version}"]
        # In upgrade order after istiod: the ztunnel, CNI and gateway releases, then what they run: ztunnel and
        # the CNI node agent, every gateway's proxies. A cluster whose gateway still runs the old proxy is not
        # upgraded.
        behind = [_release_words(r, version) for r in late if not _release_at(r, version)]
        return [f"{cluster_id}: {line}" for line in behind or components_behind(api, version)]

    def observe(self, cluster: Cluster) -> ObservedVersion:
        """The version `cluster` runs, by the same rule as `waiting`; a cluster that cannot be
        read, or whose HelmRelease and istiod disagree, gives no version and says why."""
        cluster_id = cluster.cluster_id
        try:
            api = self._connector.connect(cluster)
            istiod = find_istiod(api.list_deployments(ISTIO_NAMESPACE), release=cluster.helm_release_name)
        except GuardError as e:
            return ObservedVersion(cluster_id=cluster_id, problem=f"cluster unreachable: {e}", reachable=False)
        try:
            release = api.get_helm_release(cluster.helm_release_namespace, cluster.helm_release_name)
        except GuardError as e:
            # The HelmRelease cannot be read (its API keeps failing, or RBAC): istiod, settled on one
            # version with every replica ready, is what the control plane runs; say how it was seen.
            running = control_plane_version(istiod)
            if running and _istiod_at(istiod, running):
                return ObservedVersion(cluster_id=cluster_id, version=running,
                                       problem=f"HelmRelease unreadable ({e}); {_istiod_words(istiod)}")
            return ObservedVersion(cluster_id=cluster_id, problem=f"HelmRelease unreadable: {e}; "
                                                                  f"{_istiod_words(istiod)}")
        version = release.last_applied_version
        if _release_at(release, version) and _istiod_at(istiod, version):
            assert version is not None
            try:
                components = running_components(api, istiod)
                behind = components_behind(api, version)
            except GuardError as e:
                return ObservedVersion(cluster_id=cluster_id, problem=f"the install's components unreadable: {e}",
                                       reachable=False)
            if behind:  # a gateway (or ztunnel, CNI) left on another version: the cluster is not on `version`
                return ObservedVersion(cluster_id=cluster_id, components=components,
                                       problem=f"istiod runs {version} but " + "; ".join(behind))
            return ObservedVersion(cluster_id=cluster_id, version=version, components=components)
        said = (f"HelmRelease {release.namespace}/{release.name} at {version or '?'} ready={release.ready}"
                + (f" ({release.message})" if release.message else ""))
        return ObservedVersion(cluster_id=cluster_id, problem=f"{said}, {_istiod_words(istiod)}")
