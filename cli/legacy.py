"""A rollout execution (many batches) followed through its history: the lines `guard rollout --wait` prints.

Batch runs are followed through their run record (cli.follow); a rollout has none, so its
progress is told from its history events (each child batch starting and ending).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, TextIO

from guard.errors import InvalidInput
from guard.executions import execution_history

from cli.follow import FOLLOW_TIMEOUT, exit_code
from cli.where import Deployment


def rollout_input(args: argparse.Namespace) -> dict[str, Any]:
    """The rollout execution input from `guard rollout`'s flags."""
    execution_input: dict[str, Any] = {"target_version": args.target_version,
                                       "batches": "all" if args.batches == "all" else
                                       [b.strip() for b in args.batches.split(",") if b.strip()]}
    if args.soak_period is not None:
        execution_input["soak_period_minutes"] = args.soak_period
    overrides = {}
    for item in args.soak_override or []:
        batch, _, minutes = item.partition("=")
        try:
            overrides[batch] = float(minutes)
        except ValueError as e:
            raise InvalidInput(f"--soak-override {item!r}: use BATCH=MINUTES") from e
    if overrides:
        execution_input["soak_overrides"] = overrides
    for key in ("on_failure", "max_concurrent_batches", "requested_by"):
        if getattr(args, key):
            execution_input[key] = getattr(args, key)
    return execution_input


def describe_event(event: dict[str, Any]) -> str | None:
    """One progress line for a history event, or None for the noise."""
    kind = event["type"]
    if kind.endswith("StateEntered"):
        name = event["stateEnteredEventDetails"]["name"]
        if name in ("CheckFluxSync", "FluxSynced", "WaitForFlux", "RolloutSucceeded?", "ReadRefusal",
                    "BatchSucceeded", "BatchFailed", "RunBatch", "RecordBatch", "Claim", "RunWaitOrSkip",
                    "WaitForTurn", "BatchSkipped"):
            return None
        detail = _json(event["stateEnteredEventDetails"].get("input"))
        cluster = detail.get("cluster_id") if isinstance(detail, dict) else None
        return f"→ {name}" + (f" [{cluster}]" if cluster else "")
    if kind == "TaskSucceeded":
        output = _json(event["taskSucceededEventDetails"].get("output"))
        payload = output.get("Payload") if isinstance(output, dict) else None
        if isinstance(payload, dict) and payload.get("action") == "run":
            return f"▶ starting {(payload.get('input') or {}).get('batch', '?')}"
        if isinstance(output, dict) and "ExecutionArn" in output:
            return f"  ✓ batch {(_json(output.get('Input')) or {}).get('batch', '?')} succeeded"
    if kind == "TaskFailed":
        details = event["taskFailedEventDetails"]
        described = _json(details.get("cause"))
        if isinstance(described, dict) and "Input" in described:
            batch = (_json(described.get("Input")) or {}).get("batch", "?")
            return f"  ✗ batch {batch}: {described.get('Error')}"
        return f"  ✗ {details.get('error')}"
    return None


def watch(deployment: Deployment, arn: str, *, timeout: float | None, out: TextIO, poll: float = 2.0,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Print progress until the execution ends or `timeout` seconds pass; returns DescribeExecution."""
    live = out.isatty()
    seen = 0
    started = time.monotonic()
    while True:
        events = deployment.aws.run("stepfunctions.GetExecutionHistory",
                                    lambda: execution_history(deployment.aws.client("stepfunctions"), arn))
        for event in events[seen:]:
            line = describe_event(event)
            if line:
                print(("\r\033[K" if live else "") + line, file=out, flush=True)
        seen = len(events)
        described: dict[str, Any] = deployment.aws.call("stepfunctions", "describe_execution", executionArn=arn)
        elapsed = time.monotonic() - started
        if described["status"] != "RUNNING" or (timeout is not None and elapsed >= timeout):
            if live:
                print("\r\033[K", end="", file=out)
            return described
        if live:  # one line rewritten in place on a terminal; CI logs get only the lines above
            print(f"\r\033[K  … {described['status'].lower()} for {int(elapsed)}s", end="", file=out, flush=True)
        sleep(poll if timeout is None else min(poll, max(0.05, timeout - elapsed)))


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None


def report(described: dict[str, Any], out: TextIO) -> int:
    """Print the outcome (a rollout's per-batch table too) and return the exit code."""
    status, error, cause = described["status"], described.get("error"), described.get("cause")
    code = exit_code(status, error)
    summary = _json(described.get("output")) if status == "SUCCEEDED" else _json(cause)
    if isinstance(summary, dict) and isinstance(summary.get("batches"), list):
        for b in summary["batches"]:
            print(f"  {b['batch']:<16} {b['status']:<12} {b.get('reason') or ''}", file=out)
    if status == "RUNNING":
        print(f"still RUNNING after --timeout: {described['executionArn']}; the rollout goes on. Resume with "
              f"`guard status {described['executionArn']} --wait`", file=out)
        return FOLLOW_TIMEOUT
    if status == "SUCCEEDED":
        print(f"SUCCEEDED: {described['executionArn']}", file=out)
    else:
        text = cause if not isinstance(summary, dict) else f"{summary.get('counts')}"
        print(f"{status} {error}: {text}", file=out)
    return code


