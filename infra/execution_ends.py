"""Every end of an execution reaches the ExecutionEnded function: an EventBridge rule on Step Functions'
"Execution Status Change" events (terminal statuses, the tenant's state machines only), with retries and an
encrypted dead-letter queue for the events that could not be delivered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class ExecutionEnds(Construct):
    """Rule `state_machines`' terminal status changes -> `handler` (retried for a day), then `dead_letters`."""

    def __init__(self, scope: Construct, construct_id: str, *, state_machines: Sequence[sfn.IStateMachine],
                 handler: lambda_.IFunction, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.dead_letters = sqs.Queue(self, "DeadLetters", encryption=sqs.QueueEncryption.SQS_MANAGED,
                                      enforce_ssl=True, retention_period=cdk.Duration.days(14))
        self.rule = events.Rule(
            self, "Rule",
            description="GUARD: record the end of every execution (a stop from the console runs no Catch)",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": list(TERMINAL_STATUSES),
                        "stateMachineArn": [m.state_machine_arn for m in state_machines]},
            ),
        )
        self.rule.add_target(targets.LambdaFunction(
            handler, dead_letter_queue=self.dead_letters, retry_attempts=8,
            max_event_age=cdk.Duration.hours(24)))
        cdk.Validations.of(self.dead_letters).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions::AwsSolutions-SQS3",
            reason="This queue is itself the dead-letter queue of the ExecutionEnded rule target.",
        ))
