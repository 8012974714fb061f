"""The rollout's Lambda work: start (plan + record), claim a batch, record a batch, finish.

The state machine runs one Map over the selected batches in topological order; each iteration
loops Claim (run / wait / skip) until its batch may start, runs the child execution and records
its outcome. Iterations share the one rollout record: every change is an optimistic
read-modify-write (RolloutStore.update), so concurrent iterations never lose a write and a
retried task lands in the same place.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from guard.config.models import TenantConfig
from guard.config.overrides import refuse_loosening, refuse_past_vendor_caps, rollout_overrides
from guard.errors import (
    ConfigError,
    InvalidInput,
    PrerequisiteNotMet,
    RolledBack,
    RolloutFailed,
    RolloutRolledBack,
    UnknownBatch,
)
from guard.ports import Clock
from guard.rollout.dag import BAD, FAILED, FINAL, ROLLED_BACK, SKIPPED, SUCCEEDED, RolloutGraph
from guard.rollout.models import BatchEntry, RolloutInput, RolloutRecord
from guard.services.plan import parse_model
from guard.services.windows import ClosedWindow, closed_window
from guard.stores.registry import ClusterRegistry
from guard.stores.rollouts import RolloutStore
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import Outcome

# Child error names that mean "the upgrade was undone" rather than "it failed and stayed".
_NAME_MAX = 80


def parse_rollout_input(raw: Any) -> RolloutInput:
    """The rollout's execution input; InvalidInput names each bad field (as Plan's does)."""
    return parse_model(RolloutInput, raw, "rollout input")


def child_name(rollout_id: str, batch: str) -> str:
    """Deterministic child execution name: a retried task starts (or finds) the same execution."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", f"{rollout_id}--{batch}")
    if len(name) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:_NAME_MAX - 9]}-{digest}"


