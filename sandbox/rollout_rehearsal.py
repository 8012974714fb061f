"""Rehearse a rollout: the real rollout state machine starting real child executions of the
batch state machine, each going through the whole local world (MRs, Flux, soak, Datadog)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from guard.executions import execution_history
from guard.rollout.dag import RolloutGraph
from guard.stores.rollouts import RolloutStore

from sandbox.engine import LocalEngine
from sandbox.rehearsal import Progress, _json, follow, payload_bytes
from sandbox.scenario import Scenario
from sandbox.world import LocalWorld


class RolloutProgress(Progress):
    """One line for the plan, per batch start, per change-window wait and per batch end, in scenario time.

    Polls of a batch waiting for its prerequisites print nothing."""

    def event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "TaskSucceeded":
            output = _json(event.get("taskSucceededEventDetails", {}).get("output"))
            payload = output.get("Payload") if isinstance(output, dict) else None
            if isinstance(payload, dict) and payload.get("items"):
                self.line(f"▶ plan: {', '.join(payload['items'])}  (at most {payload['max_concurrency']} at a time)")
            elif isinstance(payload, dict) and payload.get("action") == "run":
                self.line(f"▶ start {(payload.get('input') or {}).get('batch', '?')}")
            elif isinstance(payload, dict) and payload.get("action") == "wait" and payload.get("reason"):
                self.line(f"⏸ {payload['reason']}: waiting {payload['wait_seconds']}s")
            elif isinstance(output, dict) and "ExecutionArn" in output:
                batch = (_json(output.get("Input")) or {}).get("batch", "?")
                self.line(f"  ✓ batch {batch} succeeded")
        elif kind == "TaskFailed":
            details = event.get("taskFailedEventDetails", {})
            described = _json(details.get("cause"))
            if isinstance(described, dict) and "Input" in described:
                batch = (_json(described.get("Input")) or {}).get("batch", "?")
                ended = "rolled back" if described.get("Error") == "RolledBack" else \
                    str(described.get("Status", "FAILED")).lower()
                self.line(f"  ✗ batch {batch} {ended}: "
                          f"{described.get('Error')}: {_short(described.get('Cause'))}")
        elif kind == "ExecutionFailed":
            details = event.get("executionFailedEventDetails", {})
            self.line(f"✗ rollout {details.get('error')}")
        elif kind == "ExecutionSucceeded":
            self.line("✓ rollout SUCCEEDED")


def _short(text: Any) -> str:
    text = str(text or "")
    return text if len(text) < 160 else text[:157] + "..."


def run_rollout(scenario: Scenario, out: TextIO, on_world: Callable[[LocalWorld], None] | None = None,
                inspect: Callable[[LocalWorld, dict[str, Any]], None] | None = None,
                engine: LocalEngine | None = None) -> dict[str, Any]:
    """Rehearse a `rollout:` scenario; returns the JSON summary (per batch: status, why, scenario times)."""
    assert scenario.rollout is not None
    started = time.monotonic()
    with LocalWorld(scenario, engine) as world:
        if on_world:
            on_world(world)
        progress = RolloutProgress(world, out)
        sfn = world.engine.client("stepfunctions")
        rollout_input = {"target_version": scenario.target_version, "batches": scenario.rollout.batches,
                         **scenario.rollout.input}
        progress.line(f"scenario '{scenario.name}': rollout of {scenario.rollout.batches} → "
                      f"{scenario.target_version} on {len(scenario.fleet)} cluster(s), clock ×{scenario.speedup:g}")
        arn = sfn.start_execution(stateMachineArn=world.rollout_state_machine_arn,
                                  name=f"rollout-{uuid.uuid4().hex[:8]}",
                                  input=json.dumps(rollout_input))["executionArn"]
        status = follow(world, sfn, arn, progress, scenario)
        summary = rollout_summary(world, scenario, arn, status, time.monotonic() - started)
        if inspect:
            inspect(world, summary)
    return summary


def rollout_summary(world: LocalWorld, scenario: Scenario, arn: str, status: str,
                    real_seconds: float) -> dict[str, Any]:
    sfn = world.engine.client("stepfunctions")
    events = execution_history(sfn, arn)
    description = sfn.describe_execution(executionArn=arn)
    origin: datetime = description["startDate"]
    speed = scenario.speedup

    def at(moment: datetime | None) -> int | None:
        return None if moment is None else round((moment - origin).total_seconds() * speed)

    rollout_id = arn.rsplit(":", 1)[-1]
    record = RolloutStore(world.engine.resource("dynamodb").Table(
        world.config.aws.dynamodb.state_table_name)).find(rollout_id)
    children = {e["name"]: e for e in _executions(sfn, world.state_machine_arn)}
    child_events: dict[str, int] = {}
    batches: list[dict[str, Any]] = []
    for batch in (record.order if record else []):
        entry = record.entries[batch] if record else None
        child = children.get(entry.execution_name or "") if entry else None
        item: dict[str, Any] = {"batch": batch, "status": entry.status if entry else "unknown",
                                "wave": entry.wave if entry else None, "reason": entry.reason if entry else None,
                                "soak_period_minutes": entry.soak_period_minutes if entry else None}
        if child:
            item["execution_arn"] = child["executionArn"]
            item["start_s"] = at(child["startDate"])
            item["end_s"] = at(child.get("stopDate"))
            child_events[batch] = len(execution_history(sfn, child["executionArn"]))
        batches.append(item)
    failure = next((e.get("executionFailedEventDetails") for e in events if e["type"] == "ExecutionFailed"), None)
    graph = RolloutGraph.build([b.name for b in world.config.batches], world.config.batch_order,
                               record.order if record else None) if record else None
    return {
        "scenario": scenario.name,
        "kind": "rollout",
        "execution_arn": arn,
        "status": status,
        "outcome": record.status if record else "refused",
        "error": (failure or {}).get("error"),
        "cause": (failure or {}).get("cause"),
        "target_version": scenario.target_version,
        "planned_waves": record.waves if record else [],
        "batches": batches,
        "overlapping": _overlaps(batches),
        "order_valid": _order_valid(batches, graph) if graph else False,
        "merge_requests": [{"iid": mr["iid"], "state": mr["state"], "title": mr.get("title")}
                           for mr in world.gitlab.merge_requests(scenario.gitlab_project)],
        "history_events": len(events),
        "child_history_events": child_events,
        "state_transitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
        "max_state_payload_bytes": max((payload_bytes(e) for e in events), default=0),
        "lambda_invocations": len(world.engine.invocations),
        "real_seconds": round(real_seconds, 2),
        "scenario_seconds": round(((description.get("stopDate") or datetime.now(origin.tzinfo)) - origin)
                                  .total_seconds() * speed),
    }


def _executions(sfn: Any, state_machine_arn: str) -> list[dict[str, Any]]:
    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn)
    return [execution for page in pages for execution in page["executions"]]


def _overlaps(batches: list[dict[str, Any]]) -> list[list[str]]:
    """Pairs of batches whose child executions ran at the same time (scenario seconds)."""
    timed = [b for b in batches if b.get("start_s") is not None and b.get("end_s") is not None]
    return [[a["batch"], b["batch"]] for i, a in enumerate(timed) for b in timed[i + 1:]
            if a["start_s"] < b["end_s"] and b["start_s"] < a["end_s"]]


def _order_valid(batches: list[dict[str, Any]], graph: RolloutGraph) -> bool:
    """Every batch that ran started after each of its prerequisites ended, and is listed after them."""
    position = {b["batch"]: i for i, b in enumerate(batches)}
    timing = {b["batch"]: b for b in batches}
    for batch, prereqs in graph.prerequisites.items():
        for p in prereqs:
            if position[p] > position[batch]:
                return False
            mine, theirs = timing[batch], timing[p]
            if mine.get("start_s") is not None and (theirs.get("end_s") is None or mine["start_s"] < theirs["end_s"]):
                return False
    return True


def rollout_expectation_problems(scenario: Scenario, summary: dict[str, Any]) -> list[str]:
    """How a rollout run differs from the scenario's `expect` block (empty when it matched)."""
    expect = scenario.expect
    if expect is None:
        return []
    problems = []
    if summary["outcome"] != expect.outcome:
        problems.append(f"expected outcome {expect.outcome}, got {summary['outcome']}")
    if expect.error and summary.get("error") != expect.error:
        problems.append(f"expected error {expect.error}, got {summary.get('error')}")
    got = {b["batch"]: b["status"] for b in summary["batches"]}
    for batch, status in expect.batches.items():
        if got.get(batch) != status:
            problems.append(f"expected batch {batch} {status}, got {got.get(batch)}")
    if not summary["order_valid"]:
        problems.append("a batch started before one of its prerequisites ended")
    return problems


def print_rollout(summary: dict[str, Any], out: TextIO) -> None:
    """The per-batch table: status, wave, scenario start/end, and why."""
    print(f"\n{summary['scenario']}: rollout {summary['status']} ({summary['outcome']}); "
          f"{summary['history_events']} history events (children: "
          f"{sum(summary['child_history_events'].values())}), max state payload "
          f"{summary['max_state_payload_bytes']} bytes, {summary['real_seconds']}s real", file=out)
    print(f"{'batch':<14} {'status':<12} {'wave':>4} {'start':>9} {'end':>9}  why", file=out)
    for b in summary["batches"]:
        print(f"{b['batch']:<14} {b['status']:<12} {b['wave'] or '-':>4} {_clock(b.get('start_s')):>9} "
              f"{_clock(b.get('end_s')):>9}  {b.get('reason') or ''}", file=out)
    if summary["overlapping"]:
        print("ran at the same time: " + "; ".join(" + ".join(pair) for pair in summary["overlapping"]), file=out)


def _clock(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
