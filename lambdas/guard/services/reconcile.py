"""Reconciler: never trust the webhook alone.

GitLab never redelivers a webhook it failed to deliver (VENDOR-FACTS), so a lost "merge",
"close" or `/guard` comment would leave an execution waiting until its timeout. Every few
minutes this asks GitLab about every merge request an execution waits on and settles the wait
exactly as the webhook would have:

- upgrade / rollback token, MR merged -> SendTaskSuccess with the webhook's output;
- upgrade / rollback token, MR closed -> SendTaskFailure with the webhook's error;
- decision token -> the first `/guard proceed|rollback` from a Maintainer posted after GUARD's
  question, applied through `DecisionService.decide` (as the Note Hook would);
- anything else (still open, no answer yet) -> nothing.

It also follows the rollback MRs GUARD stopped watching and left to a person (`UnwatchedRollback`):
merged -> once the clusters run the rollback's versions, the registry is set to what they run (through
the `RegistryObserver`), the MR says so and GUARD stops following it; closed -> it stops following.

Both paths share `resume_on_merge_request` / `decide`, which delete the token after answering;
when they race, the second answer meets TaskNoLongerWaiting and only deletes the (gone) token.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from guard.clock import SystemClock
from guard.core.run import RunRecord
from guard.digest import versions_digest
from guard.errors import ExternalServiceError, GuardError, OrphanTaskToken, TransientError
from guard.ports import Clock, GitOpsRepo, MergeRequest, TaskCallbacks
from guard.services.decision import DecisionService
from guard.services.gates import MergeGateService
from guard.services.observation import RegistryObserver
from guard.services.webhook import resume_on_merge_request
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, TaskTokenRecord, UnwatchedRollback
from guard.vocabulary.outcomes import ChangeKind

_IID = re.compile(r"/-/merge_requests/(\d+)/?$")
_UNKNOWN_USER = "someone (the webhook was lost; found by GUARD's reconciler)"


class ReconcileReport(BaseModel):
    """What one pass did: one line per token settled, cleaned (an orphan) or not checked."""

    checked: int = 0
    settled: list[str] = Field(default_factory=list)
    cleaned: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    tended: list[str] = Field(default_factory=list)  # what GUARD did to keep an open MR mergeable
    indexed: int = 0  # items written before the watch index that this pass gave its attribute


def merge_request_iid(url: str) -> int | None:
    """The iid at the end of a merge request's web URL (`…/-/merge_requests/<iid>`)."""
    match = _IID.search(url)
    return int(match.group(1)) if match else None


