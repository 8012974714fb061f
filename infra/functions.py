"""The Lambda functions of one tenant, as data: adding a function is one line in FUNCTIONS.

Each row says what the function runs, which dependency groups it packages
(`lambdas/requirements/<group>.txt`) and what it may touch; `GuardFunctions` turns the
rows into functions and `grants.py` turns the access columns into IAM statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TableAccess = Literal["none", "read", "read_write"]
# gitlab: the push account (commits); gitlab_reader: a Reporter account (reads MRs and members, comments).
SecretKind = Literal["gitlab", "gitlab_reader", "datadog", "webhook", "llm", "slack"]

REQUIREMENT_GROUPS = ("core", "gitlab", "kubernetes", "datadog", "llm", "slack")


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: code, packaging, sizing and the access it needs (nothing more)."""

    id: str
    handler: str
    groups: tuple[str, ...]
    timeout_seconds: int = 30
    memory_mb: int = 256
    registry: TableAccess = "none"
    # Read-write only where the code writes: tests/infra/test_least_privilege.py derives it from the code.
    state: TableAccess = "read_write"
    secrets: tuple[SecretKind, ...] = ()
    # eks:DescribeCluster + sts:AssumeRole into the per-cluster guard-* roles.
    cluster_access: bool = False
    # states:SendTask* on the upgrade state machine, plus GUARD_STATE_MACHINE_ARN.
    task_response: bool = False
    # states:DescribeExecution on the upgrade state machine's executions (a lock held by an ended one).
    describe_executions: bool = False
    # sns:Publish on the stack's topic, plus GUARD_NOTIFY_TOPIC_ARN (notifications.sns_topic).
    notify_topic: bool = False
    # lambda:InvokeFunction on these functions (by id), plus GUARD_<ID>_FUNCTION naming each.
    invokes: tuple[str, ...] = ()
    # dynamodb:Query on the state table's watch index: the functions that list what the reconciler watches
    # (StateStore.list_task_tokens / list_unwatched_rollbacks); tests/infra derives it from the code.
    watch_index: bool = False

    @property
    def asl_placeholder(self) -> str:
        """The `${...}` name the ASL uses for this function's ARN."""
        return f"{self.id}FunctionArn"


