"""Schedules as EventBridge Scheduler sees them: the expression and the fixed execution input.

Pure (no CDK), so `guard validate-config` checks what the synth will deploy without starting node.
"""

from __future__ import annotations

from typing import Any

from guard.config.cron import schedule_expression_or_error
from guard.config.models import ScheduleConfig


def schedule_expression(cron: str, where: str) -> str:
    """EventBridge Scheduler's expression: `rate(...)` and `at(...)` pass through, `cron(...)` is checked
    for EventBridge's rules, a Unix five-field cron (`0 2 * * 1`) is translated exactly
    (`cron(0 2 ? * 2 *)`, Sunday is 1 there; guard.config.cron). ConfigError naming `where` otherwise."""
    return schedule_expression_or_error(cron, where)


def schedule_input(schedule: ScheduleConfig) -> dict[str, Any]:
    """The fixed execution input a schedule starts with."""
    requested_by = f"schedule:{schedule.name}"
    if schedule.batch:
        return {"batch": schedule.batch, "target_version": schedule.target_version, "requested_by": requested_by}
    return {"batches": schedule.rollout, "target_version": schedule.target_version, "requested_by": requested_by}
