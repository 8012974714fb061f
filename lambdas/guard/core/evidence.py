"""What GUARD knows about a failed (or inconclusive) upgrade, per failing cluster.

Collected by `guard.services.evidence`, stored with the run, rendered into the LLM prompt,
the decision comment and the rollback merge request.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, Field


class EventInfo(BaseModel):
    """One Kubernetes event (core/v1 Event), as `kubectl get events` shows it."""

    namespace: str
    involved_object: str  # "Pod/istiod-5c9d-x2"
    reason: str = ""
    message: str = ""
    type: str = "Normal"  # Normal | Warning
    count: int = 1
    last_seen: datetime | None = None


class Violation(BaseModel):
    """One non-passing finding or failed post-check, with its numbers."""

    name: str  # query name or check name
    outcome: str  # fail | inconclusive
    baseline: float | None = None
    current: float | None = None
    threshold: float | None = None
    explanation: str


class SeriesSummary(BaseModel):
    """min / mean / max / last of one query's baseline and current windows (None: no data)."""

    query_name: str
    baseline: dict[str, float] | None = None
    current: dict[str, float] | None = None


class PodStatus(BaseModel):
    namespace: str
    name: str
    phase: str
    ready: bool
    restarts: int = 0
    crash_looping: bool = False
    proxy_version: str | None = None


class ClusterEvidence(BaseModel):
    cluster_id: str
    outcome: str  # the verdict's outcome, or "unknown" when none was recorded
    from_version: str
    to_version: str
    summary: str = ""
    violations: list[Violation] = Field(default_factory=list)
    series: list[SeriesSummary] = Field(default_factory=list)
    pods: list[PodStatus] = Field(default_factory=list)
    events: list[EventInfo] = Field(default_factory=list)
    istiod_log: str = ""
    notes: list[str] = Field(default_factory=list)  # what could not be collected, and why


SUMMARY_NAMES = 50
"""Check and query names an `EvidenceSummary` counts; the rarest beyond them are left out."""

FIRST_VIOLATION_LIMIT = 1_000
"""Characters of the first violation kept in a summary (a notification cuts at 1,000 as well)."""


class EvidenceSummary(BaseModel):
    """What a reader needs to know about *every* failing cluster, in a size that does not grow with them:
    how many, their count per outcome and per failed check, and the first violation a person reads.
    Stored in the evidence's head item, next to one item per cluster (`guard.stores.failure`)."""

    cluster_count: int
    outcomes: dict[str, int] = Field(default_factory=dict)  # outcome -> clusters, most first
    violations: dict[str, int] = Field(default_factory=dict)  # check or query name -> clusters, most first
    first_violation: str | None = None

    @classmethod
    def of(cls, clusters: list[ClusterEvidence]) -> EvidenceSummary:
        outcomes = Counter(c.outcome for c in clusters)
        names = Counter(name[:200] for c in clusters for name in dict.fromkeys(v.name for v in c.violations))
        first = next((f"{c.cluster_id}: {v.explanation}" for c in clusters for v in c.violations), None)
        return cls(cluster_count=len(clusters), outcomes=dict(_ranked(outcomes)),
                   violations=dict(_ranked(names)[:SUMMARY_NAMES]),
                   first_violation=first[:FIRST_VIOLATION_LIMIT] if first else None)


def _ranked(tally: Counter[str]) -> list[tuple[str, int]]:
    return sorted(tally.items(), key=lambda item: (-item[1], item[0]))


def signature(c: ClusterEvidence) -> tuple[str, tuple[str, ...]]:
    """How a cluster failed: its outcome and the names of what it failed, whatever the numbers."""
    return c.outcome, tuple(sorted({v.name for v in c.violations}))


class FailureEvidence(BaseModel):
    """The evidence of a run's failing clusters, in the run's cluster order.

    Read back from the store, `clusters` may hold only the first ones a reader asked for; `summary`
    then describes all of them (`tally()` works for both)."""

    run_id: str
    batch: str
    target_version: str
    clusters: list[ClusterEvidence] = Field(default_factory=list)
    summary: EvidenceSummary | None = None

    def tally(self) -> EvidenceSummary:
        """The summary over every failing cluster: the stored one, or computed from `clusters`."""
        return self.summary or EvidenceSummary.of(self.clusters)

    def first_violation(self) -> str | None:
        """The first explanation a person should read, e.g. for a notification."""
        return self.tally().first_violation

    def sample(self, size: int) -> FailureEvidence:
        """At most `size` clusters for an analysis that cannot read thousands, every kind of failure in it.

        Clusters are grouped by `signature` (outcome + the checks failed). The sample takes the first
        cluster of each group, the largest groups first (fails before inconclusive when as large), then
        the second of each group, and so on, until `size`; it keeps the run's cluster order. `summary`
        still counts every cluster, so the analysis knows what the sample stands for."""
        summary = self.tally()
        if len(self.clusters) <= size:
            return self.model_copy(update={"summary": summary})
        groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for index, c in enumerate(self.clusters):
            groups.setdefault(signature(c), []).append(index)
        ordered = sorted(groups.items(), key=lambda g: (-len(g[1]), g[0][0] != "fail", g[1][0]))
        chosen: list[int] = []
        for depth in range(max(len(members) for _, members in ordered)):
            chosen += [members[depth] for _, members in ordered if depth < len(members)]
            if len(chosen) >= size:
                break
        picked = sorted(chosen[:size])
        return self.model_copy(update={"clusters": [self.clusters[i] for i in picked], "summary": summary})
