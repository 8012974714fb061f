"""Human decisions from the merge request: `/guard proceed` or `/guard rollback`.

`request` is the `AwaitDecision` task (.waitForTaskToken): it comments the evidence on the
upgrade MR and stores the token (kind "decision") against the MR. A GitLab "Note Hook" is
read by `parse_note` and acted on by `decide`: a command from a user with at least Maintainer
access to the project (checked through the GitLab API, never trusted from the payload)
completes the wait with `{"decision": "proceed"|"rollback", "by": <username>}`; anyone else
gets a reply and is ignored. The webhook has already verified the token and filtered the
event name, and runs `decide` once per delivery (`guard.stores.deliveries`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from guard.errors import ExternalServiceError, GuardError, InvalidInput, TaskNoLongerWaiting
from guard.outbound import untrusted_inline
from guard.ports import Clock, GitOpsRepo, ProjectMembers, TaskCallbacks
from guard.redact import redact
from guard.services.analysis import analysis_markdown
from guard.services.failure_report import SUMMARY_ROWS, failure_markdown
from guard.services.report import cluster_owners, owners_line
from guard.services.telling import doubts, duration, no_answer
from guard.services.webhook_payload import URL_MAX_BYTES, child, integer, json_object, text
from guard.stores.deliveries import WebhookResult
from guard.stores.failure import DecisionRecord, FailureStore
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, TaskTokenRecord
from guard.vocabulary.outcomes import ChangeKind
from guard.vocabulary.stages import Stage

MAINTAINER = 40  # GitLab access levels: 30 Developer, 40 Maintainer, 50 Owner
DECISION_HEADING = "**GUARD needs a decision**"  # starts the question `request` posts; answers come after it
_COMMAND = re.compile(r"^\s*/guard\s+(\S+)\s*$", re.I | re.M)


class DecisionRequested(BaseModel):
    merge_request_url: str
    reason: str


class DecisionTaken(BaseModel):
    """What the execution continues with (`$.decision`): the webhook's task result, or the same read after
    the wait timed out. `by` is None (and `timed_out` true) when GitLab confirms no Maintainer answered."""

    decision: Literal["proceed", "rollback"]
    by: str | None
    timed_out: bool = False


def parse_command(note: str) -> str | None:
    """`proceed` / `rollback` / another word after `/guard`, or None when the note has no command."""
    match = _COMMAND.search(note or "")
    return match.group(1).lower() if match else None


class NoteCommand(BaseModel):
    """A `/guard <word>` comment on a merge request, as a Note Hook delivers it."""

    merge_request_url: str
    merge_request_iid: int | None
    command: str
    username: str
    user_id: int | None  # whose access level `decide` asks GitLab for


_COMMAND_SHOWN = 40  # a longer "command" is unknown anyway; replies and answers quote only its start


def parse_note(body: str) -> NoteCommand | WebhookResult:
    """The `/guard` command in a Note Hook body, or the answer for a note that carries none.

    Stateless and cheap, so plain comments are answered before anything is read or recorded.
    A body that is not a JSON object, a field of the wrong type, or a command without its merge
    request, is InvalidInput.
    """
    payload = json_object(body)
    attrs = child(payload, "object_attributes", "object_attributes", required=True)
    if text(attrs, "noteable_type", "object_attributes.noteable_type") != "MergeRequest":
        return WebhookResult(status=200, message="ignored: not a merge request comment")
    # GitLab 16.11+ sends a Note Hook when a comment is edited (`action: update`; older ones have no
    # action). Only a new comment is a command: an edit of an old one (even of the decision itself) is
    # not a second answer, and acting on it would let an edit rewrite a decision already taken.
    if text(attrs, "action", "object_attributes.action") == "update":
        return WebhookResult(status=200, message="ignored: an edited comment is not a new command")
    if attrs.get("system") is True:
        return WebhookResult(status=200, message="ignored: a system note")
    command = parse_command(text(attrs, "note", "object_attributes.note") or "")
    if command is None:
        return WebhookResult(status=200, message="ignored: no /guard command")
    mr = child(payload, "merge_request", "merge_request")
    url = (text(mr, "url", "merge_request.url", max_bytes=URL_MAX_BYTES)
           or text(mr, "web_url", "merge_request.web_url", max_bytes=URL_MAX_BYTES))
    if not url:
        raise InvalidInput("note hook has no merge_request.url")
    user = child(payload, "user", "user")
    if len(command) > _COMMAND_SHOWN:
        command = command[:_COMMAND_SHOWN] + "…"
    return NoteCommand(merge_request_url=url, merge_request_iid=integer(mr, "iid", "merge_request.iid"),
                       command=command, username=text(user, "username", "user.username") or "someone",
                       user_id=integer(user, "id", "user.id"))


class DecisionService:
    """Asks for and reads `/guard` decisions.

    A note written by GUARD itself is never a command: GitLab sends a Note Hook for GUARD's own notes
    too, and those can quote `/guard proceed` (the question lists it; an LLM's analysis could carry it).
    GUARD's accounts are the token's own (`members.current_user()`, asked of GitLab once) and
    `bot_usernames` (config `gitlab.bot_usernames`).
    """

    def __init__(self, state: StateStore, failures: FailureStore, sfn: TaskCallbacks | None,
                 members: ProjectMembers | None, repo: GitOpsRepo | None, clock: Clock,
                 timeout_hours: float = 24, bot_usernames: Iterable[str] = (),
                 registry: ClusterRegistry | None = None) -> None:
        self._state = state
        self._failures = failures
        self._sfn = sfn
        self._members = members
        self._repo = repo
        self._clock = clock
        self._timeout_hours = timeout_hours
        self._bot_usernames = frozenset(u.lower() for u in bot_usernames)
        self._registry = registry  # whose clusters these are: their owners are mentioned on the question

    # ------------------------------------------------------------------ AwaitDecision
    def request(self, run_id: str, task_token: str, reason: str | None = None) -> DecisionRequested:
        """Comment the evidence and the two commands on the upgrade MR; store the decision token."""
        run = self._state.get_run(run_id)
        if not run.merge_request_url or run.merge_request_iid is None:
            raise ExternalServiceError(f"run '{run_id}' has no merge request to ask for a decision on")
        if self._repo is None:
            raise ExternalServiceError("GitLab is unavailable; cannot ask for a decision")
        # Carries cluster text, so it is made inert. Without a reason, what validation said, in its own word.
        found = doubts(self._state, run)
        why = untrusted_inline(reason or run.cause or (f"validation did not pass: {found.text()}" if found
                                                      else "validation did not pass"))
        # Token first: a command posted right after the comment must find it.
        self._state.put_task_token(TaskTokenRecord(merge_request_url=run.merge_request_url, task_token=task_token,
                                                   run_id=run_id, kind=ChangeKind.DECISION),
                                   self._clock.now(), hours=self._timeout_hours + 24)
        owners = owners_line(cluster_owners(list(self._registry.get_many(run.clusters).values()))) \
            if self._registry is not None else None
        body = "\n".join([
            f"⏸️ {DECISION_HEADING}: batch `{run.batch}` → {run.target_version} ({why}).", "",
            *([owners, ""] if owners else []),
            "A Maintainer replies with one of:", "",
            "- `/guard proceed` — accept the new version and finish the upgrade",
            "- `/guard rollback` — open a rollback merge request", "",
            f"Without an answer within {duration(self._timeout_hours)} GUARD rolls back.", "",
            "## Evidence", "", failure_markdown(self._failures.get_evidence(run_id, SUMMARY_ROWS)),
            analysis_markdown(self._failures.get_analysis(run_id)),
        ])
        try:
            self._repo.comment(run.gitlab_project, run.merge_request_iid, redact(body))
        except GuardError:
            # Nobody was asked, so nobody answers this token: it must not outlive the failed task (a retry
            # stores a fresh one). Only this token: a retry may have stored its own meanwhile.
            self._state.delete_task_token(run.merge_request_url, task_token=task_token)
            raise
        run.stage = Stage.WAITING_FOR_DECISION
        self._state.put_run(run)
        return DecisionRequested(merge_request_url=run.merge_request_url, reason=why)

    # ------------------------------------------------------------------ Note Hook
    def decide(self, note: NoteCommand) -> WebhookResult:
        """Act on a `/guard` command (parsed by `parse_note`); the webhook runs this once per delivery."""
        url = note.merge_request_url
        waiting = self._state.get_task_token(url)
        if waiting is None or waiting.kind != ChangeKind.DECISION:
            # Not final: nothing was done; should a decision be awaited later, a resend of this comment applies.
            return WebhookResult(status=200, message="ignored: no GUARD decision waits on this merge request",
                                 final=False)
        if self.written_by_guard(note.user_id, note.username):
            # Final, and no reply: answering its own note would make GUARD talk to itself.
            return WebhookResult(status=200, message=f"ignored: {note.username} is GUARD's own account")
        run = self._state.get_run(waiting.run_id)
        iid = note.merge_request_iid or run.merge_request_iid or 0
        username, command = note.username, note.command
        if command not in ("proceed", "rollback"):
            self._reply(run.gitlab_project, iid, f"@{username} unknown GUARD command `{command}`; "
                                                 "use `/guard proceed` or `/guard rollback`.")
            return WebhookResult(status=200, message=f"ignored: unknown command {command!r}")
        level = self._level(run.gitlab_project, note.user_id)
        if level is None or level < MAINTAINER:
            self._reply(run.gitlab_project, iid,
                        f"@{username} only a Maintainer (or Owner) of this project can decide for GUARD; "
                        f"`/guard {command}` was ignored.")
            return WebhookResult(status=200, message=f"ignored: {username} is not a Maintainer")
        decision: Literal["proceed", "rollback"] = "proceed" if command == "proceed" else "rollback"
        try:
            self._sfn_success(waiting, {"decision": decision, "by": username})
        except TaskNoLongerWaiting as e:
            self._state.delete_task_token(url, task_token=waiting.task_token)
            return WebhookResult(status=200, message=f"execution no longer waiting ({e})")
        self._state.delete_task_token(url, task_token=waiting.task_token)
        self._failures.put_decision(DecisionRecord(run_id=waiting.run_id, decision=decision, by=username,
                                                   at=self._clock.now(), merge_request_url=url))
        self._reply(run.gitlab_project, iid, f"👍 GUARD: @{username} decided **{decision}**.")
        return WebhookResult(status=200, message=f"run {waiting.run_id}: {decision} by {username}")

    # ------------------------------------------------------------------ reading the MR (reconciler, timeout)
    def find_answer(self, project: str, iid: int, merge_request_url: str) -> NoteCommand | None:
        """The first `/guard proceed|rollback` from a Maintainer posted after GUARD's last question on MR
        `iid`, read from its notes (what a lost Note Hook would have delivered); None when there is none."""
        if self._repo is None:
            raise ExternalServiceError("GitLab is unavailable; cannot read the merge request's comments")
        notes = self._repo.list_notes(project, iid)
        asked = [i for i, note in enumerate(notes) if DECISION_HEADING in note.body]
        if not asked:
            return None  # the question is not posted: nothing can answer it
        for note in notes[asked[-1] + 1:]:
            command = parse_command(note.body)
            if note.system or command not in ("proceed", "rollback"):
                continue
            if self.written_by_guard(note.author_id, note.author_username):
                continue  # GUARD's own notes (its question lists the commands) decide nothing
            if not self.is_maintainer(project, note.author_id):
                continue  # the webhook answered (and ignored) them already
            return NoteCommand(merge_request_url=merge_request_url, merge_request_iid=iid, command=command,
                               username=note.author_username or "someone", user_id=note.author_id)
        return None

    def after_timeout(self, run_id: str) -> DecisionTaken:
        """The `AwaitDecision` wait timed out: ask GitLab once more before saying nobody answered.

        A Maintainer's command found in the notes (its Note Hook was lost, or the reconciler had not run
        yet) is applied as if delivered: recorded, acknowledged on the MR, and returned. Only when the notes
        confirm there is none does GUARD say "no Maintainer answered" and roll back. GitLab unreadable
        raises (the state machine then rolls back without claiming anything about the answers).
        """
        run = self._state.get_run(run_id)
        if not run.merge_request_url or run.merge_request_iid is None:
            raise ExternalServiceError(f"run '{run_id}' has no merge request a decision was asked on")
        # The execution stopped waiting on the token: a late webhook or the reconciler must not answer it.
        # First, so a GitLab failure below (the state machine then rolls back) leaves no token behind.
        self._state.delete_task_token(run.merge_request_url, run_id=run_id)
        answer = self.find_answer(run.gitlab_project, run.merge_request_iid, run.merge_request_url)
        if answer is None:
            # Recorded, so the rollback MR, its comments, Slack and the outcome say nobody decided (not a person).
            self._failures.put_decision(DecisionRecord(
                run_id=run_id, decision="rollback", by=None, at=self._clock.now(),
                merge_request_url=run.merge_request_url, timed_out=True, timeout_hours=self._timeout_hours))
            self._reply(run.gitlab_project, run.merge_request_iid,
                        f"⌛ GUARD: {no_answer(self._timeout_hours)} (`/guard proceed` or `/guard rollback`), "
                        "so GUARD rolls back: a rollback merge request follows.")
            return DecisionTaken(decision="rollback", by=None, timed_out=True)
        decision: Literal["proceed", "rollback"] = "proceed" if answer.command == "proceed" else "rollback"
        self._failures.put_decision(DecisionRecord(run_id=run_id, decision=decision, by=answer.username,
                                                   at=self._clock.now(), merge_request_url=run.merge_request_url))
        self._reply(run.gitlab_project, run.merge_request_iid,
                    f"👍 GUARD: @{answer.username} decided **{decision}** (read from this merge request when the "
                    "wait ended: the comment's webhook did not reach GUARD).")
        return DecisionTaken(decision=decision, by=answer.username)

    def written_by_guard(self, user_id: int | None, username: str) -> bool:
        """Whether the note's author is one of GUARD's accounts (configured, or the token's own)."""
        if username.lower() in self._bot_usernames:
            return True
        if self._members is None or user_id is None:
            return False
        return self._members.current_user().id == user_id

    def is_maintainer(self, project: str, user_id: int | None) -> bool:
        """Whether the user may decide (Maintainer or Owner, asked of GitLab)."""
        level = self._level(project, user_id)
        return level is not None and level >= MAINTAINER

    def _level(self, project: str, user_id: int | None) -> int | None:
        if self._members is None or user_id is None:
            return None
        return self._members.access_level(project, user_id)

    def _sfn_success(self, waiting: TaskTokenRecord, output: dict[str, str]) -> None:
        if self._sfn is None:
            raise ExternalServiceError("no Step Functions client")
        self._sfn.send_task_success(taskToken=waiting.task_token, output=json.dumps(output))

    def _reply(self, project: str, iid: int, body: str) -> None:
        if self._repo is None or not iid:
            return
        # A reply is courtesy; the decision (or its refusal) stands without it.
        with contextlib.suppress(GuardError):
            self._repo.comment(project, iid, body)
