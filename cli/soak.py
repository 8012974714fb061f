"""`guard monitor --soak-period MIN`: set the soak of a run, before or while it soaks.

The run's soak length lives in its soak record (`RUN#<id>` / `SOAK`, guard.stores.state.SoakRecord),
which the state machine's `Soak` check reads every few minutes of soak: a new length set here
moves the end of a soak that is running, and sets the length of one that has not started.
Lengthening is always allowed. Shortening follows the rule for every execution input (it may only
make a run stricter): below the batch's configured soak it is refused (exit 2, with the reason)
unless `execution.allowed_overrides` allows it. A change once the soak is over is too late: a
warning, and `monitor` keeps following (the seed runs it under `set -e`).
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from typing import TextIO

from guard.errors import InvalidInput

from cli.output import duration
from cli.runs import RunView
from cli.where import Deployment

MAX_MINUTES = 60 * 24 * 7  # the execution input's own limit on soak_period_minutes


def _who() -> str:
    """Who asks: the CI user when there is one, else the local user."""
    for name in ("GITLAB_USER_LOGIN", "GITHUB_ACTOR"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def request_soak(deployment: Deployment, view: RunView, minutes: float, out: TextIO) -> int | None:
    """Set the run's soak to `minutes`; an exit code to stop with, or None to keep following.

    InvalidInput (exit 2) for a length that is not allowed; a warning for one that comes too late."""
    from cli.commands import _plan_of

    if not 0 <= minutes <= MAX_MINUTES:
        raise InvalidInput(f"--soak-period {minutes:g}: a soak is 0 to {MAX_MINUTES} minutes (7 days)")
    batch = view.batch
    if view.kind == "rollback":
        print(f"[{batch}] warning: --soak-period does not apply: this run is a rollback (it does not soak)", file=out)
        return None
    if view.status != "RUNNING":
        print(f"[{batch}] warning: too late for --soak-period {minutes:g}: the run has ended ({view.status})",
              file=out)
        return None
    state = deployment.state()
    run = deployment.aws.run("dynamodb.GetItem", lambda: state.find_run(view.run_id))
    plan = _plan_of(deployment, view.execution_arn)
    if run is None or plan is None or plan.get("soak_seconds") is None:
        print(f"[{batch}] warning: the run is not planned yet; --soak-period {minutes:g} is not applied "
              f"(run `guard monitor --batch {batch} --soak-period {minutes:g}` again in a moment)", file=out)
        return None
    planned = int(plan["soak_seconds"])
    soak = deployment.aws.run("dynamodb.GetItem", lambda: state.soak(run.run_id))
    if soak is not None and soak.ended_at is not None:
        print(f"[{batch}] warning: too late for --soak-period {minutes:g}: the soak of "
              f"{duration(soak.soak_seconds)} is over (ended {soak.ended_at:%Y-%m-%d %H:%M} UTC); following the "
              "run as it is", file=out)
        return None
    seconds = round(minutes * 60)
    current = soak.soak_seconds if soak is not None else planned
    if seconds == current:
        print(f"[{batch}] soak: {duration(current)}, as set", file=out)
        return None
    if deployment.config is not None:
        from guard.services.soak import allowed_length

        allowed_length(deployment.config, run, planned, seconds)  # InvalidInput names the rule
    elif seconds < planned:
        raise InvalidInput(f"--soak-period {minutes:g}: shorter than this run's planned soak "
                           f"({duration(planned)}) and the tenant config is unknown here, so its floor cannot be "
                           "checked (pass --config or --tenant)")
    note = (f"{_who()} set the soak to {duration(seconds)} (was {duration(current)}) at "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    updated = deployment.aws.run("dynamodb.UpdateItem", lambda: state.request_soak(run, seconds, note))
    if updated is None:
        print(f"[{batch}] warning: too late for --soak-period {minutes:g}: the soak ended meanwhile", file=out)
        return None
    verb = "lengthened" if seconds > current else "shortened"
    if updated.started_at is None:
        print(f"[{batch}] soak {verb} to {duration(seconds)} (was {duration(current)}); it has not started yet",
              file=out)
    else:
        print(f"[{batch}] soak {verb} to {duration(seconds)} (was {duration(current)}), counted from its start; "
              "the end moves at the next check", file=out)
    return None
