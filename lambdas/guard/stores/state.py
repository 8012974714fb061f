"""Run state in one DynamoDB table (pk/sk, TTL `expires_at`): runs, locks, MR task tokens
and per-batch results. Webhook deliveries share the table (`guard.stores.deliveries`).

No item here grows with the number of clusters a run touches: what is kept per cluster is kept
in items of its own under the run's partition (`RUN#<id>` / `CLUSTER#<id>#…`, `SIDECARS#…`),
read back with a paginated Query where a reader needs them all."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from guard.core.run import ClustersStored, ClusterVerdict, PrecheckReport, RunRecord, RunStatus
from guard.errors import BatchLocked, ExternalServiceError, RunAlreadyEnded, TransientError
from guard.stores.dynamo import call, is_conditional_failure, mapped, ttl
from guard.stores.schema import STATE_WATCH_INDEX, WATCH_ATTRIBUTE
from guard.vocabulary.outcomes import ChangeKind, Outcome

R = TypeVar("R", bound=ClustersStored)

_RUN_TTL_HOURS = 24 * 400  # a year of history, then DynamoDB forgets it
# The items the reconciler watches carry `watch` = their sort key (guard.stores.schema.STATE_WATCH_INDEX).
WatchKind = Literal["TOKEN", "UNWATCHED"]
_WATCH_MARKER_PK = "MIGRATION#watch-index"
# Longer than a deploy plus the longest function timeout (300 s): code from before the index is gone by then.
_WATCH_BACKFILL_SETTLE = timedelta(hours=1)
_BATCH_GET_KEYS = 100  # BatchGetItem's limit
_UNPROCESSED_ROUNDS = 5


class TaskTokenRecord(BaseModel):
    """The paused execution waiting on one merge request (schema 1 had the same fields, `kind` a free string)."""

    schema_version: int = 2
    merge_request_url: str
    task_token: str
    run_id: str
    kind: ChangeKind = ChangeKind.UPGRADE


class UnwatchedRollback(BaseModel):
    """A rollback MR GUARD stopped watching and left open for a person (`MR#<url>` / `UNWATCHED`).

    GUARD never closes a rollback MR. When a person merges it later, no execution verifies it: the
    reconciler follows it instead and sets the registry to what the clusters then run."""

    schema_version: int = 1
    merge_request_url: str
    merge_request_iid: int
    project: str
    run_id: str
    # cluster -> the version the rollback brings back. Stored in items of their own (`UNWATCHED#CLUSTERS#<n>`,
    # as a run's clusters): inside the record it grew with the batch (~110 B a cluster with 100-character ids,
    # DynamoDB's 400 KB near 3,700 clusters). A record stored before holds them itself and is read as it is.
    versions: dict[str, str]


class BatchLock(BaseModel):
    """The batch lock item (`LOCK#<batch>` / `LOCK`); `execution_arn` is absent on locks taken before it was kept."""

    batch: str
    run_id: str
    execution_arn: str | None = None
    acquired_at: str | None = None
    expires_at: int = 0


class LockAudit(BaseModel):
    """A lock taken over from a holder that could no longer hold it (`LOCK#<batch>` / `AUDIT#<time>#<run>`)."""

    batch: str
    at: datetime
    taken_by: str
    taken_by_execution: str | None = None
    taken_from: str
    taken_from_execution: str | None = None
    reason: str


class BatchResult(BaseModel):
    """Last outcome of a batch at a target version (what prerequisites are checked against).

    Schema 1 had the same fields, `status` a free string with the values of `Outcome`."""

    schema_version: int = 2
    batch: str
    target_version: str
    status: Outcome
    run_id: str
    at: datetime


class SoakRecord(BaseModel):
    """A run's soak (`RUN#<id>` / `SOAK`): its length now, read again by the Soak task at every check, so
    `guard monitor --soak-period` can move the end of a soak that is running (top-level attributes: the
    CLI and the task each update their own with one conditional UpdateItem, never the whole run record)."""

    soak_seconds: int  # the length wanted now: the plan's, until someone changes it
    started_at: datetime | None = None  # set once, by the first check (the state machine's clock)
    ended_at: datetime | None = None  # set by the check that found the soak over; no change after it
    changes: list[str] = []  # who changed the length, to what, in order


RestartKind = Literal["upgrade", "rollback"]
"""Whose sidecar waves: the upgrade's (onto the target) or the rollback's (back onto the previous version)."""


class SidecarWave(BaseModel):
    """One wave of workloads GUARD restarted on one cluster (`RUN#<id>` / `SIDECARS#<kind>#<cluster>#<time>`).

    A wave holds at most `execution.sidecar_restart_wave_size` (≤ 50) workloads, each a Kubernetes
    namespace and name, so the item is a few KB at most however many clusters and workloads the run
    has; a run record that kept every cluster's restarts (`RunRecord.sidecar_restarts`) passed
    DynamoDB's 400 KB at a few thousand clusters."""

    cluster_id: str
    at: datetime
    workloads: list[str]  # "namespace/deployment" or "namespace/Kind/name" (`services.sidecars`)