class RolloutService:
    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore, rollouts: RolloutStore,
                 clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._rollouts = rollouts
        self._clock = clock

    # ------------------------------------------------------------------ start
    def start(self, request: RolloutInput, rollout_id: str, execution_arn: str) -> RolloutRecord:
        """Plan the rollout and record it; refuses (changing nothing) what can never run."""
        existing = self._rollouts.find(rollout_id)
        if existing is not None:
            return existing
        config = self._config
        # Refused before anything is recorded; the batches' Plans check their own inputs again.
        refuse_loosening(rollout_overrides(request, config), config, "rollout input")
        refuse_past_vendor_caps(request, config)
        names = [b.name for b in config.batches]
        selected = None if request.batches == "all" else request.batches
        try:
            graph = RolloutGraph.build(names, config.batch_order, selected)
        except ConfigError as e:
            raise UnknownBatch(str(e)) from e
        unknown = sorted(set(request.soak_overrides) - set(graph.batches))
        if unknown:
            raise InvalidInput(f"soak_overrides: {', '.join(unknown)} not in this rollout "
                               f"({', '.join(graph.batches)})")
        for batch, prereqs in graph.external.items():
            for prereq in prereqs:
                result = self._state.get_batch_result(prereq, request.target_version)
                if result is None or result.status != SUCCEEDED:
                    seen = f"its last run {result.status}" if result else "it has not run"
                    raise PrerequisiteNotMet(
                        f"batch '{batch}' requires '{prereq}', which is not part of this rollout and has not "
                        f"succeeded at {request.target_version} ({seen}); add it to the rollout or run it first")
        record = RolloutRecord(
            rollout_id=rollout_id, execution_arn=execution_arn, target_version=request.target_version,
            on_failure=request.on_failure or config.rollout.on_failure,
            max_concurrency=request.max_concurrent_batches or config.execution.max_concurrent_batches,
            order=graph.order(), waves=graph.waves(),
            entries={b: BatchEntry(batch=b, soak_period_minutes=self._soak(request, b)) for b in graph.batches},
            options=request, started_at=self._clock.now(),
        )
        self._rollouts.put(record)
        return record

    def _soak(self, request: RolloutInput, batch: str) -> float | None:
        if batch in request.soak_overrides:
            return request.soak_overrides[batch]
        if request.soak_period_minutes is not None:
            return request.soak_period_minutes
        found = self._config.batch(batch)
        return found.soak_period_minutes if found else None

    def _graph(self, record: RolloutRecord) -> RolloutGraph:
        return RolloutGraph.build([b.name for b in self._config.batches], self._config.batch_order, record.order)

    def map_items(self, record: RolloutRecord) -> dict[str, Any]:
        """What the RunBatches Map iterates over: batch names in record.order, and its concurrency.

        record.order is topological (sorted by DAG depth, then config order); the deadlock-freedom
        argument in `claim` depends on that.
        """
        return {"rollout_id": record.rollout_id, "items": list(record.order),
                "max_concurrency": min(record.max_concurrency, max(1, len(record.order)))}

    # ------------------------------------------------------------------ claim one batch
    def claim(self, rollout_id: str, batch: str) -> dict[str, Any]:
        """One Map iteration asks whether its batch may start: `run`, `wait` (seconds) or `skip`.

        - finished (succeeded/failed/rolled back/skipped): skip (a retried Claim is harmless);
        - running: run again with the same child name and input (StartExecution with the same
          name and input is idempotent while that execution runs);
        - a prerequisite failed, rolled back or was skipped, or the rollout halted: marked skipped
          with the reason, skip;
        - every prerequisite succeeded: the change window (on_deny: wait) may say wait until it
          ends; otherwise marked running, run;
        - otherwise (a prerequisite is pending or running): wait rollout.poll_seconds.

        Deadlock freedom: the Map's items are in topological order and Step Functions starts
        iterations in item order, so the lowest-index unfinished item always holds a slot and
        all its prerequisites (lower indices) are finished: its Claim answers run or skip (or
        a change-window wait, which ends by itself), never a poll that could last forever.
        """
        now = self._clock.now()

        def decide(record: RolloutRecord) -> dict[str, Any]:
            entry = record.entries.get(batch)
            if entry is None:
                raise InvalidInput(f"batch '{batch}' is not part of rollout '{rollout_id}'")
            if entry.status in FINAL:
                return _decision("skip")
            if entry.status == "running":
                return self._run(record, batch)
            graph = self._graph(record)
            self._skip_blocked(record, graph)
            if entry.status == SKIPPED:
                return _decision("skip")
            if not all(record.entries[p].status == SUCCEEDED for p in graph.prerequisites[batch]):
                return _decision("wait", self._config.rollout.poll_seconds)
            if self._config.change_windows.on_deny == "wait":
                closed = self._window(batch, now)
                if closed is not None:
                    entry.reason = closed.message(f"batch '{batch}'", now) + "; the rollout waits"
                    return _decision("wait", max(1, closed.seconds_left(now)), reason=entry.reason)
            record.wave_count += 1
            entry.status, entry.reason, entry.started_at = "running", None, now
            entry.wave = _level(record, batch)
            entry.execution_name = child_name(rollout_id, batch)
            return self._run(record, batch)

        _, decision = self._rollouts.update(rollout_id, decide)
        return decision

    def _window(self, batch: str, now: datetime) -> ClosedWindow | None:
        found = self._config.batch(batch)
        if found is None or not self._config.change_windows.deny:
            return None
        clusters = self._registry.get_many(found.clusters)
        return closed_window(self._config, {c.environment for c in clusters.values()}, now)

    def _run(self, record: RolloutRecord, batch: str) -> dict[str, Any]:
        entry = record.entries[batch]
        child: dict[str, Any] = {"batch": batch, "target_version": record.target_version,
                                 "requested_by": record.options.requested_by or f"rollout {record.rollout_id}"}
        if entry.soak_period_minutes is not None:
            child["soak_period_minutes"] = entry.soak_period_minutes
        if record.options.ignore_alerts:
            child["ignore_alerts"] = True
        return _decision("run", name=entry.execution_name or child_name(record.rollout_id, batch), input=child)

    def _skip_blocked(self, record: RolloutRecord, graph: RolloutGraph) -> None:
        outcomes = record.outcomes()
        for batch, root in graph.blocked_by(outcomes).items():
            entry = record.entries[batch]
            what = record.entries[root].status.replace("_", " ")
            entry.status = "skipped"
            entry.reason = f"depends on '{root}', which {what}" if root in outcomes and outcomes[root] in BAD \
                else f"depends on '{root}', which was skipped"
        if record.halted_by:
            for entry in record.entries.values():
                if entry.status == "pending":
                    entry.status = "skipped"
                    entry.reason = f"rollout halted after '{record.halted_by}' failed (rollout.on_failure: halt)"

    # ------------------------------------------------------------------ record
    def record_wave(self, rollout_id: str, results: list[dict[str, Any]]) -> RolloutRecord:
        """Record what child executions ended in (RecordBatch sends one; a retry is harmless)."""

        def apply(record: RolloutRecord) -> None:
            for result in results:
                entry = record.entries.get(str(result.get("batch")))
                if entry is None or entry.status != "running":
                    continue  # a retried RecordBatch: already recorded
                self._record_one(entry, result, record.target_version)
                if entry.status in BAD and record.on_failure == "halt" and record.halted_by is None:
                    record.halted_by = entry.batch
            self._skip_blocked(record, self._graph(record))

        record, _ = self._rollouts.update(rollout_id, apply)
        return record

    def _record_one(self, entry: BatchEntry, result: dict[str, Any], target_version: str) -> None:
        described: dict[str, Any] = {}
        if result.get("status") == SUCCEEDED:
            described = result
            entry.status = "succeeded"
        else:
            error, cause = str(result.get("error") or "States.TaskFailed"), result.get("cause")
            parsed = _json(cause)
            if isinstance(parsed, dict) and ("Status" in parsed or "status" in parsed):
                described = parsed  # .sync:2 failure: the cause is the child's DescribeExecution
                error = str(_get(parsed, "Error") or _get(parsed, "Status") or error)
                cause = _get(parsed, "Cause") or f"child execution ended {_get(parsed, 'Status')}"
            stored = self._state.get_batch_result(entry.batch, target_version)
            rolled_back = error == RolledBack.__name__ or (stored is not None and stored.status == Outcome.ROLLED_BACK)
            entry.status = "rolled_back" if rolled_back else "failed"
            entry.error = error
            entry.reason = f"{error}: {_first_line(cause)}"
        entry.execution_arn = _get(described, "ExecutionArn") or entry.execution_arn
        entry.started_at = _date(_get(described, "StartDate")) or entry.started_at
        entry.finished_at = _date(_get(described, "StopDate")) or self._clock.now()

    # ------------------------------------------------------------------ finish
    def finish(self, rollout_id: str) -> dict[str, Any]:
        """The rollout's outcome: every batch with its status and why, in a valid order."""
        now = self._clock.now()

        def close(record: RolloutRecord) -> None:
            self._skip_blocked(record, self._graph(record))
            for entry in record.entries.values():
                if entry.status == "pending":  # nothing left could start it (defensive; should not happen)
                    entry.status, entry.reason = "skipped", "never became ready"
            if record.finished_at is None:  # a retried FinishRollout keeps the first answer
                record.status = "succeeded" if all(e.status == SUCCEEDED for e in record.entries.values()) \
                    else "failed"
                record.finished_at = now

        record, _ = self._rollouts.update(rollout_id, close)
        ok = record.status == SUCCEEDED
        summary = rollout_summary(record)
        return {"status": record.status, "summary": summary,
                "error": "RolloutSucceeded" if ok else _rollout_error(record),
                "cause": rollout_cause(summary)}


