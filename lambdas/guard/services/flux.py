"""Wait for Flux: each cluster's HelmRelease reconciled at the target and istiod running it."""

from __future__ import annotations

from guard.core.run import RunRecord
from guard.errors import FluxSyncTimeout
from guard.services.poll import ClusterPoll, PollResult
from guard.services.versions import VersionReader
from guard.vocabulary.stages import Stage


class FluxPoll(PollResult):
    """What one poll returns to the state machine (`$.flux`); `synced` is the name the ASL reads."""

    synced: bool


class FluxSyncService(ClusterPoll):
    def poll(self, run_id: str, deadline: str | None) -> FluxPoll:
        """One look at every cluster; FluxSyncTimeout once the deadline has passed."""
        run = self._state.get_run(run_id)
        # The first poll runs right after the merge resumed the execution: that is the merge's moment.
        first = run.stage == Stage.WAITING_FOR_MERGE
        minutes = self._config.validation.flux_sync_timeout_minutes
        reader = VersionReader(self._connector, {c: run.target_version for c in run.clusters})
        result = self.check(run.clusters, deadline, minutes, reader.waiting)
        if result.expired:
            raise FluxSyncTimeout(f"Flux did not reconcile {run.target_version} within {minutes:g} min: "
                                  + result.describe())
        if result.done:
            # What comes next: the sidecar restart waves when sequencing is on, else the soak.
            run.flux_synced_at = self._clock.now()
            soaks_now = run.stage != Stage.SOAKING and not self._config.execution.enable_rollout_sequencing
            run.stage = (Stage.RESTARTING_SIDECARS if self._config.execution.enable_rollout_sequencing
                         else Stage.SOAKING)
            self._state.put_run(run)
            self._mark(run, merged=first, soak=soaks_now)
        else:
            if run.stage != Stage.WAITING_FOR_FLUX:
                run.stage = Stage.WAITING_FOR_FLUX
                self._state.put_run(run)
            self._mark(run, merged=first, soak=False)
        return FluxPoll(synced=result.done, **result.model_dump(exclude={"stage", "merge_request_url"}),
                        stage=run.stage, merge_request_url=run.merge_request_url)

    def _mark(self, run: RunRecord, *, merged: bool, soak: bool) -> None:
        """Datadog events, after the record is written (a retried poll finds the stage moved on)."""
        if self._markers is None:
            return
        if merged:
            self._markers.merged(run)
        if soak:
            self._markers.soak_started(run)
