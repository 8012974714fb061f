"""The gates before a merge: say what still blocks GUARD's merge request, and keep it mergeable.

When GUARD opens an upgrade or rollback MR, and on every reconciler pass while an execution waits
on one, `MergeGateService.tend` reads the gates from GitLab (`GitOpsRepo.merge_gates`) and:

- stale (another batch merged first: `detailed_merge_status` need_rebase, or conflicts) -> asks
  GitLab to rebase it; when the rebase conflicts, or GitLab reports conflicts already, regenerates
  the branch from the target's current head: GUARD's version edits re-applied on today's files as
  one commit that replaces the branch (a force push). A person never has to resolve anything, and
  commits made on the target meanwhile are kept;
- writes what still blocks the merge (approvals, a pipeline that must pass, draft, conflicts, ...)
  into a section of the MR description, and into ONE status note, both edited in place and only
  when their text changes (the note is added only once something blocks or GUARD acted);
- with `gitlab.auto_merge`, asks GitLab to merge once the pipeline succeeds.

The merge itself stays a person's (or GitLab's auto-merge) act: GUARD never clicks Merge.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from guard.core.run import RunRecord
from guard.errors import ExternalServiceError
from guard.ports import Clock, FileChange, GitOpsRepo, MergeGates
from guard.services.change import ChangeService
from guard.stores.failure import FailureStore
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import ChangeKind

GATES_HEADING = "### 🚦 What still blocks the merge"
GATES_END = "_GUARD keeps this section up to date while it waits on the merge._"
NOTE_MARKER = "🚦 **GUARD merge status**"
_LAST_ACTION = "Last action by GUARD: "
_RUNNING = frozenset({"created", "waiting_for_resource", "preparing", "pending", "running", "scheduled", "manual"})
_PASSED = frozenset({"success", "skipped"})
_METHODS = {"ff": "fast-forward only", "rebase_merge": "merge commit with semi-linear history",
            "merge": "merge commit"}

Edits = Callable[[str], list[FileChange]]  # the ref to edit on (the target's head) -> GUARD's file edits


class GatesResult(BaseModel):
    """One pass over one MR: what GitLab said, what still blocks, what GUARD did about it."""

    state: str
    detailed_merge_status: str | None = None
    blockers: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)


def blockers(gates: MergeGates) -> list[str]:
    """What still stands before the merge, in words a reviewer acts on; empty when nothing does."""
    found: list[str] = []
    if gates.draft:
        found.append("the merge request is a **draft**: mark it as ready")
    if gates.has_conflicts or gates.detailed_merge_status == "conflict":
        found.append("it **conflicts** with the target branch: GUARD regenerates it from the target's head")
    elif gates.detailed_merge_status == "need_rebase":
        found.append(f"the target branch moved on and the project merges by "
                     f"{_METHODS.get(gates.merge_method, gates.merge_method)}: **a rebase is needed** (GUARD does it)")
    if gates.rebase_in_progress:
        found.append("a **rebase is in progress** in GitLab")
    if gates.approvals_left > 0:
        by = f"; approved by {', '.join('@' + u for u in gates.approved_by)}" if gates.approved_by else ""
        found.append(f"**{gates.approvals_left} more approval{'s' if gates.approvals_left != 1 else ''}** needed "
                     f"({gates.approvals_required} required{by})")
    if gates.pipeline_must_succeed:
        status = gates.pipeline_status
        link = f" ({gates.pipeline_url})" if gates.pipeline_url else ""
        if status is None:
            found.append("**no pipeline** has run on the head commit, and the project requires one to succeed")
        elif status in _RUNNING:
            found.append(f"the **pipeline is {status}**{link}; the project requires it to succeed")
        elif status not in _PASSED:
            found.append(f"the **pipeline {status}**{link}; the project requires it to succeed: fix or re-run it")
    if not gates.discussions_resolved:
        found.append("**unresolved discussions** block the merge")
    if gates.merge_error:
        found.append(f"GitLab reports: {gates.merge_error}")
    if not found and gates.detailed_merge_status not in (None, "mergeable", "unchecked", "checking", "not_open"):
        found.append(f"GitLab reports `{gates.detailed_merge_status}`")
    return found


def with_gates_section(description: str, section: str) -> str:
    """`description` with its gates section replaced by `section` (added at the top when absent)."""
    start = description.find(GATES_HEADING)
    if start >= 0:
        end = description.find(GATES_END, start)
        if end >= 0:
            return description[:start] + section + description[end + len(GATES_END):]
    return f"{section}\n\n{description}" if description else section


def _last_action(description: str) -> str | None:
    start = description.find(GATES_HEADING)
    end = description.find(GATES_END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    for line in description[start:end].splitlines():
        if line.startswith(_LAST_ACTION):
            return line[len(_LAST_ACTION):]
    return None


class MergeGateService:
    """`repo` reads and writes the MR; `auto_merge` asks GitLab to merge once the pipeline succeeds.
    `registry`, `state`, `failures` and `clock` are needed by `tend_run` only (the reconciler's entry)."""

    def __init__(self, repo: GitOpsRepo, *, auto_merge: bool = False, registry: ClusterRegistry | None = None,
                 state: StateStore | None = None, failures: FailureStore | None = None,
                 clock: Clock | None = None) -> None:
        self._repo = repo
        self._auto_merge = auto_merge
        self._registry = registry
        self._state = state
        self._failures = failures
        self._clock = clock

    def tend_run(self, run: RunRecord, kind: ChangeKind, iid: int) -> GatesResult:
        """Tend the upgrade or rollback MR `iid` of `run`, able to regenerate it to the versions it carries."""
        if self._registry is None or self._state is None or self._clock is None:
            raise ExternalServiceError("the merge gates need the registry and the state store to regenerate an MR")
        if kind == ChangeKind.ROLLBACK:
            record = self._failures.get_rollback(run.run_id) if self._failures is not None else None
            if record is None:
                raise ExternalServiceError(f"run '{run.run_id}' has no rollback record to regenerate its MR from")
            versions = dict(record.versions)
            message = f"Roll back Istio {run.target_version} on batch {run.batch}\n\nGUARD run {run.run_id}"
        else:
            versions = {c: run.target_version for c in run.clusters}
            message = f"Upgrade Istio to {run.target_version} on batch {run.batch}\n\nGUARD run {run.run_id}"
        changes = ChangeService(self._registry, self._state, self._repo, self._clock)
        return self.tend(run.gitlab_project, iid, lambda ref: changes.edits(run.gitlab_project, versions, ref),
                         message + "\n\nRegenerated by GUARD on the target branch's current head.")

    def tend(self, project: str, iid: int, edits: Edits, message: str) -> GatesResult:
        """One pass: freshen a stale MR, set auto-merge if asked, and show what still blocks the merge."""
        gates = self._repo.merge_gates(project, iid)
        if gates.state != "opened":
            return GatesResult(state=gates.state, detailed_merge_status=gates.detailed_merge_status)
        mr = self._repo.get_merge_request(project, iid)
        actions: list[str] = []
        if gates.stale and not gates.rebase_in_progress:
            gates, did = self._freshen(project, iid, mr.source_branch, mr.target_branch, gates, edits, message)
            actions.append(did)
            if gates.state != "opened":
                # A person merged or closed it while GUARD freshened it (the reconciler and the task that opened
                # it may both tend it): its gates and notes are history now.
                return GatesResult(state=gates.state, detailed_merge_status=gates.detailed_merge_status,
                                   actions=actions)
        # Only while something is still to come (pipeline, approvals): a mergeable MR is a reviewer's to merge.
        wanted = self._auto_merge and not gates.auto_merge and not gates.stale and not gates.draft \
            and gates.detailed_merge_status != "mergeable"
        if wanted and gates.head_sha and self._repo.set_auto_merge(project, iid, gates.head_sha):
            gates = gates.model_copy(update={"auto_merge": True})
            actions.append("asked GitLab to merge once the pipeline succeeds (auto-merge)")
        found = blockers(gates)
        self._publish(project, iid, mr.description, gates, found, actions)
        return GatesResult(state=gates.state, detailed_merge_status=gates.detailed_merge_status, blockers=found,
                           actions=actions)

    def _freshen(self, project: str, iid: int, source: str, target: str, gates: MergeGates, edits: Edits,
                 message: str) -> tuple[MergeGates, str]:
        """Bring a stale MR onto the target's head: GitLab's rebase, or GUARD's edits again from that head."""
        if not (gates.has_conflicts or gates.detailed_merge_status == "conflict"):
            after = self._repo.rebase_merge_request(project, iid)
            if after.rebase_in_progress:
                return after, f"asked GitLab to rebase onto `{target}`; the rebase is still running"
            if not after.merge_error and not after.stale:
                return after, f"rebased onto the head of `{target}` (another change merged first)"
            why = after.merge_error or "the rebase left it behind the target"
        else:
            why = "it conflicts with the target branch"
        changes = edits(target)
        now = self._repo.merge_gates(project, iid)
        if now.state != "opened":  # merged or closed meanwhile: never push a branch back for it
            return now, f"left alone: it was {now.state} meanwhile ({why})"
        commit = self._repo.replace_branch(project, source, target, changes, message)
        if commit is None:
            return (self._repo.merge_gates(project, iid),
                    f"`{target}` has these versions already; nothing to regenerate ({why})")
        return (self._repo.merge_gates(project, iid),
                f"regenerated from the head of `{target}` ({why}): GUARD's version edits re-applied on today's files "
                f"as commit {commit[:12]}, so nobody has to resolve anything")

    def _publish(self, project: str, iid: int, description: str, gates: MergeGates, found: list[str],
                 actions: list[str]) -> None:
        last = "; ".join(actions) if actions else _last_action(description)
        lines = [GATES_HEADING, ""]
        lines += [f"- {b}" for b in found] or ["- nothing: GitLab reports the merge request mergeable"]
        settings = [f"merge method: {_METHODS.get(gates.merge_method, gates.merge_method)}"]
        if gates.approvals_required:
            settings.append(f"approvals required: {gates.approvals_required}")
        if gates.pipeline_must_succeed:
            settings.append("pipelines must succeed")
        if gates.auto_merge:
            settings.append("auto-merge set")
        lines += ["", "Project: " + ", ".join(settings) + "."]
        if last:
            lines += ["", _LAST_ACTION + last]
        lines += ["", GATES_END]
        section = "\n".join(lines)
        # Only the section is new text; the rest is GitLab's copy, sanitized when it was written.
        updated = with_gates_section(description, section)
        if updated != description:
            self._repo.update_description(project, iid, updated)
        # One note, edited in place, so a reviewer gets no stream of comments; added only once something
        # blocks or GUARD acted, and kept up to date after that.
        self._repo.upsert_note(project, iid, NOTE_MARKER, f"{NOTE_MARKER}\n\n{section}", create=bool(found or actions))
