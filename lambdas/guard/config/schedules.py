"""Schedules as EventBridge Scheduler sees them: the expression and the fixed execution input.

Pure (no CDK), so `guard validate-config` checks what the synth will deploy without starting node.
"""

from __future__ import annotations

import re
from typing import Any

from guard.config.models import ScheduleConfig
from guard.errors import ConfigError

_UNIX_DOW = {str(n): str(n + 1) for n in range(7)} | {"7": "1"}


def schedule_expression(cron: str, where: str) -> str:
    """EventBridge Scheduler's expression: `cron(...)`, `rate(...)` and `at(...)` pass through; a Unix
    five-field cron (`0 2 * * 1`) is translated (`cron(0 2 ? * 2 *)`, Sunday is 1 there)."""
    text = cron.strip()
    if re.match(r"^(cron|rate|at)\(.+\)$", text):
        return text
    fields = text.split()
    if len(fields) != 5:
        raise ConfigError(f"{where}: '{cron}' is neither cron(...)/rate(...)/at(...) nor a five-field cron")
    minute, hour, dom, month, dow = fields
    if dow != "*" and dom != "*":
        raise ConfigError(f"{where}: EventBridge cannot combine a day of month and a day of week ('{cron}')")
    dow = "?" if dow == "*" else re.sub(r"\d", lambda m: _UNIX_DOW[m.group(0)], dow)
    dom = "?" if dow != "?" else dom
    return f"cron({minute} {hour} {dom} {month} {dow} *)"


def schedule_input(schedule: ScheduleConfig) -> dict[str, Any]:
    """The fixed execution input a schedule starts with."""
    requested_by = f"schedule:{schedule.name}"
    if schedule.batch:
        return {"batch": schedule.batch, "target_version": schedule.target_version, "requested_by": requested_by}
    return {"batches": schedule.rollout, "target_version": schedule.target_version, "requested_by": requested_by}
