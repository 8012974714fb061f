"""The rollout state machine: many batches of one tenant, each a child execution of the batch machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

# The managed rule Step Functions creates for `.sync` child executions (per account and region).
SYNC_RULE = "StepFunctionsGetEventsForStepFunctionsExecutionRule"


class RolloutStateMachine(Construct):
    """STANDARD state machine from `rollout.asl.json`: `${RolloutFunctionArn}` and
    `${UpgradeBatchStateMachineArn}` bound; its role may invoke that one function and start,
    watch and stop executions of that one batch machine, nothing else."""

    def __init__(self, scope: Construct, construct_id: str, *, definition_file: Path, function: lambda_.IFunction,
                 batch_state_machine: sfn.StateMachine, state_machine_name: str,
                 log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        stack = cdk.Stack.of(self)
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function.function_arn]))
        role.add_to_policy(iam.PolicyStatement(actions=["states:StartExecution"],
                                               resources=[batch_state_machine.state_machine_arn]))
        executions = stack.format_arn(service="states", resource="execution",
                                      resource_name=f"{batch_state_machine.state_machine_name}:*",
                                      arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)
        role.add_to_policy(iam.PolicyStatement(actions=["states:DescribeExecution", "states:StopExecution"],
                                               resources=[executions]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[stack.format_arn(service="events", resource="rule", resource_name=SYNC_RULE)]))
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       log_group_name=f"/aws/vendedlogs/states/{state_machine_name}")
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(definition_file.read_text()),
            definition_substitutions={"RolloutFunctionArn": function.function_arn,
                                      "UpgradeBatchStateMachineArn": batch_state_machine.state_machine_arn},
            role=role,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        region = "<AWS::Region>" if cdk.Token.is_unresolved(stack.region) else stack.region
        account = "<AWS::AccountId>" if cdk.Token.is_unresolved(stack.account) else stack.account
        cdk.Validations.of(role).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="Resource '*' comes from the statements CDK adds for execution logging and X-Ray tracing; "
                       "those actions support no resource-level scoping.",
            ),
            cdk.Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:{region}:"
                   f"{account}:execution:<{stack.get_logical_id(_cfn(batch_state_machine))}.Name>:*]",
                reason="Child execution names are chosen at run time (rollout id + batch); the wildcard is "
                       "limited to executions of this tenant's batch state machine.",
            ),
        )


def _cfn(machine: sfn.StateMachine) -> sfn.CfnStateMachine:
    child = machine.node.default_child
    assert isinstance(child, sfn.CfnStateMachine)
    return child
