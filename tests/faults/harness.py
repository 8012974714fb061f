"""One fault cell: a base scenario, one fault armed when the workflow reaches a stage, one execution of
the real ASL, then the invariants (sandbox/invariants.py).

A cell arms its fault from `LocalEngine.before_invoke` when the stage's function is first invoked, so
a fault of "the Kubernetes API during the Flux poll" hits the Flux poll and what follows it, not the
prechecks that talk to the same API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from sandbox.engine import LocalEngine
from sandbox.faults import AwsFaults, Crash
from sandbox.invariants import RunOutcome, check_invariants, outcome_of, outcome_violations
from sandbox.scenario import Scenario, load_scenario
from sandbox.world import LocalWorld

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# Real seconds a cell may take before it counts as a hang (a healthy cell takes 2-6 s).
CELL_HANG_SECONDS = 90.0


class System(StrEnum):
    GITLAB = "gitlab"
    DATADOG = "datadog"
    KUBERNETES = "kubernetes"
    DYNAMODB = "dynamodb"
    LLM = "llm"
    SLACK = "slack"
    STEP_FUNCTIONS = "stepfunctions"
    LAMBDA = "lambda"  # a crash of GUARD's own function after its side effects


class Stage(StrEnum):
    PLAN = "plan"
    PRECHECK = "precheck"
    OPEN_MR = "open_mr"
    WAIT_MERGE = "wait_merge"
    FLUX = "flux"
    SIDECARS = "sidecars"
    SOAK = "soak"
    VALIDATE = "validate"
    ANALYZE = "analyze"
    DECISION = "decision"
    ROLLBACK_MR = "rollback_mr"
    VERIFY_ROLLBACK = "verify_rollback"
    FINISH = "finish"


# The function whose first invocation marks a stage's start.
STAGE_FUNCTION: dict[Stage, str] = {
    Stage.PLAN: "Plan", Stage.PRECHECK: "Precheck", Stage.OPEN_MR: "OpenMergeRequest",
    Stage.WAIT_MERGE: "OpenMergeRequest", Stage.FLUX: "FluxStatus", Stage.SIDECARS: "RestartSidecars",
    Stage.SOAK: "Soak", Stage.VALIDATE: "Validate",
    Stage.ANALYZE: "AnalyzeFailure", Stage.DECISION: "AwaitDecision", Stage.ROLLBACK_MR: "OpenRollback",
    Stage.VERIFY_ROLLBACK: "VerifyRollback", Stage.FINISH: "Finish",
}

Kind = Literal["transient", "persistent", "crash", "lost", "stop"]
Base = Literal["healthy", "regression", "inconclusive"]


@dataclass
class Armed:
    """What a cell's fault function gets: the world and the injectors."""

    world: LocalWorld
    aws: AwsFaults

    @property
    def engine(self) -> LocalEngine:
        return self.world.engine

    def crash(self, function: str, times: int = 1, when: Callable[[Any], bool] | None = None) -> None:
        self.engine.crashes.add(Crash(function, times, when or (lambda event: True)))


@dataclass
class Cell:
    """One fault of one external system at one stage.

    `fault` arms the fault when `stage` starts; `during` runs in the test thread while the execution runs
    (a console stop). `expect` is "baseline" (the base scenario's outcome: every transient fault), "any"
    (only the invariants), "not-succeeded", or the execution status the cell must end in; `error`, when
    given, the execution's error name.
    """

    system: System
    stage: Stage
    kind: Kind
    what: str
    fault: Callable[[Armed], object] | None = None
    base: Base = "healthy"
    changes: dict[str, Any] = field(default_factory=dict)
    expect: Literal["baseline", "any", "SUCCEEDED", "FAILED", "ABORTED", "not-succeeded"] = "baseline"
    error: str | None = None
    during: Callable[[LocalWorld, str], None] | None = None
    xfail: str | None = None

    @property
    def id(self) -> str:
        return f"{self.system}-{self.stage}-{self.kind}-{self.what}"


@dataclass
class CellResult:
    outcome: RunOutcome
    violations: list[str]
    seconds: float


