"""Plan a batch upgrade, or a manual rollback of one: the first state. Everything it
refuses, it refuses before anything changes (the lock is the last step).

With an observer, the batch's clusters are first read from the clusters and the registry set
to what they run (`services.observation`): a run plans from what runs, not from what an
earlier run assumed. That correction is not a change of this run, so it is made even when
the run is then refused. A cluster that cannot be read keeps its registry version (the
precheck judges reachability) and the run record says so.

Both produce the one `Plan` model the state machine reads; a rollback is planned as an
upgrade to the versions the clusters ran before (`Plan.rollback_to`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from guard.config.accounts import refuse_unreachable
from guard.config.models import BatchConfig, TenantConfig
from guard.config.overrides import batch_overrides, refuse_loosening
from guard.config.registry_policy import refuse_untrusted
from guard.core.models import Cluster, UpgradeRecord
from guard.core.quote import json_type, quoted
from guard.core.run import ExecutionInput, ManualRollbackInput, Plan, RunRecord, chunk_size_for
from guard.core.version import Version, upgrade_problem
from guard.digest import FIRST, bounded, names_digest
from guard.errors import (
    ConfigError,
    GuardError,
    InvalidInput,
    NothingToRollBack,
    PrerequisiteNotMet,
    UnknownBatch,
    UnknownCluster,
    VersionNotAllowed,
)
from guard.ports import Clock, Executions
from guard.redact import redact
from guard.services.locks import BatchLocks, lock_hours
from guard.services.observation import AT_PLAN, Reconciliation, RegistryObserver, for_the_record
from guard.services.windows import refuse_inside_window
from guard.stores.failure import FailureStore, RollbackRecord
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import Outcome, RollbackStatus
from guard.vocabulary.stages import Stage

_Input = TypeVar("_Input", bound=BaseModel)


_MAX_PROBLEMS = 10  # lines in one refusal: an input with thousands of bad keys gets a short message


def parse_model(model: type[_Input], raw: Any, what: str) -> _Input:
    """Validate an execution input against `model`; InvalidInput names every bad field.

    The message names each field, says which JSON type arrived when the type is wrong, and quotes
    at most a few dozen characters of any value or key: it becomes the execution's cause.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {json_type(raw)}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise InvalidInput(_problems(e, what)) from e


