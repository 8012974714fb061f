"""A rollback is an upgrade to the previous versions: it composes the change pipeline.

`open` is the `OpenRollback` task (.waitForTaskToken): a `Change` towards the versions
recorded before the upgrade (`services.change`), described with the failure data and the
analysis (`services.report`), and a comment on the upgrade MR. `verify` is the
`VerifyRollback` poll: the same version reading as the Flux sync poll (`services.versions`,
`services.poll`), the same sidecar restart waves where rollout sequencing is on
(`services.sidecars`), and, once done, the same outcome recorder (`services.outcome`). Whether a
rollback MR is opened at all is decided by the state machine (`$.plan.rollback_mr`), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from guard.config.models import TenantConfig
from guard.core.models import Cluster
from guard.core.run import RunRecord, VerdictOutcome
from guard.digest import bounded, issues_digest, names_digest, versions_digest
from guard.errors import (
    ExternalServiceError,
    GuardError,
    RollbackFailed,
    RollbackMergeRequestClosed,
    RollbackMergeRequestTimeout,
    RolledBack,
)
from guard.outbound import CAUSE_LIMIT, cause
from guard.ports import Clock, ClusterConnector, GitOpsRepo
from guard.services.analysis import analysis_markdown
from guard.services.change import Change, ChangeService, rollback_branch
from guard.services.evidence import EvidenceService, failing_clusters
from guard.services.failure_report import SUMMARY_ROWS, failure_markdown
from guard.services.gates import MergeGateService
from guard.services.markers import UpgradeMarkers, graphs_markdown
from guard.services.observation import RegistryObserver
from guard.services.outcome import OutcomeRecorder
from guard.services.poll import ClusterPoll, PollResult, ReadOne
from guard.services.report import RollbackSection, change_description, cluster_owners
from guard.services.sidecars import SidecarRolloutService, restarts_so_far
from guard.services.telling import decided, doubts
from guard.services.validate import verdict_issue
from guard.services.versions import VersionReader
from guard.stores.failure import FailureStore, RollbackRecord
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, UnwatchedRollback
from guard.vocabulary.outcomes import ChangeKind, Outcome, RollbackStatus
from guard.vocabulary.stages import FailedStage, Stage

_FINAL = (RollbackStatus.ROLLED_BACK, RollbackStatus.ROLLBACK_FAILED)


class RollbackOpened(BaseModel):
    """OpenRollback's Lambda result. The execution waits for the webhook, but Step Functions still records
    this result in the task's `TaskSubmitted` event, which holds 256 KB like any state's data: so it names
    the first clusters and counts them (the rollback record holds every cluster's version)."""

    status: RollbackStatus
    clusters: list[str]  # the first ones (guard.digest.FIRST)
    cluster_count: int = 0
    versions: dict[str, str]  # the first clusters' versions
    merge_request_url: str | None = None
    detail: str | None = None


class RollbackMerged(BaseModel):
    """The rollback wait's result when GitLab shows the MR merged after the wait timed out: the same fields the
    webhook's merge sends, so verification goes on as if the merge had been seen in time."""

    merge_commit_sha: str | None
    merge_request_url: str
    merged_by: str
    stage: str = Stage.VERIFYING_ROLLBACK


class RollbackPoll(PollResult):
    """One VerifyRollback poll (`$.verify`); once done, the name and cause the execution fails with."""

    status: RollbackStatus | None = None
    error: str | None = None
    cause: str | None = None
    merge_request_url: str | None = None


def _verdict_summary(state: StateStore, run: RunRecord) -> str | None:
    """What validation said about the clusters that did not pass, in its own words: a digest (counts, the
    first clusters), as the verdicts themselves stay stored."""
    issues = []
    for cluster_id in run.clusters:
        verdict = state.get_verdict(run.run_id, cluster_id)
        if verdict is not None and verdict.outcome != VerdictOutcome.PASS:
            issues.append(verdict_issue(verdict))
    return issues_digest(issues, what="did not pass validation") or None


class RollbackService:
    """`repo` is needed to open the MR and to comment; `connector` to verify. `needs_person(reason)` raises
    the alarm when GUARD leaves a rollback MR open without watching it (GUARD never closes one)."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, failures: FailureStore,
                 repo: GitOpsRepo | None, clock: Clock, connector: ClusterConnector | None = None,
                 log_warning: Callable[..., Any] | None = None, observer: RegistryObserver | None = None,
                 needs_person: Callable[[str], Any] | None = None, markers: UpgradeMarkers | None = None) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._failures = failures
        self._repo = repo
        self._clock = clock
        self._connector = connector
        self._needs_person = needs_person or (lambda reason: None)
        self._markers = markers  # before/after graphs of the failing queries (best effort); None: no graphs
        self._outcomes = OutcomeRecorder(registry, state, repo, clock, log_warning, observer=observer)

    # ------------------------------------------------------------------ OpenRollback
    def open(self, run_id: str, task_token: str, reason: str | None = None) -> RollbackOpened:
        """Open (or find) the rollback MR towards the previous versions and store the token."""
        if self._repo is None:
            raise ExternalServiceError("GitLab is unavailable; cannot open the rollback merge request")
        run = self._state.get_run(run_id)
        planned = self._failures.get_rollback(run_id)
        manual = bool(planned and planned.manual)
        if manual or self._config.rollback.scope == "batch":
            clusters = list(run.clusters)
        else:
            clusters = failing_clusters(self._state, run)
        versions = {c: run.from_versions[c] for c in clusters}
        # Who (or nobody) decided comes first: "no Maintainer answered within 30 min" is why it rolls back.
        said = None if manual else decided(self._failures.get_decision(run_id), doubts(self._state, run))
        # Half the cause limit: the outcome's cause quotes this reason after its own digest of the clusters.
        why = cause("; ".join(p for p in (said, reason or (planned.reason if planned else None) or run.cause
                                          or _verdict_summary(self._state, run)
                                          or f"validation of {run.target_version} did not pass") if p),
                    CAUSE_LIMIT // 2)
        record = RollbackRecord(run_id=run_id, batch=run.batch, reason=why, clusters=clusters, versions=versions,
                                rolled_back_from=run.target_version, status=RollbackStatus.WAITING_FOR_MERGE,
                                manual=manual, at=self._clock.now())
        # From the target's head as it is now: commits made since the upgrade are kept, only versions change.
        gates = MergeGateService(self._repo, auto_merge=self._config.gitlab.auto_merge)
        mr = ChangeService(self._registry, self._state, self._repo, self._clock, self._needs_person,
                           gates=gates).open(Change(
            run_id=run_id, kind=ChangeKind.ROLLBACK, project=run.gitlab_project,
            source_branch=rollback_branch(self._config.gitlab.branch_prefix, run.batch, run_id),
            target_branch=self._config.gitlab.target_branch, versions=versions, title=self._title(run, versions),
            commit_message=f"Roll back Istio {run.target_version} on batch {run.batch}\n\nGUARD run {run_id}: {why}",
            description=self.description(run, record),
            wait_hours=self._config.rollback.merge_timeout_hours + 24,
            known_iid=planned.merge_request_iid if planned else None), task_token)
        record.merge_request_url, record.merge_request_iid = mr.web_url, mr.iid
        try:
            self._failures.put_rollback(record)
            run.stage = Stage.WAITING_FOR_ROLLBACK_MERGE
            self._state.put_run(run)
        except GuardError:
            # The task fails, so nothing waits on this token any more; and without the rollback record no
            # cleanup could find its MR. Only this attempt's token (a retry stores its own).
            self._state.delete_task_token(mr.web_url, task_token=task_token)
            raise
        if run.merge_request_iid and not manual:
            what = said or f"the upgrade of `{run.batch}` to {run.target_version} did not pass validation"
            self._outcomes.comment(run.gitlab_project, run.merge_request_iid,
                                   f"↩️ GUARD: {what}; rollback merge request: {mr.web_url}")
        named = bounded(clusters)
        return RollbackOpened(status=RollbackStatus.WAITING_FOR_MERGE, clusters=named, cluster_count=len(clusters),
                              versions={c: versions[c] for c in named}, merge_request_url=mr.web_url)

    # ------------------------------------------------------------------ RollbackWaitTimedOut
    def after_timeout(self, run_id: str) -> RollbackMerged:
        """The wait on the rollback MR timed out: ask GitLab once more before reporting anything.

        Merged (the webhook was lost or late) -> the merge, so the rollback is verified as usual. Closed ->
        RollbackMergeRequestClosed. Still open -> GUARD stops watching but never closes it: a comment says a
        person must act, `needs_person` raises the alarm, and the task fails with RollbackMergeRequestTimeout.
        GitLab unreadable raises (retried; then the run fails at the rollback, the MR untouched).
        """
        if self._repo is None:
            raise ExternalServiceError("GitLab is unavailable; cannot check the rollback merge request")
        run = self._state.get_run(run_id)
        record = self._failures.get_rollback(run_id)
        if record is None or record.merge_request_iid is None or not record.merge_request_url:
            raise ExternalServiceError(f"run '{run_id}' has no rollback merge request to check")
        url = record.merge_request_url
        # The execution stopped waiting on the token: a late webhook or the reconciler must not answer it.
        # First, so a GitLab failure below (the run then fails at the rollback) leaves no token behind.
        self._state.delete_task_token(url, run_id=run_id)
        mr = self._repo.get_merge_request(run.gitlab_project, record.merge_request_iid)
        if mr.state == "merged":
            return RollbackMerged(merge_commit_sha=mr.merge_commit_sha, merge_request_url=url,
                                  merged_by=mr.merged_by or "someone (GUARD saw the merge after its wait timed out)")
        # "failed validation" would be untrue of an inconclusive one, and of a manual rollback of a passed upgrade.
        still = f"{names_digest(record.clusters)} still run {run.target_version}" + (
            "" if record.manual else ", which did not pass validation")
        if mr.state == "closed":
            raise RollbackMergeRequestClosed(f"rollback merge request {url} was closed without merging; {still}")
        hours = self._config.rollback.merge_timeout_hours
        back = versions_digest(record.versions)
        self._outcomes.comment(run.gitlab_project, record.merge_request_iid,
                               f"⌛ GUARD stopped watching this rollback merge request: nobody merged it within "
                               f"{hours:g} h. GUARD never closes a rollback, so it stays open and **a person must "
                               f"act**: merge it and check that the clusters run the previous versions ({back}), or "
                               f"close it to keep {run.target_version}. Merging it now does not resume GUARD.")
        self._needs_person(f"rollback merge request {url} not merged within {hours:g} h; left open, unwatched")
        self._state.put_unwatched_rollback(UnwatchedRollback(
            merge_request_url=url, merge_request_iid=record.merge_request_iid, project=run.gitlab_project,
            run_id=run_id, versions=record.versions), self._clock.now())
        raise RollbackMergeRequestTimeout(
            f"rollback merge request {url} was not merged within {hours:g} h; GUARD stopped watching it and left it "
            f"open for a person to merge or close: {still}")

    @staticmethod
    def _title(run: RunRecord, versions: dict[str, str]) -> str:
        previous = sorted(set(versions.values()))
        to = previous[0] if len(previous) == 1 else "previous versions"
        return f"Roll back Istio {run.target_version} → {to} on batch {run.batch}"

    def description(self, run: RunRecord, record: RollbackRecord) -> str:
        """Markdown: what goes back where, why, the failure data per cluster, the AI analysis."""
        decision = self._failures.get_decision(run.run_id)
        failure = ""
        if not record.manual:
            # Evidence stored by AnalyzeFailure; without it (analysis skipped), the verdicts alone.
            evidence = self._failures.get_evidence(run.run_id, SUMMARY_ROWS) or EvidenceService(
                self._config, self._registry, self._state, None, self._clock).collect(run.run_id, record.clusters)
            failure = failure_markdown(evidence)
        graphs = "" if record.manual else self._graphs(run, record.clusters)
        owners = cluster_owners(list(self._registry.get_many(record.clusters).values()))
        return change_description(run, record.versions, owners=owners, rollback=RollbackSection(
            reason=record.reason, manual=record.manual, upgrade_merge_request_url=run.merge_request_url,
            decided=(f"{decided(decision, doubts(self._state, run))} ({decision.at.isoformat()})"
                     if decision else None),
            manual_approval=self._config.rollback.require_manual_approval, failure_markdown=failure,
            graphs_markdown=graphs,
            analysis_markdown=analysis_markdown(self._failures.get_analysis(run.run_id))))

    def _graphs(self, run: RunRecord, clusters: list[str]) -> str:
        """Before/after snapshots of each failing query of `clusters` (their stored verdicts and baselines)."""
        if self._markers is None:
            return ""
        verdicts = [v for v in (self._state.get_verdict(run.run_id, c) for c in clusters) if v is not None]
        baselines = {}
        for cluster_id in clusters:
            report = self._state.get_precheck(run.run_id, cluster_id)
            baselines[cluster_id] = report.baseline if report else {}
        graphs, left_out = self._markers.failing_graphs(run, verdicts, baselines)
        return graphs_markdown(graphs, left_out)

    # ------------------------------------------------------------------ VerifyRollback
    def verify(self, run_id: str, deadline: str | None, merge: dict[str, object] | None = None) -> RollbackPoll:
        """One poll: done once every rolled-back cluster runs its previous version, or at the deadline."""
        record = self._failures.get_rollback(run_id)
        if record is None:
            raise ExternalServiceError(f"run '{run_id}' has no rollback record")
        if merge and merge.get("merge_commit_sha"):
            record.merge_commit_sha = str(merge["merge_commit_sha"])
        minutes = self._config.rollback.verify_timeout_minutes or self._config.validation.flux_sync_timeout_minutes
        if self._config.execution.enable_rollout_sequencing:  # the proxies are restarted within the same poll
            minutes += self._config.execution.sidecar_restart_timeout_minutes
        if record.status in _FINAL:
            # A retried poll after the outcome was stored: record it again (idempotent), so the
            # lock and tokens a crash may have left behind are released.
            return self._finish(record, deadline or self._clock.now().isoformat())
        if self._connector is None:
            raise ExternalServiceError("no cluster connector to verify the rollback")
        result = ClusterPoll(self._config, self._registry, self._state, self._connector, self._clock).check(
            record.clusters, deadline, minutes, self._reader(record, self._connector))
        if not (result.done or result.expired):
            self._failures.put_rollback(record)
            run = self._state.get_run(run_id)
            if run.stage != Stage.VERIFYING_ROLLBACK:
                run.stage = Stage.VERIFYING_ROLLBACK
                self._state.put_run(run)
            # The MR a person acts on now is the rollback's.
            return RollbackPoll(**result.model_dump(exclude={"stage", "merge_request_url"}), stage=run.stage,
                                merge_request_url=record.merge_request_url)
        run = self._state.get_run(run_id)
        back = versions_digest(record.versions)
        if result.done:
            record.status = RollbackStatus.ROLLED_BACK
            record.detail = (f"batch {run.batch}: {run.target_version} was rolled back ({back}) and verified "
                             f"by merge request {record.merge_request_url}; reason: {record.reason}")
        else:
            record.status = RollbackStatus.ROLLBACK_FAILED
            record.detail = (f"batch {run.batch}: rollback of {run.target_version} (merge request "
                             f"{record.merge_request_url}) not verified within {minutes:g} min: " + result.describe())
        self._failures.put_rollback(record)  # first: a retry after a crash records this outcome, not a new one
        return self._finish(record, result.deadline)

    def _reader(self, record: RollbackRecord, connector: ClusterConnector) -> ReadOne:
        """What a cluster still waits on: Flux and istiod at the previous version, then (with
        rollout sequencing) every proxy restarted onto it, in the same waves as the upgrade:
        proxies left ahead of the control plane would be outside Istio's supported skew."""
        versions = VersionReader(connector, record.versions)
        waves = (SidecarRolloutService(self._config, self._registry, self._state, connector, self._clock)
                 if self._config.execution.enable_rollout_sequencing else None)
        now = self._clock.now()
        done = restarts_so_far(self._state, record.run_id, "rollback", record.sidecar_restarts) if waves else {}

        def read(cluster_id: str, cluster: Cluster) -> list[str]:
            # Any error reading a cluster is "not yet", not a failed rollback: the deadline decides.
            try:
                waiting = versions.waiting(cluster_id, cluster)
                if waiting or waves is None:
                    return waiting
                return waves.advance(record.run_id, "rollback", cluster_id, cluster, record.versions[cluster_id],
                                     done.setdefault(cluster_id, {}), now, [])
            except GuardError as e:
                return [f"{cluster_id}: API unreachable ({e})"]

        return read

    def _finish(self, record: RollbackRecord, deadline: str) -> RollbackPoll:
        """Record the rollback's outcome through the shared recorder, then the rollback record."""
        rolled = record.status == RollbackStatus.ROLLED_BACK
        error = (RolledBack if rolled else RollbackFailed).__name__
        self._outcomes.record(
            self._state.get_run(record.run_id), Outcome.ROLLED_BACK if rolled else Outcome.ROLLBACK_FAILED,
            versions=record.versions, failed_stage=None if record.manual else FailedStage.VALIDATION,
            error=error, cause=record.detail, merge_request_urls=(record.merge_request_url,),
            merge_request_url=record.merge_request_url,
            comment=(record.merge_request_iid, f"{'✅' if rolled else '❌'} GUARD: {record.detail}"))
        return RollbackPoll(done=True, deadline=deadline, status=record.status, error=error, cause=record.detail,
                            merge_request_url=record.merge_request_url, stage=Stage.DONE)
