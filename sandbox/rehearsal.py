"""Run one scenario end to end on the real state machine and summarise it."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TextIO

from guard.executions import execution_history
from guard.stores.failure import FailureStore
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import Outcome

from sandbox.engine import LocalEngine
from sandbox.scenario import Scenario
from sandbox.world import LocalWorld

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


class Progress:
    """Prints state by state and cluster by cluster, in scenario time."""

    def __init__(self, world: LocalWorld, out: TextIO) -> None:
        self._world = world
        self._out = out
        self._start = world.clock.now()
        self._real_start = datetime.now(UTC)
        self._at: datetime | None = None

    def show(self, event: dict[str, Any]) -> None:
        """`event`'s line(s), stamped with the scenario time the event happened (not printed)."""
        at = event.get("timestamp")
        self._at = at if isinstance(at, datetime) else None
        try:
            self.event(event)
        finally:
            self._at = None

    def note(self, at: datetime, text: str) -> None:
        """A line for what the person did at real time `at`."""
        self._at = at
        try:
            self.line(f"  👤 {text}")
        finally:
            self._at = None

    def line(self, text: str) -> None:
        if self._at is not None:
            elapsed = int(max(0.0, (self._at - self._real_start).total_seconds()) * self._world.scenario.speedup)
        else:
            elapsed = int((self._world.clock.now() - self._start).total_seconds())
        stamp = f"{elapsed // 3600:02d}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d}"
        print(f"[{stamp}] {text}", file=self._out, flush=True)

    def event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "TaskStateEntered" or kind in ("MapStateEntered", "WaitStateEntered", "ChoiceStateEntered",
                                                   "PassStateEntered", "FailStateEntered", "SucceedStateEntered"):
            details = event.get("stateEnteredEventDetails", {})
            name = details.get("name", "?")
            cluster = _cluster_of(details.get("input"))
            if name in ("CheckFluxSync", "FluxSynced", "WaitForFlux", "RestartSidecars", "SidecarsDone",
                        "WaitForSidecars", "RolloutSequencing", "StartSidecarRestarts", "VerifyRollback",
                        "RollbackVerified", "WaitForRollback", "StartRollbackVerify", "Action") \
                    or name.startswith("Notify"):
                return  # the poll loop: reported by the Lambda's own line below
            self.line(f"→ {name}" + (f"  [{cluster}]" if cluster else ""))
        elif kind == "TaskSucceeded":
            output = _json(event.get("taskSucceededEventDetails", {}).get("output"))
            payload = output.get("Payload") if isinstance(output, dict) else None
            if isinstance(payload, dict) and "verdict" in payload and "cluster_id" in payload:
                mark = {"pass": "✓", "fail": "✗"}.get(payload["verdict"], "?")
                self.line(f"  {mark} {payload['cluster_id']}: verdict {payload['verdict']}")
            elif isinstance(payload, dict) and "chunk" in payload and "failed" in payload:
                mark = "✗" if payload["failed"] else "?" if payload["inconclusive"] else "✓"
                self.line(f"  {mark} chunk {payload['chunk']}: {payload['clusters']} clusters validated: "
                          f"{payload['passed']} pass, {payload['failed']} fail, {payload['inconclusive']} inconclusive")
            elif isinstance(payload, dict) and "chunk" in payload and "passed" in payload:
                self.line(f"  ✓ chunk {payload['chunk']}: prechecks passed on {payload['passed']} of "
                          f"{payload['clusters']} clusters")
            elif isinstance(payload, dict) and "passed" in payload:
                self.line(f"  {'✓' if payload['passed'] else '✗'} {payload['cluster_id']}: prechecks "
                          f"{'passed' if payload['passed'] else 'failed'}")
            elif isinstance(payload, dict) and "needs_decision" in payload:
                self.line(f"  🔎 analysis: {payload.get('text')}")
            elif isinstance(payload, dict) and "waiting_on" in payload and "status" in payload:
                if payload.get("done"):
                    self.line(f"  ↩ rollback {payload.get('status')}: {payload.get('cause')}")
            elif isinstance(payload, dict) and "done" in payload and "restarted" in payload:
                for item in payload["restarted"]:
                    self.line(f"  ↻ restarted {item}")
                if payload["done"]:
                    self.line("  ✓ every proxy runs the new version")
            elif isinstance(payload, dict) and "synced" in payload:
                self.line("  ✓ Flux reconciled the target on every cluster" if payload["synced"]
                          else "  … waiting for Flux: " + "; ".join(payload.get("waiting_on", [])[:2]))
        elif kind == "TaskFailed":
            details = event.get("taskFailedEventDetails", {})
            self.line(f"  ✗ {details.get('error')}: {_message(details.get('cause'))}")
        elif kind == "ExecutionFailed":
            details = event.get("executionFailedEventDetails", {})
            self.line(f"✗ execution FAILED  {details.get('error')}: {_message(details.get('cause'))}")
        elif kind == "ExecutionSucceeded":
            self.line("✓ execution SUCCEEDED")


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None


