"""The tenant's Lambda functions, built from the rows of `infra.functions.FUNCTIONS`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct
from guard.stores.schema import REGISTRY_TENANT_INDEX, STATE_WATCH_INDEX
from guard.vocabulary import metrics as guard_metrics

from infra.bundling import ARCHITECTURE, RUNTIME
from infra.functions import FunctionSpec, SecretKind, TableAccess

CONFIG_FILE = "tenant/config.json"
CHECKS_DIR = "tenant/checks"
# Cluster roles live in the clusters' accounts (aws.cluster_accounts), one per cluster, all named guard-*.
CLUSTER_ROLE_NAME = "guard-*"


class GuardFunctions(Construct):
    """One function per spec, each with its own role that holds only the grants its row asks for."""

    def __init__(self, scope: Construct, construct_id: str, *, specs: Sequence[FunctionSpec],
                 code_for: Callable[[FunctionSpec], lambda_.Code], tenant: str,
                 registry: dynamodb.ITable, state: dynamodb.ITable,
                 secrets: Mapping[SecretKind, secretsmanager.ISecret],
                 cluster_accounts: Sequence[str],
                 log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if not cluster_accounts:
            raise ValueError("cluster_accounts: give at least one account (the stack's own by default)")
        self._cluster_accounts = list(cluster_accounts)
        self._specs = {spec.id: spec for spec in specs}
        self.functions: dict[str, lambda_.Function] = {}
        environment = {
            "GUARD_TENANT": tenant,
            "GUARD_CONFIG_FILE": CONFIG_FILE,
            "GUARD_CHECKS_DIR": CHECKS_DIR,
            "GUARD_REGISTRY_TABLE": registry.table_name,
            "GUARD_STATE_TABLE": state.table_name,
            # The account GUARD runs in, for aws.cluster_accounts left out of an environment-agnostic stack.
            "GUARD_ACCOUNT_ID": cdk.Aws.ACCOUNT_ID,
            # The alarms on GUARD's own metrics match these (infra/alarms.py).
            "POWERTOOLS_SERVICE_NAME": guard_metrics.SERVICE,
            "POWERTOOLS_METRICS_NAMESPACE": guard_metrics.NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        for spec in specs:
            role = iam.Role(self, f"{spec.id}Role",
                            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                            description=f"GUARD {tenant} {spec.id} function")
            log_group = logs.LogGroup(self, f"{spec.id}Logs", retention=log_retention)
            log_group.grant_write(role)
            fn = lambda_.Function(
                self, spec.id,
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler=spec.handler,
                code=code_for(spec),
                role=role,
                log_group=log_group,
                timeout=cdk.Duration.seconds(spec.timeout_seconds),
                memory_size=spec.memory_mb,
                environment=environment,
                description=f"GUARD {tenant}: {spec.handler}",
            )
            _grant_registry(registry, role, spec.registry, tenant)
            _grant_state(state, role, spec.state, watch_index=spec.watch_index)
            for kind in spec.secrets:
                if kind in secrets:  # an optional secret (e.g. Slack) the config does not name
                    secrets[kind].grant_read(fn)
            if spec.cluster_access:
                self._grant_cluster_access(spec, role)
            self.functions[spec.id] = fn
        for spec in specs:
            for target_id in spec.invokes:
                self._allow_invoke(spec.id, target_id)

    def _allow_invoke(self, caller_id: str, target_id: str) -> None:
        """`caller_id` may invoke `target_id` (its ARN exactly: no version or alias wildcard) and learns its name."""
        caller, target = self.functions[caller_id], self.functions[target_id]
        assert caller.role is not None  # every function here is built with its own role
        iam.Policy(self, f"{caller_id}Invokes{target_id}", statements=[
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[target.function_arn])],
        ).attach_to_role(caller.role)
        caller.add_environment(f"GUARD_{_snake(target_id).upper()}_FUNCTION", target.function_name)

    def allow_notifications(self, topic: sns.ITopic) -> None:
        """Functions marked `notify_topic` may publish to `topic` and learn its ARN."""
        for spec_id, fn in self.functions.items():
            if self._specs[spec_id].notify_topic:
                topic.grant_publish(fn)
                fn.add_environment("GUARD_NOTIFY_TOPIC_ARN", topic.topic_arn)

    def allow_task_response(self, state_machine: sfn.IStateMachine) -> None:
        """Let the functions that resume executions (webhook) send task results to `state_machine`."""
        for spec_id, fn in self.functions.items():
            if self._specs[spec_id].task_response:
                state_machine.grant_task_response(fn)
                fn.add_environment("GUARD_STATE_MACHINE_ARN", state_machine.state_machine_arn)

    def allow_describe_executions(self, state_machine_name: str) -> None:
        """Functions marked `describe_executions` may read the status of `state_machine_name`'s executions.

        Named, not referenced: the state machine invokes these functions, so a reference would be a cycle."""
        stack = cdk.Stack.of(self)
        executions = stack.format_arn(service="states", resource="execution",
                                      resource_name=f"{state_machine_name}:*",
                                      arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)
        region = "<AWS::Region>" if cdk.Token.is_unresolved(stack.region) else stack.region
        for spec_id, fn in self.functions.items():
            if self._specs[spec_id].describe_executions:
                policy = iam.Policy(self, f"{spec_id}DescribeExecutions", statements=[
                    iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions])])
                assert fn.role is not None  # every function here is built with its own role
                policy.attach_to_role(fn.role)
                cdk.Validations.of(policy).acknowledge(cdk.Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:{region}:"
                       f"{_nag_account(stack.account)}:execution:{state_machine_name}:*]",
                    reason="The lock names the execution that holds it at run time; DescribeExecution is limited "
                           "to the executions of this tenant's upgrade state machine.",
                ))

    def _grant_cluster_access(self, spec: FunctionSpec, role: iam.Role) -> None:
        stack = cdk.Stack.of(self)
        role_arns = [stack.format_arn(service="iam", region="", account=account, resource="role",
                                      resource_name=CLUSTER_ROLE_NAME) for account in self._cluster_accounts]
        policy = iam.Policy(self, f"{spec.id}ClusterAccess", statements=[
            iam.PolicyStatement(
                actions=["eks:DescribeCluster"],
                resources=[stack.format_arn(service="eks", region="*", resource="cluster",
                                            resource_name="*")],
            ),
            iam.PolicyStatement(actions=["sts:AssumeRole"], resources=role_arns),
        ])
        policy.attach_to_role(role)
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:eks:*:{_nag_account(stack.account)}"
                   ":cluster/*]",
                reason="Cluster names come from the registry table at run time, so eks:DescribeCluster "
                       "is scoped to this account's clusters (any region) rather than named ones.",
            ),
            *(cdk.Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::{_nag_account(account)}"
                   f":role/{CLUSTER_ROLE_NAME}]",
                reason="Cluster roles are named in the registry table at run time; AssumeRole is limited to "
                       "roles named guard-* in the accounts listed by aws.cluster_accounts (and to their trust "
                       "policy), and Plan refuses a cluster whose role is elsewhere.",
            ) for account in self._cluster_accounts),
        )


def _snake(name: str) -> str:
    """CustomChecks -> custom_checks."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _nag_account(account: str) -> str:
    """How cdk-nag writes `account` in a finding id: the stack's own account token as <AWS::AccountId>."""
    return "<AWS::AccountId>" if cdk.Token.is_unresolved(account) else account


