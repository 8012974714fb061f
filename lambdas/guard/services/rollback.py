"""Roll a batch back by merge request, verify it, record the outcome; plan a manual rollback.

`open` is the `OpenRollback` task (.waitForTaskToken): one branch
`<branch_prefix>/rollback-<batch>-<short run id>` setting each cluster's HelmRelease back
to its previous version (comments and formatting kept), one MR whose description carries
the failure data and the analysis, the task token stored against it (kind "rollback"); the
webhook resumes the execution on merge. `verify` is the `VerifyRollback` poll. Every write
is idempotent, so a retried task lands in the same place.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from pydantic import BaseModel

from guard.clock import Clock, poll_deadline
from guard.config.models import TenantConfig
from guard.core.models import Cluster, UpgradeRecord
from guard.core.run import ExecutionInput, RunRecord, RunStatus, VerdictOutcome
from guard.errors import ConfigError, ExternalServiceError, GuardError, NothingToRollBack, UnknownBatch, UnknownCluster
from guard.gitops.helm_release import set_chart_version
from guard.ports import ClusterConnector, FileChange, GitOpsRepo
from guard.redact import redact
from guard.services.analysis import analysis_markdown
from guard.services.evidence import EvidenceService, failing_clusters
from guard.services.failure_report import failure_markdown
from guard.services.webhook import TaskCallbacks
from guard.stores.failure import FailureStore, RollbackRecord
from guard.stores.registry import ClusterRegistry
from guard.stores.state import BatchResult, StateStore, TaskTokenRecord

ISTIOD_CONTAINER = "discovery"


def short_run_id(run_id: str) -> str:
    """8 readable characters of the run id, plus a hash when that drops anything (no collisions)."""
    clean = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    if len(clean) <= 8:
        return clean or hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{clean[:8].strip('-')}-{hashlib.sha256(run_id.encode()).hexdigest()[:6]}"


def _verdict_summary(state: StateStore, run: RunRecord) -> str | None:
    """What validation said about the clusters that did not pass, in its own words."""
    lines = []
    for cluster_id in run.clusters:
        verdict = state.get_verdict(run.run_id, cluster_id)
        if verdict is not None and verdict.outcome != VerdictOutcome.PASS:
            lines.append(verdict.summary())
    return " | ".join(lines) or None


def rollback_branch(prefix: str, batch: str, run_id: str) -> str:
    """Deterministic, so a retried task finds the branch and MR it made the first time."""
    return f"{prefix}/rollback-{batch}-{short_run_id(run_id)}"


class RollbackOpened(BaseModel):
    """OpenRollback's outcome. With an MR, the execution waits for the webhook; without, it is the task output."""

    status: str  # waiting_for_merge | not_created
    clusters: list[str]
    versions: dict[str, str]
    merge_request_url: str | None = None
    detail: str | None = None


class RollbackPoll(BaseModel):
    """One VerifyRollback poll (`$.rollback_verify`)."""

    done: bool
    deadline: str
    waiting_on: list[str] = []
    status: str | None = None  # rolled_back | rollback_failed, once done
    error: str | None = None  # RolledBack | RollbackFailed: the name the execution fails with
    cause: str | None = None
    merge_request_url: str | None = None


def versions_waiting(connector: ClusterConnector, clusters: dict[str, Cluster], expected: dict[str, str]) -> list[str]:
    """What each cluster still waits on to run `expected[cluster]`: HelmRelease Ready at it, istiod on it.

    The same reading as the Flux sync poll, with a version per cluster. An unreachable API
    is "still waiting", not an error.
    """
    waiting: list[str] = []
    for cluster_id, version in expected.items():
        cluster = clusters.get(cluster_id)
        if cluster is None:
            waiting.append(f"{cluster_id}: not in the registry")
            continue
        try:
            api = connector.connect(cluster)
            release = api.get_helm_release(cluster.helm_release_namespace, cluster.helm_release_name)
            istiod = next((d for d in api.list_deployments("istio-system") if d.name == "istiod"), None)
        except GuardError as e:
            waiting.append(f"{cluster_id}: API unreachable ({e})")
            continue
        running = istiod.image_versions.get(ISTIOD_CONTAINER) if istiod else None
        if not (release.ready and release.last_applied_version == version):
            waiting.append(f"{cluster_id}: HelmRelease {release.namespace}/{release.name} at "
                           f"{release.last_applied_version or '?'} ready={release.ready}, expected {version}"
                           + (f" ({release.message})" if release.message else ""))
        elif istiod is None or running != version or istiod.ready_replicas < istiod.replicas:
            waiting.append(f"{cluster_id}: istiod runs {running or 'nothing'} "
                           f"({istiod.ready_replicas if istiod else 0}/{istiod.replicas if istiod else 0} ready), "
                           f"expected {version}")
    return waiting