def _message(cause: Any) -> str:
    parsed = _json(cause)
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        return str(parsed["errorMessage"])
    return str(cause)


def _cluster_of(state_input: Any) -> str | None:
    parsed = _json(state_input)
    if isinstance(parsed, dict) and "chunk" in parsed and "cluster_id" not in parsed:
        return f"chunk {parsed['chunk']}"
    return parsed.get("cluster_id") if isinstance(parsed, dict) else None


def payload_bytes(event: dict[str, Any]) -> int:
    """Size of the state data an event carries (input or output), as Step Functions counts it."""
    sizes = [0]
    for value in event.values():
        if isinstance(value, dict):
            for key in ("input", "output"):
                if isinstance(value.get(key), str):
                    sizes.append(len(value[key].encode()))
    return max(sizes)


def largest_payload(events: list[dict[str, Any]]) -> str:
    """Where the largest state data of a history is: the event's type and the state it belongs to (the
    state last entered before it), e.g. `TaskSucceeded in RecordSuccess`; "" for an empty history."""
    where, state, largest = "", "", -1
    for event in events:
        entered = event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails")
        if entered and event["type"].endswith("StateEntered"):
            state = entered.get("name", state)
        size = payload_bytes(event)
        if size > largest:
            largest = size
            name = (entered or {}).get("name") or state
            where = f"{event['type']} in {name}" if name else event["type"]
    return where


def follow(world: LocalWorld, sfn: Any, arn: str, progress: Progress, scenario: Scenario) -> str:
    """Print the execution's progress until it ends; returns its final status.

    Waits on the engine's "an execution ended" signal, printing new history events at most
    once a real second meanwhile (polling the history faster only steals the engine's CPU).
    `scenario.timeout_seconds` of real time is a hang guard: the rehearsal then stops the
    execution and reports TIMED_OUT.
    """
    seen = human_seen = 0
    deadline = time.monotonic() + scenario.timeout_seconds
    read_after = 0.0
    while True:
        ended = world.engine.activity.executions_ended()
        status = str(sfn.describe_execution(executionArn=arn)["status"])
        if status not in TERMINAL and time.monotonic() < min(read_after, deadline):
            world.engine.activity.wait_for_execution_end(ended, timeout=1.0)
            continue
        # moto answers GetExecutionHistory with the whole history whatever the page size or order asked for,
        # through a slow serialiser: a long history read every second took a large share of a core from the
        # engine (py-spy, a 500-cluster rollout). At most a tenth of the time goes to reading it.
        reading = time.monotonic()
        events = execution_history(sfn, arn)
        read_after = time.monotonic() + 9 * (time.monotonic() - reading)
        notes = world.human_log[human_seen:]
        # In the order they happened: history events and the person's actions, by real time.
        lines: list[tuple[datetime, int, Callable[[], None]]] = []
        for i, event in enumerate(events[seen:]):
            lines.append((event["timestamp"], i, partial(progress.show, event)))
        for i, (at, text) in enumerate(notes):
            lines.append((at, len(lines) + i, partial(progress.note, at, text)))
        for _, _, show in sorted(lines, key=lambda line: (line[0], line[1])):
            show()
        seen, human_seen = len(events), human_seen + len(notes)
        if status in TERMINAL:  # read before the history: the history holds the final event
            return status
        if time.monotonic() > deadline:
            sfn.stop_execution(executionArn=arn, error="RehearsalTimeout",
                               cause=f"the rehearsal gave up after {scenario.timeout_seconds:g}s")
            progress.line(f"✗ rehearsal gave up after {scenario.timeout_seconds:g}s real time (a hang?)")
            return "TIMED_OUT"
        world.engine.activity.wait_for_execution_end(ended, timeout=1.0)


