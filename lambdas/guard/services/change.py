"""The change pipeline's first step, for an upgrade and a rollback alike: bring these
clusters to this per-cluster version map by one merge request.

Open (or find) the branch, commit each cluster's HelmRelease at its version (comments and
formatting kept), open (or find) the MR, and store the paused execution's task token
against it. The rest of the pipeline is shared too: the webhook resumes the execution on
merge, `services.versions` + `services.poll` wait until Flux reports the versions, and
`services.outcome` records how it ended. Every step is idempotent (deterministic branch,
look-up before create), so a retried task lands in the same place.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from pydantic import BaseModel

from guard.core.models import Cluster
from guard.digest import names_digest, versions_digest
from guard.errors import GuardError, TaskTokenNotStored, UnknownCluster
from guard.gitops.istio_install import Install, Location, apply_edits
from guard.ports import Clock, FileChange, GitOpsRepo, MergeRequest
from guard.retry import RetryPolicy, policy
from guard.services.install import planned_changes, read_installs, repo_files
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, TaskTokenRecord, UnwatchedRollback
from guard.vocabulary.outcomes import ChangeKind


class Change(BaseModel):
    """One merge request's worth of change, and how long the execution may wait on it."""

    run_id: str
    kind: ChangeKind
    project: str
    source_branch: str
    target_branch: str
    versions: dict[str, str]  # cluster -> the version its HelmRelease is set to
    title: str
    commit_message: str
    description: str
    wait_hours: float  # the token outlives the state's TimeoutSeconds by a day
    # The MR an earlier attempt of this task opened (its record survived the attempt): a retry that finds it
    # merged or closed watches it as it is, never re-creating its branch.
    known_iid: int | None = None


def edits_section(installs: dict[str, Install], edits: dict[Location, str]) -> str:
    """The MR's list of every version line it changes, and the Istio charts each cluster runs."""
    if not edits:
        return ""
    lines = ["", "", "### Versions this MR changes", "", "| file | what | from | to |", "|---|---|---|---|"]
    lines += [f"| `{loc.path}` | {loc.field} | {loc.current} | {version} |"
              for loc, version in sorted(edits.items(), key=lambda item: (item[0].path, item[0].start))][:60]
    lines += ["", "Charts per cluster, in the order Flux upgrades them (`dependsOn`): "
              + "; ".join(f"`{cid}`: " + " → ".join(c.component for c in install.components)
                          for cid, install in list(installs.items())[:20])]
    return "\n".join(lines)


def upgrade_branch(prefix: str, batch: str, version: str) -> str:
    """Deterministic, so a retried task finds the branch and MR it made the first time."""
    return f"{prefix}/{batch}-{version}"


def short_run_id(run_id: str) -> str:
    """8 readable characters of the run id, plus a hash when that drops anything (no collisions)."""
    clean = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    if len(clean) <= 8:
        return clean or hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{clean[:8].strip('-')}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}"


def rollback_branch(prefix: str, batch: str, run_id: str) -> str:
    """Deterministic per run, so a retried task finds the branch and MR it made the first time."""
    return f"{prefix}/rollback-{batch}-{short_run_id(run_id)}"


class GateTender(Protocol):
    """Shows what still blocks an MR's merge and keeps it mergeable (`services.gates.MergeGateService`)."""

    def tend(self, project: str, iid: int, edits: Callable[[str], list[FileChange]], message: str) -> Any:
        ...


