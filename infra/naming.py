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


def cluster_accounts(config: TenantConfig, own_account: str) -> list[str]:
    """The accounts whose guard-* roles the functions may assume: `aws.cluster_accounts`, else
    `own_account` (the stack's account; a token when the stack is environment-agnostic)."""
    listed = config.aws.cluster_accounts
    return list(listed) if listed is not None else [own_account]


def deployed_config(config: TenantConfig, account: str | None = None) -> TenantConfig:
    """The config as packaged with the functions: table names resolved to what is deployed, and
    `aws.cluster_accounts` resolved to `account` when the config leaves it out and the account is
    known at synth. Left out in an environment-agnostic stack: the functions then read their own
    account from GUARD_ACCOUNT_ID, which CloudFormation fills in."""
    update: dict[str, object] = {"dynamodb": table_names(config)}
    if config.aws.cluster_accounts is None and account is not None:
        update["cluster_accounts"] = [account]
    aws = config.aws.model_copy(update=update)
    return config.model_copy(update={"aws": aws})
