"""What the benchmarks measure on one execution of the rehearsal, against Step Functions' limits.

Shared by benchmarks/fleet.py (one batch) and benchmarks/rollout.py (a rollout and its child
executions), so that both count the same way (docs/scale.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from guard.executions import execution_history

from sandbox.rehearsal import payload_bytes

PAYLOAD_LIMIT = 256 * 1024  # bytes of state data (input or output) per state
CAUSE_LIMIT = 32_768  # characters of an error's cause
HISTORY_LIMIT = 25_000  # history events per Standard execution


# The history events AWS records per state, from the Step Functions developer guide's history event
# types: a Pass, Choice, Wait or Succeed state is entered and exited; a Fail state is entered and the
# execution fails; a Task is entered and exited and each attempt is scheduled, started and ends
# (succeeded, failed or timed out), a .waitForTaskToken or .sync one also submitted (for
# states:startExecution.sync:2 the TaskSubmitted carries the child's StartExecution answer and the
# task ends when the child does); an inline Map is entered, started, ends and is exited, and each
# iteration starts and ends.
def aws_history_events(types: dict[str, int]) -> int:
    """The history AWS would record for the states the execution entered (moto's events by type)."""
    def n(*names: str) -> int:
        return sum(types.get(name, 0) for name in names)

    entered = {kind: n(f"{kind}StateEntered") for kind in ("Pass", "Choice", "Wait", "Succeed", "Fail", "Task", "Map")}
    return (n("ExecutionStarted") + n("ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut")
            + 2 * (entered["Pass"] + entered["Choice"] + entered["Wait"] + entered["Succeed"]) + entered["Fail"]
            + 2 * entered["Task"] + n("TaskScheduled", "TaskStarted", "TaskSubmitted")
            + n("TaskSucceeded", "TaskFailed", "TaskTimedOut")
            + 4 * entered["Map"] + 2 * n("MapIterationStarted"))


def _causes(event: dict[str, Any]) -> list[str]:
    """Every `cause` an event carries (task, execution, Map iteration failures...)."""
    return [value["cause"] for value in event.values()
            if isinstance(value, dict) and isinstance(value.get("cause"), str)]


def execution_figures(sfn: Any, execution_arn: str) -> dict[str, Any]:
    """One execution's figures from its history: events (moto's and as AWS counts them), transitions,
    the largest state payload, the longest error cause, the Lambda tasks it scheduled."""
    events = execution_history(sfn, execution_arn)
    types = Counter(e["type"] for e in events)
    scheduled = [e.get("taskScheduledEventDetails", {}) for e in events if e["type"] == "TaskScheduled"]
    return {
        "history_events": len(events),
        "aws_history_events": aws_history_events(dict(types)),
        "history_event_types": dict(types),
        "state_transitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
        "max_state_payload_bytes": max((payload_bytes(e) for e in events), default=0),
        "longest_cause_chars": max((len(c) for e in events for c in _causes(e)), default=0),
        "lambda_invocations": sum(1 for d in scheduled if d.get("resourceType") == "lambda"),
        "child_executions_started": sum(1 for d in scheduled if d.get("resourceType") == "states"),
    }


def breaks_limits(figures: dict[str, Any]) -> list[str]:
    """The Step Functions limits an execution's figures break (empty: none)."""
    broken = []
    events = max(figures["history_events"], figures["aws_history_events"])
    if events >= HISTORY_LIMIT:
        broken.append(f"{events:,} history events (limit {HISTORY_LIMIT:,})")
    if figures["max_state_payload_bytes"] >= PAYLOAD_LIMIT:
        broken.append(f"a {figures['max_state_payload_bytes']:,}-byte state payload (limit {PAYLOAD_LIMIT:,})")
    if figures["longest_cause_chars"] > CAUSE_LIMIT:
        broken.append(f"a {figures['longest_cause_chars']:,}-character cause (limit {CAUSE_LIMIT:,})")
    return broken

