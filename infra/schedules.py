"""`schedules:` of the tenant config as EventBridge Scheduler schedules that start executions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct
from guard.config.models import ScheduleConfig
from guard.config.schedules import schedule_expression, schedule_input

Target = Literal["batch", "rollout"]


class GuardSchedules(Construct):
    """One `AWS::Scheduler::Schedule` per config schedule. Each target state machine gets its own role,
    which EventBridge Scheduler may assume and which may only StartExecution on that state machine."""

    def __init__(self, scope: Construct, construct_id: str, *, schedules: Sequence[ScheduleConfig],
                 targets: Mapping[Target, sfn.IStateMachine], name_prefix: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.schedules: dict[str, scheduler.CfnSchedule] = {}
        roles: dict[Target, iam.Role] = {}
        for schedule in schedules:
            kind: Target = "batch" if schedule.batch else "rollout"
            machine = targets[kind]
            if kind not in roles:
                roles[kind] = iam.Role(
                    self, f"{kind.title()}Role",
                    assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com", conditions={
                        "StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}}),
                    description=f"EventBridge Scheduler starts {kind} executions of {name_prefix}")
                roles[kind].add_to_policy(iam.PolicyStatement(actions=["states:StartExecution"],
                                                              resources=[machine.state_machine_arn]))
            window = ({"mode": "FLEXIBLE", "maximumWindowInMinutes": schedule.flexible_window_minutes}
                      if schedule.flexible_window_minutes else {"mode": "OFF"})
            self.schedules[schedule.name] = scheduler.CfnSchedule(
                self, f"Schedule-{schedule.name}",
                name=f"{name_prefix}-{schedule.name}",
                description=f"GUARD: start a {kind} upgrade to {schedule.target_version}",
                schedule_expression=schedule_expression(schedule.cron, f"schedules.{schedule.name}.cron"),
                schedule_expression_timezone=schedule.timezone,
                flexible_time_window=window,
                state="ENABLED" if schedule.enabled else "DISABLED",
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=machine.state_machine_arn,
                    role_arn=roles[kind].role_arn,
                    input=json.dumps(schedule_input(schedule)),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=3,
                                                                           maximum_event_age_in_seconds=3600),
                ),
            )


class ReconcileSchedule(Construct):
    """Invokes the reconciler (`handlers.reconcile`) every `minutes`, through a role EventBridge Scheduler
    (of this account) may assume and which may only invoke that function."""

    def __init__(self, scope: Construct, construct_id: str, *, function: lambda_.IFunction, minutes: int,
                 name_prefix: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com", conditions={
            "StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account}}),
            description=f"EventBridge Scheduler runs the reconciler of {name_prefix}")
        role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                               resources=[function.function_arn]))
        unit = "minute" if minutes == 1 else "minutes"
        self.schedule = scheduler.CfnSchedule(
            self, "Schedule",
            name=f"{name_prefix}-reconcile",
            description="GUARD: settle merge request waits whose GitLab webhook was lost",
            schedule_expression=f"rate({minutes} {unit})",
            flexible_time_window={"mode": "OFF"},
            state="ENABLED",
            target=scheduler.CfnSchedule.TargetProperty(
                arn=function.function_arn,
                role_arn=role.role_arn,
                input=json.dumps({"source": "guard.reconcile"}),
                # The next run comes in `minutes`: a missed one is not worth retrying for long.
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_retry_attempts=0, maximum_event_age_in_seconds=max(60, minutes * 60)),
            ),
        )
