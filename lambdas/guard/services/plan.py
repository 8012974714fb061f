"""Plan a batch upgrade: the first state. Everything it refuses, it refuses before
anything changes (the lock is the last step)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from guard.clock import Clock
from guard.config.loader import format_validation_error
from guard.config.models import TenantConfig
from guard.core.run import ExecutionInput, Plan, RunRecord
from guard.core.version import Version, upgrade_problem
from guard.errors import (
    ConfigError,
    InvalidInput,
    PrerequisiteNotMet,
    UnknownBatch,
    UnknownCluster,
    VersionNotAllowed,
)
from guard.services.windows import refuse_inside_window
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore


def parse_input(raw: Any) -> ExecutionInput:
    """Validate the execution input; InvalidInput names every bad field."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"execution input must be a JSON object, got {type(raw).__name__}")
    try:
        return ExecutionInput.model_validate(raw)
    except ValidationError as e:
        raise InvalidInput(format_validation_error(e, "execution input")) from e


class BatchPlanner:
    """Turns a validated input into a Plan, a run record and a held batch lock."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._clock = clock

    def plan(self, request: ExecutionInput, run_id: str, execution_arn: str) -> Plan:
        config = self._config
        batch = config.batch(request.batch)
        if batch is None:
            known = ", ".join(b.name for b in config.batches)
            raise UnknownBatch(f"batch: unknown batch '{request.batch}' (this tenant has: {known})")

        clusters = self._registry.get_many(batch.clusters)
        missing = [c for c in batch.clusters if c not in clusters]
        if missing:
            raise UnknownCluster(
                f"batch '{batch.name}' lists clusters missing from the registry: {', '.join(missing)} "
                "(import them with `python -m cli registry import`)"
            )

        projects = sorted({c.gitlab_project for c in clusters.values()})
        if len(projects) > 1:
            raise ConfigError(
                f"batch '{batch.name}' spans GitLab projects {', '.join(projects)}; GUARD opens one "
                "merge request per batch, so a batch's clusters must share one GitOps project"
            )

        target = Version.parse(request.target_version)
        problems = []
        for cluster_id in batch.clusters:
            problem = upgrade_problem(clusters[cluster_id].version, target,
                                      config.execution.max_minor_version_skip)
            if problem:
                problems.append(f"{cluster_id}: {problem}")
        if problems:
            raise VersionNotAllowed(f"target_version {target} refused: " + "; ".join(problems))

        # Change windows (docs/config.md#change_windows): refused before anything changes.
        refuse_inside_window(config, batch.name, {c.environment for c in clusters.values()},
                             self._clock.now())
        for prereq in config.batch_order.get(batch.name, []):
            result = self._state.get_batch_result(prereq, str(target))
            if result is None or result.status != "succeeded":
                seen = f"its last run at {target} {result.status}" if result else f"it has not run at {target}"
                raise PrerequisiteNotMet(
                    f"batch '{batch.name}' requires '{prereq}' to have succeeded at {target} first; {seen}"
                )

        now = self._clock.now()
        # Lock first: a refused run must leave no record behind. Both steps are
        # idempotent for the same run id, so a retried task lands in the same place.
        self._state.acquire_lock(batch.name, run_id, now, config.execution.lock_ttl_hours)
        existing = self._state.find_run(run_id)
        if existing is None:
            self._state.put_run(RunRecord(
                run_id=run_id,
                execution_arn=execution_arn,
                batch=batch.name,
                target_version=str(target),
                clusters=list(batch.clusters),
                from_versions={c: clusters[c].current_istio_version for c in batch.clusters},
                gitlab_project=projects[0],
                options=request,
                started_at=now,
            ))

        soak_minutes = request.soak_period_minutes
        if soak_minutes is None:
            soak_minutes = batch.soak_period_minutes
        if soak_minutes is None:
            soak_minutes = config.validation.soak_period_minutes
        return Plan(
            run_id=run_id,
            batch=batch.name,
            target_version=str(target),
            clusters=list(batch.clusters),
            soak_seconds=int(soak_minutes * 60),
            merge_timeout_seconds=int(config.gitlab.merge_timeout_hours * 3600),
            flux_poll_seconds=config.validation.flux_poll_seconds,
            max_concurrency=config.execution.max_concurrent_clusters,
            restart_sidecars=config.execution.enable_rollout_sequencing,
            rollback_timeout_seconds=int(config.rollback.merge_timeout_hours * 3600),
            decision_timeout_seconds=int(config.rollback.decision_timeout_hours * 3600),
            llm_analysis=config.llm.enabled and (request.enable_llm_analysis is not False),
            rollback_mr=config.rollback.auto_create_mr,
        )
