"""The fault suite: `make faults` (not part of `make test`). One moto server for the session; each
cell opens its own world on it (sandbox/world.py), as the workflow tests do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.engine import LocalEngine
from sandbox.invariants import RunOutcome
from tests.faults.harness import Base, run_baseline


@pytest.fixture(scope="session")
def engine() -> Iterator[LocalEngine]:
    served = LocalEngine().serve()
    yield served
    served.stop()


class Baselines:
    """Each base scenario's outcome without a fault, run once per session when a cell first needs it."""

    def __init__(self, engine: LocalEngine) -> None:
        self._engine = engine
        self._outcomes: dict[str, RunOutcome] = {}

    def __getitem__(self, base: Base) -> RunOutcome:
        if base not in self._outcomes:
            self._outcomes[base] = run_baseline(self._engine, base)
        return self._outcomes[base]


@pytest.fixture(scope="session")
def baselines(engine: LocalEngine) -> Baselines:
    return Baselines(engine)
