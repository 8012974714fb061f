"""The two DynamoDB tables of a tenant: the cluster registry and the run state."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct
from guard.stores.schema import REGISTRY, STATE, TableSchema


class GuardTables(Construct):
    """Registry (pk `cluster_id`) and state (pk `pk`, sk `sk`, TTL `expires_at`) tables.

    The keys come from guard.stores.schema, which the local rehearsal and the tests use too.

    Both are on-demand, encrypted, point-in-time recoverable and retained when the stack
    goes: they hold the fleet's upgrade history and the locks of running executions.
    """

    def __init__(self, scope: Construct, construct_id: str, *, registry_table_name: str,
                 state_table_name: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        common: dict[str, Any] = {
            "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
            "encryption": dynamodb.TableEncryption.AWS_MANAGED,
            "point_in_time_recovery_specification": dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            "removal_policy": cdk.RemovalPolicy.RETAIN,
        }
        self.registry = dynamodb.Table(
            self, "Registry", table_name=registry_table_name,
            **_keys(REGISTRY), **common,
        )
        self.state = dynamodb.Table(
            self, "State", table_name=state_table_name,
            **_keys(STATE), **common,
        )


def _keys(schema: TableSchema) -> dict[str, Any]:
    """The CDK key and TTL arguments of a table schema (every key is a string)."""
    keys: dict[str, Any] = {
        "partition_key": dynamodb.Attribute(name=schema.partition_key, type=dynamodb.AttributeType.STRING)}
    if schema.sort_key:
        keys["sort_key"] = dynamodb.Attribute(name=schema.sort_key, type=dynamodb.AttributeType.STRING)
    if schema.ttl_attribute:
        keys["time_to_live_attribute"] = schema.ttl_attribute
    return keys
