"""One tenant's GUARD: tables, functions, the upgrade_batch state machine, webhook API, alarms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from guard.config.models import TenantConfig

from infra.alarms import ExecutionAlarms
from infra.bundling import function_code, stage_source
from infra.execution_ends import ExecutionEnds
from infra.functions import FUNCTIONS, FunctionSpec, SecretKind
from infra.lambda_functions import GuardFunctions
from infra.naming import cluster_accounts, deployed_config, resource_prefix
from infra.rollout import RolloutStateMachine
from infra.schedules import GuardSchedules, ReconcileSchedule
from infra.tables import GuardTables, SharedRegistryStack
from infra.webhook_api import GitLabWebhookApi
from infra.workflow import UpgradeStateMachine

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS_DIR = ROOT / "lambdas"
STATEMACHINES_DIR = ROOT / "statemachines"


class GuardStack(cdk.Stack):
    """Everything one tenant config describes; physical names carry the tenant."""

    def __init__(self, scope: Construct, construct_id: str, *, config: TenantConfig, config_file: Path,
                 build_dir: Path, shared_registry: SharedRegistryStack | None = None, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # A concrete account is packaged; an environment-agnostic stack's account is a token until deploy.
        deployed = deployed_config(config, None if cdk.Token.is_unresolved(self.account) else self.account)
        prefix = resource_prefix(config)
        names = deployed.aws.dynamodb

        tables = GuardTables(self, "Tables", registry_table_name=names.table_name,
                             state_table_name=names.state_table_name,
                             shared_registry_name=shared_registry.table_name if shared_registry else None)
        if shared_registry:
            self.add_dependency(shared_registry, "the registry table this tenant shares")

        source = stage_source(
            lambdas_dir=LAMBDAS_DIR,
            tenant_config=deployed.model_dump(mode="json", by_alias=True),
            checks_dir=config_file.parent / config.custom_checks_path,
            dest=build_dir / config.tenant / "src",
        )
        codes: dict[tuple[str, ...], lambda_.Code] = {}

        def code_for(spec: FunctionSpec) -> lambda_.Code:
            # Functions with the same groups share one asset (one bundling, one upload).
            if spec.groups not in codes:
                codes[spec.groups] = function_code(source_dir=source, groups=spec.groups,
                                                   cache_dir=build_dir / "deps")
            return codes[spec.groups]

        names_of: dict[SecretKind, str] = {
            "gitlab": config.aws.secrets_manager.gitlab_token_secret,
            "gitlab_reader": config.aws.secrets_manager.gitlab_reader_secret,
            "datadog": config.aws.secrets_manager.datadog_credentials_secret,
            "webhook": config.aws.secrets_manager.webhook_secret,
            "llm": config.llm.api_key_secret,
        }
        if config.notifications.slack_webhook_secret:
            names_of["slack"] = config.notifications.slack_webhook_secret
        # Referenced by name only: the values are created out of band (docs/deploy.md).
        secrets = {kind: secretsmanager.Secret.from_secret_name_v2(self, f"{kind.title().replace('_', '')}Secret",
                                                                   name)
                   for kind, name in names_of.items()}

        functions = GuardFunctions(self, "Functions", specs=FUNCTIONS, code_for=code_for,
                                   tenant=config.tenant, registry=tables.registry, state=tables.state,
                                   secrets=secrets, cluster_accounts=cluster_accounts(config, self.account))
        workflow = UpgradeStateMachine(self, "UpgradeBatch",
                                       definition_file=STATEMACHINES_DIR / "upgrade_batch.asl.json",
                                       functions=functions.functions,
                                       state_machine_name=f"{prefix}-upgrade-batch")
        functions.allow_task_response(workflow.state_machine)
        functions.allow_describe_executions(f"{prefix}-upgrade-batch")
        rollout = RolloutStateMachine(self, "Rollout", definition_file=STATEMACHINES_DIR / "rollout.asl.json",
                                      function=functions.functions["Rollout"],
                                      batch_state_machine=workflow.state_machine,
                                      state_machine_name=f"{prefix}-rollout")
        # The end of every batch execution is recorded, however it ended (a stop runs no Catch).
        ends = ExecutionEnds(self, "ExecutionEnds", state_machines=[workflow.state_machine],
                             handler=functions.functions["ExecutionEnded"])
        GuardSchedules(self, "Schedules", schedules=config.schedules, name_prefix=prefix,
                       targets={"batch": workflow.state_machine, "rollout": rollout.state_machine})
        ReconcileSchedule(self, "Reconcile", function=functions.functions["Reconcile"],
                          minutes=config.gitlab.reconcile_minutes, name_prefix=prefix)
        api = GitLabWebhookApi(self, "Webhook", handler=functions.functions["GitLabWebhook"],
                               authorizer=functions.functions["WebhookAuthorizer"], api_name=f"{prefix}-webhooks",
                               rate_limit_per_5_minutes=config.gitlab.webhook_rate_limit_per_5_minutes,
                               source_cidrs=config.gitlab.webhook_source_cidrs)
        alarms = ExecutionAlarms(self, "Alarms", state_machine=workflow.state_machine,
                                 topic_name=f"{prefix}-alarms")
        # A failed or timed-out rollout (halted, rolled back, refused) also needs a person.
        alarms.watch(rollout.state_machine, "rollout")
        # So does a rollback MR GUARD left open without watching it (it never closes one).
        alarms.watch_rollback_needs_person(config.tenant)
        if config.notifications.sns_topic:
            # GUARD's own notifications (started, needs a decision, rolled back, ...) share the
            # encrypted alarm topic: one subscription list per tenant.
            functions.allow_notifications(alarms.topic)

        cdk.CfnOutput(self, "StateMachineArn", value=workflow.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "RolloutStateMachineArn", value=rollout.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "WebhookUrl", value=api.url,
                      description="GitLab project > Settings > Webhooks > URL")
        cdk.CfnOutput(self, "RegistryTableName", value=tables.registry.table_name)
        cdk.CfnOutput(self, "StateTableName", value=tables.state.table_name)
        cdk.CfnOutput(self, "AlarmTopicArn", value=alarms.topic.topic_arn)
        cdk.CfnOutput(self, "ExecutionEndsDeadLetterQueueUrl", value=ends.dead_letters.queue_url)

        cdk.Validations.of(self).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions::AwsSolutions-L1",
            reason="Python 3.12 is deliberate: dependencies are resolved and bundled for "
                   "--python-version 3.12 (infra/bundling.py); moving runtimes means re-pinning them.",
        ))
