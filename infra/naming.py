"""Physical names derived from the tenant, so two tenants in one account never collide."""

from __future__ import annotations

from guard.config.models import DynamoDbConfig, TenantConfig


def stack_name(config: TenantConfig) -> str:
    return f"Guard-{config.tenant}"


def resource_prefix(config: TenantConfig) -> str:
    return f"guard-{config.tenant}"


def table_names(config: TenantConfig) -> DynamoDbConfig:
    """The table names to deploy: a name the config sets is used verbatim, a default one is
    prefixed with the tenant (`guard-<tenant>-cluster-registry`, `guard-<tenant>-state`)."""
    given = config.aws.dynamodb
    prefix = resource_prefix(config)
    return DynamoDbConfig(
        table_name=given.table_name if "table_name" in given.model_fields_set
        else f"{prefix}-cluster-registry",
        state_table_name=given.state_table_name if "state_table_name" in given.model_fields_set
        else f"{prefix}-state",
    )


def deployed_config(config: TenantConfig) -> TenantConfig:
    """The config as packaged with the functions: table names resolved to what is deployed."""
    aws = config.aws.model_copy(update={"dynamodb": table_names(config)})
    return config.model_copy(update={"aws": aws})
