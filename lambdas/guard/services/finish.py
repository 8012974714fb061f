"""The last task of every path: record the outcome, release the lock, tell the MR.

On failure it also turns the state machine's `{Error, Cause}` into an error name and a
cause a person can act on; the Fail state reports exactly that.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from guard.clock import Clock
from guard.core.models import UpgradeRecord
from guard.core.run import RunStatus
from guard.errors import GuardError
from guard.ports import GitOpsRepo
from guard.stores.registry import ClusterRegistry
from guard.stores.state import BatchResult, StateStore

# What each stage's failure is called when the error itself is a generic one.
_STAGE_ERRORS = {
    "merge_timeout": "MergeRequestTimeout",
    "prechecks": "PrecheckFailed",
    "merge": "MergeRequestFailed",
    "flux": "FluxSyncFailed",
    "sidecars": "SidecarRestartFailed",
    "validate": "ValidationError",
    "validation": "ValidationFailed",
    "rollback": "RollbackFailed",
}


class FailureSummary(BaseModel):
    error: str
    cause: str


def explain(stage: str, error: dict[str, Any] | None) -> FailureSummary:
    """Error name + readable cause from a Catch's `{Error, Cause}` (a Lambda's Cause is JSON)."""
    error = error or {}
    name = str(error.get("Error") or "")
    raw = error.get("Cause") or ""
    message = raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else None
        if isinstance(parsed, dict) and parsed.get("errorMessage"):
            message = str(parsed["errorMessage"])
            name = str(parsed.get("errorType") or name)
    except ValueError:
        pass
    if stage == "merge_timeout" or name in ("", "States.ALL", "States.TaskFailed", "States.Timeout"):
        name = _STAGE_ERRORS.get(stage, name or "UpgradeFailed")
    if stage == "merge_timeout":
        message = "the merge request was not merged before the wait timed out; nothing was deployed"
    return FailureSummary(error=name, cause=message or f"{name} during {stage}")


class FinishService:
    def __init__(self, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo | None, clock: Clock,
                 log_warning: Any = None) -> None:
        self._registry = registry
        self._state = state
        self._repo = repo
        self._clock = clock
        self._warn = log_warning or (lambda *a, **k: None)

    def succeed(self, run_id: str, merge: dict[str, Any] | None) -> dict[str, Any]:
        run = self._state.get_run(run_id)
        retried = run.status == RunStatus.SUCCEEDED  # a retried task: the MR has its comment already
        now = self._clock.now()
        if merge and merge.get("merge_commit_sha"):
            run.merge_commit_sha = str(merge["merge_commit_sha"])
        for cluster_id in run.clusters:
            self._registry.record_upgrade(cluster_id, UpgradeRecord(
                run_id=run_id, from_version=run.from_versions[cluster_id], to_version=run.target_version,
                outcome="succeeded", at=now, merge_request_url=run.merge_request_url), run.target_version)
        self._state.put_batch_result(BatchResult(batch=run.batch, target_version=run.target_version,
                                                 status="succeeded", run_id=run_id, at=now))
        run.status, run.stage, run.finished_at = RunStatus.SUCCEEDED, "done", now
        self._state.put_run(run)
        if not retried:
            self._comment(run.gitlab_project, run.merge_request_iid,
                          f"✅ GUARD: batch `{run.batch}` validated on {run.target_version}. "
                          f"Clusters: {', '.join(run.clusters)}. Run `{run_id}`.")
        self._state.release_lock(run.batch, run_id)
        return {"summary": {"run_id": run_id, "batch": run.batch, "target_version": run.target_version,
                            "status": "succeeded", "clusters": run.clusters,
                            "merge_request_url": run.merge_request_url}}

    def fail(self, run_id: str, stage: str, error: dict[str, Any] | None) -> FailureSummary:
        run = self._state.get_run(run_id)
        retried = run.status == RunStatus.FAILED and run.stage == stage  # the MR has its comment already
        now = self._clock.now()
        summary = explain(stage, error)
        if stage == "rollback_not_created":
            summary.error = "RollbackNotCreated"
            summary.cause = (f"validation failed and rollback.auto_create_mr is false, so no rollback MR was opened: "
                             f"{', '.join(run.clusters)} still run {run.target_version}; roll back by hand to "
                             + ", ".join(f"{c}={v}" for c, v in run.from_versions.items())
                             + (f". Validation: {summary.cause}" if summary.cause else ""))
        if summary.error == "RollbackMergeRequestClosed" and "closed" not in summary.cause:
            summary.cause = (f"the rollback merge request was closed without being merged: "
                             f"{', '.join(run.clusters)} still run {run.target_version}, which failed validation")
        if summary.error == "MergeRequestClosed" and run.merge_request_url and "closed" not in summary.cause:
            summary.cause = (f"merge request {run.merge_request_url} was closed without being merged; "
                             "nothing was deployed")
        run.status, run.stage, run.finished_at = RunStatus.FAILED, stage, now
        run.error, run.cause = summary.error, summary.cause
        self._state.put_run(run)
        self._state.put_batch_result(BatchResult(batch=run.batch, target_version=run.target_version,
                                                 status="failed", run_id=run_id, at=now))
        if run.merge_request_url:
            self._state.delete_task_token(run.merge_request_url)
        if not retried:
            self._comment(run.gitlab_project, run.merge_request_iid,
                          f"❌ GUARD: batch `{run.batch}` → {run.target_version} failed at **{stage}**: "
                          f"`{summary.error}`\n\n{summary.cause}")
        self._state.release_lock(run.batch, run_id)
        return summary

    def _comment(self, project: str, iid: int | None, body: str) -> None:
        # A comment is courtesy; failing to post one must not change the recorded outcome.
        if self._repo is None or iid is None:
            return
        try:
            self._repo.comment(project, iid, body)
        except GuardError as e:
            self._warn("could not comment on the merge request", extra={"error": str(e)})