def _problems(error: ValidationError, what: str) -> str:
    lines = []
    for item in error.errors(include_url=False):
        path = ""
        for part in item["loc"]:
            name = str(part) if len(str(part)) <= 60 else quoted(part)
            path += f"[{name}]" if isinstance(part, int) else (f".{name}" if path else name)
        kind, message = item["type"], item["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown key (misspelt?)"
        elif kind == "literal_error":
            message += f", got {quoted(item['input']) if isinstance(item['input'], str) else json_type(item['input'])}"
        elif kind.endswith(("_type", "_parsing")):
            message += f", got {json_type(item['input'])}"
        lines.append(f"{path}: {message}" if path else message)
    if len(lines) > _MAX_PROBLEMS:
        lines[_MAX_PROBLEMS:] = [f"… and {len(lines) - _MAX_PROBLEMS} more"]
    return f"{what}: invalid input\n  " + "\n  ".join(lines)


def revalidate_seconds(config: TenantConfig) -> int | None:
    """`validation.revalidate_after_minutes` in seconds for the plan; None when 0 (ask a person at once)."""
    seconds = int(config.validation.revalidate_after_minutes * 60)
    return seconds or None


def parse_input(raw: Any) -> ExecutionInput:
    """Validate the execution input of an upgrade; InvalidInput names every bad field."""
    return parse_model(ExecutionInput, raw, "execution input")


class BatchPlanner:
    """Turns a validated input into a Plan, a run record and a held batch lock.

    `own_account` tells the account GUARD runs in; it is asked only when a cluster names a role
    and the config leaves `aws.cluster_accounts` out. `executions` (Step Functions) lets a lock
    held by an execution that has ended be taken over. `observer` reads the clusters' versions
    before planning (None: plan from the registry as it is).
    """

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, clock: Clock,
                 failures: FailureStore | None = None, own_account: Callable[[], str] | None = None,
                 executions: Executions | None = None, observer: RegistryObserver | None = None) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._clock = clock
        self._failures = failures
        self._own_account = own_account or _unknown_account
        self._locks = BatchLocks(state, executions)
        self._observer = observer

    def _observe(self, batch: BatchConfig, clusters: dict[str, Cluster],
                 run_id: str) -> tuple[dict[str, Cluster], list[str]]:
        """The clusters with their registry version set to what they run, and the notes on where
        the registry disagreed (empty without an observer)."""
        if self._observer is None:
            return clusters, []
        found: Reconciliation = self._observer.reconcile([clusters[c] for c in batch.clusters], run_id=run_id)
        observed = {cid: c.model_copy(update={"current_istio_version": found.versions[cid]})
                    for cid, c in clusters.items()}
        return observed, for_the_record(AT_PLAN, found.notes())

    def _batch(self, name: str) -> tuple[BatchConfig, dict[str, Cluster], str]:
        """The batch, its registered clusters and their one GitOps project; refused otherwise."""
        config = self._config
        batch = config.batch(name)
        if batch is None:
            known = ", ".join(b.name for b in config.batches)
            raise UnknownBatch(f"batch: unknown batch '{name}' (this tenant has: {known})")
        clusters = self._registry.get_many(batch.clusters)
        missing = [c for c in batch.clusters if c not in clusters]
        if missing:
            raise UnknownCluster(
                f"batch '{batch.name}' lists clusters missing from the registry: {names_digest(missing)} "
                "(import them with `python -m cli registry import`)"
            )
        # A role GUARD may not assume would fail halfway through the run: refuse it now.
        refuse_unreachable([clusters[c] for c in batch.clusters], config.aws.cluster_accounts, self._own_account,
                           f"batch '{batch.name}'")
        # The registry may not send tokens or commits where the tenant config does not allow.
        refuse_untrusted([clusters[c] for c in batch.clusters], config, f"batch '{batch.name}'")
        projects = sorted({c.gitlab_project for c in clusters.values()})
        if len(projects) > 1:
            raise ConfigError(
                f"batch '{batch.name}' spans GitLab projects {', '.join(projects)}; GUARD opens one "
                "merge request per batch, so a batch's clusters must share one GitOps project"
            )
        return batch, clusters, projects[0]

    def _plan(self, run: RunRecord, soak_seconds: int = 0, llm_analysis: bool = False,
              rollback_to: dict[str, str] | None = None) -> Plan:
        config = self._config
        return Plan(
            run_id=run.run_id,
            batch=run.batch,
            target_version=run.target_version,
            clusters=bounded(run.clusters),
            cluster_count=len(run.clusters),
            soak_seconds=soak_seconds,
            revalidate_seconds=revalidate_seconds(config) if rollback_to is None else None,
            merge_timeout_seconds=int(config.gitlab.merge_timeout_hours * 3600),
            flux_poll_seconds=config.validation.flux_poll_seconds,
            max_concurrency=config.execution.max_concurrent_clusters,
            chunks=list(range(run.chunk_count())),
            max_concurrent_chunks=config.execution.max_concurrent_chunks,
            restart_sidecars=config.execution.enable_rollout_sequencing,
            rollback_timeout_seconds=int(config.rollback.merge_timeout_hours * 3600),
            decision_timeout_seconds=int(config.rollback.decision_timeout_hours * 3600),
            llm_analysis=llm_analysis,
            rollback_mr=config.rollback.auto_create_mr,
            rollback_to=rollback_to,
            dry_run=True if rollback_to is None and run.options.dry_run else None,
        )

    def plan(self, request: ExecutionInput, run_id: str, execution_arn: str) -> Plan:
        config = self._config
        # An input may only make the run stricter than the config (or loosen what it allows).
        overrides = refuse_loosening(batch_overrides(request, config), config, "execution input")
        batch, clusters, project = self._batch(request.batch)
        clusters, notes = self._observe(batch, clusters, run_id)

        target = Version.parse(request.target_version)
        problems = []
        for cluster_id in batch.clusters:
            problem = upgrade_problem(clusters[cluster_id].version, target,
                                      config.execution.max_minor_version_skip)
            if problem:
                problems.append(f"{cluster_id}: {problem}")
        if problems:
            raise VersionNotAllowed(f"target_version {target} refused: " + (
                "; ".join(problems) if len(problems) <= FIRST
                else f"{len(problems)} clusters, the first {FIRST}: " + "; ".join(problems[:FIRST])
                + f"; … and {len(problems) - FIRST} more"))

        # Change windows (docs/config.md#change_windows): refused before anything changes.
        refuse_inside_window(config, batch.name, {c.environment for c in clusters.values()},
                             self._clock.now())
        for prereq in config.batch_order.get(batch.name, []):
            result = self._state.get_batch_result(prereq, str(target))
            if result is None or result.status != Outcome.SUCCEEDED:
                seen = f"its last run at {target} {result.status}" if result else f"it has not run at {target}"
                raise PrerequisiteNotMet(
                    f"batch '{batch.name}' requires '{prereq}' to have succeeded at {target} first; {seen}"
                )

        soak_minutes = request.soak_period_minutes
        if soak_minutes is None:
            soak_minutes = batch.soak_period_minutes
        if soak_minutes is None:
            soak_minutes = config.validation.soak_period_minutes

        now = self._clock.now()
        # Lock first: a refused run must leave no record behind. Both steps are
        # idempotent for the same run id, so a retried task lands in the same place.
        self._locks.acquire(batch.name, run_id, execution_arn, now, lock_hours(config, soak_minutes))
        run = self._state.find_run(run_id)
        if run is None:
            run = RunRecord(
                run_id=run_id,
                execution_arn=execution_arn,
                batch=batch.name,
                target_version=str(target),
                clusters=list(batch.clusters),
                from_versions={c: clusters[c].current_istio_version for c in batch.clusters},
                gitlab_project=project,
                options=request,
                started_at=now,
                registry_notes=notes,
                overrides=overrides,
                cluster_chunk_size=chunk_size_for(len(batch.clusters), config.execution.cluster_chunk_size),
            )
            try:
                self._state.put_run(run)
            except GuardError:
                # No record, no run: the lock must not outlive this attempt (a retry takes it again).
                with contextlib.suppress(GuardError):
                    self._state.release_lock(batch.name, run_id)
                raise

        return self._plan(run, soak_seconds=int(soak_minutes * 60),
                          llm_analysis=config.llm.enabled and (request.enable_llm_analysis is not False))

    def plan_rollback(self, request: ManualRollbackInput, run_id: str, execution_arn: str) -> Plan:
        """Roll back `batch`'s last succeeded upgrade that is still deployed (seed `guard rollback --batch`).

        The last upgrade is the newest `succeeded` entry of the clusters' registry history
        whose version the cluster still runs; its clusters go back to its `from_version`.
        Takes the batch lock and records a planned rollback; NothingToRollBack when there is
        nothing to undo.
        """
        if self._failures is None:
            raise ConfigError("a rollback is planned with the failure store; none was given")
        batch, clusters, project = self._batch(request.batch)
        clusters, notes = self._observe(batch, clusters, run_id)
        latest: dict[str, UpgradeRecord] = {}
        for cluster_id, cluster in clusters.items():
            changes = [h for h in cluster.upgrade_history if h.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK)]
            if not changes:
                continue
            last = max(changes, key=lambda h: h.at)
            if last.outcome == Outcome.SUCCEEDED and cluster.current_istio_version == last.to_version:
                latest[cluster_id] = last
        if not latest:
            raise NothingToRollBack(f"batch '{batch.name}' has no succeeded upgrade that is still deployed")
        newest = max(latest.values(), key=lambda h: h.at)
        chosen = {c: h for c, h in latest.items() if h.run_id == newest.run_id}
        result = self._state.get_batch_result(batch.name, newest.to_version)
        if result is not None and result.status == Outcome.ROLLED_BACK and result.run_id != run_id:
            raise NothingToRollBack(f"batch '{batch.name}' at {newest.to_version} was already rolled back by run "
                                    f"{result.run_id}")
        now = self._clock.now()
        self._locks.acquire(batch.name, run_id, execution_arn, now, lock_hours(self._config, 0))
        run = self._state.find_run(run_id)
        if run is None:
            ordered = [c for c in batch.clusters if c in chosen]
            run = RunRecord(
                run_id=run_id, execution_arn=execution_arn, batch=batch.name, target_version=newest.to_version,
                clusters=ordered, from_versions={c: chosen[c].from_version for c in ordered},
                gitlab_project=project, options=ExecutionInput(batch=batch.name, target_version=newest.to_version,
                                                               requested_by=request.requested_by),
                stage=Stage.ROLLBACK_PLANNED, started_at=now, merge_request_url=newest.merge_request_url,
                cause=redact(request.reason), registry_notes=notes,
            )
            self._state.put_run(run)
        if self._failures.get_rollback(run_id) is None:
            self._failures.put_rollback(RollbackRecord(
                run_id=run_id, batch=batch.name, reason=redact(request.reason) or "manual rollback",
                clusters=run.clusters, versions=dict(run.from_versions), rolled_back_from=run.target_version,
                status=RollbackStatus.PLANNED, manual=True, at=now, detail=f"undoes run {newest.run_id}"))
        return self._plan(run, rollback_to={c: run.from_versions[c] for c in bounded(run.clusters)})


def _unknown_account() -> str:
    raise ConfigError("aws.cluster_accounts is not set and the account GUARD runs in is unknown; "
                      "list the clusters' accounts under aws.cluster_accounts")