_CLUSTERS_SK = "CLUSTERS#"
_UNWATCHED_CLUSTERS_SK = "UNWATCHED#CLUSTERS#"  # under `MR#<url>`: an unwatched rollback's versions
_APART = {"clusters", "from_versions"}  # kept in `RunClusters` items, not in the run record's item
CLUSTERS_PER_ITEM = 500
_CLUSTER_ITEM_BYTES = 100_000  # a quarter of DynamoDB's 400 KB, whatever the ids' and versions' lengths


class RunClusters(BaseModel):
    """A slice of a run's clusters in the run's order, each with the version it ran at plan
    (`RUN#<id>` / `CLUSTERS#<n>`, n from 00000): at most `CLUSTERS_PER_ITEM` clusters and ~100 KB."""

    clusters: list[tuple[str, str]]  # (cluster id, version at plan)


def cluster_slices(clusters: list[str], versions: dict[str, str]) -> list[RunClusters]:
    """`clusters` with their `versions`, in order, cut into items of at most `CLUSTERS_PER_ITEM` and ~100 KB."""
    parts: list[RunClusters] = []
    size = 0
    for cluster_id in clusters:
        pair = (cluster_id, versions.get(cluster_id, ""))
        entry = len(cluster_id.encode()) + len(pair[1].encode()) + 8
        if not parts or len(parts[-1].clusters) == CLUSTERS_PER_ITEM or size + entry > _CLUSTER_ITEM_BYTES:
            parts.append(RunClusters(clusters=[]))
            size = 0
        parts[-1].clusters.append(pair)
        size += entry
    return parts


