"""What GUARD knows about a failed (or inconclusive) upgrade, per failing cluster.

Collected by `guard.services.evidence`, stored with the run, rendered into the LLM prompt,
the decision comment and the rollback merge request.
"""

from __future__ import annotations

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


class FailureEvidence(BaseModel):
    run_id: str
    batch: str
    target_version: str
    clusters: list[ClusterEvidence] = Field(default_factory=list)

    def first_violation(self) -> str | None:
        """The first explanation a person should read, e.g. for a notification."""
        for cluster in self.clusters:
            for v in cluster.violations:
                return f"{cluster.cluster_id}: {v.explanation}"
        return None
