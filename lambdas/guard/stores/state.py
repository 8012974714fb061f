"""Run state in one DynamoDB table (pk/sk, TTL `expires_at`): runs, locks, MR task tokens
and per-batch results. Webhook deliveries share the table (`guard.stores.deliveries`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from guard.core.run import ClusterVerdict, PrecheckReport, RunRecord
from guard.errors import BatchLocked, ExternalServiceError
from guard.stores.dynamo import call, is_conditional_failure, mapped, ttl
from guard.vocabulary.outcomes import ChangeKind, Outcome

_RUN_TTL_HOURS = 24 * 400  # a year of history, then DynamoDB forgets it


class TaskTokenRecord(BaseModel):
    """The paused execution waiting on one merge request (schema 1 had the same fields, `kind` a free string)."""

    schema_version: int = 2
    merge_request_url: str
    task_token: str
    run_id: str
    kind: ChangeKind = ChangeKind.UPGRADE


class BatchResult(BaseModel):
    """Last outcome of a batch at a target version (what prerequisites are checked against).

    Schema 1 had the same fields, `status` a free string with the values of `Outcome`."""

    schema_version: int = 2
    batch: str
    target_version: str
    status: Outcome
    run_id: str
    at: datetime


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
        self._put(f"RUN#{run.run_id}", "META", run, ttl(run.started_at, _RUN_TTL_HOURS))

    def get_run(self, run_id: str) -> RunRecord:
        item = self._get(f"RUN#{run_id}", "META")
        if not item:
            raise ExternalServiceError(f"run '{run_id}' has no record in the state table")
        return RunRecord.model_validate_json(item["doc"])

    def find_run(self, run_id: str) -> RunRecord | None:
        item = self._get(f"RUN#{run_id}", "META")
        return RunRecord.model_validate_json(item["doc"]) if item else None

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

    # ------------------------------------------------------------------ batch lock
    def acquire_lock(self, batch: str, run_id: str, now: datetime, hours: float) -> None:
        """Take the batch lock for `run_id`; re-entrant for the same run; BatchLocked otherwise.

        An expired lock (its holder died without releasing) is taken over.
        """
        item = {"pk": f"LOCK#{batch}", "sk": "LOCK", "run_id": run_id, "expires_at": ttl(now, hours),
                "acquired_at": now.isoformat()}
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

    def lock_holder(self, batch: str) -> str | None:
        item = self._get(f"LOCK#{batch}", "LOCK")
        return str(item["run_id"]) if item else None

    # ------------------------------------------------------------------ MR task tokens
    def put_task_token(self, record: TaskTokenRecord, now: datetime, hours: float) -> None:
        self._put(f"MR#{record.merge_request_url}", "TOKEN", record, ttl(now, hours))

    def get_task_token(self, merge_request_url: str) -> TaskTokenRecord | None:
        item = self._get(f"MR#{merge_request_url}", "TOKEN")
        return TaskTokenRecord.model_validate_json(item["doc"]) if item else None

    def list_task_tokens(self) -> list[TaskTokenRecord]:
        """Every stored task token (what the reconciler checks against GitLab).

        A Scan filtered on `sk = TOKEN`: it reads the whole table, which is small (runs, locks,
        tokens, deliveries, all with a TTL) and is read once every few minutes. Should the table
        grow, a sparse GSI keyed on an attribute only token items carry replaces it.
        """
        records: list[TaskTokenRecord] = []
        kwargs: dict[str, Any] = {"FilterExpression": "sk = :token", "ExpressionAttributeValues": {":token": "TOKEN"},
                                  "ConsistentRead": True}
        while True:
            page = call("Scan", lambda: self._table.scan(**kwargs))
            records.extend(TaskTokenRecord.model_validate_json(item["doc"]) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return records
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete_task_token(self, merge_request_url: str) -> None:
        call("DeleteItem", lambda: self._table.delete_item(Key={"pk": f"MR#{merge_request_url}", "sk": "TOKEN"}))

    # ------------------------------------------------------------------ batch results
    def put_batch_result(self, result: BatchResult) -> None:
        self._put(f"BATCH#{result.batch}", f"RESULT#{result.target_version}", result,
                  ttl(result.at, _RUN_TTL_HOURS))

    def get_batch_result(self, batch: str, target_version: str) -> BatchResult | None:
        item = self._get(f"BATCH#{batch}", f"RESULT#{target_version}")
        return BatchResult.model_validate_json(item["doc"]) if item else None
