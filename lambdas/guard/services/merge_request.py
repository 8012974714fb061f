"""Open the upgrade merge request: the change pipeline (`services.change`) towards the target."""

from __future__ import annotations

from guard.config.models import TenantConfig
from guard.core.run import PrecheckReport
from guard.errors import GuardError
from guard.ports import Clock, GitOpsRepo, MergeRequest
from guard.services.change import Change, ChangeService, upgrade_branch
from guard.services.gates import MergeGateService
from guard.services.report import change_description, cluster_owners
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import ChangeKind
from guard.vocabulary.stages import Stage


class MergeRequestService:
    """One MR bumping every cluster of the run to its target; stores the task token against it."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, repo: GitOpsRepo,
                 clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._changes = ChangeService(registry, state, repo, clock,
                                      gates=MergeGateService(repo, auto_merge=config.gitlab.auto_merge))

    def open(self, run_id: str, task_token: str) -> MergeRequest:
        run = self._state.get_run(run_id)
        reports: dict[str, PrecheckReport] = {}
        for cluster_id in run.clusters:
            report = self._state.get_precheck(run_id, cluster_id)
            if report:
                reports[cluster_id] = report
        versions = {c: run.target_version for c in run.clusters}
        title = f"Upgrade Istio to {run.target_version} on batch {run.batch}"
        mr = self._changes.open(Change(
            run_id=run_id, kind=ChangeKind.UPGRADE, project=run.gitlab_project,
            source_branch=upgrade_branch(self._config.gitlab.branch_prefix, run.batch, run.target_version),
            target_branch=self._config.gitlab.target_branch, versions=versions, title=title,
            commit_message=f"{title}\n\nGUARD run {run_id}",
            description=change_description(run, versions, reports=reports, owners=cluster_owners(
                list(self._registry.get_many(run.clusters).values()))),
            wait_hours=self._config.gitlab.merge_timeout_hours + 24, known_iid=run.merge_request_iid), task_token)
        run.merge_request_url, run.merge_request_iid, run.stage = mr.web_url, mr.iid, Stage.WAITING_FOR_MERGE
        try:
            self._state.put_run(run)
        except GuardError:
            # The task fails, so nothing waits on this token any more; and a run that does not know its MR
            # lets no cleanup find it. Only this attempt's token (a retry stores its own).
            self._state.delete_task_token(mr.web_url, task_token=task_token)
            raise
        return mr
