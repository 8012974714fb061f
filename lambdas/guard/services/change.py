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

import hashlib
import re

from pydantic import BaseModel

from guard.errors import ConfigError, UnknownCluster
from guard.gitops.helm_release import set_chart_version
from guard.ports import Clock, FileChange, GitOpsRepo, MergeRequest
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, TaskTokenRecord
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


class ChangeService:
    """Opens the merge request of a `Change` and registers the task token that waits on it."""

    def __init__(self, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo, clock: Clock) -> None:
        self._registry = registry
        self._state = state
        self._repo = repo
        self._clock = clock

    def open(self, change: Change, task_token: str) -> MergeRequest:
        clusters = self._registry.get_many(list(change.versions))
        missing = [c for c in change.versions if c not in clusters]
        if missing:
            raise UnknownCluster(f"clusters missing from the registry: {', '.join(missing)}")
        self._repo.ensure_branch(change.project, change.source_branch, change.target_branch)
        wanted: dict[str, str] = {}
        for cluster_id, version in change.versions.items():
            path = clusters[cluster_id].flux_config_path
            if wanted.setdefault(path, version) != version:
                raise ConfigError(f"{path} is shared by clusters that must go to different versions "
                                  f"({wanted[path]} and {version} for {cluster_id})")
        changes = [FileChange(path=path, content=set_chart_version(
            self._repo.read_file(change.project, path, change.source_branch), version))
            for path, version in wanted.items()]
        self._repo.commit_files(change.project, change.source_branch, changes, change.commit_message)
        mr = self._repo.ensure_merge_request(change.project, change.source_branch, change.target_branch,
                                             title=change.title, description=change.description)
        # A retry gets a fresh token: overwrite, the old one belongs to a failed attempt.
        self._state.put_task_token(
            TaskTokenRecord(merge_request_url=mr.web_url, task_token=task_token, run_id=change.run_id,
                            kind=change.kind),
            self._clock.now(), hours=change.wait_hours)
        return mr
