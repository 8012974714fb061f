"""Models of one batch upgrade run: the execution input, the plan, and what is stored per run.

State payloads carry only references (run id, cluster ids); the details below live in
DynamoDB so the 256 KB payload limit is never near.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from guard.core.models import HealthCheckResult
from guard.core.version import Version
from guard.errors import InvalidInput
from guard.vocabulary.outcomes import Outcome
from guard.vocabulary.stages import FailedStage, Stage

PLAN_SCHEMA_VERSION = 2
RUN_SCHEMA_VERSION = 2
# Clusters per chunk when a record says nothing (`execution.cluster_chunk_size`'s default).
DEFAULT_CHUNK_SIZE = 25
# At most this many chunks per per-cluster stage. Each chunk costs 7 history events a stage and a run has
# up to three such stages (Prechecks, Validate, one revalidation): 500 chunks is 10,500 events, which
# leaves the rest of the 25,000-event history to the polls, retries and rollback (docs/scale.md).
MAX_CHUNKS = 500


def chunk_size_for(cluster_count: int, configured: int) -> int:
    """Clusters per chunk for a run of `cluster_count` clusters: `configured`, raised just enough that the
    run has at most MAX_CHUNKS chunks (a small `execution.cluster_chunk_size` on a large batch would
    otherwise pass Step Functions' 25,000-event history limit)."""
    return max(configured, -(-cluster_count // MAX_CHUNKS), 1)


# Bounds on what an execution input may carry: a batch name is a config name (63 characters in the
# config's pattern; a little slack for the message), a version `MAJOR.MINOR.PATCH`, a person's name
# an IAM or GitLab user. Plan refuses anything longer before it writes a thing, so no state payload,
# record or message can grow with it.
BATCH_MAX = 128
VERSION_MAX = 32
REQUESTED_BY_MAX = 256
REASON_MAX = 2_000


class ExecutionInput(BaseModel):
    """What a person, a schedule or CI passes to StartExecution for one batch."""

    model_config = ConfigDict(extra="forbid")

    batch: str = Field(min_length=1, max_length=BATCH_MAX)
    target_version: str = Field(max_length=VERSION_MAX)
    soak_period_minutes: float | None = Field(default=None, ge=0, le=60 * 24 * 7)
    ignore_alerts: bool = False
    ensure_pdb: bool | None = None
    min_replicas: int | None = Field(default=None, ge=0)
    max_unavailable: int | None = Field(default=None, ge=0)
    enable_llm_analysis: bool | None = None
    requested_by: str | None = Field(default=None, max_length=REQUESTED_BY_MAX)
    # Plan and precheck every cluster, record the outcome, and stop: no MR, nothing changes.
    dry_run: bool = False

    @field_validator("target_version")
    @classmethod
    def _semver(cls, value: str) -> str:
        return str(Version.parse(value))


class ManualRollbackInput(BaseModel):
    """The execution input of a manual rollback (seed `guard rollback --batch B`)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["rollback"]
    batch: str = Field(min_length=1, max_length=BATCH_MAX)
    reason: str = Field(min_length=1, max_length=REASON_MAX)
    requested_by: str | None = Field(default=None, max_length=REQUESTED_BY_MAX)


class Plan(BaseModel):
    """The small payload every later state reads (`$.plan`), for an upgrade and a manual rollback alike.

    Version 1 had a second, hand-built shape for manual rollbacks; it is read here too.
    The state machine tells the two apart by `rollback_to` being present, so dump it with
    `exclude_none=True` (`Plan.payload`).
    """

    schema_version: int = PLAN_SCHEMA_VERSION
    run_id: str
    batch: str
    target_version: str  # an upgrade's target; for a manual rollback, the version being undone
    # State data must not grow with the batch (256 KB a state): the plan names the first clusters, for a
    # person reading the console, and counts them all; every id is in the run record (`CLUSTERS#<n>`),
    # which each task reads. Plans made before `cluster_count` listed every cluster.
    clusters: list[str]
    cluster_count: int = Field(default=-1, ge=-1)
    flux_poll_seconds: int
    merge_timeout_seconds: int = 72 * 3600  # the upgrade MR's wait
    rollback_timeout_seconds: int = 72 * 3600  # the rollback MR's wait
    decision_timeout_seconds: int = 24 * 3600
    soak_seconds: int = 0
    # The extra soak before an inconclusive batch is validated once more; None (left out of the
    # payload): ask a person at once, as plans made before it existed do.
    revalidate_seconds: int | None = None
    max_concurrency: int = 1
    # The per-cluster Maps iterate over chunk numbers (0..n-1): each iteration reads its chunk's cluster
    # ids from the run record (`RunRecord.chunk`), so the payload carries numbers, not clusters.
    chunks: list[int] = Field(default_factory=list)
    max_concurrent_chunks: int = 1
    restart_sidecars: bool = False
    llm_analysis: bool = False
    rollback_mr: bool = True  # rollback.auto_create_mr: the state machine alone decides on it
    # Set only by a manual rollback (the ASL tests IsPresent): the first clusters, as `clusters`, with the
    # version each goes back to; the rollback record has every one.
    rollback_to: dict[str, str] | None = None
    dry_run: bool | None = None  # True: stop after the prechecks (left out otherwise: the ASL tests IsPresent)

    @model_validator(mode="after")
    def _counted(self) -> Plan:
        if self.cluster_count < 0:  # a plan made before the count: it listed every cluster
            self.cluster_count = len(self.clusters)
        return self

    def payload(self) -> dict[str, Any]:
        """What the Plan tasks return: no null keys, because the ASL tests `IsPresent`."""
        return self.model_dump(exclude_none=True)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ClustersStored(BaseModel):
    """A record whose clusters (and their versions) the state table may hold in items of their own
    (`guard.stores.state`): they are written once, not with every write of the record."""

    _clusters_stored: str | None = PrivateAttr(default=None)

    @property
    def clusters_stored(self) -> str | None:
        """A digest of the clusters (and versions) the table holds for this record; None: none known."""
        return self._clusters_stored

    def mark_clusters_stored(self, digest: str | None) -> None:
        self._clusters_stored = digest


class RunRecord(ClustersStored):
    """One execution's record (state table, `RUN#<id>` / `META`; its clusters in `RUN#<id>` / `CLUSTERS#<n>`).

    Schema version 2 splits version 1's `stage`, which mixed progress, the failed stage and
    the rollback outcome, into `stage`, `failed_stage` and `outcome`. A version-1 record (an
    execution started before the deploy) is read through `_from_version_1`.
    """

    schema_version: int = RUN_SCHEMA_VERSION
    run_id: str
    execution_arn: str
    batch: str
    target_version: str
    clusters: list[str]
    from_versions: dict[str, str]
    gitlab_project: str
    options: ExecutionInput
    status: RunStatus = RunStatus.RUNNING
    stage: Stage = Stage.PLANNED
    failed_stage: FailedStage | None = None
    outcome: Outcome | None = None
    started_at: datetime
    finished_at: datetime | None = None
    merge_request_url: str | None = None
    merge_request_iid: int | None = None
    merge_commit_sha: str | None = None
    flux_synced_at: datetime | None = None
    # Read only, from records written before each wave got an item of its own (`StateStore.sidecar_restarts`):
    # cluster -> "namespace/deployment" -> when GUARD restarted it. Nothing writes it any more.
    sidecar_restarts: dict[str, dict[str, datetime]] = Field(default_factory=dict)
    error: str | None = None
    cause: str | None = None
    # Where the registry disagreed with the clusters when they were observed ("at plan: ...",
    # "at the end: ..."), one line per cluster: services.observation.
    registry_notes: list[str] = Field(default_factory=list)
    # The input fields that differ from the tenant config (guard.config.overrides), one line each,
    # as the merge request shows them.
    overrides: list[str] = Field(default_factory=list)
    # Clusters per chunk of the per-cluster Maps, fixed when the run is planned so that a config
    # change during the run cannot move a cluster into another chunk (or out of every chunk).
    cluster_chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1)
    def chunk_count(self) -> int:
        """How many chunks the run's clusters make (the last may be shorter)."""
        return -(-len(self.clusters) // self.cluster_chunk_size)

    def chunk(self, index: int) -> list[str]:
        """The cluster ids of chunk `index`, in the run's cluster order; refused when out of range."""
        count = self.chunk_count()
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise InvalidInput(f"chunk {index!r}: run {self.run_id} has chunks 0..{count - 1} "
                             f"({len(self.clusters)} clusters, {self.cluster_chunk_size} a chunk)")
        size = self.cluster_chunk_size
        return self.clusters[index * size:(index + 1) * size]

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        if not isinstance(data, dict) or any(k in data for k in ("schema_version", "outcome", "failed_stage")):
            return data  # version 2 (stored, or built by today's code)
        data = {**data, "schema_version": RUN_SCHEMA_VERSION}
        old = str(data.get("stage") or Stage.PLANNED)
        status = data.get("status", RunStatus.RUNNING)
        if old in (Outcome.ROLLED_BACK, Outcome.ROLLBACK_FAILED):
            # A manual rollback (version 1 never set its upgrade MR's iid) did not fail anywhere.
            manual = data.get("merge_request_iid") is None
            data.update(stage=Stage.DONE, outcome=old, failed_stage=None if manual else FailedStage.VALIDATION)
        elif status == RunStatus.FAILED:
            data.update(stage=Stage.DONE, outcome=Outcome.FAILED, failed_stage=FailedStage.parse(old))
        elif status == RunStatus.SUCCEEDED:
            data.update(stage=Stage.DONE, outcome=Outcome.SUCCEEDED)
        elif old not in Stage._value2member_map_:
            data["stage"] = Stage.PLANNED
        return data

    @property
    def where(self) -> str:
        """One word for people: where it failed, else where it is."""
        return str(self.failed_stage or self.stage)


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


class Coverage(BaseModel):
    """How much of a window's expected buckets came back with data."""

    bucket_seconds: int
    # Where the bucket width came from: the points' own spacing, the query's rollup, or the config.
    bucket_source: str = "config"
    expected: int
    found: int
    required: int

    @property
    def enough(self) -> bool:
        return self.found >= self.required

    def text(self) -> str:
        share = f" ({self.found / self.expected:.0%})" if self.expected else ""
        return f"{self.found}/{self.expected} buckets of {self.bucket_seconds}s{share}, need {self.required}"


class MetricFinding(BaseModel):
    """One rule applied to one query: the numbers, the threshold and the words.

    Fields after `details` were added with Judge v2; their defaults let older records load.
    """

    query_name: str
    query: str
    rule: str
    outcome: VerdictOutcome
    baseline: float | None = None
    current: float | None = None
    threshold: float | None = None
    explanation: str
    details: dict[str, Any] = Field(default_factory=dict)
    statistic: str | None = None  # what `baseline` and `current` are, e.g. "20% trimmed mean"
    change_percent: float | None = None
    baseline_coverage: Coverage | None = None
    current_coverage: Coverage | None = None
    test: str | None = None  # the rank test behind `p_value`
    p_value: float | None = None  # raw, per comparison
    alpha: float | None = None  # the per-comparison level `p_value` was held to
    # The robust change is beyond the limit: with a significant test, the rule fails.
    beyond_limit: bool | None = None
    adjusted_p_value: float | None = None
    correction: str | None = None  # e.g. "Holm over the 3 of 184 tests that could fail (…), family-wise error 0.01"


class ClusterVerdict(BaseModel):
    """Validation outcome of one cluster (`CLUSTER#<id>` / `VALIDATION`)."""

    cluster_id: str
    outcome: VerdictOutcome
    findings: list[MetricFinding] = Field(default_factory=list)
    post_checks: list[HealthCheckResult] = Field(default_factory=list)
    current: dict[str, MetricSummary] = Field(default_factory=dict)
    # Set by the batch judge: the outcome before correction, and which correction applied.
    uncorrected_outcome: VerdictOutcome | None = None
    correction: str | None = None

    def summary(self) -> str:
        """One line a person reads (MR comment, Slack): what failed or was missing, with numbers."""
        bad = [f.explanation for f in self.findings if f.outcome == self.outcome and f.outcome != VerdictOutcome.PASS]
        bad += [f.explanation for f in self.findings
                if f.outcome not in (VerdictOutcome.PASS, self.outcome)]
        bad += [f"{c.check_name}: {c.message}" for c in self.post_checks if not c.passed]
        tail = f" [{self.correction}]" if self.correction else ""
        if not bad:
            return f"{self.cluster_id}: pass{tail}" if self.outcome == VerdictOutcome.PASS else \
                f"{self.cluster_id}: {self.outcome.value}{tail}"
        return f"{self.cluster_id}: {self.outcome.value}: " + "; ".join(bad) + tail