def query_prefix(table: Any, pk: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every item of partition `pk` whose sort key starts with `prefix`, in sort key order, page after
    page (a Query returns 1 MB at most)."""
    kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(pk) & Key("sk").begins_with(prefix),
                              "ConsistentRead": True}
    while True:
        page = call("Query", lambda: table.query(**kwargs))
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def clusters_digest(clusters: list[str], versions: dict[str, str]) -> str:
    """What the cluster items of a record hold, in a few bytes: a changed list is written again."""
    return hashlib.sha256(json.dumps([clusters, sorted(versions.items())]).encode()).hexdigest()


def _slices(run: RunRecord) -> list[RunClusters]:
    return cluster_slices(run.clusters, run.from_versions)


def joined(cluster_items: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The clusters and their versions back from `RunClusters` items read in sort key order."""
    pairs = [pair for item in cluster_items for pair in RunClusters.model_validate_json(item["doc"]).clusters]
    return [cluster_id for cluster_id, _ in pairs], {cluster_id: version for cluster_id, version in pairs if version}


def record_from_items(model: type[R], item: dict[str, Any], cluster_items: list[dict[str, Any]],
                      versions_field: str) -> R:
    """A record from its item and its cluster items (in sort key order). A record written before the
    clusters had items of their own lists them itself (and gets its items at its next write)."""
    doc = json.loads(item["doc"])
    apart = "clusters" not in doc
    if apart:
        doc["clusters"], doc[versions_field] = joined(cluster_items)
    record = model.model_validate(doc)
    fields = vars(record)  # the validated values of the two fields this record keeps its clusters in
    record.mark_clusters_stored(clusters_digest(fields["clusters"], fields[versions_field]) if apart else None)
    return record


def run_from_items(meta: dict[str, Any], cluster_items: list[dict[str, Any]]) -> RunRecord:
    """A run record from its `META` item and its `CLUSTERS#` items (in sort key order)."""
    return record_from_items(RunRecord, meta, cluster_items, "from_versions")


class StateStore:
    """Typed access to the state table. `table` is a boto3 DynamoDB Table resource."""

    def __init__(self, table: Any) -> None:
        self._table = table

    # ------------------------------------------------------------------ generic
    def _put(self, pk: str, sk: str, doc: BaseModel, expires_at: int, **extra: Any) -> None:
        item = {"pk": pk, "sk": sk, "doc": doc.model_dump_json(), "expires_at": expires_at, **extra}
        call("PutItem", lambda: self._table.put_item(Item=item))

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = call("GetItem", lambda: self._table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True))
        item: dict[str, Any] | None = response.get("Item")
        return item

    # ------------------------------------------------------------------ runs
    def put_run(self, run: RunRecord) -> None:
        """Write the run record. A record still running never overwrites one that has ended: a task
        invoked as its execution was stopped must not undo what ExecutionEnded recorded (RunAlreadyEnded).
        `run_status` at the top level carries that condition; records written before it have none.

        The batch's clusters and their versions at plan go to items of their own (`RunClusters`),
        written before the record, and only when they are not those stored already (they do not change
        during a run): a record that listed them grew with the batch (~63 B a cluster, 400 KB near
        6,000 clusters; near 1,900 with 100-character ids)."""
        if run.clusters_stored != clusters_digest(run.clusters, run.from_versions):
            self._put_run_clusters(run)
        item = {"pk": f"RUN#{run.run_id}", "sk": "META", "doc": run.model_dump_json(exclude=_APART),
                "expires_at": ttl(run.started_at, _RUN_TTL_HOURS), "run_status": run.status.value,
                "cluster_items": len(_slices(run))}
        kwargs: dict[str, Any] = {"Item": item}
        if run.status == RunStatus.RUNNING:
            kwargs |= {"ConditionExpression": "attribute_not_exists(run_status) OR run_status = :running",
                       "ExpressionAttributeValues": {":running": RunStatus.RUNNING.value}}
        try:
            self._table.put_item(**kwargs)
        except ClientError as e:
            if is_conditional_failure(e):
                raise RunAlreadyEnded(f"run '{run.run_id}' has ended already; its record is not rewritten as "
                                      f"running (at {run.stage})") from e
            raise mapped("PutItem", e) from e
        except BotoCoreError as e:
            raise TransientError(f"DynamoDB PutItem: {e}") from e

    def _put_run_clusters(self, run: RunRecord) -> None:
        expires = ttl(run.started_at, _RUN_TTL_HOURS)

        def write() -> None:
            with self._table.batch_writer() as batch:
                for index, part in enumerate(_slices(run)):
                    batch.put_item(Item={"pk": f"RUN#{run.run_id}", "sk": f"{_CLUSTERS_SK}{index:05d}",
                                         "doc": part.model_dump_json(), "expires_at": expires})

        call("BatchWriteItem", write)
        run.mark_clusters_stored(clusters_digest(run.clusters, run.from_versions))

    def get_run(self, run_id: str) -> RunRecord:
        run = self.find_run(run_id)
        if run is None:
            raise ExternalServiceError(f"run '{run_id}' has no record in the state table")
        return run

    def find_run(self, run_id: str) -> RunRecord | None:
        """The run record with its clusters (a GetItem, and a Query of its cluster items); None without one."""
        item = self._get(f"RUN#{run_id}", "META")
        if not item:
            return None
        count = int(item.get("cluster_items", 0))
        parts = [] if not count else [p for p in self._query(f"RUN#{run_id}", _CLUSTERS_SK)
                                      if str(p["sk"]) <= f"{_CLUSTERS_SK}{count - 1:05d}"]
        return run_from_items(item, parts)

    def put_precheck(self, run: RunRecord, report: PrecheckReport) -> None:
        self._put(f"RUN#{run.run_id}", f"CLUSTER#{report.cluster_id}#PRECHECK", report,
                  ttl(run.started_at, _RUN_TTL_HOURS))

    def get_precheck(self, run_id: str, cluster_id: str) -> PrecheckReport | None:
        item = self._get(f"RUN#{run_id}", f"CLUSTER#{cluster_id}#PRECHECK")
        return PrecheckReport.model_validate_json(item["doc"]) if item else None

    def put_verdict(self, run: RunRecord, verdict: ClusterVerdict) -> None:
        self._put(f"RUN#{run.run_id}", f"CLUSTER#{verdict.cluster_id}#VALIDATION", verdict,
                  ttl(run.started_at, _RUN_TTL_HOURS))

    def get_verdict(self, run_id: str, cluster_id: str) -> ClusterVerdict | None:
        item = self._get(f"RUN#{run_id}", f"CLUSTER#{cluster_id}#VALIDATION")
        return ClusterVerdict.model_validate_json(item["doc"]) if item else None

    # ------------------------------------------------------------------ sidecar waves
    def put_sidecar_wave(self, run_id: str, kind: RestartKind, wave: SidecarWave) -> None:
        """Record one wave restarted on one cluster: a retried poll must not restart it twice."""
        self._put(f"RUN#{run_id}", f"SIDECARS#{kind}#{wave.cluster_id}#{wave.at.isoformat()}", wave,
                  ttl(wave.at, _RUN_TTL_HOURS))

    def sidecar_restarts(self, run_id: str, kind: RestartKind) -> dict[str, dict[str, datetime]]:
        """cluster -> workload -> when GUARD restarted it, over every recorded wave (a paginated Query)."""
        found: dict[str, dict[str, datetime]] = {}
        for item in self._query(f"RUN#{run_id}", f"SIDECARS#{kind}#"):
            wave = SidecarWave.model_validate_json(item["doc"])
            found.setdefault(wave.cluster_id, {}).update(dict.fromkeys(wave.workloads, wave.at))
        return found

    def _query(self, pk: str, prefix: str) -> Iterator[dict[str, Any]]:
        return query_prefix(self._table, pk, prefix)

    # ------------------------------------------------------------------ soak
    def soak(self, run_id: str) -> SoakRecord | None:
        """The run's soak record; None before the soak was planned or changed."""
        item = self._get(f"RUN#{run_id}", "SOAK")
        return _soak_record(item) if item else None

    def start_soak(self, run: RunRecord, planned_seconds: int, now: datetime) -> SoakRecord:
        """The soak record, its start set to `now` on the first call and its length to the plan's unless
        a length was asked for before it started. Idempotent: later calls change nothing."""
        response = call("UpdateItem", lambda: self._table.update_item(
            Key={"pk": f"RUN#{run.run_id}", "sk": "SOAK"},
            UpdateExpression="SET soak_seconds = if_not_exists(soak_seconds, :planned), started_at = "
                             "if_not_exists(started_at, :now), expires_at = if_not_exists(expires_at, :ttl)",
            ExpressionAttributeValues={":planned": planned_seconds, ":now": now.isoformat(),
                                       ":ttl": ttl(run.started_at, _RUN_TTL_HOURS)},
            ReturnValues="ALL_NEW"))
        return _soak_record(response["Attributes"])

    def end_soak(self, run_id: str, now: datetime) -> None:
        """Mark the soak over (first call wins): a later length change is refused as too late."""
        call("UpdateItem", lambda: self._table.update_item(
            Key={"pk": f"RUN#{run_id}", "sk": "SOAK"}, UpdateExpression="SET ended_at = if_not_exists(ended_at, :now)",
            ExpressionAttributeValues={":now": now.isoformat()}))

    def request_soak(self, run: RunRecord, seconds: int, note: str) -> SoakRecord | None:
        """Set the soak's length to `seconds` (the next check moves its end); None when the soak is over."""
        try:
            response = self._table.update_item(
                Key={"pk": f"RUN#{run.run_id}", "sk": "SOAK"},
                UpdateExpression="SET soak_seconds = :seconds, changes = list_append(if_not_exists(changes, :none), "
                                 ":note), expires_at = if_not_exists(expires_at, :ttl)",
                ConditionExpression="attribute_not_exists(ended_at)",
                ExpressionAttributeValues={":seconds": seconds, ":note": [note], ":none": [],
                                           ":ttl": ttl(run.started_at, _RUN_TTL_HOURS)},
                ReturnValues="ALL_NEW")
        except ClientError as e:
            if is_conditional_failure(e):
                return None
            raise mapped("UpdateItem", e) from e
        except BotoCoreError as e:
            raise TransientError(f"DynamoDB UpdateItem: {e}") from e
        return _soak_record(response["Attributes"])

    # ------------------------------------------------------------------ batch lock
    def acquire_lock(self, batch: str, run_id: str, now: datetime, hours: float,
                     execution_arn: str | None = None) -> None:
        """Take the batch lock for `run_id` (held with its `execution_arn`, until `hours` from now);
        re-entrant for the same run; BatchLocked otherwise.

        An expired lock (its holder died without releasing) is taken over. A lock whose holder
        execution has ended is taken over by `guard.services.locks`, which can ask Step Functions.
        """
        item = {"pk": f"LOCK#{batch}", "sk": "LOCK", "run_id": run_id, "expires_at": ttl(now, hours),
                "acquired_at": now.isoformat()}
        if execution_arn:
            item["execution_arn"] = execution_arn
        try:
            self._table.put_item(
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR run_id = :me OR expires_at < :now",
                ExpressionAttributeValues={":me": run_id, ":now": int(now.timestamp())},
            )
        except ClientError as e:
            if not is_conditional_failure(e):
                raise mapped("PutItem", e) from e
            holder = self._get(f"LOCK#{batch}", "LOCK") or {}
            raise BatchLocked(
                f"batch '{batch}' is locked by run {holder.get('run_id', '?')} since "
                f"{holder.get('acquired_at', '?')}; wait for it to finish or stop that execution"
            ) from e

    def lock(self, batch: str) -> BatchLock | None:
        """Who holds `batch`'s lock, with which execution, since and until when; None when free."""
        item = self._get(f"LOCK#{batch}", "LOCK")
        if not item:
            return None
        return BatchLock(batch=batch, run_id=str(item["run_id"]), execution_arn=item.get("execution_arn"),
                         acquired_at=item.get("acquired_at"), expires_at=int(item.get("expires_at", 0)))

    def take_over_lock(self, holder: BatchLock, run_id: str, execution_arn: str | None, now: datetime,
                       hours: float, reason: str) -> LockAudit:
        """Give `holder.batch`'s lock to `run_id` if `holder` still holds it, and write the audit record
        (`LOCK#<batch>` / `AUDIT#<time>#<run>`). BatchLocked when someone else took it meanwhile."""
        item = {"pk": f"LOCK#{holder.batch}", "sk": "LOCK", "run_id": run_id, "expires_at": ttl(now, hours),
                "acquired_at": now.isoformat()}
        if execution_arn:
            item["execution_arn"] = execution_arn
        try:
            self._table.put_item(Item=item, ConditionExpression="run_id = :holder",
                                 ExpressionAttributeValues={":holder": holder.run_id})
        except ClientError as e:
            if not is_conditional_failure(e):
                raise mapped("PutItem", e) from e
            raise BatchLocked(f"batch '{holder.batch}' changed hands while run {run_id} took it over from "
                              f"run {holder.run_id}; try again") from e
        audit = LockAudit(batch=holder.batch, at=now, taken_by=run_id, taken_by_execution=execution_arn,
                          taken_from=holder.run_id, taken_from_execution=holder.execution_arn, reason=reason)
        self._put(f"LOCK#{holder.batch}", f"AUDIT#{now.isoformat()}#{run_id}", audit,
                  ttl(now, _RUN_TTL_HOURS))
        return audit

    def lock_audits(self, batch: str) -> list[LockAudit]:
        """Every lock take-over of `batch` still kept, oldest first."""
        return [LockAudit.model_validate_json(item["doc"]) for item in self._query(f"LOCK#{batch}", "AUDIT#")]

    def release_lock(self, batch: str, run_id: str) -> None:
        """Release the lock if `run_id` holds it (releasing twice is harmless)."""
        try:
            self._table.delete_item(
                Key={"pk": f"LOCK#{batch}", "sk": "LOCK"},
                ConditionExpression="attribute_not_exists(pk) OR run_id = :me",
                ExpressionAttributeValues={":me": run_id},
            )
        except ClientError as e:
            if not is_conditional_failure(e):
                raise mapped("DeleteItem", e) from e

    def extend_lock(self, batch: str, run_id: str, expires_at: int) -> None:
        """Hold `run_id`'s lock until at least `expires_at` (a lengthened soak); never shortens it, never
        touches another run's lock."""
        try:
            self._table.update_item(
                Key={"pk": f"LOCK#{batch}", "sk": "LOCK"}, UpdateExpression="SET expires_at = :until",
                ConditionExpression="run_id = :me AND expires_at < :until",
                ExpressionAttributeValues={":me": run_id, ":until": expires_at})
        except ClientError as e:
            if not is_conditional_failure(e):
                raise mapped("UpdateItem", e) from e
        except BotoCoreError as e:
            raise TransientError(f"DynamoDB UpdateItem: {e}") from e

    def lock_holder(self, batch: str) -> str | None:
        item = self._get(f"LOCK#{batch}", "LOCK")
        return str(item["run_id"]) if item else None

    # ------------------------------------------------------------------ MR task tokens
    def put_task_token(self, record: TaskTokenRecord, now: datetime, hours: float) -> None:
        # `run_id` also at the top level: deletes are conditional on it (`delete_task_token`).
        # `watch`: the reconciler checks it (the watch index, `watched`).
        self._put(f"MR#{record.merge_request_url}", "TOKEN", record, ttl(now, hours), run_id=record.run_id,
                  **{WATCH_ATTRIBUTE: "TOKEN"})

    def get_task_token(self, merge_request_url: str) -> TaskTokenRecord | None:
        item = self._get(f"MR#{merge_request_url}", "TOKEN")
        return TaskTokenRecord.model_validate_json(item["doc"]) if item else None

    def list_task_tokens(self, on_unreadable: Callable[[str, Exception], None] | None = None) -> list[TaskTokenRecord]:
        """Every stored task token (what the reconciler checks against GitLab), from the watch index
        (`watched`): a token stored a moment ago may be missed once, and is seen by the next pass.

        A token item that does not parse is left out and reported to `on_unreadable(pk, error)`:
        one bad item must not hide the others from the reconciler.
        """
        records: list[TaskTokenRecord] = []
        for item in self.watched("TOKEN"):
            try:
                records.append(TaskTokenRecord.model_validate_json(item.get("doc", "")))
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                if on_unreadable is not None:
                    on_unreadable(str(item.get("pk")), e)
        return records

    def watched(self, kind: WatchKind) -> Iterator[dict[str, Any]]:
        """The items of `kind` the table holds now, found through the sparse watch index.

        The index (KEYS_ONLY, a paginated Query) is eventually consistent: it may still list an item
        just deleted or replaced, or not yet one just written. So the listed items are read again by key
        with ConsistentRead (BatchGetItem, 100 keys a request), and what the reconciler acts on is what the
        table holds at that moment, as with the Scan this replaces; an entry whose item is gone is skipped."""
        kwargs: dict[str, Any] = {"IndexName": STATE_WATCH_INDEX,
                                  "KeyConditionExpression": Key(WATCH_ATTRIBUTE).eq(kind)}
        while True:
            page = call("Query", lambda: self._table.query(**kwargs))
            keys = [(str(entry["pk"]), str(entry["sk"])) for entry in page.get("Items", [])]
            for start in range(0, len(keys), _BATCH_GET_KEYS):
                found = self._batch_get(keys[start:start + _BATCH_GET_KEYS])
                yield from (found[key] for key in keys[start:start + _BATCH_GET_KEYS]
                            if key in found and found[key].get(WATCH_ATTRIBUTE) == kind)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The items of at most 100 keys that exist, read with ConsistentRead; keys DynamoDB leaves
        unprocessed (throttling) are asked again, a bounded number of times."""
        client, name = self._table.meta.client, self._table.name
        request: dict[str, Any] = {name: {"Keys": [{"pk": pk, "sk": sk} for pk, sk in keys], "ConsistentRead": True}}
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for attempt in range(_UNPROCESSED_ROUNDS):
            response = call("BatchGetItem", lambda r=request: client.batch_get_item(RequestItems=r))  # type: ignore[misc]
            found |= {(str(item["pk"]), str(item["sk"])): item for item in response.get("Responses", {}).get(name, [])}
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(min(0.05 * 2 ** attempt, 1.0))
        raise TransientError(f"DynamoDB BatchGetItem: {sum(len(r['Keys']) for r in request.values())} watched "
                             f"item(s) still unprocessed after {_UNPROCESSED_ROUNDS} rounds")

    def index_unindexed_watched_items(self, now: datetime) -> int:
        """Give `watch` to the token and left-rollback items written before the watch index (one Scan per
        pass), until a pass that began `_WATCH_BACKFILL_SETTLE` after the first: by then no function of the
        previous release can still be writing one. Then a marker item (`MIGRATION#watch-index`) says so and
        later passes skip it (delete the marker to run it again, e.g. after going back to an older release).
        Returns how many items it indexed."""
        marker = self._get(_WATCH_MARKER_PK, "MIGRATION")
        if marker is not None and "done_at" in marker:
            return 0
        if marker is None:
            call("PutItem", lambda: self._table.put_item(Item={"pk": _WATCH_MARKER_PK, "sk": "MIGRATION",
                                                               "first_at": now.isoformat()}))
        first = datetime.fromisoformat(str(marker["first_at"])) if marker else now
        indexed = 0
        kwargs: dict[str, Any] = {
            "FilterExpression": "sk IN (:token, :unwatched) AND attribute_not_exists(#watch)",
            "ExpressionAttributeNames": {"#watch": WATCH_ATTRIBUTE},
            "ExpressionAttributeValues": {":token": "TOKEN", ":unwatched": "UNWATCHED"},
            "ProjectionExpression": "pk, sk", "ConsistentRead": True}
        while True:
            page = call("Scan", lambda: self._table.scan(**kwargs))
            indexed += sum(self._index_item(str(item["pk"]), str(item["sk"])) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if now - first >= _WATCH_BACKFILL_SETTLE:
            call("UpdateItem", lambda: self._table.update_item(
                Key={"pk": _WATCH_MARKER_PK, "sk": "MIGRATION"}, UpdateExpression="SET done_at = :now",
                ExpressionAttributeValues={":now": now.isoformat()}))
        return indexed

    def _index_item(self, pk: str, sk: str) -> bool:
        """Set `watch` on an existing item that lacks it; an item deleted meanwhile is not brought back."""
        try:
            self._table.update_item(Key={"pk": pk, "sk": sk}, UpdateExpression="SET #watch = :sk",
                                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#watch)",
                                    ExpressionAttributeNames={"#watch": WATCH_ATTRIBUTE},
                                    ExpressionAttributeValues={":sk": sk})
        except ClientError as e:
            if is_conditional_failure(e):
                return False
            raise mapped("UpdateItem", e) from e
        except BotoCoreError as e:
            raise TransientError(f"DynamoDB UpdateItem: {e}") from e
        return True

    # ------------------------------------------------------------------ rollback MRs left to a person
    def put_unwatched_rollback(self, record: UnwatchedRollback, now: datetime, days: float = 30) -> None:
        """The record and, before it, its versions in items of their own (at most `CLUSTERS_PER_ITEM` clusters
        and ~100 KB each), so that no item grows with the batch; the record says how many there are."""
        pk, expires = f"MR#{record.merge_request_url}", ttl(now, days * 24)
        parts = cluster_slices(list(record.versions), record.versions)
        stale = [item["sk"] for item in query_prefix(self._table, pk, _UNWATCHED_CLUSTERS_SK)][len(parts):]

        def write() -> None:
            with self._table.batch_writer() as batch:
                for index, part in enumerate(parts):
                    batch.put_item(Item={"pk": pk, "sk": f"{_UNWATCHED_CLUSTERS_SK}{index:05d}",
                                         "doc": part.model_dump_json(), "expires_at": expires})
                for sk in stale:  # a record put again for fewer clusters: no slice of the earlier one stays
                    batch.delete_item(Key={"pk": pk, "sk": sk})

        call("BatchWriteItem", write)
        # `watch`: the reconciler follows it (the watch index, `watched`).
        item = {"pk": pk, "sk": "UNWATCHED", "doc": record.model_dump_json(exclude={"versions"}),
                "expires_at": expires, "cluster_items": len(parts), WATCH_ATTRIBUTE: "UNWATCHED"}
        call("PutItem", lambda: self._table.put_item(Item=item))

    def list_unwatched_rollbacks(self) -> list[UnwatchedRollback]:
        """Every rollback MR left to a person (from the watch index, like `list_task_tokens`), each with its
        versions (a Query of its version items)."""
        return [self._unwatched(item) for item in self.watched("UNWATCHED")]

    def _unwatched(self, item: dict[str, Any]) -> UnwatchedRollback:
        doc = json.loads(item["doc"])
        if "versions" not in doc:  # stored apart (a record stored before holds them itself)
            slices = list(query_prefix(self._table, item["pk"], _UNWATCHED_CLUSTERS_SK))
            _, doc["versions"] = joined(slices)
        return UnwatchedRollback.model_validate(doc)

    def delete_unwatched_rollback(self, merge_request_url: str) -> None:
        """The record, then its version items (a record without its versions is never left behind to be read)."""
        pk = f"MR#{merge_request_url}"
        call("DeleteItem", lambda: self._table.delete_item(Key={"pk": pk, "sk": "UNWATCHED"}))
        slices = [item["sk"] for item in query_prefix(self._table, pk, _UNWATCHED_CLUSTERS_SK)]

        def delete() -> None:
            with self._table.batch_writer() as batch:
                for sk in slices:
                    batch.delete_item(Key={"pk": pk, "sk": sk})

        if slices:
            call("BatchWriteItem", delete)

    def delete_task_token(self, merge_request_url: str, run_id: str | None = None,
                          task_token: str | None = None) -> bool:
        """Delete the token on `merge_request_url`; True when one was deleted.

        With `run_id`, only a token of that run is deleted, in one conditional DeleteItem: a later
        run's token on the same MR is never touched. With `task_token`, only that exact token
        (a stale record cleaned up must not take a fresh one with it). Neither: whatever is there.
        """
        conditions = ["attribute_exists(pk)"]
        values: dict[str, str] = {}
        if run_id is not None:
            # Items written before `run_id` was kept at the top level carry it only inside `doc`
            # (compact JSON, as pydantic writes it).
            conditions.append("(run_id = :run OR (attribute_not_exists(run_id) AND contains(doc, :owner)))")
            values |= {":run": run_id, ":owner": f'"run_id":{json.dumps(run_id, ensure_ascii=False)}'}
        if task_token is not None:
            conditions.append("contains(doc, :token)")
            values[":token"] = f'"task_token":{json.dumps(task_token, ensure_ascii=False)}'
        kwargs: dict[str, Any] = {"Key": {"pk": f"MR#{merge_request_url}", "sk": "TOKEN"},
                                  "ConditionExpression": " AND ".join(conditions)}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self._table.delete_item(**kwargs)
        except ClientError as e:
            if is_conditional_failure(e):
                return False  # gone already, or another run's
            raise mapped("DeleteItem", e) from e
        except BotoCoreError as e:
            raise TransientError(f"DynamoDB DeleteItem: {e}") from e
        return True

    # ------------------------------------------------------------------ batch results
    def put_batch_result(self, result: BatchResult) -> None:
        self._put(f"BATCH#{result.batch}", f"RESULT#{result.target_version}", result,
                  ttl(result.at, _RUN_TTL_HOURS))

    def get_batch_result(self, batch: str, target_version: str) -> BatchResult | None:
        item = self._get(f"BATCH#{batch}", f"RESULT#{target_version}")
        return BatchResult.model_validate_json(item["doc"]) if item else None


def _soak_record(item: dict[str, Any]) -> SoakRecord:
    return SoakRecord(soak_seconds=int(item["soak_seconds"]), started_at=item.get("started_at"),
                      ended_at=item.get("ended_at"), changes=list(item.get("changes") or []))
