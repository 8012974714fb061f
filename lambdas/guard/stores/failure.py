"""What the failure path stores per run, in the state table next to the run record.

| pk / sk | holds |
|---|---|
| `RUN#<id>` / `EVIDENCE` | the evidence's head: run, batch, version and a summary of every failing cluster |
| `RUN#<id>` / `EVIDENCE#<n>` | the evidence of the n-th failing cluster (n from 000000, in the run's order) |
| `RUN#<id>` / `ANALYSIS` | the LLM analysis, or why it is unavailable |
| `RUN#<id>` / `DECISION` | the human decision taken on the MR (`/guard proceed|rollback`) |
| `RUN#<id>` / `ROLLBACK` | the rollback: reason, MR, outcome |
| `RUN#<id>` / `ROLLBACK#CLUSTERS#<n>` | its clusters and the version each goes back to, 500 at most an item |

No item grows with the number of failing clusters: each cluster's evidence is an item of its own, cut
to `MAX_CLUSTER_EVIDENCE_BYTES`, and the head holds counts (DynamoDB stops an item at 400 KB; one
item of every cluster's evidence passed it at a few thousand failing clusters, whatever was cut).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from boto3.dynamodb.conditions import Key
from pydantic import BaseModel, Field

from guard.core.evidence import ClusterEvidence, FailureEvidence
from guard.core.run import ClustersStored
from guard.outbound import plain_text
from guard.stores.dynamo import call, ttl
from guard.stores.state import cluster_slices, clusters_digest, query_prefix, record_from_items
from guard.vocabulary.outcomes import RollbackStatus

_TTL_HOURS = 24 * 400
# DynamoDB items stop at 400 KB (409,600 bytes: names and values, UTF-8). One cluster's evidence is cut
# to a quarter of it: room for the keys and attributes, and a prompt's worth of logs and events.
MAX_CLUSTER_EVIDENCE_BYTES = 100_000
_NOTE_LIMIT = 500  # characters of one collection note
_NOTES = 20
_SUMMARY_LIMIT = 2_000  # characters of a cluster's one-line summary (its violations are kept apart)
_EVIDENCE_SK = "EVIDENCE#"
_ROLLBACK_CLUSTERS_SK = "ROLLBACK#CLUSTERS#"


def _evidence_sk(index: int) -> str:
    # Zero-padded: a Query returns the clusters in the run's order (1,000,000 clusters before it wraps).
    return f"{_EVIDENCE_SK}{index:06d}"


def _size(doc: BaseModel) -> int:
    return len(doc.model_dump_json().encode())


def fit_cluster(c: ClusterEvidence, limit: int = MAX_CLUSTER_EVIDENCE_BYTES) -> ClusterEvidence:
    """`c` redacted and cut to at most `limit` bytes of JSON, least needed first: the log's oldest lines
    and the events (halved in turns), then the pods and the series; then the violations, which are what
    a person reads, with a note saying how many were left out. Bounded whatever the cluster sent."""
    c = c.model_copy(deep=True)
    c.istiod_log = plain_text(c.istiod_log)
    for e in c.events:
        e.message = plain_text(e.message)
    c.summary = c.summary[:_SUMMARY_LIMIT]
    c.notes = [n[:_NOTE_LIMIT] for n in c.notes[:_NOTES]]
    while _size(c) > limit and (c.istiod_log or c.events):
        c.istiod_log = c.istiod_log[(len(c.istiod_log) + 1) // 2:]  # the newest lines stay
        c.events = c.events[: len(c.events) // 2]
    while _size(c) > limit and (c.pods or c.series):
        c.pods = c.pods[: len(c.pods) // 2]
        c.series = c.series[: len(c.series) // 2]
    total = len(c.violations)
    while _size(c) > limit and c.violations:
        c.violations = c.violations[: len(c.violations) // 2]
        for v in c.violations:
            v.explanation = v.explanation[:_NOTE_LIMIT]
            v.name = v.name[:200]
    if len(c.violations) < total:
        c.notes.append(f"{total - len(c.violations)} of {total} violations left out to fit the stored evidence")
    return c


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
    # The clusters whose evidence the analysis read (`FailureEvidence.sample`), of how many failing ones.
    sampled_clusters: list[str] = Field(default_factory=list)
    failing_clusters: int | None = None
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


class RollbackRecord(ClustersStored):
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
        """Store the evidence for `rollback.evidence_retention_days`: one item per failing cluster, redacted
        (cluster text can carry secrets: logs, event messages) and cut to fit (`fit_cluster`), then the head
        with the summary of them all. The head goes last: a reader that finds it finds every cluster's item.
        Storing again (a retried task) overwrites the same items; the head's count says how many to read."""
        expires = ttl(now, self._evidence_hours)
        pk = f"RUN#{evidence.run_id}"
        head = FailureEvidence(run_id=evidence.run_id, batch=evidence.batch, target_version=evidence.target_version,
                               summary=evidence.tally())

        def write() -> None:
            with self._table.batch_writer() as batch:
                for index, cluster in enumerate(evidence.clusters):
                    batch.put_item(Item={"pk": pk, "sk": _evidence_sk(index), "cluster_id": cluster.cluster_id,
                                         "doc": fit_cluster(cluster).model_dump_json(), "expires_at": expires})

        call("BatchWriteItem", write)
        self._put(evidence.run_id, "EVIDENCE", head, now, hours=self._evidence_hours)

    def get_evidence(self, run_id: str, first: int | None = None) -> FailureEvidence | None:
        """The run's evidence: its summary of every failing cluster, and the evidence of the `first` ones
        in the run's order (all of them when None), read page by page. None when none was stored."""
        doc = self._get(run_id, "EVIDENCE")
        if not doc:
            return None
        evidence = FailureEvidence.model_validate_json(doc)
        if evidence.summary is None:  # stored before the per-cluster items: the clusters are in the head
            return evidence
        wanted = evidence.summary.cluster_count if first is None else min(first, evidence.summary.cluster_count)
        if wanted <= 0:
            return evidence
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"RUN#{run_id}")
            & Key("sk").between(_evidence_sk(0), _evidence_sk(wanted - 1)), "ConsistentRead": True}
        while len(evidence.clusters) < wanted:
            kwargs["Limit"] = wanted - len(evidence.clusters)
            page = call("Query", lambda: self._table.query(**kwargs))
            evidence.clusters += [ClusterEvidence.model_validate_json(item["doc"]) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return evidence

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
        """Write the rollback record; its clusters and their versions go to items of their own
        (`RUN#<id>` / `ROLLBACK#CLUSTERS#<n>`, `guard.stores.state.RunClusters`), written before the record
        and only when they are not those stored already: a record listing them grew with the batch."""
        parts = cluster_slices(record.clusters, record.versions)
        digest = clusters_digest(record.clusters, record.versions)
        if record.clusters_stored != digest:
            expires = ttl(record.at, _TTL_HOURS)

            def write() -> None:
                with self._table.batch_writer() as batch:
                    for index, part in enumerate(parts):
                        batch.put_item(Item={"pk": f"RUN#{record.run_id}", "sk": f"{_ROLLBACK_CLUSTERS_SK}{index:05d}",
                                             "doc": part.model_dump_json(), "expires_at": expires})

            call("BatchWriteItem", write)
            record.mark_clusters_stored(digest)
        item = {"pk": f"RUN#{record.run_id}", "sk": "ROLLBACK", "expires_at": ttl(record.at, _TTL_HOURS),
                "doc": record.model_dump_json(exclude={"clusters", "versions"}), "cluster_items": len(parts)}
        call("PutItem", lambda: self._table.put_item(Item=item))

    def get_rollback(self, run_id: str) -> RollbackRecord | None:
        """The rollback record with its clusters (a GetItem, and a Query of its cluster items)."""
        response = call("GetItem", lambda: self._table.get_item(Key={"pk": f"RUN#{run_id}", "sk": "ROLLBACK"},
                                                                ConsistentRead=True))
        item = response.get("Item")
        if not item:
            return None
        count = int(item.get("cluster_items", 0))
        parts = [] if not count else [p for p in query_prefix(self._table, f"RUN#{run_id}", _ROLLBACK_CLUSTERS_SK)
                                      if str(p["sk"]) <= f"{_ROLLBACK_CLUSTERS_SK}{count - 1:05d}"]
        return rollback_from_items(item, parts)


def rollback_from_items(item: dict[str, Any], cluster_items: list[dict[str, Any]]) -> RollbackRecord:
    """A rollback record from its `ROLLBACK` item and its `ROLLBACK#CLUSTERS#` items (in sort key order).
    A record written before they had items of their own lists its clusters itself."""
    return record_from_items(RollbackRecord, item, cluster_items, "versions")
