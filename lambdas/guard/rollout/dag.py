"""Pure planning over `batch_order`: which batches run in which order, what is ready now,
and what a failure blocks. No I/O: the rollout service feeds it results and acts on its answers.

`batch_order` maps a batch to the batches that must succeed before it (its prerequisites).
A rollout runs a *selection* of the tenant's batches; a prerequisite outside the selection
is *external*: it must already have succeeded at the target version (the caller checks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from guard.errors import ConfigError
from guard.vocabulary.outcomes import Outcome

# Outcomes a batch of a rollout can end in; anything else is still to do.
SUCCEEDED = Outcome.SUCCEEDED.value
FAILED = Outcome.FAILED.value
ROLLED_BACK = Outcome.ROLLED_BACK.value
SKIPPED = "skipped"  # a rollout's own word: the batch never ran because a prerequisite failed
FINAL = frozenset({SUCCEEDED, FAILED, ROLLED_BACK, SKIPPED})
BAD = frozenset({FAILED, ROLLED_BACK})


@dataclass(frozen=True)
class RolloutGraph:
    """The dependency graph restricted to the selected batches, in config order."""

    batches: tuple[str, ...]
    prerequisites: Mapping[str, tuple[str, ...]]  # inside the selection
    external: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # outside it

    @classmethod
    def build(cls, all_batches: Iterable[str], batch_order: Mapping[str, Iterable[str]],
              selected: Iterable[str] | None = None) -> RolloutGraph:
        """Graph of `selected` (default: every batch). Unknown names, self-dependencies and
        cycles raise ConfigError (the config validation refuses them too)."""
        ordered = list(all_batches)
        known = set(ordered)
        order = {b: tuple(p) for b, p in batch_order.items()}
        for dependent, prereqs in order.items():
            for name in (dependent, *prereqs):
                if name not in known:
                    raise ConfigError(f"batch_order.{dependent}: unknown batch '{name}'")
            if dependent in prereqs:
                raise ConfigError(f"batch_order.{dependent}: a batch cannot depend on itself")
        chosen = ordered if selected is None else list(dict.fromkeys(selected))
        unknown = [b for b in chosen if b not in known]
        if unknown:
            raise ConfigError(f"unknown batch(es) {', '.join(unknown)} (this tenant has: {', '.join(ordered)})")
        if not chosen:
            raise ConfigError("a rollout needs at least one batch")
        inside = set(chosen)
        # Keep the config's order among the selected batches so output reads like the config.
        batches = tuple(b for b in ordered if b in inside)
        graph = cls(
            batches=batches,
            prerequisites={b: tuple(p for p in order.get(b, ()) if p in inside) for b in batches},
            external={b: tuple(p for p in order.get(b, ()) if p not in inside) for b in batches
                      if any(p not in inside for p in order.get(b, ()))},
        )
        graph.waves()  # raises on a cycle
        return graph

    def dependents(self, batch: str) -> tuple[str, ...]:
        return tuple(b for b in self.batches if batch in self.prerequisites[b])

    def waves(self) -> list[list[str]]:
        """Topological levels: wave n holds the batches whose longest prerequisite chain has n links.

        Every batch of a wave can run in parallel once the earlier waves succeeded.
        """
        level: dict[str, int] = {}
        remaining = list(self.batches)
        while remaining:
            progressed = [b for b in remaining if all(p in level for p in self.prerequisites[b])]
            if not progressed:
                raise ConfigError(f"batch_order: dependency cycle among {', '.join(remaining)}")
            for b in progressed:
                level[b] = max((level[p] + 1 for p in self.prerequisites[b]), default=0)
            remaining = [b for b in remaining if b not in level]
        waves: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
        for b in self.batches:
            waves[level[b]].append(b)
        return waves

    def order(self) -> list[str]:
        """One valid sequential order (waves flattened)."""
        return [b for wave in self.waves() for b in wave]

    def ready(self, outcomes: Mapping[str, str]) -> list[str]:
        """Batches not started yet whose prerequisites inside the rollout all succeeded."""
        return [b for b in self.order()
                if b not in outcomes and all(outcomes.get(p) == SUCCEEDED for p in self.prerequisites[b])]

    def blocked_by(self, outcomes: Mapping[str, str]) -> dict[str, str]:
        """Not-yet-final batches that can never run, each with the failed batch it (transitively) depends on."""
        blocked: dict[str, str] = {}
        for b in self.order():  # prerequisites come first, so a chain resolves in one pass
            if outcomes.get(b) in FINAL:
                continue
            for p in self.prerequisites[b]:
                if outcomes.get(p) in BAD or outcomes.get(p) == SKIPPED:
                    blocked[b] = _root(p, outcomes, blocked)
                    break
                if p in blocked:
                    blocked[b] = blocked[p]
                    break
        return blocked


def _root(prereq: str, outcomes: Mapping[str, str], blocked: Mapping[str, str]) -> str:
    """The failed batch behind `prereq` (itself if it failed; its own cause if it was skipped)."""
    return prereq if outcomes.get(prereq) in BAD else blocked.get(prereq, prereq)
