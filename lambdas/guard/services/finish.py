"""The last task of every path: record the outcome (`services.outcome`) and name the failure.

On failure it turns the state machine's `{Error, Cause}` into an error name and a cause a
person can act on; the Fail state reports exactly that.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from guard.core.run import RunRecord
from guard.digest import bounded, names_digest, versions_digest
from guard.errors import (
    FluxSyncFailed,
    GuardError,
    MergeRequestClosed,
    MergeRequestFailed,
    MergeRequestTimeout,
    PrecheckFailed,
    RollbackFailed,
    RollbackMergeRequestClosed,
    RollbackNotCreated,
    SidecarRestartFailed,
    UpgradeFailed,
    ValidationError,
    ValidationFailed,
)
from guard.outbound import CAUSE_LIMIT, cause, untrusted_block
from guard.ports import Clock, GitOpsRepo
from guard.services.observation import AT_END, RegistryObserver
from guard.services.outcome import OutcomeRecorder
from guard.services.telling import doubts, proceeded
from guard.stores.failure import FailureStore
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import Outcome
from guard.vocabulary.stages import FailedStage

# What each stage's failure is called when the error itself is a generic one.
_STAGE_ERRORS: dict[FailedStage, type[Exception]] = {
    FailedStage.MERGE_TIMEOUT: MergeRequestTimeout,
    FailedStage.PRECHECKS: PrecheckFailed,
    FailedStage.MERGE: MergeRequestFailed,
    FailedStage.FLUX: FluxSyncFailed,
    FailedStage.SIDECARS: SidecarRestartFailed,
    FailedStage.VALIDATE: ValidationError,
    FailedStage.VALIDATION: ValidationFailed,
    FailedStage.ROLLBACK: RollbackFailed,
}
_GENERIC = ("", "States.ALL", "States.TaskFailed", "States.Timeout")


class FailureSummary(BaseModel):
    """RecordFailure's result (`$.failure`): what the Fail state reports, and where to act."""

    error: str
    cause: str
    merge_request_url: str | None = None  # the upgrade MR (the rollback MR is named in the cause)
    stage: str | None = None  # where the run failed


def _clusters(clusters: list[str]) -> dict[str, Any]:
    """A summary's clusters: the first few and how many. The summary is state data (256 KB), so it must not
    grow with the batch; the run record has every cluster."""
    return {"clusters": bounded(clusters), "cluster_count": len(clusters)}


def explain(stage: str, error: dict[str, Any] | None) -> FailureSummary:
    """Error name + readable cause from a Catch's `{Error, Cause}` (a Lambda's Cause is JSON)."""
    where = FailedStage.parse(stage)
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
    if where == FailedStage.MERGE_TIMEOUT or name in _GENERIC:
        name = _STAGE_ERRORS.get(where, UpgradeFailed).__name__
    if where == FailedStage.MERGE_TIMEOUT:
        message = "the merge request was not merged before the wait timed out; nothing was deployed"
    return FailureSummary(error=name, cause=message or f"{name} during {stage}")


