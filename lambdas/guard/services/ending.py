"""The end of every execution is recorded, however it ended.

Step Functions sends "Execution Status Change" events through EventBridge; for each terminal
status (SUCCEEDED, FAILED, TIMED_OUT, ABORTED) this makes sure the run whose id is the
execution's name leaves nothing behind:

- its MR task tokens (upgrade MR, the decision on it, the rollback MR) are deleted;
- the batch lock is released;
- a run the workflow did not record (StopExecution runs no Catch; a timeout of the whole
  execution neither) is recorded failed with what ended it (`ExecutionStopped`,
  `ExecutionTimedOut`, the execution's own error), through the one `OutcomeRecorder`, and
  people are notified.

- no merge request is left open and unwatched: an open upgrade MR is closed with a comment (a
  later merge would deploy with nobody validating it); an open rollback MR is never closed, it
  gets a comment and the `RollbackNeedsPerson` alarm asks a person to act.

A run the workflow already recorded keeps its outcome: only the lock and tokens are made sure
of. Every step is idempotent, so an event delivered twice ends in the same place. An
execution without a run (Plan refused it before a record) has nothing to clean.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guard.core.run import RunRecord, RunStatus
from guard.errors import ExecutionStopped, ExecutionTimedOut, GuardError, OutcomeNotRecorded, UpgradeFailed
from guard.outbound import untrusted_block
from guard.ports import GitOpsRepo
from guard.services.observation import AT_END
from guard.services.outcome import OutcomeRecorder
from guard.stores.failure import FailureStore
from guard.stores.state import StateStore, UnwatchedRollback
from guard.vocabulary.events import NotificationEvent
from guard.vocabulary.outcomes import Outcome
from guard.vocabulary.stages import FailedStage, Stage

TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
DETAIL_TYPE = "Step Functions Execution Status Change"

# Where a run was when it ended -> the stage its failure is recorded against.
_FAILED_AT: dict[Stage, FailedStage] = {
    Stage.PLANNED: FailedStage.PRECHECKS,
    Stage.WAITING_FOR_MERGE: FailedStage.MERGE,
    Stage.WAITING_FOR_FLUX: FailedStage.FLUX,
    Stage.RESTARTING_SIDECARS: FailedStage.SIDECARS,
    Stage.SOAKING: FailedStage.VALIDATE,
    Stage.WAITING_FOR_DECISION: FailedStage.VALIDATION,
    Stage.ROLLBACK_PLANNED: FailedStage.ROLLBACK,
    Stage.WAITING_FOR_ROLLBACK_MERGE: FailedStage.ROLLBACK,
    Stage.VERIFYING_ROLLBACK: FailedStage.ROLLBACK,
}


class ExecutionEnded(BaseModel):
    """The `detail` of a "Step Functions Execution Status Change" event (dates in epoch milliseconds)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    execution_arn: str = Field(alias="executionArn")
    state_machine_arn: str | None = Field(default=None, alias="stateMachineArn")
    name: str
    status: Literal["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]
    start_date: int | None = Field(default=None, alias="startDate")
    stop_date: int | None = Field(default=None, alias="stopDate")
    error: str | None = None
    cause: str | None = None
    input: str | None = None  # the execution's input, as a JSON string

    @property
    def batch(self) -> str | None:
        """The batch named in the execution's input, when it names one."""
        try:
            data = json.loads(self.input or "")
        except ValueError:
            return None
        batch = data.get("batch") if isinstance(data, dict) else None
        return batch if isinstance(batch, str) and batch else None

    @property
    def stopped_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.stop_date / 1000, tz=UTC) if self.stop_date else None


class EndingResult(BaseModel):
    run_id: str
    status: str
    action: Literal["unknown_run", "other_execution", "recorded", "cleaned"]
    outcome: str | None = None
    error: str | None = None
    tokens_deleted: list[str] = Field(default_factory=list)
    registry_notes: list[str] = Field(default_factory=list)  # where the clusters disagreed with the registry


