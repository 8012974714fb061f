"""Is a cluster running the version its change asked for? The one reading behind the Flux
sync poll and the rollback verification alike: the HelmRelease reconciled (Ready) at the
version, and istiod running it with every replica ready."""

from __future__ import annotations

from guard.core.istio import ISTIO_NAMESPACE, control_plane_version, find_istiod
from guard.core.models import Cluster
from guard.ports import ClusterConnector


class VersionReader:
    """Reads one cluster at a time through `connector` (a `Poll`'s `read`)."""

    def __init__(self, connector: ClusterConnector, expected: dict[str, str]) -> None:
        self._connector = connector
        self._expected = expected

    def waiting(self, cluster_id: str, cluster: Cluster) -> list[str]:
        """Why `cluster` does not run its expected version yet (empty when it does)."""
        version = self._expected[cluster_id]
        api = self._connector.connect(cluster)
        release = api.get_helm_release(cluster.helm_release_namespace, cluster.helm_release_name)
        if not (release.ready and release.last_applied_version == version):
            return [f"{cluster_id}: HelmRelease {release.namespace}/{release.name} at "
                    f"{release.last_applied_version or '?'} ready={release.ready}, expected {version}"
                    + (f" ({release.message})" if release.message else "")]
        istiod = find_istiod(api.list_deployments(ISTIO_NAMESPACE))
        running = control_plane_version(istiod)
        if istiod is None or running != version or istiod.ready_replicas < istiod.replicas:
            ready = f"{istiod.ready_replicas}/{istiod.replicas}" if istiod else "0/0"
            return [f"{cluster_id}: istiod runs {running or 'nothing'} ({ready} ready), expected {version}"]
        return []