def run_scenario(scenario: Scenario, out: TextIO = sys.stdout,
                 on_world: Callable[[LocalWorld], None] | None = None,
                 inspect: Callable[[LocalWorld, dict[str, Any]], None] | None = None,
                 engine: LocalEngine | None = None) -> dict[str, Any]:
    """Rehearse `scenario`; returns the JSON summary.

    `on_world` runs once the world is up (inject faults); `inspect` runs before it is torn
    down (tests read the tables and simulators there). `engine`: a serving moto server to
    reuse (a test session's); by default the rehearsal starts its own.
    """
    if scenario.rollout is not None:  # many batches: the rollout state machine (sandbox/rollout_rehearsal.py)
        from sandbox.rollout_rehearsal import run_rollout

        return run_rollout(scenario, out, on_world, inspect, engine)
    started = time.monotonic()
    with LocalWorld(scenario, engine) as world:
        if on_world:
            on_world(world)
        progress = Progress(world, out)
        sfn = world.engine.client("stepfunctions")
        execution_input = {"batch": scenario.batch, "target_version": scenario.target_version, **scenario.input}
        progress.line(f"scenario '{scenario.name}': batch {scenario.batch} → {scenario.target_version} "
                      f"on {len(scenario.fleet)} cluster(s), clock ×{scenario.speedup:g}")
        arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, name=f"rehearsal-{uuid.uuid4().hex[:8]}",
                                  input=json.dumps(execution_input))["executionArn"]
        status = follow(world, sfn, arn, progress, scenario)
        events = execution_history(sfn, arn)
        description = sfn.describe_execution(executionArn=arn)
        summary = _summary(world, scenario, arn, status, description, events, time.monotonic() - started)
        if inspect:
            inspect(world, summary)
    return summary


def _summary(world: LocalWorld, scenario: Scenario, arn: str, status: str, description: dict[str, Any],
             events: list[dict[str, Any]], real_seconds: float) -> dict[str, Any]:
    state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    run = state.find_run(arn.rsplit(":", 1)[-1])
    failure = next((e.get("executionFailedEventDetails") for e in events if e["type"] == "ExecutionFailed"), None)
    clusters: dict[str, Any] = {}
    for spec in scenario.fleet:
        entry: dict[str, Any] = {"from_version": spec.istio_version}
        if run:
            precheck = state.get_precheck(run.run_id, spec.cluster)
            verdict = state.get_verdict(run.run_id, spec.cluster)
            if precheck:
                entry["prechecks"] = [{"check": r.check_name, "status": r.status.value, "message": r.message}
                                      for r in precheck.results]
            if verdict:
                entry["verdict"] = {
                    "outcome": verdict.outcome.value,
                    "summary": verdict.summary(),
                    "findings": [f.model_dump(exclude={"details"}) | {"details": f.details} for f in verdict.findings],
                    "post_checks": [{"check": c.check_name, "status": c.status.value, "message": c.message}
                                    for c in verdict.post_checks],
                }
        entry["running_version"] = world.kubernetes.helm_release_versions(spec.cluster)[1]
        clusters[spec.cluster] = entry
    failures = FailureStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    analysis = failures.get_analysis(run.run_id) if run else None
    rollback = failures.get_rollback(run.run_id) if run else None
    decision = failures.get_decision(run.run_id) if run else None
    return {
        "scenario": scenario.name,
        "execution_arn": arn,
        "status": status,
        "batches": [{
            "batch": scenario.batch,
            "target_version": scenario.target_version,
            "outcome": run.status.value if run else "refused",
            # A rollback's stage is its outcome (rolled_back / rollback_failed), as the summary always said.
            "stage": (run.outcome if run and run.outcome in (Outcome.ROLLED_BACK, Outcome.ROLLBACK_FAILED)
                      else run.where if run else "plan"),
            "error": (failure or {}).get("error"),
            "cause": (failure or {}).get("cause"),
            "merge_request_url": run.merge_request_url if run else None,
            "clusters": clusters,
        }],
        "analysis": analysis.model_dump(mode="json") if analysis else None,
        "decision": decision.model_dump(mode="json") if decision else None,
        "rollback": rollback.model_dump(mode="json") if rollback else None,
        "merge_requests": [{"iid": mr["iid"], "state": mr["state"], "url": mr.get("web_url"),
                            "title": mr.get("title"), "source_branch": mr.get("source_branch")}
                           for mr in world.gitlab.merge_requests(scenario.gitlab_project)],
        "notifications": [m.get("text", "") for m in world.slack.messages],
        "webhook_responses": [status for status, _ in (world.webhook.responses if world.webhook else [])],
        "history_events": len(events),
        # moto's history by event type: benchmarks/fleet.py counts from it what AWS would record.
        "history_event_types": dict(Counter(e["type"] for e in events)),
        "state_transitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
        "max_state_payload_bytes": max((payload_bytes(e) for e in events), default=0),
        "max_state_payload_at": largest_payload(events),
        "lambda_invocations": len(world.engine.invocations),
        # What GUARD asked each simulated vendor for (the fleet benchmark divides it by the clusters).
        "vendor_requests": {"kubernetes": world.kubernetes.request_count, "datadog": len(world.datadog.requests),
                            "gitlab": len(world.gitlab.requests)},
        "real_seconds": round(real_seconds, 2),
        "scenario_seconds": round(((description.get("stopDate") or datetime.now(description["startDate"].tzinfo))
                                   - description["startDate"]).total_seconds() * scenario.speedup),
    }