class RollbackService:
    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, failures: FailureStore,
                 repo: GitOpsRepo | None, sfn: TaskCallbacks | None, clock: Clock,
                 connector: ClusterConnector | None = None, log_warning: object = None) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._failures = failures
        self._repo = repo
        self._sfn = sfn
        self._clock = clock
        self._connector = connector
        self._warn = log_warning if callable(log_warning) else (lambda *a, **k: None)

    # ------------------------------------------------------------------ OpenRollback
    def open(self, run_id: str, task_token: str, reason: str | None = None) -> RollbackOpened:
        """Open (or find) the rollback MR and store the token; without auto_create_mr, answer the token now."""
        run = self._state.get_run(run_id)
        planned = self._failures.get_rollback(run_id)
        manual = bool(planned and planned.manual)
        if manual or self._config.rollback.scope == "batch":
            clusters = list(run.clusters)
        else:
            clusters = failing_clusters(self._state, run)
        versions = {c: run.from_versions[c] for c in clusters}
        why = redact(reason or (planned.reason if planned else None) or run.cause
                     or _verdict_summary(self._state, run)
                     or f"validation of {run.target_version} did not pass")
        now = self._clock.now()
        record = RollbackRecord(run_id=run_id, batch=run.batch, reason=why, clusters=clusters, versions=versions,
                                rolled_back_from=run.target_version, status="waiting_for_merge", manual=manual, at=now)

        if not self._config.rollback.auto_create_mr:
            record.status = "not_created"
            record.detail = ("rollback.auto_create_mr is false: GUARD opened no rollback merge request; "
                             f"set {', '.join(f'{c} to {v}' for c, v in versions.items())} by hand")
            self._failures.put_rollback(record)
            self._comment(run.gitlab_project, run.merge_request_iid, f"⚠️ GUARD: {record.detail}.\n\nReason: {why}")
            result = RollbackOpened(status="not_created", clusters=clusters, versions=versions, detail=record.detail)
            if self._sfn is None:
                raise ConfigError("no Step Functions client to answer the rollback task token")
            # Nothing will resume this wait later: answer it now.
            self._sfn.send_task_success(taskToken=task_token, output=json.dumps(result.model_dump()))
            return result

        if self._repo is None:
            raise ExternalServiceError("GitLab is unavailable; cannot open the rollback merge request")
        registry = self._registry.get_many(clusters)
        missing = [c for c in clusters if c not in registry]
        if missing:
            raise UnknownCluster(f"clusters missing from the registry: {', '.join(missing)}")
        project, target = run.gitlab_project, self._config.gitlab.target_branch
        branch = rollback_branch(self._config.gitlab.branch_prefix, run.batch, run_id)
        self._repo.ensure_branch(project, branch, target)
        changes: dict[str, FileChange] = {}
        for cluster_id in clusters:
            path = registry[cluster_id].flux_config_path
            if path in changes:
                continue
            current = self._repo.read_file(project, path, branch)
            changes[path] = FileChange(path=path, content=set_chart_version(current, versions[cluster_id]))
        message = f"Roll back Istio {run.target_version} on batch {run.batch}\n\nGUARD run {run_id}: {why}"
        self._repo.commit_files(project, branch, list(changes.values()), message)
        mr = self._repo.ensure_merge_request(project, branch, target, title=self._title(run, versions),
                                             description=self.description(run, record))
        # A retry gets a fresh token: overwrite, the old one belongs to a failed attempt.
        self._state.put_task_token(
            TaskTokenRecord(merge_request_url=mr.web_url, task_token=task_token, run_id=run_id, kind="rollback"),
            now, hours=self._config.rollback.merge_timeout_hours + 24)
        record.merge_request_url, record.merge_request_iid = mr.web_url, mr.iid
        self._failures.put_rollback(record)
        run.stage = "waiting_for_rollback_merge"
        self._state.put_run(run)
        if run.merge_request_iid and not manual:
            self._comment(project, run.merge_request_iid,
                          f"↩️ GUARD: the upgrade of `{run.batch}` to {run.target_version} did not pass validation; "
                          f"rollback merge request: {mr.web_url}")
        return RollbackOpened(status="waiting_for_merge", clusters=clusters, versions=versions,
                              merge_request_url=mr.web_url)

    @staticmethod
    def _title(run: RunRecord, versions: dict[str, str]) -> str:
        previous = sorted(set(versions.values()))
        to = previous[0] if len(previous) == 1 else "previous versions"
        return f"Roll back Istio {run.target_version} → {to} on batch {run.batch}"

    def description(self, run: RunRecord, record: RollbackRecord) -> str:
        """Markdown: what goes back where, why, the failure data per cluster, the AI analysis."""
        lines = [f"## Istio rollback: batch `{run.batch}` {run.target_version} → previous version", "",
                 f"Opened by GUARD run `{run.run_id}`"
                 + (" (manual rollback)" if record.manual else "") + ". Merging this MR lets Flux roll back; "
                 "GUARD then verifies that each cluster runs the previous version.", "",
                 f"**Reason:** {record.reason}", ""]
        if run.merge_request_url and not record.manual:
            lines += [f"Upgrade merge request: {run.merge_request_url}", ""]
        decision = self._failures.get_decision(run.run_id)
        if decision:
            lines += [f"Decided by @{decision.by} (`/guard {decision.decision}`) at {decision.at.isoformat()}.", ""]
        if self._config.rollback.require_manual_approval:
            lines += ["**Manual approval required** (`rollback.require_manual_approval`): a Maintainer reviews "
                      "and merges this MR; GUARD never merges it.", ""]
        lines += ["| cluster | from | back to |", "|---|---|---|"]
        lines += [f"| `{c}` | {run.target_version} | {v} |" for c, v in record.versions.items()]
        if record.manual:
            lines += ["", "## Failure data", "", "_manual rollback: no validation data for this run_", ""]
        else:
            # Evidence stored by AnalyzeFailure; without it (analysis skipped), the verdicts alone.
            evidence = self._failures.get_evidence(run.run_id) or EvidenceService(
                self._config, self._registry, self._state, None, self._clock).collect(run.run_id, record.clusters)
            lines += ["", "## Failure data", "", failure_markdown(evidence)]
        lines.append(analysis_markdown(self._failures.get_analysis(run.run_id)))
        return redact("\n".join(lines))

    # ------------------------------------------------------------------ VerifyRollback
    def verify(self, run_id: str, deadline: str | None, merge: dict[str, object] | None = None) -> RollbackPoll:
        """One poll: done once every rolled-back cluster runs its previous version, or at the deadline."""
        record = self._failures.get_rollback(run_id)
        if record is None:
            raise ExternalServiceError(f"run '{run_id}' has no rollback record")
        now = self._clock.now()
        minutes = self._config.rollback.verify_timeout_minutes or self._config.validation.flux_sync_timeout_minutes
        due = poll_deadline(deadline, now, minutes)
        if record.status in ("rolled_back", "rollback_failed"):
            return self._done(record, due)  # a retried poll after the outcome was recorded
        if merge and merge.get("merge_commit_sha"):
            record.merge_commit_sha = str(merge["merge_commit_sha"])
        if self._connector is None:
            raise ConfigError("no cluster connector to verify the rollback")
        waiting = versions_waiting(self._connector, self._registry.get_many(record.clusters), record.versions)
        if waiting and now < due:
            return RollbackPoll(done=False, deadline=due.isoformat(), waiting_on=waiting)
        self._record(record, "rollback_failed" if waiting else "rolled_back", waiting, minutes)
        return self._done(record, due)

    def _done(self, record: RollbackRecord, due: datetime) -> RollbackPoll:
        rolled = record.status == "rolled_back"
        return RollbackPoll(done=True, deadline=due.isoformat(), status=record.status,
                            error="RolledBack" if rolled else "RollbackFailed", cause=record.detail,
                            merge_request_url=record.merge_request_url)

    def _record(self, record: RollbackRecord, status: str, waiting: list[str], minutes: float) -> None:
        run = self._state.get_run(record.run_id)
        now = self._clock.now()
        back = ", ".join(f"{c} → {v}" for c, v in record.versions.items())
        if status == "rolled_back":
            detail = (f"batch {run.batch}: {run.target_version} was rolled back ({back}) and verified; "
                      f"reason: {record.reason}")
        else:
            detail = (f"batch {run.batch}: rollback of {run.target_version} not verified within {minutes:g} min: "
                      + "; ".join(waiting))
        record.status, record.detail = status, detail  # type: ignore[assignment]
        for cluster_id in record.clusters:
            self._registry.record_upgrade(cluster_id, UpgradeRecord(
                run_id=run.run_id, from_version=run.target_version, to_version=record.versions[cluster_id],
                outcome=status, at=now, merge_request_url=record.merge_request_url),
                record.versions[cluster_id] if status == "rolled_back" else None)
        self._state.put_batch_result(BatchResult(batch=run.batch, target_version=run.target_version, status=status,
                                                 run_id=run.run_id, at=now))
        run.status, run.stage, run.finished_at = RunStatus.FAILED, status, now
        run.error, run.cause = ("RolledBack" if status == "rolled_back" else "RollbackFailed"), detail
        self._state.put_run(run)
        self._failures.put_rollback(record)
        if record.merge_request_url:
            self._state.delete_task_token(record.merge_request_url)
        mark = "✅" if status == "rolled_back" else "❌"
        self._comment(run.gitlab_project, record.merge_request_iid, f"{mark} GUARD: {detail}")
        self._state.release_lock(run.batch, run.run_id)

    def _comment(self, project: str, iid: int | None, body: str) -> None:
        # A comment is courtesy; failing to post one must not change the recorded outcome.
        if self._repo is None or iid is None:
            return
        try:
            self._repo.comment(project, iid, redact(body))
        except GuardError as e:
            self._warn("could not comment on the merge request", extra={"error": str(e)})


