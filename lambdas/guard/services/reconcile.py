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

Both paths share `resume_on_merge_request` / `decide`, which delete the token after answering;
when they race, the second answer meets TaskNoLongerWaiting and only deletes the (gone) token.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel, Field

from guard.errors import ExternalServiceError, GuardError, TransientError
from guard.ports import GitOpsRepo, MergeRequest, TaskCallbacks
from guard.services.decision import DECISION_HEADING, DecisionService, NoteCommand, parse_command
from guard.services.webhook import resume_on_merge_request
from guard.stores.state import StateStore, TaskTokenRecord
from guard.vocabulary.outcomes import ChangeKind

_IID = re.compile(r"/-/merge_requests/(\d+)/?$")
_UNKNOWN_USER = "someone (the webhook was lost; found by GUARD's reconciler)"


class ReconcileReport(BaseModel):
    """What one pass did: one line per token, and the tokens it could not check."""

    checked: int = 0
    settled: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)


def merge_request_iid(url: str) -> int | None:
    """The iid at the end of a merge request's web URL (`…/-/merge_requests/<iid>`)."""
    match = _IID.search(url)
    return int(match.group(1)) if match else None


class ReconcileService:
    """`decisions` builds the decision service on first use (only decision tokens need it)."""

    def __init__(self, state: StateStore, sfn: TaskCallbacks, repo: GitOpsRepo,
                 decisions: Callable[[], DecisionService]) -> None:
        self._state = state
        self._sfn = sfn
        self._repo = repo
        self._decisions = decisions

    def run(self) -> ReconcileReport:
        """Check every stored token once. One MR that cannot be checked does not stop the others;
        the pass then raises (TransientError when every failure was transient) so the failure shows."""
        report = ReconcileReport()
        transient = True
        for waiting in self._state.list_task_tokens():
            report.checked += 1
            try:
                message = self._reconcile(waiting)
            except GuardError as e:
                transient = transient and isinstance(e, TransientError)
                report.failed.append(f"{waiting.merge_request_url}: {e}")
                continue
            if message:
                report.settled.append(f"{waiting.merge_request_url}: {message}")
        if report.failed:
            error = TransientError if transient else ExternalServiceError
            raise error(f"reconciler could not check {len(report.failed)} of {report.checked} merge requests: "
                        + "; ".join(report.failed))
        return report

    def _reconcile(self, waiting: TaskTokenRecord) -> str | None:
        url = waiting.merge_request_url
        run = self._state.find_run(waiting.run_id)
        iid = merge_request_iid(url)
        if run is None or iid is None:
            raise ExternalServiceError(f"token of run {waiting.run_id!r} names no known run or merge request")
        mr = self._repo.get_merge_request(run.gitlab_project, iid)
        if waiting.kind == ChangeKind.DECISION:
            return self._decision(waiting, mr)
        if mr.state == "merged":
            return resume_on_merge_request(self._state, self._sfn, waiting, "merge", mr.merge_commit_sha,
                                           mr.merged_by or _UNKNOWN_USER).message
        if mr.state == "closed":
            return resume_on_merge_request(self._state, self._sfn, waiting, "close", None, _UNKNOWN_USER).message
        return None  # still open (or locked): the wait goes on

    def _decision(self, waiting: TaskTokenRecord, mr: MergeRequest) -> str | None:
        """Apply the first Maintainer command after GUARD's question; others were answered by the webhook."""
        notes = self._repo.list_notes(mr.project, mr.iid)
        asked = [i for i, note in enumerate(notes) if DECISION_HEADING in note.body]
        if not asked:
            return None  # the question is not posted yet: nothing can answer it
        decisions = self._decisions()
        for note in notes[asked[-1] + 1:]:
            command = parse_command(note.body)
            if note.system or command not in ("proceed", "rollback"):
                continue
            if not decisions.is_maintainer(mr.project, note.author_id):
                continue
            return decisions.decide(NoteCommand(
                merge_request_url=waiting.merge_request_url, merge_request_iid=mr.iid, command=command,
                username=note.author_username or "someone", user_id=note.author_id)).message
        return None
