"""Workflow tests: the real ASL on moto's engine, handlers in-process, simulators over HTTP.

One moto server serves the whole session (`engine`); each scenario's world begins on it with
empty backends and fresh simulators, and stops whatever still runs when it closes.
Tests wait on what happens in the world (`LocalWorld.wait_until`), never on a wall-clock budget.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.guard import main
from sandbox.engine import HANG_SECONDS, LocalEngine
from sandbox.rehearsal import run_scenario
from sandbox.scenario import Scenario, load_scenario
from sandbox.world import LocalWorld

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

Rehearse = Callable[..., tuple[dict[str, Any], str]]
# `guard ... --wait --timeout HANG` for runs that must end on their own: only a hang reaches it.
HANG = str(HANG_SECONDS)


def guard(*argv: str) -> tuple[int, str]:
    """Run the `guard` CLI (boto3 reaches the local world through AWS_ENDPOINT_URL); returns (exit code, output)."""
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def scenario(name: str, **changes: Any) -> Scenario:
    """A scenario file, with top-level fields replaced (validated like the file)."""
    loaded = load_scenario(SCENARIOS / f"{name}.yaml")
    if not changes:
        return loaded
    # exclude_unset: a field left out (e.g. a metric's `after`) must stay left out, not become null.
    changed = Scenario.model_validate({**loaded.model_dump(exclude_unset=True), **changes})
    changed.source = loaded.source
    return changed


@pytest.fixture(scope="session")
def engine() -> Iterator[LocalEngine]:
    """The moto server every workflow test of the session runs on."""
    served = LocalEngine().serve()
    yield served
    served.stop()


@pytest.fixture
def rehearse(engine: LocalEngine) -> Rehearse:
    """Run a scenario file (optionally changed) on the session's engine; returns (summary, progress output)."""

    def run(name: str, inspect: Callable[[LocalWorld, dict[str, Any]], None] | None = None,
            **changes: Any) -> tuple[dict[str, Any], str]:
        out = io.StringIO()
        summary = run_scenario(scenario(name, **changes), out=out, inspect=inspect, engine=engine)
        return summary, out.getvalue()

    return run


@pytest.fixture
def world_for(engine: LocalEngine) -> Iterator[Callable[..., LocalWorld]]:
    """Open the world of a scenario file (optionally changed) on the session's engine; closed after the test."""
    opened: list[LocalWorld] = []

    def make(name: str, **changes: Any) -> LocalWorld:
        world = LocalWorld(scenario(name, **changes), engine).open()
        opened.append(world)
        return world

    yield make
    for world in opened:
        world.close()
