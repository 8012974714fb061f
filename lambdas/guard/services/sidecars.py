"""Rollout sequencing: restart injected workloads in waves so their proxies pick up the
new control plane's version, never taking a workload below its PDB or ready-replica floor.

Each call is one poll: it finishes nothing synchronously. A wave is started, the state
machine waits, and the next poll sees whether the wave has finished before starting the
next one. What was restarted is kept in the run record, so a retried poll restarts nothing twice.
"""

from __future__ import annotations

import math
from datetime import datetime

from guard.checks.snapshot import ClusterSnapshot, selector_matches
from guard.core.models import Cluster
from guard.errors import SidecarRestartTimeout
from guard.ports import DeploymentInfo
from guard.services.poll import ClusterPoll, PollResult
from guard.vocabulary.stages import Stage


class SidecarPoll(PollResult):
    """What one poll returns to the state machine (`$.sidecars`)."""

    restarted: list[str] = []


def _key(d: DeploymentInfo) -> str:
    return f"{d.namespace}/{d.name}"


def _off_target(snap: ClusterSnapshot, d: DeploymentInfo, target: str) -> bool:
    """Any pod of the Deployment still runs another proxy version (old pods linger mid-rollout)."""
    return any(p.namespace == d.namespace and p.owner == f"Deployment/{d.name}" and p.proxy_version
               and p.proxy_version != target for p in snap.pods)


def _why_not_now(snap: ClusterSnapshot, d: DeploymentInfo, min_ready_percent: float) -> str | None:
    """Why restarting `d` now could breach its PDB or the ready-replica floor, or None."""
    floor = math.ceil(d.replicas * min_ready_percent / 100)
    if d.ready_replicas < floor:
        return f"{_key(d)} has {d.ready_replicas}/{d.replicas} ready, below the floor of {floor}"
    labels = next((p.labels for p in snap.pods if p.namespace == d.namespace and p.owner == f"Deployment/{d.name}"),
                  d.selector)
    for pdb in snap.pdbs:
        if pdb.namespace == d.namespace and selector_matches(pdb.selector, labels) and pdb.disruptions_allowed < 1:
            return f"{_key(d)}: PodDisruptionBudget {pdb.name} allows no disruption right now"
    return None


class SidecarRolloutService(ClusterPoll):
    def poll(self, run_id: str, deadline: str | None) -> SidecarPoll:
        """Start the next wave where the last one finished; SidecarRestartTimeout past the deadline."""
        run = self._state.get_run(run_id)
        now = self._clock.now()
        minutes = self._config.execution.sidecar_restart_timeout_minutes
        restarted: list[str] = []

        def read(cluster_id: str, cluster: Cluster) -> list[str]:
            return self.advance(cluster_id, cluster, run.target_version,
                                run.sidecar_restarts.setdefault(cluster_id, {}), now, restarted)

        result = self.check(run.clusters, deadline, minutes, read)
        run.stage = Stage.RESTARTING_SIDECARS
        self._state.put_run(run)  # what was restarted, so a retried poll restarts nothing twice
        if result.expired:
            raise SidecarRestartTimeout(f"proxies not on {run.target_version} after {minutes:g} min: "
                                        + "; ".join(result.waiting_on))
        return SidecarPoll(restarted=restarted, **result.model_dump())

    def advance(self, cluster_id: str, cluster: Cluster, target: str, done_before: dict[str, datetime],
                now: datetime, restarted: list[str]) -> list[str]:
        """Start the next wave on one cluster when the previous one has finished; what it waits on.

        `done_before` ("namespace/name" -> when GUARD restarted it) is updated in place; the
        caller stores it, so a retried poll restarts nothing twice. An upgrade keeps it in the
        run record, a rollback (towards its own versions) in the rollback record.
        """
        api = self._connector.connect(cluster)
        snap = ClusterSnapshot.read(api)
        workloads = sorted(snap.injected_deployments(), key=_key)
        in_flight = [d for d in workloads if _key(d) in done_before
                     and (_off_target(snap, d, target) or d.ready_replicas < d.replicas)]
        if in_flight:
            return [f"{cluster_id}: wave in progress ({', '.join(_key(d) for d in in_flight)})"]
        pending = [d for d in workloads if _off_target(snap, d, target) and _key(d) not in done_before]
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
            api.restart_deployment(d.namespace, d.name, now)
            done_before[_key(d)] = now
            restarted.append(f"{cluster_id}:{_key(d)}")
        notes = []
        if wave:
            notes.append(f"{cluster_id}: restarting {', '.join(_key(d) for d in wave)}")
        notes += [f"{cluster_id}: waiting, {reason}" for reason in blocked]
        return notes