REGISTRY_READS = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem")
REGISTRY_WRITES = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")


def registry_leading_keys(tenant: str) -> dict[str, Any]:
    """The IAM condition that confines a request to `tenant`'s registry items: every partition key it
    touches starts with `<tenant>#` (guard.stores.registry.registry_key), and it names at least one
    (a request without leading keys, such as a Scan, would pass a ForAllValues test vacuously)."""
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{tenant}#*"]},
            "Null": {"dynamodb:LeadingKeys": "false"}}


def _grant_registry(table: dynamodb.ITable, role: iam.IRole, access: TableAccess, tenant: str) -> None:
    """Item reads (and writes) on the registry table, only of `tenant`'s keys: tenants may share the table.

    And a Query of the tenant index for `tenant`'s partition only: the precheck and every MR (upgrade,
    rollback, the reconciler's regeneration) list the tenant's clusters (`ClusterRegistry.all`) to find
    those outside the batch that read the files a change writes. No Scan: it would read every tenant."""
    if access == "none":
        return
    actions = [*REGISTRY_READS, *(REGISTRY_WRITES if access == "read_write" else ())]
    role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=[table.table_arn],
                                                     conditions=registry_leading_keys(tenant)))
    role.add_to_principal_policy(iam.PolicyStatement(
        actions=["dynamodb:Query"], resources=[f"{table.table_arn}/index/{REGISTRY_TENANT_INDEX}"],
        # On an index, the leading key is the index's partition key: the `tenant` attribute itself.
        conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [tenant]},
                    "Null": {"dynamodb:LeadingKeys": "false"}}))


# The state table's item actions, on the table itself: CDK's grant_read_data would add `<table>/index/*`
# to every function once the table has an index, and only the reconciler lists the watch index.
STATE_READS = ("dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:GetItem",
               "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable")
STATE_WRITES = ("dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")


def _grant_state(table: dynamodb.ITable, role: iam.IRole, access: TableAccess, *, watch_index: bool) -> None:
    """Item reads (and writes) on the state table; with `watch_index`, a Query of its watch index too."""
    if access == "none":
        return
    actions = [*STATE_READS, *(STATE_WRITES if access == "read_write" else ())]
    if watch_index:
        # The reconciler's pass indexes token items written before the watch index (a Scan for
        # items without `watch`, until its marker says done); no other function reads the whole table.
        actions.append("dynamodb:Scan")
    role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=[table.table_arn]))
    if watch_index:
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["dynamodb:Query"], resources=[f"{table.table_arn}/index/{STATE_WATCH_INDEX}"]))
