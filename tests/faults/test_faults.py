"""Every cell of the fault matrix (tests/faults/cells.py) on the real ASL, each ending with the
invariant check (sandbox/invariants.py). Test ids are `<system>-<stage>-<kind>-<what>`."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.engine import LocalEngine
from tests.faults.cells import CELLS
from tests.faults.conftest import Baselines
from tests.faults.harness import Cell, run_cell
from tests.faults.matrix import tables

pytestmark = pytest.mark.faults


def _param(cell: Cell) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=cell.xfail)] if cell.xfail else []
    return pytest.param(cell, id=cell.id, marks=marks)


@pytest.mark.parametrize("cell", [_param(c) for c in CELLS])
def test_fault_cell(cell: Cell, engine: LocalEngine, baselines: Baselines) -> None:
    # GIVEN the base scenario's outcome without a fault (transient cells must match it)
    baseline = baselines[cell.base] if cell.expect == "baseline" else None
    # WHEN the cell's fault hits its stage of one execution of the real state machine
    result = run_cell(engine, cell, baseline)
    # THEN every invariant holds once the execution has ended
    assert result.violations == [], (f"{cell.id} ended {result.outcome.brief()} in {result.seconds}s:\n  "
                                     + "\n  ".join(result.violations))


def test_every_system_and_kind_is_covered() -> None:
    systems = {c.system for c in CELLS}
    assert {"gitlab", "datadog", "kubernetes", "dynamodb", "llm", "slack", "stepfunctions", "lambda"} <= systems
    assert len({c.id for c in CELLS}) == len(CELLS), "cell ids must be unique"


def test_the_docs_show_this_matrix() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "failure-handling.md").read_text()
    kept = docs.split("<!-- fault-matrix:begin -->\n")[1].split("<!-- fault-matrix:end -->")[0]
    assert kept == tables(), "docs/failure-handling.md is stale: paste `python -m tests.faults.matrix` in"
