"""Rollout records in the tenant's state table (`ROLLOUT#<id>` / `META`)."""

from __future__ import annotations

from typing import Any

from guard.errors import ExternalServiceError
from guard.rollout.models import RolloutRecord
from guard.stores.dynamo import call, ttl

_TTL_HOURS = 24 * 400


class RolloutStore:
    """`table` is the boto3 DynamoDB Table resource of the tenant's state table."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def put(self, record: RolloutRecord) -> None:
        item = {"pk": f"ROLLOUT#{record.rollout_id}", "sk": "META", "doc": record.model_dump_json(),
                "expires_at": ttl(record.started_at, _TTL_HOURS)}
        call("PutItem", lambda: self._table.put_item(Item=item))

    def find(self, rollout_id: str) -> RolloutRecord | None:
        response = call("GetItem", lambda: self._table.get_item(
            Key={"pk": f"ROLLOUT#{rollout_id}", "sk": "META"}, ConsistentRead=True))
        item = response.get("Item")
        return RolloutRecord.model_validate_json(item["doc"]) if item else None

    def get(self, rollout_id: str) -> RolloutRecord:
        found = self.find(rollout_id)
        if found is None:
            raise ExternalServiceError(f"rollout '{rollout_id}' has no record in the state table")
        return found
