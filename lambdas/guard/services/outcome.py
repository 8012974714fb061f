"""The change pipeline's last step: record how a run ended, for every path.

One recorder for success, failure, rolled back and rollback failed: the registry history
(and the version each cluster now runs), the batch result that prerequisites are checked
against, the run record, the task tokens, the batch lock and a comment on the MR. Every
write is idempotent and the lock is released on every call, so a retried task (or a
retry after a crash half-way) ends in the same place and never leaves the lock behind.

With an observer, the run's clusters are then read and the registry set to what they run,
not to what GUARD assumed (`services.observation`): where the cluster, the registry or GUARD's
assumption disagreed, the run record, the log and the MR comment say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guard.core.models import UpgradeRecord
from guard.core.run import RunRecord, RunStatus
from guard.errors import GuardError
from guard.ports import Clock, GitOpsRepo
from guard.redact import redact
from guard.services.observation import AT_END, RegistryObserver, for_the_record
from guard.stores.registry import ClusterRegistry
from guard.stores.state import BatchResult, StateStore
from guard.vocabulary.outcomes import Outcome
from guard.vocabulary.stages import FailedStage, Stage


class OutcomeRecorder:
    """`repo` may be None (GitLab unavailable): the outcome is still recorded, only the comment is lost.
    `observer` reads what the clusters run once the outcome is known (None: the registry keeps what
    GUARD assumed)."""

    def __init__(self, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo | None, clock: Clock,
                 log_warning: Callable[..., Any] | None = None, observer: RegistryObserver | None = None) -> None:
        self._registry = registry
        self._state = state
        self._repo = repo
        self._clock = clock
        self._warn = log_warning or (lambda *a, **k: None)
        self._observer = observer

    def record(self, run: RunRecord, outcome: Outcome, *, versions: dict[str, str] | None = None,
               failed_stage: FailedStage | None = None, error: str | None = None, cause: str | None = None,
               merge_request_urls: tuple[str | None, ...] = (), comment: tuple[int | None, str] | None = None,
               merge_request_url: str | None = None) -> RunRecord:
        """Record `outcome` for `run`. `versions` (cluster -> version) is what each cluster was
        brought to, for SUCCEEDED and ROLLED_BACK; `comment` is (MR iid, text), posted once."""
        already = run.status != RunStatus.RUNNING and run.outcome == outcome and run.failed_stage == failed_stage
        now = self._clock.now()
        if outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK, Outcome.ROLLBACK_FAILED):
            for cluster_id, version in (versions or {}).items():
                came_from = run.from_versions[cluster_id] if outcome == Outcome.SUCCEEDED else run.target_version
                self._registry.record_upgrade(cluster_id, UpgradeRecord(
                    run_id=run.run_id, from_version=came_from, to_version=version, outcome=outcome, at=now,
                    merge_request_url=merge_request_url or run.merge_request_url),
                    None if outcome == Outcome.ROLLBACK_FAILED else version)
        dry_run = run.options.dry_run
        # A dry run changed nothing, so it says nothing about the batch: no result for prerequisites to
        # read (a refused dry run must not hide the batch's real result), no registry correction.
        notes = [] if dry_run else self._observe(run, None if outcome == Outcome.ROLLBACK_FAILED else versions)
        if not dry_run:
            self._state.put_batch_result(BatchResult(batch=run.batch, target_version=run.target_version,
                                                     status=outcome, run_id=run.run_id, at=now))
        run.status = RunStatus.SUCCEEDED if outcome in (Outcome.SUCCEEDED, Outcome.PRECHECKED) else RunStatus.FAILED
        run.stage, run.outcome, run.failed_stage = Stage.DONE, outcome, failed_stage
        run.finished_at = run.finished_at if already else now
        run.error, run.cause = error, cause
        self._state.put_run(run)
        for url in dict.fromkeys(u for u in (run.merge_request_url, *merge_request_urls) if u):
            # Only this run's: a later run may wait on the same MR (the same branch, retried).
            self._state.delete_task_token(url, run_id=run.run_id)
        self._state.release_lock(run.batch, run.run_id)
        if comment is not None and not already:  # a retried task: the MR has its comment already
            iid, body = comment
            if notes:
                body += "\n\n⚠️ The clusters did not all run what GUARD expected:\n" + "\n".join(
                    f"- {n.removeprefix(AT_END + ': ')}" for n in notes)
            self.comment(run.gitlab_project, iid, body)
        return run

    def _observe(self, run: RunRecord, expected: dict[str, str] | None) -> list[str]:
        """Set the registry to what the run's clusters run; the notes (also kept on `run`) on where
        that was not what the registry or `expected` said. A retry finds the registry corrected
        already: what the first attempt reported stays, and only new findings are added."""
        if self._observer is None:
            return []
        clusters = self._registry.get_many(run.clusters)
        found = self._observer.reconcile([clusters[c] for c in run.clusters if c in clusters], run_id=run.run_id,
                                         expected=expected)
        notes = for_the_record(AT_END, found.notes())
        run.registry_notes += [n for n in notes if n not in run.registry_notes]
        return notes

    def comment(self, project: str, iid: int | None, body: str) -> None:
        """Post `body` (redacted) on MR `iid`; a failure is logged, never raised."""
        # A comment is courtesy; failing to post one must not change the recorded outcome.
        if self._repo is None or iid is None:
            return
        try:
            self._repo.comment(project, iid, redact(body))
        except GuardError as e:
            self._warn("could not comment on the merge request", extra={"error": str(e)})
