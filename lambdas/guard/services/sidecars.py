"""Rollout sequencing: restart injected workloads (Deployments, StatefulSets, DaemonSets) in waves
so their proxies pick up the new control plane's version, never taking a workload below its PDB
or ready-replica floor.

Each call is one poll: it finishes nothing synchronously. A wave is started, the state
machine waits, and the next poll sees whether the wave has finished before starting the
next one. Each wave restarted is recorded in an item of its own (`StateStore.put_sidecar_wave`), so a
retried poll restarts nothing twice and no record grows with the fleet.
"""

from __future__ import annotations

import math
from datetime import datetime

from guard.checks.snapshot import ClusterSnapshot, selector_matches
from guard.core.models import Cluster
from guard.digest import bounded
from guard.errors import SidecarRestartFailed, SidecarRestartTimeout
from guard.ports import DeploymentInfo
from guard.services.poll import ClusterPoll, PollResult
from guard.stores.state import RestartKind, SidecarWave, StateStore
from guard.vocabulary.stages import Stage


class SidecarPoll(PollResult):
    """What one poll returns to the state machine (`$.sidecars`): the first workloads this poll restarted
    and how many (the state table keeps them all, a wave an item)."""

    restarted: list[str] = []
    restarted_count: int = 0


def _key(d: DeploymentInfo) -> str:
    # Deployments keep the key they always had, so a run record written before still reads the same.
    return f"{d.namespace}/{d.name}" if d.kind == "Deployment" else f"{d.namespace}/{d.kind}/{d.name}"


def _off_target(snap: ClusterSnapshot, d: DeploymentInfo, target: str) -> bool:
    """Any live pod of the workload still runs another proxy version (old pods linger mid-rollout)."""
    return any(p.proxy_version and p.proxy_version != target for p in snap.pods_of(d) if not p.finished)


def _unreadable(snap: ClusterSnapshot, d: DeploymentInfo) -> bool:
    """Some live proxy of the workload names no version (a digest-only image): only a restart after
    the control plane's upgrade makes sure it runs what the new injector serves."""
    return any(p.injected and not p.proxy_version for p in snap.pods_of(d) if not p.finished)


def _rolling(snap: ClusterSnapshot, d: DeploymentInfo) -> bool:
    """The workload's rollout has not finished: pods not ready, not yet updated, or old ones left."""
    live = [p for p in snap.pods_of(d) if not p.finished]
    updated = d.updated_replicas if d.updated_replicas is not None else d.replicas
    return d.ready_replicas < d.replicas or updated < d.replicas or len(live) > d.replicas


def _why_not_now(snap: ClusterSnapshot, d: DeploymentInfo, min_ready_percent: float) -> str | None:
    """Why restarting `d` now could breach its PDB or the ready-replica floor, or None.

    Raises SidecarRestartFailed when a PDB would never allow the restart (it allows no disruption
    even with every pod healthy): waiting for the timeout would change nothing.
    """
    floor = math.ceil(d.replicas * min_ready_percent / 100)
    if d.ready_replicas < floor:
        return f"{_key(d)} has {d.ready_replicas}/{d.replicas} ready, below the floor of {floor}"
    pods = snap.pods_of(d)
    labels = pods[0].labels if pods else d.selector
    for pdb in snap.pdbs:
        if pdb.namespace != d.namespace or not selector_matches(pdb.selector, labels):
            continue
        if pdb.never_allows_disruption(d.replicas):
            raise SidecarRestartFailed(
                f"{d.kind} {_key(d)}: PodDisruptionBudget {pdb.name} allows no disruption even with all "
                f"{d.replicas} pod(s) healthy (minAvailable {pdb.min_available}, maxUnavailable "
                f"{pdb.max_unavailable}): its sidecar cannot be restarted; add a replica or relax the PDB")
        if pdb.disruptions_allowed < 1:
            return f"{_key(d)}: PodDisruptionBudget {pdb.name} allows no disruption right now"
    return None


def restarts_so_far(state: StateStore, run_id: str, kind: RestartKind,
                    recorded_before: dict[str, dict[str, datetime]]) -> dict[str, dict[str, datetime]]:
    """cluster -> workload -> when GUARD restarted it: the waves recorded as items, and what a record
    written before they were (`RunRecord` / `RollbackRecord.sidecar_restarts`) still holds."""
    found = state.sidecar_restarts(run_id, kind)
    for cluster_id, workloads in recorded_before.items():
        found[cluster_id] = {**workloads, **found.get(cluster_id, {})}
    return found


