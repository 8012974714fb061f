"""Rollout records in the tenant's state table (`ROLLOUT#<id>` / `META`).

The batches of a rollout run concurrently, and each Map iteration claims and records its batch
in the one record: every change after the first `put` goes through `update`, an optimistic
read-modify-write on the item's `version` attribute, so two iterations never lose each other's
write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from guard.errors import ExternalServiceError, TransientError
from guard.rollout.models import RolloutRecord
from guard.stores.dynamo import call, is_conditional_failure, mapped, ttl

_TTL_HOURS = 24 * 400
_ATTEMPTS = 8

T = TypeVar("T")


class RolloutStore:
    """`table` is the boto3 DynamoDB Table resource of the tenant's state table."""

    def __init__(self, table: Any, attempts: int = _ATTEMPTS) -> None:
        self._table = table
        self._attempts = attempts

    def put(self, record: RolloutRecord) -> None:
        """Write the record as it is (the first write of a rollout; version 1)."""
        item = self._item(record, 1)
        call("PutItem", lambda: self._table.put_item(Item=item))

    def update(self, rollout_id: str, change: Callable[[RolloutRecord], T]) -> tuple[RolloutRecord, T]:
        """Read the record, let `change` modify it, write it only if no one else wrote in between.

        On a concurrent write the record is read again and `change` applied again (so `change`
        must derive everything from the record it is given); an unchanged record is not written.
        Raises TransientError when the attempts run out (the state machine retries the task).
        """
        for _ in range(self._attempts):
            item = self._get_item(rollout_id)
            if item is None:
                raise ExternalServiceError(f"rollout '{rollout_id}' has no record in the state table")
            record = RolloutRecord.model_validate_json(item["doc"])
            before = record.model_copy(deep=True)
            result = change(record)
            if record == before:
                return record, result
            version = int(item.get("version", 0))
            condition: dict[str, Any] = (
                {"ConditionExpression": "version = :seen", "ExpressionAttributeValues": {":seen": version}}
                if version else {"ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(version)"})
            try:
                self._table.put_item(Item=self._item(record, version + 1), **condition)
            except ClientError as e:
                if is_conditional_failure(e):
                    continue  # someone wrote since we read: read again, apply again
                raise mapped("PutItem", e) from e
            except BotoCoreError as e:
                raise TransientError(f"DynamoDB PutItem: {e}") from e
            return record, result
        raise TransientError(f"rollout '{rollout_id}': {self._attempts} concurrent writes in a row; try again")

    def find(self, rollout_id: str) -> RolloutRecord | None:
        item = self._get_item(rollout_id)
        return RolloutRecord.model_validate_json(item["doc"]) if item else None

    def get(self, rollout_id: str) -> RolloutRecord:
        found = self.find(rollout_id)
        if found is None:
            raise ExternalServiceError(f"rollout '{rollout_id}' has no record in the state table")
        return found

    def _get_item(self, rollout_id: str) -> dict[str, Any] | None:
        response = call("GetItem", lambda: self._table.get_item(
            Key={"pk": f"ROLLOUT#{rollout_id}", "sk": "META"}, ConsistentRead=True))
        item: dict[str, Any] | None = response.get("Item")
        return item

    @staticmethod
    def _item(record: RolloutRecord, version: int) -> dict[str, Any]:
        return {"pk": f"ROLLOUT#{record.rollout_id}", "sk": "META", "doc": record.model_dump_json(),
                "version": version, "expires_at": ttl(record.started_at, _TTL_HOURS)}
