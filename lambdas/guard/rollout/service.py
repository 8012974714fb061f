"""The rollout's Lambda work: start (plan + record), next wave, record a wave, finish.

The state machine loops NextWave -> Map(child executions of the batch machine) -> RecordWave
until NextWave says done; every step reads and writes the one rollout record, so a retried
task lands in the same place.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from guard.clock import Clock
from guard.config.loader import format_validation_error
from guard.config.models import TenantConfig
from guard.errors import ConfigError, InvalidInput, PrerequisiteNotMet, UnknownBatch
from guard.rollout.dag import BAD, SUCCEEDED, RolloutGraph
from guard.rollout.models import BatchEntry, RolloutInput, RolloutRecord
from guard.services.windows import ClosedWindow, closed_window
from guard.stores.registry import ClusterRegistry
from guard.stores.rollouts import RolloutStore
from guard.stores.state import StateStore

# Child error names that mean "the upgrade was undone" rather than "it failed and stayed".
_ROLLED_BACK_ERRORS = {"RolledBack"}
_NAME_MAX = 80


def parse_rollout_input(raw: Any) -> RolloutInput:
    if not isinstance(raw, dict):
        raise InvalidInput(f"execution input must be a JSON object, got {type(raw).__name__}")
    try:
        return RolloutInput.model_validate(raw)
    except ValidationError as e:
        raise InvalidInput(format_validation_error(e, "rollout input").replace("invalid config", "invalid input")) \
            from e


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

    # ------------------------------------------------------------------ next wave
    def next_wave(self, rollout_id: str) -> dict[str, Any]:
        """The batches to start now (as Map items), a wait for a change window, or done."""
        record = self._rollouts.get(rollout_id)
        running = [e for e in record.entries.values() if e.status == "running"]
        if running:  # a retried NextWave after the wave was handed out: hand out the same wave
            return self._wave(record, [e.batch for e in running])
        graph = self._graph(record)
        self._skip_blocked(record, graph)
        ready = [] if record.halted_by else graph.ready(record.outcomes())
        if not ready:
            return {"done": True, "wait_seconds": 0, "batches": [], "max_concurrency": record.max_concurrency}
        now = self._clock.now()
        if self._config.change_windows.on_deny == "wait":
            closed = {b: w for b in ready if (w := self._window(b, now)) is not None}
            if closed:
                ready = [b for b in ready if b not in closed]
                if not ready:
                    seconds = min(w.seconds_left(now) for w in closed.values())
                    for b, w in closed.items():
                        record.entries[b].reason = w.message(f"batch '{b}'", now) + "; the rollout waits"
                    self._rollouts.put(record)
                    return {"done": False, "wait_seconds": seconds, "batches": [],
                            "max_concurrency": record.max_concurrency}
        record.wave_count += 1
        for b in ready:
            entry = record.entries[b]
            entry.status, entry.wave, entry.reason = "running", record.wave_count, None
            entry.execution_name = child_name(rollout_id, b)
        self._rollouts.put(record)
        return self._wave(record, ready)

    def _window(self, batch: str, now: datetime) -> ClosedWindow | None:
        found = self._config.batch(batch)
        if found is None or not self._config.change_windows.deny:
            return None
        clusters = self._registry.get_many(found.clusters)
        return closed_window(self._config, {c.environment for c in clusters.values()}, now)

    def _wave(self, record: RolloutRecord, batches: list[str]) -> dict[str, Any]:
        items = []
        for b in batches:
            entry = record.entries[b]
            child: dict[str, Any] = {"batch": b, "target_version": record.target_version,
                                     "requested_by": record.options.requested_by or f"rollout {record.rollout_id}"}
            if entry.soak_period_minutes is not None:
                child["soak_period_minutes"] = entry.soak_period_minutes
            if record.options.ignore_alerts:
                child["ignore_alerts"] = True
            items.append({"batch": b, "name": entry.execution_name or child_name(record.rollout_id, b),
                          "input": child})
        return {"done": False, "wait_seconds": 0, "batches": items,
                "max_concurrency": min(record.max_concurrency, max(1, len(items)))}

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

    # ------------------------------------------------------------------ record a wave
    def record_wave(self, rollout_id: str, results: list[dict[str, Any]]) -> RolloutRecord:
        """Record what each child execution of the wave ended in (Map output items)."""
        record = self._rollouts.get(rollout_id)
        for result in results:
            entry = record.entries.get(str(result.get("batch")))
            if entry is None or entry.status != "running":
                continue  # a retried RecordWave: already recorded
            self._record_one(entry, result, record.target_version)
            if entry.status in BAD and record.on_failure == "halt" and record.halted_by is None:
                record.halted_by = entry.batch
        self._skip_blocked(record, self._graph(record))
        self._rollouts.put(record)
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
            rolled_back = error in _ROLLED_BACK_ERRORS or (stored is not None and stored.status == "rolled_back")
            entry.status = "rolled_back" if rolled_back else "failed"
            entry.error = error
            entry.reason = f"{error}: {_first_line(cause)}"
        entry.execution_arn = _get(described, "ExecutionArn") or entry.execution_arn
        entry.started_at = _date(_get(described, "StartDate")) or entry.started_at
        entry.finished_at = _date(_get(described, "StopDate")) or self._clock.now()

    # ------------------------------------------------------------------ finish
    def finish(self, rollout_id: str) -> dict[str, Any]:
        """The rollout's outcome: every batch with its status and why, in a valid order."""
        record = self._rollouts.get(rollout_id)
        self._skip_blocked(record, self._graph(record))
        for entry in record.entries.values():
            if entry.status == "pending":  # nothing left could start it (defensive; should not happen)
                entry.status, entry.reason = "skipped", "never became ready"
        ok = all(e.status == SUCCEEDED for e in record.entries.values())
        record.status = "succeeded" if ok else "failed"
        record.finished_at = self._clock.now()
        self._rollouts.put(record)
        summary = rollout_summary(record)
        return {"status": record.status, "summary": summary,
                "error": "RolloutSucceeded" if ok else _rollout_error(record),
                "cause": json.dumps(summary, separators=(",", ":"))}


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


def _rollout_error(record: RolloutRecord) -> str:
    statuses = {e.status for e in record.entries.values()}
    if "failed" in statuses:
        return "RolloutFailed"
    if "rolled_back" in statuses:
        return "RolloutRolledBack"
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
