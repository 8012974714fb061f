"""The batch lock: one run per batch at a time, and never a batch stranded by a run that is gone.

The lock holds its run's execution ARN and an expiry longer than the longest run
(`lock_hours`). A lock whose holder execution has ended (Step Functions DescribeExecution says
so: a stop from the console, a crash before the release) is taken over at once, and the take-over
is written as an audit record next to the lock (`LOCK#<batch>` / `AUDIT#...`).
"""

from __future__ import annotations

from datetime import datetime

from guard.config.models import TenantConfig
from guard.errors import BatchLocked
from guard.ports import Executions
from guard.stores.state import LockAudit, StateStore

# Beyond the longest run: Lambda retries, Retry intervals and the tasks between the waits.
_MARGIN_HOURS = 24.0


def longest_run_hours(config: TenantConfig, soak_minutes: float) -> float:
    """The longest an upgrade can run with `config` and this soak: every wait at its timeout, one after
    the other (merge, Flux, sidecar waves, soak, the extra soak before a second validation, decision, rollback
    merge, rollback verify)."""
    validation, rollback = config.validation, config.rollback
    verify_minutes = rollback.verify_timeout_minutes or validation.flux_sync_timeout_minutes
    return (config.gitlab.merge_timeout_hours
            + validation.flux_sync_timeout_minutes / 60
            + config.execution.sidecar_restart_timeout_minutes / 60
            + (soak_minutes + validation.revalidate_after_minutes) / 60
            + rollback.decision_timeout_hours
            + rollback.merge_timeout_hours
            + verify_minutes / 60)


def lock_hours(config: TenantConfig, soak_minutes: float) -> float:
    """How long a lock is held before it counts as expired: `execution.lock_ttl_hours`, or more when
    this run can outlast it (a long soak, long merge timeouts)."""
    return max(config.execution.lock_ttl_hours, longest_run_hours(config, soak_minutes) + _MARGIN_HOURS)


class BatchLocks:
    """Takes batch locks; `executions` (None: no take-over of ended holders) tells whether a holder still runs."""

    def __init__(self, state: StateStore, executions: Executions | None = None) -> None:
        self._state = state
        self._executions = executions

    def acquire(self, batch: str, run_id: str, execution_arn: str | None, now: datetime,
                hours: float) -> LockAudit | None:
        """Take `batch`'s lock for `run_id`; returns the audit record when it was taken over from an
        ended execution. BatchLocked when a running execution (or one that cannot be checked) holds it."""
        try:
            self._state.acquire_lock(batch, run_id, now, hours, execution_arn=execution_arn)
            return None
        except BatchLocked:
            holder = self._state.lock(batch)
            if holder is None:  # released meanwhile: ask again, once
                self._state.acquire_lock(batch, run_id, now, hours, execution_arn=execution_arn)
                return None
            if self._executions is None or not holder.execution_arn:
                raise
            described = self._executions.describe_execution(holder.execution_arn)
            if not described.ended:
                raise
        when = f" at {described.stop_date.isoformat()}" if described.stop_date else ""
        reason = (f"run {holder.run_id} held the lock, but its execution {holder.execution_arn} has ended "
                  f"({described.status}{when}) without releasing it")
        return self._state.take_over_lock(holder, run_id, execution_arn, now, hours, reason)