class EndingService:
    """`notify(run_id, event, detail)` tells people (handlers.notify.send: never raises)."""

    def __init__(self, state: StateStore, failures: FailureStore, outcomes: OutcomeRecorder,
                 notify: Callable[[str, str, str | None], Any] | None = None, repo: GitOpsRepo | None = None,
                 needs_person: Callable[[str], Any] | None = None) -> None:
        self._state = state
        self._failures = failures
        self._outcomes = outcomes
        self._notify = notify or (lambda *a: None)
        self._repo = repo
        self._needs_person = needs_person or (lambda reason: None)

    def ended(self, event: ExecutionEnded) -> EndingResult:
        run = self._state.find_run(event.name)
        if run is None:
            # Plan may have taken the lock and failed before recording the run: free it (only if this
            # execution holds it; the lock's holder is the run id, which is the execution's name).
            if event.batch is not None:
                self._state.release_lock(event.batch, event.name)
            return EndingResult(run_id=event.name, status=event.status, action="unknown_run")
        if run.execution_arn != event.execution_arn:  # a same-named execution of another machine
            return EndingResult(run_id=run.run_id, status=event.status, action="other_execution")
        deleted = self._delete_tokens(run)
        if run.status != RunStatus.RUNNING:  # the workflow recorded it: never overwrite that
            self._state.release_lock(run.batch, run.run_id)
            return EndingResult(run_id=run.run_id, status=event.status, action="cleaned",
                                outcome=run.outcome, error=run.error, tokens_deleted=deleted)
        error, cause = self._why(run, event)
        iid = run.merge_request_iid
        comment = None
        if iid is not None:
            comment = (iid, f"⏹️ GUARD: batch `{run.batch}` → {run.target_version} ended at **{run.stage}** "
                            f"without finishing: `{error}`\n\n{untrusted_block(cause)}\n\n"
                            "GUARD no longer watches this merge request."
                            + self._close_upgrade_mr(run))
        self._leave_rollback_mr_to_a_person(run, error)
        recorded = self._outcomes.record(run, Outcome.FAILED, failed_stage=_FAILED_AT.get(run.stage,
                                                                                          FailedStage.UNKNOWN),
                                         error=error, cause=cause, merge_request_urls=tuple(deleted),
                                         comment=comment)
        self._notify(run.run_id, NotificationEvent.FAILED.value, f"{error}: {cause}")
        return EndingResult(run_id=run.run_id, status=event.status, action="recorded",
                            outcome=recorded.outcome, error=error, tokens_deleted=deleted,
                            registry_notes=[n for n in recorded.registry_notes if n.startswith(AT_END)])

    def _close_upgrade_mr(self, run: RunRecord) -> str:
        """Close the run's upgrade MR if still open (nobody would validate what a later merge deploys);
        returns what to add to the comment."""
        if self._repo is None or run.merge_request_iid is None or run.stage != Stage.WAITING_FOR_MERGE:
            return ""
        try:
            mr = self._repo.get_merge_request(run.gitlab_project, run.merge_request_iid)
            if mr.state != "opened":
                return ""
            self._repo.close_merge_request(run.gitlab_project, run.merge_request_iid)
        except GuardError as e:
            return (f" GUARD could not close it ({e}): close it by hand, a merge would deploy "
                    f"{run.target_version} with nothing validating it.")
        return " GUARD closed it, so nothing is deployed unwatched: start the upgrade again to retry."

    def _leave_rollback_mr_to_a_person(self, run: RunRecord, error: str) -> None:
        """A rollback MR still open stays open (GUARD never closes one): comment, and raise the alarm."""
        rollback = self._failures.get_rollback(run.run_id)
        if rollback is None or rollback.merge_request_iid is None or self._repo is None:
            return
        try:
            if self._repo.get_merge_request(run.gitlab_project, rollback.merge_request_iid).state != "opened":
                return
        except GuardError:
            pass  # unknown: say it anyway, a needless comment is cheaper than an unwatched rollback
        with contextlib.suppress(GuardError):
            self._repo.comment(run.gitlab_project, rollback.merge_request_iid,
                               f"⚠️ GUARD's execution ended (`{error}`) while this rollback was open, so GUARD is not "
                               "watching it any more: merging it will not be verified. It stays open: a person must "
                               "merge it and check that the clusters run the previous versions, or close it.")
        self._needs_person(f"rollback merge request {rollback.merge_request_url} is open and unwatched: "
                           f"the execution ended ({error})")
        if rollback.merge_request_url:
            # The reconciler follows it: if a person merges it, the registry learns what then runs.
            self._state.put_unwatched_rollback(UnwatchedRollback(
                merge_request_url=rollback.merge_request_url, merge_request_iid=rollback.merge_request_iid,
                project=run.gitlab_project, run_id=run.run_id, versions=rollback.versions), datetime.now(UTC))

    def _delete_tokens(self, run: RunRecord) -> list[str]:
        """Delete this run's tokens (upgrade MR, its decision, the rollback MR); another run's stay."""
        urls = [run.merge_request_url]
        rollback = self._failures.get_rollback(run.run_id)
        if rollback is not None:
            urls.append(rollback.merge_request_url)
        deleted = []
        for url in dict.fromkeys(u for u in urls if u):
            if self._state.delete_task_token(url, run_id=run.run_id):  # conditional: another run's stays
                deleted.append(url)
        return deleted

    @staticmethod
    def _why(run: RunRecord, event: ExecutionEnded) -> tuple[str, str]:
        """The error name and the cause a person reads, for an execution that did not record its end."""
        at = event.stopped_at
        when = f" at {at.isoformat()}" if at else ""
        said = ": ".join(p for p in (event.error, event.cause) if p)
        if event.status == "ABORTED":
            return ExecutionStopped.__name__, (
                f"the execution was stopped{when} while the run was at {run.stage} (StopExecution, e.g. from the "
                f"console){'; it said ' + said if said else ''}. Nothing after {run.stage} ran; the clusters run "
                "what they ran then.")
        if event.status == "TIMED_OUT":
            return ExecutionTimedOut.__name__, (
                f"the execution timed out{when} while the run was at {run.stage}; nothing after it ran.")
        if event.status == "FAILED":
            return event.error or UpgradeFailed.__name__, (
                f"the execution failed{when} at {run.stage} without recording its outcome"
                f"{': ' + event.cause if event.cause else ''}")
        return OutcomeNotRecorded.__name__, (
            f"the execution succeeded{when} but its run was still at {run.stage}; "
            "its execution history says what was done")
