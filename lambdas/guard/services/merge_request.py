"""Open the upgrade merge request (idempotent) and register the paused execution's token."""

from __future__ import annotations

from guard.clock import Clock
from guard.config.models import TenantConfig
from guard.core.run import PrecheckReport
from guard.gitops.helm_release import set_chart_version
from guard.ports import FileChange, GitOpsRepo, MergeRequest
from guard.services.report import health_report
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, TaskTokenRecord


def branch_name(prefix: str, batch: str, version: str) -> str:
    """Deterministic, so a retried task finds the branch and MR it made the first time."""
    return f"{prefix}/{batch}-{version}"


class MergeRequestService:
    """Branch + commit + MR for a run's clusters; stores the task token against the MR."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo,
                 clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._repo = repo
        self._clock = clock

    def open(self, run_id: str, task_token: str) -> MergeRequest:
        run = self._state.get_run(run_id)
        clusters = self._registry.get_many(run.clusters)
        target = self._config.gitlab.target_branch
        branch = branch_name(self._config.gitlab.branch_prefix, run.batch, run.target_version)
        project = run.gitlab_project

        self._repo.ensure_branch(project, branch, target)
        changes: dict[str, FileChange] = {}
        for cluster_id in run.clusters:
            path = clusters[cluster_id].flux_config_path
            if path in changes:
                continue
            current = self._repo.read_file(project, path, branch)
            changes[path] = FileChange(path=path, content=set_chart_version(current, run.target_version))
        self._repo.commit_files(project, branch, list(changes.values()),
                                f"Upgrade Istio to {run.target_version} on batch {run.batch}\n\nGUARD run {run_id}")

        reports: dict[str, PrecheckReport] = {}
        for cluster_id in run.clusters:
            report = self._state.get_precheck(run_id, cluster_id)
            if report:
                reports[cluster_id] = report
        mr = self._repo.ensure_merge_request(
            project, branch, target,
            title=f"Upgrade Istio to {run.target_version} on batch {run.batch}",
            description=health_report(run, reports),
        )
        # A retry gets a fresh token: overwrite, the old one belongs to a failed attempt.
        self._state.put_task_token(
            TaskTokenRecord(merge_request_url=mr.web_url, task_token=task_token, run_id=run_id),
            self._clock.now(), hours=self._config.gitlab.merge_timeout_hours + 24,
        )
        run.merge_request_url, run.merge_request_iid, run.stage = mr.web_url, mr.iid, "waiting_for_merge"
        self._state.put_run(run)
        return mr
