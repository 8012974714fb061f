"""The fault matrix as tables: `python -m tests.faults.matrix` prints the section docs/failure-handling.md
keeps (test_faults.py checks the docs are up to date)."""

from __future__ import annotations

from collections import Counter

from tests.faults.cells import CELLS
from tests.faults.harness import Stage, System

KINDS = ("transient", "persistent", "crash", "lost", "stop")


def tables() -> str:
    by_system: Counter[tuple[str, str]] = Counter((c.system.value, c.kind) for c in CELLS)
    lines = [f"{len(CELLS)} cells ({sum(1 for c in CELLS if c.xfail)} expected to fail until their feature lands).",
             "", "| system | " + " | ".join(KINDS) + " | cells | xfail |", "|---" * (len(KINDS) + 3) + "|"]
    for system in System:
        cells = [c for c in CELLS if c.system == system]
        lines.append(f"| {system} | " + " | ".join(str(by_system[system.value, k] or "") for k in KINDS)
                     + f" | {len(cells)} | {sum(1 for c in cells if c.xfail)} |")
    lines += ["", "| stage | " + " | ".join(s.value for s in System) + " |", "|---" * (len(System) + 1) + "|"]
    for stage in Stage:
        counts = Counter(c.system for c in CELLS if c.stage == stage)
        lines.append(f"| {stage} | " + " | ".join(str(counts[s] or "") for s in System) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(tables(), end="")