def base_scenario(base: Base, **changes: Any) -> Scenario:
    loaded = load_scenario(SCENARIOS / f"{base}.yaml")
    if not changes:
        return loaded
    changed = Scenario.model_validate({**loaded.model_dump(exclude_unset=True), **changes})
    changed.source = loaded.source
    return changed


def run_cell(engine: LocalEngine, cell: Cell, baseline: RunOutcome | None) -> CellResult:
    """Run `cell` on `engine` (a serving moto server); returns its outcome and every violation."""
    started = time.monotonic()
    scenario = base_scenario(cell.base, **cell.changes)
    with LocalWorld(scenario, engine) as world:
        armed = Armed(world, AwsFaults().install())
        if cell.fault is not None:
            _arm_at(engine, STAGE_FUNCTION[cell.stage], cell.fault, armed)
        outcome, violations = _execute(world, cell, baseline)
    return CellResult(outcome, violations, round(time.monotonic() - started, 2))


def run_baseline(engine: LocalEngine, base: Base) -> RunOutcome:
    """The base scenario's outcome with no fault."""
    with LocalWorld(base_scenario(base), engine) as world:
        AwsFaults().install()
        outcome, violations = _execute(world, None, None)
    if violations:
        raise AssertionError(f"the {base} baseline itself breaks invariants: {violations}")
    return outcome


def _arm_at(engine: LocalEngine, function: str, fault: Callable[[Armed], object], armed: Armed) -> None:
    done: list[bool] = []

    def hook(logical: str, event: Any) -> None:
        if logical == function and not done:
            done.append(True)
            fault(armed)

    engine.before_invoke.append(hook)


def _execute(world: LocalWorld, cell: Cell | None, baseline: RunOutcome | None) -> tuple[RunOutcome, list[str]]:
    sfn = world.engine.client("stepfunctions")
    scenario = world.scenario
    ended_before = world.engine.activity.executions_ended()
    arn = sfn.start_execution(stateMachineArn=world.state_machine_arn, name=f"fault-{uuid.uuid4().hex[:12]}",
                              input=json.dumps({"batch": scenario.batch, "target_version": scenario.target_version,
                                                **scenario.input}))["executionArn"]
    if cell is not None and cell.during is not None:
        cell.during(world, arn)
    # Ended, and its end delivered to ExecutionEnded (the engine signals an end after delivering it).
    world.wait_until(lambda: world.engine.activity.executions_ended() > ended_before
                     and sfn.describe_execution(executionArn=arn)["status"] != "RUNNING",
                     what=f"execution {arn.rsplit(':', 1)[-1]} ending", timeout=CELL_HANG_SECONDS)
    _settle(world)
    outcome = outcome_of(world, arn)
    violations = check_invariants(world)
    if cell is not None:
        violations += outcome_violations(world, outcome, baseline=baseline if cell.expect == "baseline" else None,
                                         datadog_down=cell.system == System.DATADOG and cell.kind == "persistent")
        violations += _expectation(cell, outcome)
    return outcome, violations


def _settle(world: LocalWorld) -> None:
    """Let what a person or Flux would still do after the end happen (a late merge, a reconcile), so the
    invariants see the world as it will stay: the person's longest delay plus Flux's, in scenario time."""
    scenario = world.scenario
    longest = max([scenario.human.after_seconds, scenario.rollback_human.after_seconds,
                   *(c.after_seconds for c in scenario.decision_comments)])
    # ... and one pass of the scheduled reconciler after that (it follows what a person did unwatched).
    reconcile = world.config.gitlab.reconcile_minutes * 60
    time.sleep((longest + scenario.flux_reconcile_seconds + reconcile + 60) / scenario.speedup)


def _expectation(cell: Cell, outcome: RunOutcome) -> list[str]:
    problems = []
    if cell.expect == "not-succeeded" and (outcome.status == "SUCCEEDED"
                                           or outcome.run_outcome == "succeeded"):
        problems.append(f"expected the run not to succeed, it ended {outcome.brief()}")
    elif cell.expect not in ("baseline", "any", "not-succeeded") and outcome.status != cell.expect:
        problems.append(f"expected the execution to end {cell.expect}, it ended {outcome.brief()}")
    if cell.error is not None and outcome.error != cell.error:
        problems.append(f"expected the error {cell.error}, got {outcome.brief()}")
    return problems