# ---------------------------------------------------------------------- manual rollback


def plan_manual_rollback(config: TenantConfig, registry: ClusterRegistry, state: StateStore, failures: FailureStore,
                         clock: Clock, *, run_id: str, execution_arn: str, batch: str, reason: str,
                         requested_by: str | None = None) -> RunRecord:
    """A run record for rolling back `batch`'s last succeeded upgrade (seed `guard rollback --batch`).

    The last upgrade is the newest `succeeded` entry of the clusters' registry history that is
    still deployed (the cluster runs its `to_version`); its clusters go back to its
    `from_version`. Takes the batch lock and records a planned rollback; NothingToRollBack
    when there is nothing to undo.
    """
    found = config.batch(batch)
    if found is None:
        raise UnknownBatch(f"batch: unknown batch '{batch}' (this tenant has: "
                           f"{', '.join(b.name for b in config.batches)})")
    clusters = registry.get_many(found.clusters)
    missing = [c for c in found.clusters if c not in clusters]
    if missing:
        raise UnknownCluster(f"batch '{batch}' lists clusters missing from the registry: {', '.join(missing)}")
    latest: dict[str, UpgradeRecord] = {}
    for cluster_id, cluster in clusters.items():
        changes = [h for h in cluster.upgrade_history if h.outcome in ("succeeded", "rolled_back")]
        if not changes:
            continue
        last = max(changes, key=lambda h: h.at)
        if last.outcome == "succeeded" and cluster.current_istio_version == last.to_version:
            latest[cluster_id] = last
    if not latest:
        raise NothingToRollBack(f"batch '{batch}' has no succeeded upgrade that is still deployed")
    newest = max(latest.values(), key=lambda h: h.at)
    chosen = {c: h for c, h in latest.items() if h.run_id == newest.run_id}
    result = state.get_batch_result(batch, newest.to_version)
    if result is not None and result.status in ("rolled_back",) and result.run_id != run_id:
        raise NothingToRollBack(f"batch '{batch}' at {newest.to_version} was already rolled back by run "
                                f"{result.run_id}")
    projects = sorted({clusters[c].gitlab_project for c in chosen})
    if len(projects) > 1:
        raise ConfigError(f"batch '{batch}' spans GitLab projects {', '.join(projects)}")
    now = clock.now()
    state.acquire_lock(batch, run_id, now, config.execution.lock_ttl_hours)
    run = state.find_run(run_id)
    if run is None:
        ordered = [c for c in found.clusters if c in chosen]
        run = RunRecord(
            run_id=run_id, execution_arn=execution_arn, batch=batch, target_version=newest.to_version,
            clusters=ordered, from_versions={c: chosen[c].from_version for c in ordered},
            gitlab_project=projects[0], options=ExecutionInput(batch=batch, target_version=newest.to_version,
                                                               requested_by=requested_by),
            stage="rollback", started_at=now, merge_request_url=newest.merge_request_url,
            cause=redact(reason),
        )
        state.put_run(run)
    if failures.get_rollback(run_id) is None:
        failures.put_rollback(RollbackRecord(
            run_id=run_id, batch=batch, reason=redact(reason) or "manual rollback", clusters=run.clusters,
            versions=dict(run.from_versions), rolled_back_from=run.target_version, status="planned", manual=True,
            at=now, detail=f"undoes run {newest.run_id}"))
    return run