class SidecarRolloutService(ClusterPoll):
    def poll(self, run_id: str, deadline: str | None) -> SidecarPoll:
        """Start the next wave where the last one finished; SidecarRestartTimeout past the deadline."""
        run = self._state.get_run(run_id)
        now = self._clock.now()
        minutes = self._config.execution.sidecar_restart_timeout_minutes
        restarted: list[str] = []
        done = restarts_so_far(self._state, run_id, "upgrade", run.sidecar_restarts)

        def read(cluster_id: str, cluster: Cluster) -> list[str]:
            return self.advance(run_id, "upgrade", cluster_id, cluster, run.target_version,
                                done.setdefault(cluster_id, {}), now, restarted)

        # The clusters are read concurrently (guard.services.poll): a cluster whose PDB never allows a restart
        # ends the poll, while the clusters already being read finish their wave (each recorded, never
        # restarted twice). `restarted` fills as they finish, so it is put back in the run's order.
        result = self.check(run.clusters, deadline, minutes, read)
        order = {c: i for i, c in enumerate(run.clusters)}
        restarted.sort(key=lambda r: order.get(r.partition(":")[0], len(order)))
        # Done: the soak comes next, so the record says so while it runs (a stop then reads "soaking").
        soaks_now = result.done and run.stage != Stage.SOAKING
        run.stage = Stage.SOAKING if result.done else Stage.RESTARTING_SIDECARS
        self._state.put_run(run)
        if soaks_now and self._markers is not None:
            self._markers.soak_started(run)
        if result.expired:
            raise SidecarRestartTimeout(f"proxies not on {run.target_version} after {minutes:g} min: "
                                        + result.describe())
        return SidecarPoll(restarted=bounded(restarted), restarted_count=len(restarted), stage=run.stage,
                           merge_request_url=run.merge_request_url,
                           **result.model_dump(exclude={"stage", "merge_request_url"}))

    def advance(self, run_id: str, kind: RestartKind, cluster_id: str, cluster: Cluster, target: str,
                done_before: dict[str, datetime], now: datetime, restarted: list[str]) -> list[str]:
        """Start the next wave on one cluster when the previous one has finished; what it waits on.

        `done_before` ("namespace/name" -> when GUARD restarted it, `restarts_so_far`) is updated in
        place, and the wave is recorded as soon as it is restarted (`kind`: the upgrade's waves, or
        a rollback's back onto its own versions), so a retried poll restarts nothing twice.
        """
        api = self._connector.connect(cluster)
        snap = ClusterSnapshot.read(api)
        # Deployments, StatefulSets and DaemonSets; Jobs and bare pods cannot be restarted (see
        # builtin.proxies_on_version: they never hold up the verdict).
        workloads = sorted(snap.injected_workloads(), key=_key)
        in_flight = [d for d in workloads if _key(d) in done_before
                     and (_off_target(snap, d, target) or _rolling(snap, d))]
        if in_flight:
            return [f"{cluster_id}: wave in progress ({', '.join(_key(d) for d in in_flight)})"]
        pending = [d for d in workloads if _key(d) not in done_before
                   and (_off_target(snap, d, target) or _unreadable(snap, d))]
        stale = [d for d in workloads if _off_target(snap, d, target) and _key(d) in done_before]
        if stale:
            # Restarted, rolled out, and still on the old proxy: the injector did not serve it.
            return [f"{cluster_id}: {', '.join(_key(d) for d in stale)} restarted but still off {target}"]
        if not pending:
            return []
        wave: list[DeploymentInfo] = []
        blocked: list[str] = []
        for d in pending:
            if len(wave) == self._config.execution.sidecar_restart_wave_size:
                break
            reason = _why_not_now(snap, d, self._config.execution.min_ready_replicas_percent)
            if reason:
                blocked.append(reason)
            else:
                wave.append(d)
        for d in wave:
            api.restart_workload(d.kind, d.namespace, d.name, now)
            done_before[_key(d)] = now
            restarted.append(f"{cluster_id}:{_key(d)}")
        if wave:
            self._state.put_sidecar_wave(run_id, kind, SidecarWave(cluster_id=cluster_id, at=now,
                                                                   workloads=[_key(d) for d in wave]))
        notes = []
        if wave:
            notes.append(f"{cluster_id}: restarting {', '.join(_key(d) for d in wave)}")
        notes += [f"{cluster_id}: waiting, {reason}" for reason in blocked]
        return notes
