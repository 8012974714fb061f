"""The keys of a tenant's two DynamoDB tables, defined once.

infra/tables.py deploys them from these definitions; the local rehearsal and the tests create
them with `create_tables`, so a key rename cannot leave a copy behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class IndexSchema:
    """A global secondary index: its name, string partition key, optional string sort key and projection
    (`ALL`: every attribute; `KEYS_ONLY`: the table's and the index's keys)."""

    name: str
    partition_key: str
    sort_key: str | None = None
    projection: Literal["ALL", "KEYS_ONLY"] = "ALL"

    def key_schema(self) -> list[dict[str, str]]:
        keys = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            keys.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        return keys


@dataclass(frozen=True)
class TableSchema:
    """String keys (partition, optional sort), the optional TTL attribute and the indexes of one table."""

    partition_key: str
    sort_key: str | None = None
    ttl_attribute: str | None = None
    indexes: tuple[IndexSchema, ...] = ()

    def key_schema(self) -> list[dict[str, str]]:
        """The `KeySchema` of CreateTable (and of the CloudFormation resource)."""
        keys = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            keys.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        return keys

    def attribute_definitions(self) -> list[dict[str, str]]:
        names = [key["AttributeName"] for key in self.key_schema()]
        names += [key["AttributeName"] for index in self.indexes for key in index.key_schema()]
        return [{"AttributeName": name, "AttributeType": "S"} for name in dict.fromkeys(names)]

    def create_table_args(self, table_name: str) -> dict[str, Any]:
        """Keyword arguments of boto3's `create_table` for an on-demand table named `table_name`."""
        args: dict[str, Any] = {"TableName": table_name, "BillingMode": "PAY_PER_REQUEST",
                                "KeySchema": self.key_schema(), "AttributeDefinitions": self.attribute_definitions()}
        if self.indexes:
            args["GlobalSecondaryIndexes"] = [
                {"IndexName": i.name, "KeySchema": i.key_schema(), "Projection": {"ProjectionType": i.projection}}
                for i in self.indexes]
        return args


TTL_ATTRIBUTE = "expires_at"  # epoch seconds (guard.stores.dynamo.ttl)
# The cluster registry: one item per cluster, which several tenants may share. The partition key
# `cluster_id` holds `<tenant>#<cluster id>` (guard.stores.registry.registry_key), so IAM's
# dynamodb:LeadingKeys condition confines each tenant's functions to its own items; the `tenant`
# attribute and its index list one tenant's clusters without a Scan. (The attribute keeps its name
# so that a table deployed before tenant keys is updated in place, and its items migrated.)
REGISTRY_TENANT_INDEX = "tenant-index"
REGISTRY = TableSchema(partition_key="cluster_id",
                       indexes=(IndexSchema(name=REGISTRY_TENANT_INDEX, partition_key="tenant"),))
# Run state: runs, locks, MR task tokens, deliveries, rollouts; old items expire through the TTL.
# The watch index is sparse: only the items the reconciler checks every few minutes carry `watch` (MR task
# tokens `TOKEN`, rollback MRs left to a person `UNWATCHED`; the value is their sort key), so it lists them
# with a Query however many run, cluster and delivery items the table holds (a Scan read them all).
# KEYS_ONLY: the reconciler reads each item again by key with ConsistentRead (guard.stores.state), since an
# index is eventually consistent; the index then copies ~100 bytes per item, not the documents.
STATE_WATCH_INDEX = "watch-index"
WATCH_ATTRIBUTE = "watch"
STATE = TableSchema(partition_key="pk", sort_key="sk", ttl_attribute=TTL_ATTRIBUTE,
                    indexes=(IndexSchema(name=STATE_WATCH_INDEX, partition_key=WATCH_ATTRIBUTE, sort_key="pk",
                                         projection="KEYS_ONLY"),))


def create_tables(dynamodb: Any, registry_name: str | None = None,
                  state_name: str | None = None) -> tuple[Any, Any]:
    """Create the registry and/or state table as infra deploys them (keys, on-demand, TTL).

    `dynamodb` is a boto3 DynamoDB client or resource. Returns (registry, state): `Table`
    objects from a resource, CreateTable responses from a client, None for a table not asked for.
    """
    client = dynamodb.meta.client if hasattr(dynamodb, "Table") else dynamodb
    registry = dynamodb.create_table(**REGISTRY.create_table_args(registry_name)) if registry_name else None
    state = None
    if state_name:
        state = dynamodb.create_table(**STATE.create_table_args(state_name))
        client.update_time_to_live(TableName=state_name, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": STATE.ttl_attribute})
    return registry, state
