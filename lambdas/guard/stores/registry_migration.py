"""Move registry items written before tenant keys (`cluster_id` = `eks-prod-1`) to their tenant's keys
(`team-a#eks-prod-1`, with the `tenant` attribute the tenant index lists). `guard registry migrate`.

Run once per table with the operator's credentials, after the deploy that brings tenant keys: the
deployed functions only find the new keys. Each item is copied under the new key (unless that key
is already there), then the old item is deleted only if it is still what was copied. Safe to run
again: a second run finds nothing to move. Items already carrying a tenant are left alone, whoever's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from guard.stores.dynamo import call, is_conditional_failure, mapped
from guard.stores.registry import KEY_SEPARATOR, registry_key
from guard.stores.schema import REGISTRY


@dataclass
class MigrationReport:
    """What a migration found and did, by cluster id."""

    tenant: str
    moved: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # this tenant's keys already
    other_tenants: int = 0  # items of other tenants, untouched
    # Left as they were, with the reason (a different item under the new key; changed while copying).
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self, dry_run: bool) -> str:
        verb = "would move" if dry_run else "moved"
        lines = [f"tenant {self.tenant}: {verb} {len(self.moved)} item(s) to tenant keys, "
                 f"{len(self.already)} already had them, {self.other_tenants} belong to other tenants"]
        lines += [f"  {verb}: {cid} -> {registry_key(self.tenant, cid)}" for cid in self.moved]
        lines += [f"  left as is: {cid}: {reason}" for cid, reason in self.skipped.items()]
        return "\n".join(lines)


def migrate_to_tenant_keys(table: Any, tenant: str, *, dry_run: bool = False) -> MigrationReport:
    """Give every legacy item of `table` (a boto3 Table) `tenant`'s key; see the module docstring."""
    key_name = REGISTRY.partition_key
    report = MigrationReport(tenant=tenant)
    prefix = registry_key(tenant, "x")[:-1]
    for item in _scan(table):
        key = str(item[key_name])
        if KEY_SEPARATOR in key:
            if key.startswith(prefix):
                report.already.append(key[len(prefix):])
            else:
                report.other_tenants += 1
            continue
        new_key = registry_key(tenant, key)
        if dry_run:
            report.moved.append(key)
            continue
        copied = {**item, key_name: new_key, "tenant": tenant}
        try:
            table.put_item(Item=copied, ConditionExpression=Attr(key_name).not_exists())
        except ClientError as e:
            if not is_conditional_failure(e):
                raise mapped("PutItem", e) from e
            existing = _get(table, {key_name: new_key})
            if existing.get("Item", {}).get("doc") != item.get("doc"):
                report.skipped[key] = f"{new_key} already holds a different document; compare and delete one"
                continue
        try:
            # Deleted only if nobody wrote it since the copy (an old function still running).
            table.delete_item(Key={key_name: key}, ConditionExpression=Attr("doc").eq(item.get("doc")))
        except ClientError as e:
            if not is_conditional_failure(e):
                raise mapped("DeleteItem", e) from e
            report.skipped[key] = "changed while it was copied; run the migration again"
            continue
        report.moved.append(key)
    return report


def _get(table: Any, key: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = call("GetItem", lambda: table.get_item(Key=key, ConsistentRead=True))
    return response


def _scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"ConsistentRead": True}
    while True:
        page = call("Scan", lambda: table.scan(**kwargs))
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