FUNCTIONS: tuple[FunctionSpec, ...] = (
    # The planners and every recorder of an outcome read what the clusters run and set the registry to it.
    # Plan and Finish read every cluster of the batch (guard.services.observation, 32 at a time): 300 s is
    # ~20,000 cluster reads at 0.4 s; chunked stages are not needed for a batch's size below that.
    FunctionSpec("Plan", "handlers.plan.handler", ("core", "kubernetes"), timeout_seconds=300, memory_mb=512,
                 registry="read_write", describe_executions=True, cluster_access=True),
    # Also reads the GitOps repository (Reporter token) and the chart repositories: the whole-install prechecks.
    FunctionSpec("Precheck", "handlers.precheck.handler", ("core", "kubernetes", "datadog", "gitlab"),
                 timeout_seconds=300, memory_mb=512, registry="read", secrets=("datadog", "gitlab_reader"),
                 cluster_access=True, invokes=("CustomChecks",)),
    # The tenant's custom check code, away from Precheck's table access: clusters and the Datadog secret only.
    FunctionSpec("CustomChecks", "handlers.custom_checks.handler", ("core", "kubernetes", "datadog"),
                 timeout_seconds=120, memory_mb=512, state="none", secrets=("datadog",), cluster_access=True),
    # Also sends the `waiting_for_merge` notification once the MR exists.
    FunctionSpec("OpenMergeRequest", "handlers.open_merge_request.handler", ("core", "gitlab"),
                 timeout_seconds=120, memory_mb=512, registry="read", secrets=("gitlab", "slack"),
                 notify_topic=True),
    # FluxStatus, RestartSidecars and Conclude post Datadog events (merge, soak start, verdict): the Datadog secret.
    FunctionSpec("FluxStatus", "handlers.flux_status.handler", ("core", "kubernetes", "datadog"),
                 timeout_seconds=120, memory_mb=512, registry="read", secrets=("datadog",), cluster_access=True),
    FunctionSpec("RestartSidecars", "handlers.restart_sidecars.handler", ("core", "kubernetes", "datadog"),
                 timeout_seconds=120, memory_mb=512, registry="read", secrets=("datadog",), cluster_access=True),
    FunctionSpec("Validate", "handlers.validate.handler", ("core", "kubernetes", "datadog"),
                 timeout_seconds=300, memory_mb=512, registry="read", secrets=("datadog",),
                 cluster_access=True),
    # The soak loop's check: reads the run's soak record at every check (its length may change while it runs).
    FunctionSpec("Soak", "handlers.soak.handler", ("core",), memory_mb=256),
    FunctionSpec("Conclude", "handlers.conclude.handler", ("core", "datadog"), secrets=("datadog",)),
    FunctionSpec("Finish", "handlers.finish.handler", ("core", "gitlab", "kubernetes"),
                 timeout_seconds=300, memory_mb=512, registry="read_write", secrets=("gitlab",),
                 cluster_access=True),
    # API Gateway waits at most 29 s; the webhook answers fast and only resumes executions.
    # python-gitlab is packaged for the Maintainer check of `/guard` comments (imported lazily).
    # The Reporter token only: the internet-facing function cannot commit.
    FunctionSpec("GitLabWebhook", "handlers.gitlab_webhook.handler", ("core", "gitlab"),
                 timeout_seconds=15, secrets=("webhook", "gitlab_reader"), task_response=True),
    # API Gateway's REQUEST authorizer: X-Gitlab-Token against the webhook secret before the webhook runs.
    FunctionSpec("WebhookAuthorizer", "handlers.webhook_authorizer.handler", ("core",), timeout_seconds=5,
                 memory_mb=128, state="none", secrets=("webhook",)),
    # Scheduled every `gitlab.reconcile_minutes`: settles MR waits whose webhook GitLab never delivered.
    # Reconcile also follows rollback MRs left to a person: it reads their clusters and writes the registry.
    FunctionSpec("Reconcile", "handlers.reconcile.handler", ("core", "gitlab", "kubernetes"),
                 timeout_seconds=120, memory_mb=512, registry="read_write", secrets=("gitlab", "gitlab_reader"),
                 task_response=True, cluster_access=True, watch_index=True),
    FunctionSpec("PlanRollback", "handlers.plan_rollback.handler", ("core", "kubernetes"), timeout_seconds=120,
                 memory_mb=512, registry="read_write", describe_executions=True, cluster_access=True),
    FunctionSpec("AnalyzeFailure", "handlers.analyze_failure.handler", ("core", "kubernetes", "llm"),
                 timeout_seconds=300, memory_mb=512, registry="read", secrets=("llm",), cluster_access=True),
    FunctionSpec("AwaitDecision", "handlers.await_decision.handler", ("core", "gitlab"),
                 timeout_seconds=120, memory_mb=512, registry="read", secrets=("gitlab_reader",)),
    # The Datadog secret: the rollback MR shows graph snapshots of the failing queries.
    FunctionSpec("OpenRollback", "handlers.open_rollback.handler", ("core", "gitlab", "datadog"),
                 timeout_seconds=120, memory_mb=512, registry="read", secrets=("gitlab", "datadog")),
    FunctionSpec("VerifyRollback", "handlers.verify_rollback.handler", ("core", "kubernetes", "gitlab"),
                 timeout_seconds=120, memory_mb=512, registry="read_write", secrets=("gitlab",),
                 cluster_access=True),
    # requests for Slack's webhook (guard/notify/slack.py): core alone left it out of the bundle.
    FunctionSpec("Notify", "handlers.notify.handler", ("core", "slack"), state="read", secrets=("slack",),
                 notify_topic=True),
    # Not a task: EventBridge delivers every end of an execution (infra/execution_ends.py); it records a
    # run the workflow could not (a stop from the console), releases the lock, deletes the tokens, notifies.
    FunctionSpec("ExecutionEnded", "handlers.execution_ended.handler", ("core", "gitlab", "kubernetes"),
                 timeout_seconds=120, memory_mb=512, registry="read_write", secrets=("gitlab", "slack"),
                 notify_topic=True, cluster_access=True),
    # The rollout machine's tasks: plan the DAG, hand out waves, record outcomes (registry: change windows).
    FunctionSpec("Rollout", "handlers.rollout.handler", ("core",), registry="read"),
)