class ReconcileService:
    """`decisions` builds the decision service on first use (only decision tokens need it);
    `log_warning(message, extra=...)` hears about the orphans and unreadable items cleaned or skipped."""

    def __init__(self, state: StateStore, sfn: TaskCallbacks, repo: GitOpsRepo,
                 decisions: Callable[[], DecisionService], log_warning: Callable[..., Any] | None = None,
                 registry: ClusterRegistry | None = None, observer: RegistryObserver | None = None,
                 gates: MergeGateService | None = None, clock: Clock | None = None) -> None:
        self._gates = gates  # None: open MRs are only checked, not tended (services.gates)
        self._clock = clock or SystemClock()
        self._state = state
        self._sfn = sfn
        self._repo = repo
        self._decisions = decisions
        self._warn = log_warning or (lambda *a, **k: None)
        self._registry = registry
        self._observer = observer  # None: rollback MRs left to a person are not followed

    def run(self) -> ReconcileReport:
        """Check every stored token once. One MR that cannot be checked does not stop the others;
        the pass then raises (TransientError when every failure was transient) so the failure shows.
        An orphan (its run has no record, or its URL names no MR) can never be settled: it is deleted
        with a warning and does not fail the pass, or it would fail every pass until its TTL."""
        report = ReconcileReport()
        transient = True
        report.indexed = self._index_older_items()
        for waiting in self._state.list_task_tokens(on_unreadable=self._unreadable):
            report.checked += 1
            try:
                message = self._reconcile(waiting, report)
            except GuardError as e:
                transient = transient and isinstance(e, TransientError)
                report.failed.append(f"{waiting.merge_request_url}: {e}")
                continue
            if message:
                report.settled.append(f"{waiting.merge_request_url}: {message}")
        for left in self._state.list_unwatched_rollbacks() if self._observer is not None else []:
            report.checked += 1
            try:
                message = self._follow(left)
            except GuardError as e:
                transient = transient and isinstance(e, TransientError)
                report.failed.append(f"{left.merge_request_url}: {e}")
                continue
            if message:
                report.settled.append(f"{left.merge_request_url}: {message}")
        if report.failed:
            error = TransientError if transient else ExternalServiceError
            raise error(f"reconciler could not check {len(report.failed)} of {report.checked} merge requests: "
                        + "; ".join(report.failed))
        return report

    def _reconcile(self, waiting: TaskTokenRecord, report: ReconcileReport) -> str | None:
        url = waiting.merge_request_url
        run = self._state.find_run(waiting.run_id)
        iid = merge_request_iid(url)
        if run is None or iid is None:
            self._orphan(waiting, "its run has no record" if run is None else "its URL names no merge request",
                         report)
            return None
        mr = self._repo.get_merge_request(run.gitlab_project, iid)
        if waiting.kind == ChangeKind.DECISION:
            return self._decision(waiting, mr)
        if mr.state == "merged":
            return resume_on_merge_request(self._state, self._sfn, waiting, "merge", mr.merge_commit_sha,
                                           mr.merged_by or _UNKNOWN_USER).message
        if mr.state == "closed":
            return resume_on_merge_request(self._state, self._sfn, waiting, "close", None, _UNKNOWN_USER).message
        if mr.state == "opened" and self._gates is not None:
            self._tend(waiting, run, iid, report)
        return None  # still open (or locked): the wait goes on

    def _tend(self, waiting: TaskTokenRecord, run: RunRecord, iid: int, report: ReconcileReport) -> None:
        """Show what still blocks the MR and keep it mergeable (rebase or regenerate a stale one). A failure
        here is logged, not the pass's: the wait itself is unharmed and the next pass tends it again."""
        assert self._gates is not None
        try:
            result = self._gates.tend_run(run, waiting.kind, iid)
        except GuardError as e:
            self._warn("reconciler could not tend the merge gates", extra={
                "merge_request_url": waiting.merge_request_url, "error": str(e)})
            return
        report.tended.extend(f"{waiting.merge_request_url}: {action}" for action in result.actions)

    def _follow(self, left: UnwatchedRollback) -> str | None:
        """A rollback MR left to a person: once merged and applied, the registry learns what runs."""
        assert self._observer is not None and self._registry is not None
        mr = self._repo.get_merge_request(left.project, left.merge_request_iid)
        if mr.state == "closed":
            self._state.delete_unwatched_rollback(left.merge_request_url)
            return "rollback closed by a person; the clusters keep what they run"
        if mr.state != "merged":
            return None
        clusters = [self._registry.get(cluster_id) for cluster_id in left.versions]
        seen = self._observer.reconcile(clusters, run_id=left.run_id, expected=left.versions)
        if any(seen.observed.get(c) != v for c, v in left.versions.items()):
            return None  # Flux has not applied it everywhere yet: the next pass looks again
        runs = versions_digest(left.versions)  # the first clusters and the count: a note and a report line
        self._repo.comment(left.project, left.merge_request_iid,
                           f"✅ GUARD saw this rollback merged and applied: the clusters run {runs}, and the registry "
                           "says so. GUARD did not validate them; check them if you have not.")
        self._state.delete_unwatched_rollback(left.merge_request_url)
        return f"rollback merged by a person and applied; registry set to {runs}"

    def _orphan(self, waiting: TaskTokenRecord, why: str, report: ReconcileReport) -> None:
        # An execution may still wait on it: nothing could ever resume it, so end its wait now (its Catch
        # records and cleans up) rather than let it sit until its timeout. Gone already: nothing to do.
        with contextlib.suppress(GuardError):
            self._sfn.send_task_failure(taskToken=waiting.task_token, error=OrphanTaskToken.__name__,
                                        cause=f"GUARD's reconciler found this wait's token orphaned ({why}); "
                                              f"nothing could resume it")
        # Only this exact token: a run storing a fresh one on the same MR meanwhile keeps it.
        self._state.delete_task_token(waiting.merge_request_url, task_token=waiting.task_token)
        self._warn("reconciler deleted an orphan task token", extra={
            "merge_request_url": waiting.merge_request_url, "run_id": waiting.run_id, "kind": waiting.kind,
            "reason": why})
        report.cleaned.append(f"{waiting.merge_request_url}: token of run {waiting.run_id!r} deleted ({why})")

    def _index_older_items(self) -> int:
        """Items written before the watch index lack its attribute: index them, or this pass would not see
        them (a no-op once the store's marker says every older item is indexed). A failure is logged, not the
        pass's: what is indexed already is still checked, and the next pass tries again."""
        try:
            return self._state.index_unindexed_watched_items(self._clock.now())
        except GuardError as e:
            self._warn("reconciler could not index the items written before the watch index", extra={"error": str(e)})
            return 0

    def _unreadable(self, key: str, error: Exception) -> None:
        # Left in place (a person may want to see it); it expires with its TTL.
        self._warn("reconciler skipped an unreadable task token item", extra={"pk": key, "error": str(error)})

    def _decision(self, waiting: TaskTokenRecord, mr: MergeRequest) -> str | None:
        """Apply the first Maintainer command after GUARD's question; others were answered by the webhook."""
        decisions = self._decisions()
        answer = decisions.find_answer(mr.project, mr.iid, waiting.merge_request_url)
        return decisions.decide(answer).message if answer is not None else None
