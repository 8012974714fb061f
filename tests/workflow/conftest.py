"""Workflow tests: the real ASL on moto's engine, handlers in-process, simulators over HTTP."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.rehearsal import run_scenario
from sandbox.scenario import Scenario, load_scenario
from sandbox.world import LocalWorld

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def scenario(name: str, **changes: Any) -> Scenario:
    """A scenario file, with top-level fields replaced (validated like the file)."""
    loaded = load_scenario(SCENARIOS / f"{name}.yaml")
    if not changes:
        return loaded
    # exclude_unset: a field left out (e.g. a metric's `after`) must stay left out, not become null.
    changed = Scenario.model_validate({**loaded.model_dump(exclude_unset=True), **changes})
    changed.source = loaded.source
    return changed


def rehearse(name: str, inspect: Callable[[LocalWorld, dict[str, Any]], None] | None = None,
             **changes: Any) -> tuple[dict[str, Any], str]:
    """Run a scenario file (optionally changed); returns (summary, progress output)."""
    chosen = scenario(name, **changes)
    out = io.StringIO()
    summary = run_scenario(chosen, out=out, inspect=inspect)
    return summary, out.getvalue()


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def world_for() -> Any:
    opened: list[LocalWorld] = []

    def make(name: str, **changes: Any) -> LocalWorld:
        world = LocalWorld(scenario(name, **changes)).open()
        opened.append(world)
        return world

    yield make
    for world in opened:
        world.close()