class FinishService:
    """`observer` reads what the clusters run once the outcome is recorded (`OutcomeRecorder`)."""

    def __init__(self, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo | None, clock: Clock,
                 log_warning: Callable[..., Any] | None = None, observer: RegistryObserver | None = None,
                 failures: FailureStore | None = None) -> None:
        self._state = state
        self._failures = failures
        self._repo = repo
        self._log_warning = log_warning
        self._outcomes = OutcomeRecorder(registry, state, repo, clock, log_warning, observer=observer)

    def succeed(self, run_id: str, merge: dict[str, Any] | None) -> dict[str, Any]:
        run = self._state.get_run(run_id)
        if merge and merge.get("merge_commit_sha"):
            run.merge_commit_sha = str(merge["merge_commit_sha"])
        # A Maintainer's `/guard proceed` over an inconclusive or failing validation is not a validation.
        decision = self._failures.get_decision(run_id) if self._failures else None
        override = (proceeded(decision.by, doubts(self._state, run))
                    if decision and decision.decision == "proceed" and decision.by else None)
        said = (f"☑️ GUARD: batch `{run.batch}` → {run.target_version} accepted without a passing validation: "
                f"{override}." if override else f"✅ GUARD: batch `{run.batch}` validated on {run.target_version}.")
        run = self._outcomes.record(
            run, Outcome.SUCCEEDED, versions={c: run.target_version for c in run.clusters},
            comment=(run.merge_request_iid, f"{said} Clusters: {names_digest(run.clusters)}. Run `{run_id}`."))
        summary: dict[str, Any] = {"run_id": run_id, "batch": run.batch, "target_version": run.target_version,
                                   "status": Outcome.SUCCEEDED, "stage": run.stage, "validated": override is None,
                                   "merge_request_url": run.merge_request_url, **_clusters(run.clusters)}
        if override:
            summary["decision"] = override
        disagreed = [n for n in run.registry_notes if n.startswith(AT_END)]
        if disagreed:  # the execution's output says it too: a success where a cluster runs something else
            summary["registry_notes"] = bounded(disagreed)  # the output is state data: the run record has them all
            summary["registry_notes_count"] = len(disagreed)
        return {"summary": summary}

    def prechecked(self, run_id: str) -> dict[str, Any]:
        """A dry run whose prechecks all passed: record it on the run and release the lock. Nothing else
        is written (no MR, no registry change, no batch result). The summary is the execution's output (state
        data): it counts the prechecks per result and names the first clusters' (`guard status` shows all)."""
        run = self._outcomes.record(self._state.get_run(run_id), Outcome.PRECHECKED)
        prechecks: dict[str, str] = {}
        for cluster in run.clusters:
            report = self._state.get_precheck(run_id, cluster)
            prechecks[cluster] = ("missing" if report is None else "passed" if report.passed else "failed")
        return {"summary": {"run_id": run_id, "batch": run.batch, "target_version": run.target_version,
                            "status": Outcome.PRECHECKED, "stage": run.stage, "dry_run": True,
                            **_clusters(run.clusters),
                            "prechecks": {c: prechecks[c] for c in bounded(run.clusters)},
                            "precheck_counts": dict(Counter(prechecks.values())), "merge_request_url": None}}

    def fail(self, run_id: str, stage: str, error: dict[str, Any] | None) -> FailureSummary:
        run = self._state.get_run(run_id)
        where = FailedStage.parse(stage)
        summary = explain(stage, error)
        if where == FailedStage.ROLLBACK_NOT_CREATED:
            summary.error = RollbackNotCreated.__name__
            summary.cause = (f"validation did not pass and rollback.auto_create_mr is false, so no rollback MR was "
                             f"opened: {names_digest(run.clusters)} still run {run.target_version}; roll back by hand "
                             "to " + versions_digest(run.from_versions, sep="=")
                             + (f". Validation: {summary.cause}" if summary.cause else ""))
        if summary.error == RollbackMergeRequestClosed.__name__ and "closed" not in summary.cause:
            summary.cause = (f"the rollback merge request was closed without being merged: "
                             f"{names_digest(run.clusters)} still run {run.target_version}")
        if where == FailedStage.MERGE_TIMEOUT:
            summary.cause = self._after_merge_timeout(run)
        if summary.error == MergeRequestClosed.__name__ and run.merge_request_url and "closed" not in summary.cause:
            summary.cause = (f"merge request {run.merge_request_url} was closed without being merged; "
                             "nothing was deployed")
        # Each cause above is a digest already; this cut is the last resort for one that is not (a raw error).
        # The execution's cause is all the console shows of a failed run: it names the MR to act on.
        url = run.merge_request_url
        where_to_act = f" (merge request {url})" if url and url not in summary.cause else ""
        summary.cause = cause(summary.cause, CAUSE_LIMIT - len(where_to_act)) + where_to_act
        summary.merge_request_url, summary.stage = url, where.value
        self._outcomes.record(
            run, Outcome.FAILED, failed_stage=where, error=summary.error, cause=summary.cause,
            comment=(run.merge_request_iid, f"❌ GUARD: batch `{run.batch}` → {run.target_version} failed at "
                                            f"**{stage}**: `{summary.error}`\n\n{untrusted_block(summary.cause)}"))
        return summary

    def _after_merge_timeout(self, run: RunRecord) -> str:
        """The truth about an MR whose wait timed out, from GitLab: "nothing was deployed" only when GitLab
        confirms it is not merged (then GUARD closes it, so nobody merges it unwatched later)."""
        url = run.merge_request_url or "the merge request"
        if run.merge_request_url:
            # GUARD stopped waiting: a late webhook or the reconciler must not act on the token any more.
            self._state.delete_task_token(run.merge_request_url)
        if self._repo is None or run.merge_request_iid is None:
            return (f"{url} was not merged before the wait timed out, as far as GUARD saw, and GitLab could not be "
                    f"asked: if it was merged, {names_digest(run.clusters)} may run {run.target_version} unvalidated")
        try:
            mr = self._repo.get_merge_request(run.gitlab_project, run.merge_request_iid)
            if mr.state == "opened":
                mr = self._repo.close_merge_request(run.gitlab_project, run.merge_request_iid)
        except GuardError as e:
            self._warn("could not check the timed-out merge request", e)
            return (f"{url} was not merged before the wait timed out, as far as GUARD saw, and GitLab could not be "
                    f"asked ({e}): if it was merged, {names_digest(run.clusters)} may run {run.target_version} "
                    "unvalidated")
        if mr.state == "merged":
            who = f" by {mr.merged_by}" if mr.merged_by else ""
            back = versions_digest(run.from_versions, sep="=")
            return (f"{url} was merged{who}, but GUARD did not see the merge before its wait timed out (the webhook "
                    f"was lost or late): nothing was validated and {names_digest(run.clusters)} may now run "
                    f"{run.target_version}. Check them and validate by hand, or roll back to {back}")
        done = "GUARD closed it" if mr.state == "closed" else f"it is {mr.state}"
        return f"{url} was not merged before the wait timed out ({done}); nothing was deployed"

    def _warn(self, message: str, error: Exception) -> None:
        if self._log_warning is not None:
            self._log_warning(message, extra={"error": str(error)})