def _decision(action: str, wait_seconds: int = 0, **extra: Any) -> dict[str, Any]:
    """Claim's answer; `name` and `input` are always there (null unless run) for the ResultSelector."""
    return {"action": action, "wait_seconds": wait_seconds, "name": None, "input": None, **extra}


def _level(record: RolloutRecord, batch: str) -> int:
    """The batch's planned DAG level, 1-based (what the summary calls its wave)."""
    return next((i + 1 for i, wave in enumerate(record.waves) if batch in wave), 0)


def rollout_summary(record: RolloutRecord) -> dict[str, Any]:
    """What the execution outputs (or, failed, carries as its cause): small and readable."""
    counts: dict[str, int] = {}
    for entry in record.entries.values():
        counts[entry.status] = counts.get(entry.status, 0) + 1
    return {
        "rollout_id": record.rollout_id,
        "target_version": record.target_version,
        "status": record.status,
        "on_failure": record.on_failure,
        "counts": counts,
        "batches": [{
            "batch": b,
            "status": record.entries[b].status,
            "wave": record.entries[b].wave,
            **({"reason": record.entries[b].reason} if record.entries[b].reason else {}),
            **({"execution_arn": record.entries[b].execution_arn} if record.entries[b].execution_arn else {}),
        } for b in record.order],
    }


