"""Alarms on failed and timed-out executions, and on what GUARD leaves for a person, published to an
encrypted SNS topic."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct
from guard.vocabulary import metrics as guard_metrics


class ExecutionAlarms(Construct):
    """ExecutionsFailed >= 1 and ExecutionsTimedOut >= 1 in 5 minutes -> `topic`."""

    def __init__(self, scope: Construct, construct_id: str, *, state_machine: sfn.IStateMachine,
                 topic_name: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # A customer managed key: CloudWatch cannot publish to a topic under the aws/sns key.
        key = kms.Key(self, "TopicKey", enable_key_rotation=True,
                      description=f"Encrypts the {topic_name} alarm topic")
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "Topic", topic_name=topic_name, master_key=key, enforce_ssl=True,
                               display_name="GUARD upgrade alarms")
        self.alarms: list[cloudwatch.Alarm] = []
        self.watch(state_machine, "upgrade_batch", construct_prefix="")

    def watch(self, state_machine: sfn.IStateMachine, label: str, construct_prefix: str | None = None) -> None:
        """ExecutionsFailed / ExecutionsTimedOut >= 1 in 5 minutes of `state_machine` -> the topic."""
        prefix = label.title().replace("_", "") if construct_prefix is None else construct_prefix
        period = cdk.Duration.minutes(5)
        metrics = {
            "ExecutionsFailed": state_machine.metric_failed(period=period, statistic="Sum"),
            "ExecutionsTimedOut": state_machine.metric_timed_out(period=period, statistic="Sum"),
        }
        for name, metric in metrics.items():
            alarm = cloudwatch.Alarm(
                self, f"{prefix}{name}",
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=f"GUARD {label} {name} >= 1 in 5 minutes: an upgrade needs a person",
            )
            alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
            self.alarms.append(alarm)

    def watch_rollback_needs_person(self, tenant: str) -> cloudwatch.Alarm:
        """RollbackNeedsPerson >= 1 in 5 minutes (this tenant's) -> the topic: a rollback MR GUARD stopped
        watching stays open (GUARD never closes one) until a person merges or closes it."""
        metric = cloudwatch.Metric(
            namespace=guard_metrics.NAMESPACE, metric_name=guard_metrics.ROLLBACK_NEEDS_PERSON,
            # Exactly the dimensions the handlers emit (Powertools adds `service`): another set is another metric.
            dimensions_map={"service": guard_metrics.SERVICE, guard_metrics.TENANT_DIMENSION: tenant},
            period=cdk.Duration.minutes(5), statistic="Sum")
        alarm = cloudwatch.Alarm(
            self, "RollbackNeedsPerson", metric=metric, threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"GUARD {tenant}: a rollback merge request is open and GUARD no longer watches it; "
                              "a person must merge it (and check the clusters) or close it")
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm
