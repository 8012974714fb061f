"""Wait for Flux: each cluster's HelmRelease reconciled at the target and istiod running it."""

from __future__ import annotations

from pydantic import BaseModel

from guard.checks.snapshot import ClusterSnapshot
from guard.clock import Clock, poll_deadline
from guard.config.models import TenantConfig
from guard.errors import FluxSyncTimeout, TransientError
from guard.ports import ClusterConnector
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore


class FluxPoll(BaseModel):
    """What one poll returns to the state machine (`$.flux`)."""

    synced: bool
    deadline: str
    waiting_on: list[str] = []


class FluxSyncService:
    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore,
                 connector: ClusterConnector, clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._connector = connector
        self._clock = clock

    def poll(self, run_id: str, deadline: str | None) -> FluxPoll:
        """One look at every cluster; FluxSyncTimeout once the deadline has passed."""
        run = self._state.get_run(run_id)
        now = self._clock.now()
        due = poll_deadline(deadline, now, self._config.validation.flux_sync_timeout_minutes)
        clusters = self._registry.get_many(run.clusters)
        waiting: list[str] = []
        for cluster_id in run.clusters:
            cluster = clusters[cluster_id]
            try:
                api = self._connector.connect(cluster)
                release = api.get_helm_release(cluster.helm_release_namespace, cluster.helm_release_name)
                istiod = ClusterSnapshot(nodes=[], namespaces=[], pods=[], pdbs=[],
                                         deployments=api.list_deployments("istio-system")).istiod()
            except TransientError as e:
                waiting.append(f"{cluster_id}: API unreachable ({e})")
                continue
            istiod_version = (istiod.image_versions.get("discovery") if istiod else None)
            if not (release.ready and release.last_applied_version == run.target_version):
                waiting.append(f"{cluster_id}: HelmRelease {release.namespace}/{release.name} at "
                               f"{release.last_applied_version or '?'} ready={release.ready}"
                               + (f" ({release.message})" if release.message else ""))
            elif istiod is None or istiod_version != run.target_version or istiod.ready_replicas < istiod.replicas:
                waiting.append(f"{cluster_id}: istiod runs {istiod_version or 'nothing'} "
                               f"({istiod.ready_replicas if istiod else 0}/{istiod.replicas if istiod else 0} ready)")
        if not waiting:
            run.flux_synced_at, run.stage = now, "soaking"
            self._state.put_run(run)
            return FluxPoll(synced=True, deadline=due.isoformat())
        if now >= due:
            raise FluxSyncTimeout(
                f"Flux did not reconcile {run.target_version} within "
                f"{self._config.validation.flux_sync_timeout_minutes:g} min: " + "; ".join(waiting)
            )
        if run.stage != "waiting_for_flux":
            run.stage = "waiting_for_flux"
            self._state.put_run(run)
        return FluxPoll(synced=False, deadline=due.isoformat(), waiting_on=waiting)