# Step Functions keeps 32,768 characters of a cause; room is left for the runtime's JSON around it.
CAUSE_BUDGET = 30_000
_REASON_IN_DIGEST = 300


def rollout_cause(summary: dict[str, Any], budget: int = CAUSE_BUDGET) -> str:
    """The failed rollout's cause: its summary as JSON, or, when that passes `budget` characters (~200 a
    batch: past ~150 batches), a digest that is still the summary's JSON: every count, then as many
    batches as fit, those that did not succeed first (each reason cut to 300 characters), and how many
    were left out (`guard status <rollout id>` lists them all from the rollout record)."""
    text = json.dumps(summary, separators=(",", ":"))
    if len(text) <= budget:
        return text
    batches = summary.get("batches", [])
    ordered = sorted(batches, key=lambda b: b.get("status") == SUCCEEDED)  # stable: the order within each
    head = {k: v for k, v in summary.items() if k != "batches"}
    head["batches_left_out"] = len(batches)
    head["see"] = f"guard status {summary.get('rollout_id')} lists every batch"
    room = budget - len(json.dumps({**head, "batches": []}, separators=(",", ":"))) - 16  # the count's digits
    shown: list[dict[str, Any]] = []
    for batch in ordered:
        item = dict(batch)
        if isinstance(item.get("reason"), str) and len(item["reason"]) > _REASON_IN_DIGEST:
            item["reason"] = item["reason"][:_REASON_IN_DIGEST - 3] + "..."
        size = len(json.dumps(item, separators=(",", ":"))) + 1
        if size > room:
            break
        shown.append(item)
        room -= size
    head["batches_left_out"] = len(batches) - len(shown)
    return json.dumps({**head, "batches": shown}, separators=(",", ":"))


def _rollout_error(record: RolloutRecord) -> str:
    statuses = {e.status for e in record.entries.values()}
    if FAILED in statuses:
        return RolloutFailed.__name__
    if ROLLED_BACK in statuses:
        return RolloutRolledBack.__name__
    return "RolloutIncomplete"


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def _get(doc: dict[str, Any], key: str) -> Any:
    """A DescribeExecution field, PascalCase (Step Functions) or camelCase (boto3)."""
    return doc.get(key, doc.get(key[:1].lower() + key[1:]))


def _date(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _first_line(cause: Any) -> str:
    parsed = _json(cause)
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        cause = parsed["errorMessage"]
    text = str(cause or "").strip()
    return text if len(text) <= 500 else text[:497] + "..."
