"""The soak: let the new version take real traffic before judging it, for as long as the run's soak
record says *now*.

The state machine checks the soak (task `Soak`), waits at most `wait_seconds`, and checks again
until `done`. Each check reads the length from the run's soak record (`guard.stores.state.SoakRecord`),
so `guard monitor --soak-period MIN` moves the end of a soak that is running. The checks are
spaced so a soak of any length writes a bounded number of history events (at most about
`CHECKS_PER_SOAK` loops, never closer than `MIN_CHECK_SECONDS` apart).

A length below the plan's counts only when the tenant config allows that shortening (the rule
for every execution input: it may only make a run stricter, `guard.config.overrides`); otherwise
the check keeps the plan's soak and says why in the log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from guard.config.models import TenantConfig
from guard.config.overrides import batch_overrides, refuse_loosening
from guard.core.run import RunRecord
from guard.errors import InvalidInput
from guard.ports import Clock
from guard.services.locks import lock_hours
from guard.stores.dynamo import ttl
from guard.stores.state import StateStore

MIN_CHECK_SECONDS = 300  # "every few minutes": a length change takes effect within this much soak
CHECKS_PER_SOAK = 100  # a 7-day soak loops ~100 times (~900 history events), not 2,000


class SoakCheck(BaseModel):
    """The `Soak` task's result (`$.soak`): over or not, how long to wait before the next check."""

    done: bool
    wait_seconds: int  # 0 when done
    soak_seconds: int  # the length in force
    left_seconds: float
    started_at: datetime
    ends_at: datetime
    stage: str
    merge_request_url: str | None = None


def check_interval(soak_seconds: float) -> float:
    """How far apart the checks of a soak this long are."""
    return max(MIN_CHECK_SECONDS, soak_seconds / CHECKS_PER_SOAK)


def allowed_length(config: TenantConfig, run: RunRecord, planned_seconds: int, wanted_seconds: int) -> int:
    """`wanted_seconds` when the config allows it for this run; InvalidInput naming the rule otherwise.

    Longer is always allowed. Shorter than the plan only when an input asking for it at the start
    would have been accepted (not below the batch's configured soak, unless the config allows it)."""
    if wanted_seconds >= planned_seconds:
        return wanted_seconds
    asked = run.options.model_copy(update={"soak_period_minutes": wanted_seconds / 60})
    refuse_loosening(batch_overrides(asked, config), config, f"soak change of run {run.run_id}")
    return wanted_seconds


class SoakService:
    def __init__(self, config: TenantConfig, state: StateStore, clock: Clock,
                 log_warning: Callable[..., Any] | None = None) -> None:
        self._config = config
        self._state = state
        self._clock = clock
        self._warn = log_warning or (lambda *a, **k: None)

    def check(self, run_id: str, planned_seconds: int) -> SoakCheck:
        """One check: starts the soak on the first call; `done` once its current length has passed."""
        now = self._clock.now()
        run = self._state.get_run(run_id)
        record = self._state.start_soak(run, planned_seconds, now)
        assert record.started_at is not None  # start_soak sets it
        length = record.soak_seconds
        try:
            length = allowed_length(self._config, run, planned_seconds, length)
        except InvalidInput as e:  # written around the CLI (which refuses it): the plan's soak holds
            self._warn("soak change refused; the planned soak holds", extra={"run_id": run_id, "error": str(e)})
            length = planned_seconds
        ends = record.started_at + timedelta(seconds=length)
        left = (ends - now).total_seconds()
        done = left <= 0 or record.ended_at is not None
        if done:
            self._state.end_soak(run_id, now)
        elif length > planned_seconds:
            # A longer soak must not outlive the batch lock taken for the planned one.
            self._state.extend_lock(run.batch, run_id, ttl(ends, lock_hours(self._config, 0)))
        wait = 0 if done else max(1, math.ceil(min(left, check_interval(length))))
        return SoakCheck(done=done, wait_seconds=wait, soak_seconds=length, left_seconds=max(0.0, left),
                         started_at=record.started_at, ends_at=ends, stage=str(run.stage),
                         merge_request_url=run.merge_request_url)
