"""What the failure path stores per run, in the state table next to the run record.

| pk / sk | holds |
|---|---|
| `RUN#<id>` / `EVIDENCE` | the evidence collected for the failing clusters |
| `RUN#<id>` / `ANALYSIS` | the LLM analysis, or why it is unavailable |
| `RUN#<id>` / `DECISION` | the human decision taken on the MR (`/guard proceed|rollback`) |
| `RUN#<id>` / `ROLLBACK` | the rollback: clusters, versions, MR, outcome |
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from guard.core.evidence import FailureEvidence
from guard.outbound import plain_text
from guard.stores.dynamo import call, ttl
from guard.vocabulary.outcomes import RollbackStatus

_TTL_HOURS = 24 * 400
# DynamoDB items stop at 400 KB; evidence is capped well below, the rest stays in the cluster.
MAX_EVIDENCE_BYTES = 300_000


class AnalysisRecord(BaseModel):
    run_id: str
    available: bool
    reason: str | None = None  # why it is unavailable
    provider: str | None = None
    model: str | None = None
    summary: str | None = None
    root_cause: str | None = None
    evidence: list[str] = Field(default_factory=list)
    recommended_actions: list[str] = Field(default_factory=list)
    prompt_chars: int = 0
    at: datetime


class DecisionRecord(BaseModel):
    """A decision on a run: a Maintainer's `/guard` command, or (`timed_out`, `by` None) nobody's within
    `timeout_hours`. Records written before `timed_out` existed always name who decided."""

    run_id: str
    decision: Literal["proceed", "rollback"]
    by: str | None
    at: datetime
    merge_request_url: str | None = None
    timed_out: bool = False
    timeout_hours: float | None = None


class RollbackRecord(BaseModel):
    """A rollback: what goes back where, why, its MR and its outcome. Schema 1 had the same
    fields with free-string statuses, which `RollbackStatus` reads unchanged."""

    schema_version: int = 2
    run_id: str
    batch: str
    reason: str
    clusters: list[str]
    versions: dict[str, str]  # cluster -> the version it goes back to
    rolled_back_from: str  # the version being undone
    status: RollbackStatus
    manual: bool = False
    merge_request_url: str | None = None
    merge_request_iid: int | None = None
    merge_commit_sha: str | None = None
    verify_deadline: datetime | None = None
    # Read only, from records written before each wave got an item of its own (`StateStore.sidecar_restarts`,
    # kind "rollback"): cluster -> "namespace/deployment" -> when GUARD restarted it onto the rolled-back version.
    sidecar_restarts: dict[str, dict[str, datetime]] = Field(default_factory=dict)
    detail: str | None = None
    at: datetime


class FailureStore:
    """Typed access to the failure-path items. `table` is the state table's boto3 Table resource."""

    def __init__(self, table: Any, evidence_retention_days: float = 30) -> None:
        self._table = table
        self._evidence_hours = evidence_retention_days * 24

    def _put(self, run_id: str, sk: str, doc: BaseModel, now: datetime, hours: float = _TTL_HOURS) -> None:
        item = {"pk": f"RUN#{run_id}", "sk": sk, "doc": doc.model_dump_json(), "expires_at": ttl(now, hours)}
        call("PutItem", lambda: self._table.put_item(Item=item))

    def _get(self, run_id: str, sk: str) -> str | None:
        response = call("GetItem", lambda: self._table.get_item(Key={"pk": f"RUN#{run_id}", "sk": sk},
                                                                ConsistentRead=True))
        item = response.get("Item")
        return str(item["doc"]) if item else None

    def put_evidence(self, evidence: FailureEvidence, now: datetime) -> None:
        """Store the evidence redacted (cluster text can carry secrets: logs, event messages), cut to fit,
        and only for `rollback.evidence_retention_days`."""
        evidence = evidence.model_copy(deep=True)
        for c in evidence.clusters:
            c.istiod_log = plain_text(c.istiod_log)
            for e in c.events:
                e.message = plain_text(e.message)
        while len(evidence.model_dump_json()) > MAX_EVIDENCE_BYTES:
            # Halve the logs and events of the larger half of the clusters until it fits; the analysis
            # already had its capped share. One cluster a round serialised the whole evidence once per
            # cut: with 500 failing clusters that alone outlasted the function's timeout.
            sized = sorted(evidence.clusters, key=lambda c: len(c.istiod_log) + len(c.events), reverse=True)
            cut = [c for c in sized[:max(1, len(sized) // 2)] if c.istiod_log or c.events]
            if not cut:
                break
            for c in cut:
                c.istiod_log = c.istiod_log[len(c.istiod_log) // 2:]
                c.events = c.events[: len(c.events) // 2]
        self._put(evidence.run_id, "EVIDENCE", evidence, now, hours=self._evidence_hours)

    def get_evidence(self, run_id: str) -> FailureEvidence | None:
        doc = self._get(run_id, "EVIDENCE")
        return FailureEvidence.model_validate_json(doc) if doc else None

    def put_analysis(self, record: AnalysisRecord) -> None:
        self._put(record.run_id, "ANALYSIS", record, record.at)

    def get_analysis(self, run_id: str) -> AnalysisRecord | None:
        doc = self._get(run_id, "ANALYSIS")
        return AnalysisRecord.model_validate_json(doc) if doc else None

    def put_decision(self, record: DecisionRecord) -> None:
        self._put(record.run_id, "DECISION", record, record.at)

    def get_decision(self, run_id: str) -> DecisionRecord | None:
        doc = self._get(run_id, "DECISION")
        return DecisionRecord.model_validate_json(doc) if doc else None

    def put_rollback(self, record: RollbackRecord) -> None:
        self._put(record.run_id, "ROLLBACK", record, record.at)

    def get_rollback(self, run_id: str) -> RollbackRecord | None:
        doc = self._get(run_id, "ROLLBACK")
        return RollbackRecord.model_validate_json(doc) if doc else None
