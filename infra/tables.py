"""The two DynamoDB tables of a tenant: the cluster registry (its own, or one several tenants share) and
the run state."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct
from guard.stores.schema import REGISTRY, REGISTRY_TENANT_INDEX, STATE, TableSchema

# On-demand, encrypted, point-in-time recoverable and retained when the stack goes: the tables hold
# the fleet's upgrade history and the locks of running executions.
_COMMON: dict[str, Any] = {
    "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
    "encryption": dynamodb.TableEncryption.AWS_MANAGED,
    "point_in_time_recovery_specification": dynamodb.PointInTimeRecoverySpecification(
        point_in_time_recovery_enabled=True
    ),
    "removal_policy": cdk.RemovalPolicy.RETAIN,
}


def registry_table(scope: Construct, construct_id: str, table_name: str) -> dynamodb.Table:
    """The cluster registry table: pk `cluster_id` (`<tenant>#<cluster id>`), and the tenant index
    that lists one tenant's clusters (guard.stores.schema)."""
    return _with_indexes(dynamodb.Table(scope, construct_id, table_name=table_name, **_keys(REGISTRY), **_COMMON),
                         REGISTRY)


def shared_registry(scope: Construct, construct_id: str, table_name: str) -> dynamodb.ITable:
    """A registry table another stack creates (infra/application.py's shared registry stack), by name."""
    return dynamodb.Table.from_table_attributes(scope, construct_id, table_name=table_name,
                                                global_indexes=[REGISTRY_TENANT_INDEX])


class SharedRegistryStack(cdk.Stack):
    """The one registry table that several tenants name (`aws.dynamodb.table_name`). Each tenant's stack
    references it by name; each tenant's functions reach only their tenant's items (IAM LeadingKeys)."""

    def __init__(self, scope: Construct, construct_id: str, *, table_name: str, tenants: list[str],
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id,
                         description=f"GUARD cluster registry {table_name}, shared by tenants {', '.join(tenants)}",
                         **kwargs)
        self.table_name = table_name
        self.registry = registry_table(self, "Registry", table_name)
        cdk.CfnOutput(self, "RegistryTableName", value=self.registry.table_name)


class GuardTables(Construct):
    """Registry (pk `cluster_id`) and state (pk `pk`, sk `sk`, TTL `expires_at`) tables.

    The keys come from guard.stores.schema, which the local rehearsal and the tests use too.
    The registry is created here unless `shared_registry_name` names one a shared stack creates.
    """

    def __init__(self, scope: Construct, construct_id: str, *, registry_table_name: str,
                 state_table_name: str, shared_registry_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.registry: dynamodb.ITable = (
            shared_registry(self, "SharedRegistry", shared_registry_name) if shared_registry_name
            else registry_table(self, "Registry", registry_table_name))
        # With the watch index the reconciler lists what it checks (guard.stores.schema.STATE_WATCH_INDEX).
        self.state = _with_indexes(dynamodb.Table(self, "State", table_name=state_table_name, **_keys(STATE),
                                                  **_COMMON), STATE)


def _with_indexes(table: dynamodb.Table, schema: TableSchema) -> dynamodb.Table:
    """`table` with the global secondary indexes of `schema` (string keys, the schema's projection)."""
    for index in schema.indexes:
        table.add_global_secondary_index(
            index_name=index.name, projection_type=dynamodb.ProjectionType(index.projection),
            partition_key=dynamodb.Attribute(name=index.partition_key, type=dynamodb.AttributeType.STRING),
            sort_key=(dynamodb.Attribute(name=index.sort_key, type=dynamodb.AttributeType.STRING)
                      if index.sort_key else None))
    return table


def _keys(schema: TableSchema) -> dict[str, Any]:
    """The CDK key and TTL arguments of a table schema (every key is a string)."""
    keys: dict[str, Any] = {
        "partition_key": dynamodb.Attribute(name=schema.partition_key, type=dynamodb.AttributeType.STRING)}
    if schema.sort_key:
        keys["sort_key"] = dynamodb.Attribute(name=schema.sort_key, type=dynamodb.AttributeType.STRING)
    if schema.ttl_attribute:
        keys["time_to_live_attribute"] = schema.ttl_attribute
    return keys
