"""`guard monitor --soak-period MIN` on a run that is already planned.

The soak of a run is fixed when Plan runs (`$.plan.soak_seconds`, read by the `Soak` Wait state),
so on this deployment `monitor` cannot move it: it says what the run will soak and keeps
following (the seed runs `monitor` under `set -e`, so a mismatch is a warning, not a failure).
"""

from __future__ import annotations

from typing import TextIO

from cli.output import duration
from cli.runs import RunView
from cli.where import Deployment


def request_soak(deployment: Deployment, view: RunView, minutes: float, out: TextIO) -> int | None:
    """Say how the run's soak compares with `minutes`; an exit code to stop with, or None to keep following."""
    from cli.commands import _plan_of

    if minutes < 0:
        from guard.errors import InvalidInput

        raise InvalidInput(f"--soak-period {minutes:g}: a soak cannot be negative")
    plan = _plan_of(deployment, view.execution_arn)
    planned = plan.get("soak_seconds") if plan else None
    if planned is None:
        print(f"[{view.batch}] warning: the run's soak is not planned yet; --soak-period {minutes:g} is not applied "
              "(start the run with `guard run --soak-period`)", file=out)
        return None
    if abs(float(planned) - minutes * 60) < 1:
        print(f"[{view.batch}] soak: {duration(float(planned))}, as planned", file=out)
        return None
    print(f"[{view.batch}] warning: this run soaks {duration(float(planned))}, fixed when it was planned; "
          f"--soak-period {minutes:g} cannot change it on this deployment (start the run with "
          f"`guard run --soak-period {minutes:g}`). Following the run as planned.", file=out)
    return None
