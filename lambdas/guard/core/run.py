"""Models of one batch upgrade run: the execution input, the plan, and what is stored per run.

State payloads carry only references (run id, cluster ids); the details below live in
DynamoDB so the 256 KB payload limit is never near.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guard.core.models import HealthCheckResult
from guard.core.version import Version


class ExecutionInput(BaseModel):
    """What a person, a schedule or CI passes to StartExecution for one batch."""

    model_config = ConfigDict(extra="forbid")

    batch: str = Field(min_length=1)
    target_version: str
    soak_period_minutes: float | None = Field(default=None, ge=0, le=60 * 24 * 7)
    ignore_alerts: bool = False
    ensure_pdb: bool | None = None
    min_replicas: int | None = Field(default=None, ge=0)
    max_unavailable: int | None = Field(default=None, ge=0)
    enable_llm_analysis: bool | None = None
    requested_by: str | None = None

    @field_validator("target_version")
    @classmethod
    def _semver(cls, value: str) -> str:
        return str(Version.parse(value))


class Plan(BaseModel):
    """The small payload every later state reads (`$.plan`)."""

    run_id: str
    batch: str
    target_version: str
    clusters: list[str]
    soak_seconds: int
    merge_timeout_seconds: int
    flux_poll_seconds: int
    max_concurrency: int
    restart_sidecars: bool = False
    rollback_timeout_seconds: int = 72 * 3600
    decision_timeout_seconds: int = 24 * 3600
    llm_analysis: bool = False
    rollback_mr: bool = True


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunRecord(BaseModel):
    """One execution's record (state table, `RUN#<id>` / `META`)."""

    run_id: str
    execution_arn: str
    batch: str
    target_version: str
    clusters: list[str]
    from_versions: dict[str, str]
    gitlab_project: str
    options: ExecutionInput
    status: RunStatus = RunStatus.RUNNING
    stage: str = "plan"
    started_at: datetime
    finished_at: datetime | None = None
    merge_request_url: str | None = None
    merge_request_iid: int | None = None
    merge_commit_sha: str | None = None
    flux_synced_at: datetime | None = None
    # cluster -> "namespace/deployment" -> when GUARD restarted it (rollout sequencing)
    sidecar_restarts: dict[str, dict[str, datetime]] = Field(default_factory=dict)
    error: str | None = None
    cause: str | None = None


class MetricSummary(BaseModel):
    """Points of one named query over one window, with where they came from."""

    query: str
    start: datetime
    end: datetime
    points: list[tuple[float, float]] = Field(default_factory=list)  # (epoch seconds, value)
    url: str | None = None


class PrecheckReport(BaseModel):
    """Everything the precheck of one cluster found (`CLUSTER#<id>` / `PRECHECK`)."""

    cluster_id: str
    results: list[HealthCheckResult]
    baseline: dict[str, MetricSummary] = Field(default_factory=dict)
    ignored_alerts: bool = False

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[HealthCheckResult]:
        return [r for r in self.results if not r.passed]


class VerdictOutcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class MetricFinding(BaseModel):
    """One rule applied to one query: the numbers, the threshold and the words."""

    query_name: str
    query: str
    rule: str
    outcome: VerdictOutcome
    baseline: float | None = None
    current: float | None = None
    threshold: float | None = None
    explanation: str
    details: dict[str, Any] = Field(default_factory=dict)


class ClusterVerdict(BaseModel):
    """Validation outcome of one cluster (`CLUSTER#<id>` / `VALIDATION`)."""

    cluster_id: str
    outcome: VerdictOutcome
    findings: list[MetricFinding] = Field(default_factory=list)
    post_checks: list[HealthCheckResult] = Field(default_factory=list)
    current: dict[str, MetricSummary] = Field(default_factory=dict)

    def summary(self) -> str:
        """First lines a person reads: what failed or was missing, with numbers."""
        bad = [f.explanation for f in self.findings if f.outcome != VerdictOutcome.PASS]
        bad += [f"{c.check_name}: {c.message}" for c in self.post_checks if not c.passed]
        if not bad:
            return f"{self.cluster_id}: pass"
        return f"{self.cluster_id}: {self.outcome.value}: " + "; ".join(bad)
