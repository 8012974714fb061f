"""The upgrade_batch state machine: the ASL file kept inline, its ${...} bound to function ARNs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


class UpgradeStateMachine(Construct):
    """A STANDARD state machine from an ASL file whose placeholders are `${<FunctionId>FunctionArn}`.

    The role may invoke exactly the functions the definition names; every placeholder must
    be bound, so a renamed function fails the synth instead of the first execution.
    """

    def __init__(self, scope: Construct, construct_id: str, *, definition_file: Path,
                 functions: Mapping[str, lambda_.IFunction], state_machine_name: str,
                 log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        definition = definition_file.read_text()
        wanted = set(_PLACEHOLDER.findall(definition))
        bound = {f"{fid}FunctionArn": fn for fid, fn in functions.items() if f"{fid}FunctionArn" in wanted}
        unbound = sorted(wanted - bound.keys())
        if unbound:
            raise ValueError(f"{definition_file.name}: no function for {', '.join(unbound)}")
        self.invoked_functions = {name.removesuffix("FunctionArn"): fn for name, fn in bound.items()}

        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        # Unqualified ARNs only: the definition invokes $LATEST, never a version or an alias.
        role.add_to_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"],
            resources=[fn.function_arn for _, fn in sorted(bound.items())],
        ))
        # Vended-logs prefix keeps CloudWatch's resource policy small with many state machines.
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention,
                                       log_group_name=f"/aws/vendedlogs/states/{state_machine_name}")
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(definition),
            definition_substitutions={name: fn.function_arn for name, fn in bound.items()},
            role=role,
            tracing_enabled=True,
            # Execution data stays out of the logs: payloads carry MR details and cluster names.
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL,
                                include_execution_data=False),
        )
        cdk.Validations.of(role).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
            reason="Resource '*' comes from the statements CDK adds for execution logging "
                   "(logs:*LogDelivery*, logs:DescribeResourcePolicies/LogGroups) and X-Ray tracing "
                   "(xray:PutTraceSegments/GetSampling*); those actions support no resource-level scoping.",
        ))