class ChangeService:
    """Opens the merge request of a `Change` and registers the task token that waits on it.

    `needs_person(reason)` raises the alarm for a rollback MR GUARD cannot watch (the handler counts
    the RollbackNeedsPerson metric). `gates`, when given, shows on the opened MR what still blocks its merge."""

    def __init__(self, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo, clock: Clock,
                 needs_person: Callable[[str], Any] | None = None, retry: RetryPolicy | None = None,
                 gates: GateTender | None = None) -> None:
        self._gates = gates
        self._registry = registry
        self._state = state
        self._repo = repo
        self._clock = clock
        self._needs_person = needs_person or (lambda reason: None)
        self._retry = retry or policy(clock.sleep)

    def open(self, change: Change, task_token: str) -> MergeRequest:
        clusters = self._registry.get_many(list(change.versions))
        missing = [c for c in change.versions if c not in clusters]
        if missing:
            raise UnknownCluster(f"clusters missing from the registry: {names_digest(missing)}")
        finished = self._finished(change)
        if finished is not None:
            self._watch(change, finished, task_token)
            return finished
        try:
            self._repo.ensure_branch(change.project, change.source_branch, change.target_branch)
            installs, edits, changes = self._plan(change.project, change.versions, change.source_branch, clusters)
            self._repo.commit_files(change.project, change.source_branch, changes, change.commit_message)
            mr = self._repo.ensure_merge_request(change.project, change.source_branch, change.target_branch,
                                                 title=change.title,
                                                 description=change.description + edits_section(installs, edits))
        except GuardError:
            # A person merged (GitLab then deletes the source branch) or closed the earlier attempt's MR while
            # this retry rebuilt it: watch that MR as it is.
            finished = self._finished(change)
            if finished is None:
                raise
            self._watch(change, finished, task_token)
            return finished
        self._watch(change, mr, task_token)
        if self._gates is not None:
            # Courtesy, never a reason to fail the opening: every reconciler pass shows the gates again.
            with contextlib.suppress(GuardError):
                self._gates.tend(change.project, mr.iid, lambda ref: self.edits(change.project, change.versions, ref),
                                 change.commit_message)
        return mr

    def _finished(self, change: Change) -> MergeRequest | None:
        """The earlier attempt's MR when it is merged or closed already, else None."""
        if change.known_iid is None:
            return None
        mr = self._repo.get_merge_request(change.project, change.known_iid)
        return mr if mr.state in ("merged", "closed") and mr.source_branch == change.source_branch else None

    def _watch(self, change: Change, mr: MergeRequest, task_token: str) -> None:
        """Store this attempt's task token against `mr`: its merge (webhook or reconciler) resumes the task."""
        record = TaskTokenRecord(merge_request_url=mr.web_url, task_token=task_token, run_id=change.run_id,
                                 kind=change.kind)
        try:
            # A retry gets a fresh token: overwrite, the old one belongs to a failed attempt. The MR is open
            # already, so a throttle or a 5xx is tried again here (guard.retry) before the MR is given up.
            self._retry.call("DynamoDB task token", lambda: self._state.put_task_token(
                record, self._clock.now(), hours=change.wait_hours))
        except GuardError as e:
            # boto3 has retried throttling and 5xx already: this is persistent. Without the token no merge
            # can resume the execution, so the MR must not be left looking watched.
            self._unwatched(change, mr, e)

    def edits(self, project: str, versions: dict[str, str], ref: str,
              clusters: dict[str, Cluster] | None = None) -> list[FileChange]:
        """The files that bring these clusters to `versions`, as GUARD edits them on the files at `ref` (the
        source branch when opening; the target's head when a stale MR is regenerated or a rollback is made)."""
        return self._plan(project, versions, ref, clusters)[2]

    def _plan(self, project: str, versions: dict[str, str], ref: str, clusters: dict[str, Cluster] | None
              ) -> tuple[dict[str, Install], dict[Location, str], list[FileChange]]:
        """Every Istio chart of every cluster (guard.gitops.istio_install) at `ref`, where its version really
        lives; refused when a written line also serves clusters outside the change."""
        clusters = clusters if clusters is not None else self._registry.get_many(list(versions))
        missing = [c for c in versions if c not in clusters]
        if missing:
            raise UnknownCluster(f"clusters missing from the registry: {names_digest(missing)}")
        files = repo_files(self._repo, project, ref)
        installs = read_installs(files, {c: clusters[c] for c in versions})
        edits = planned_changes(files, installs, versions, self._registry.all(), project)
        changes = [FileChange(path=path, content=text) for path, text in apply_edits(files, edits).items()]
        return installs, edits, changes

    def _unwatched(self, change: Change, mr: MergeRequest, error: GuardError) -> NoReturn:
        """Make an MR GUARD cannot watch safe, say so on it, and fail the task with TaskTokenNotStored."""
        why = f"GUARD could not store the task token that waits on this merge request ({error})"
        if change.kind == ChangeKind.ROLLBACK:
            # GUARD never closes a rollback MR: it undoes a change that hurt, and a person decides about it.
            back = versions_digest(change.versions)
            self._say(change.project, mr.iid,
                      f"⚠️ {why}, so GUARD is not watching it: merging it will not resume GUARD, and nothing will "
                      f"verify the rollback. It stays open: a person must merge it and check that the clusters run "
                      f"the previous versions ({back}), or close it.")
            self._needs_person(f"rollback merge request {mr.web_url} is open and unwatched: {why}")
            with contextlib.suppress(GuardError):  # the reconciler follows it, if DynamoDB takes the record
                self._state.put_unwatched_rollback(UnwatchedRollback(
                    merge_request_url=mr.web_url, merge_request_iid=mr.iid, project=change.project,
                    run_id=change.run_id, versions=change.versions), self._clock.now())
            raise TaskTokenNotStored(
                f"rollback merge request {mr.web_url} was opened but GUARD could not store its task token "
                f"({error}); it is left open, unwatched: a person must merge it (and check {back}) or close it"
            ) from error
        try:
            state = self._repo.close_merge_request(change.project, mr.iid).state
        except GuardError:
            state = "unknown"
        done = {
            "closed": "GUARD closed it, so nothing is deployed unwatched; run the upgrade again",
            "merged": "it was merged already: the clusters may run the new version without validation; check them",
        }.get(state, "GUARD could not close it: close it by hand, a merge would deploy without validation or "
                     "rollback")
        self._say(change.project, mr.iid, f"🛑 {why}, so a merge would not resume GUARD. {done}.")
        raise TaskTokenNotStored(
            f"merge request {mr.web_url} was opened but GUARD could not store its task token ({error}); "
            f"{done}") from error

    def _say(self, project: str, iid: int, body: str) -> None:
        # A comment is courtesy; the error raised after it is what the execution fails with.
        with contextlib.suppress(GuardError):
            self._repo.comment(project, iid, body)
