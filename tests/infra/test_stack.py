"""The synthesized Guard-<tenant> stacks: properties a deployer and an auditor would check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from guard.config.loader import parse_config
from guard.errors import ConfigError
from guard.stores.schema import REGISTRY, STATE

from infra.application import BUILD_DIR_CONTEXT, build_app
from infra.functions import FUNCTIONS

from .conftest import FIXTURES, Synthesized

pytestmark = pytest.mark.infra

ASL_FUNCTIONS = ["Plan", "Precheck", "OpenMergeRequest", "FluxStatus", "RestartSidecars", "Validate", "Soak",
                 "Conclude", "Finish", "PlanRollback", "AnalyzeFailure", "AwaitDecision", "OpenRollback",
                 "VerifyRollback", "Notify"]


# --- helpers -----------------------------------------------------------------------------------------

def _function_id(template: Template, construct_id: str) -> str:
    """Logical id of the Lambda function built for FUNCTIONS row `construct_id`."""
    handler = next(s.handler for s in FUNCTIONS if s.id == construct_id)
    found = template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})
    assert len(found) == 1, f"one function runs {handler}"
    return next(iter(found))


def _role_statements(template: Template, construct_id: str) -> list[dict[str, Any]]:
    """Every IAM statement attached to the role of function `construct_id`."""
    fn = template.find_resources("AWS::Lambda::Function")[_function_id(template, construct_id)]
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    role = template.find_resources("AWS::IAM::Role")[role_id]
    assert "ManagedPolicyArns" not in role["Properties"], "no managed policies on function roles"
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _grants(template: Template, construct_id: str, action_prefix: str) -> str:
    """The resources granted for actions starting with `action_prefix`, as one JSON string."""
    found = [s["Resource"] for s in _role_statements(template, construct_id)
             if any(a.startswith(action_prefix) for a in _actions(s))]
    return json.dumps(found)


def _table_id(template: Template, name: str) -> str:
    found = template.find_resources("AWS::DynamoDB::Table", {"Properties": {"TableName": name}})
    assert len(found) == 1
    return next(iter(found))


# --- tables ------------------------------------------------------------------------------------------

def test_tables_are_on_demand_encrypted_recoverable_and_retained(alpha: Template) -> None:
    # GIVEN tenant alpha, whose config leaves the table names at their defaults
    # WHEN its stack is synthesized
    # THEN the registry table is named after the tenant, keyed by cluster_id, and safe to keep
    alpha.has_resource("AWS::DynamoDB::Table", {
        "Properties": {
            "TableName": "guard-alpha-cluster-registry",
            "KeySchema": REGISTRY.key_schema(),
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
    })
    # AND the state table has pk/sk and expires old items through the expires_at TTL
    alpha.has_resource("AWS::DynamoDB::Table", {
        "Properties": {
            "TableName": "guard-alpha-state",
            "KeySchema": STATE.key_schema(),
            "TimeToLiveSpecification": {"AttributeName": STATE.ttl_attribute, "Enabled": True},
            # AND the sparse watch index the reconciler lists its tokens and left rollbacks with, keys only
            "GlobalSecondaryIndexes": [{"IndexName": "watch-index", "KeySchema": [
                {"AttributeName": "watch", "KeyType": "HASH"}, {"AttributeName": "pk", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"}}],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
        "DeletionPolicy": "Retain",
    })


def test_explicit_table_names_are_used_verbatim(beta: Template) -> None:
    # GIVEN tenant beta, whose config names its tables
    # WHEN its stack is synthesized
    # THEN those exact names are deployed
    beta.has_resource_properties("AWS::DynamoDB::Table", {"TableName": "beta-fleet"})
    beta.has_resource_properties("AWS::DynamoDB::Table", {"TableName": "beta-guard-state"})


def test_two_tenants_share_no_physical_name_unless_they_name_one_registry_table(synthesized: Synthesized) -> None:
    # GIVEN two tenants synthesized into one app (one account), naming different registry tables
    # (tenants that name the same registry table share it and nothing else: tests/infra/test_tenants.py)
    # WHEN their named resources are listed
    names: dict[str, set[str]] = {}
    for stack, template in synthesized.templates.items():
        found: set[str] = set()
        for resource in template.to_json()["Resources"].values():
            props = resource.get("Properties", {})
            for key in ("TableName", "StateMachineName", "TopicName", "LogGroupName"):
                if isinstance(props.get(key), str):
                    found.add(props[key])
            if resource["Type"] == "AWS::ApiGateway::RestApi":
                found.add(props["Name"])
        names[stack] = found
    # THEN each tenant names five things, and no name appears in both stacks
    assert all(len(n) >= 5 for n in names.values()), names
    assert not names["Guard-alpha"] & names["Guard-beta"]


# --- functions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", FUNCTIONS, ids=[s.id for s in FUNCTIONS])
def test_every_function_runs_python312_with_tenant_environment(alpha: Template, spec: Any) -> None:
    # GIVEN a function row of infra/functions.py
    # WHEN tenant alpha's stack is synthesized
    # THEN the function runs its handler on Python 3.12 arm64 with the tenant's settings
    alpha.has_resource_properties("AWS::Lambda::Function", {
        "Handler": spec.handler,
        "Runtime": "python3.12",
        "Architectures": ["arm64"],
        "Timeout": spec.timeout_seconds,
        "MemorySize": spec.memory_mb,
        "LoggingConfig": {"LogGroup": Match.any_value()},
        "Environment": {"Variables": Match.object_like({
            "GUARD_TENANT": "alpha",
            "GUARD_CONFIG_FILE": "tenant/config.json",
            "GUARD_CHECKS_DIR": "tenant/checks",
            "GUARD_REGISTRY_TABLE": {"Ref": _table_id(alpha, "guard-alpha-cluster-registry")},
            "GUARD_STATE_TABLE": {"Ref": _table_id(alpha, "guard-alpha-state")},
            "POWERTOOLS_SERVICE_NAME": "guard",
            "POWERTOOLS_METRICS_NAMESPACE": "GUARD",
        })},
    })


def test_only_the_webhook_knows_the_state_machine(alpha: Template) -> None:
    # GIVEN tenant alpha's functions
    functions = alpha.find_resources("AWS::Lambda::Function")
    state_machine_id = next(iter(alpha.find_resources("AWS::StepFunctions::StateMachine")))
    # WHEN their environments are read
    having = {
        fid for fid, fn in functions.items()
        if fn["Properties"]["Environment"]["Variables"].get("GUARD_STATE_MACHINE_ARN") == {"Ref": state_machine_id}
    }
    # THEN only the functions that resume executions (the GitLab webhook, the reconciler) get GUARD_STATE_MACHINE_ARN
    assert having == {_function_id(alpha, "GitLabWebhook"), _function_id(alpha, "Reconcile")}


def test_the_reconciler_runs_every_reconcile_minutes_and_its_schedule_may_only_invoke_it(
        alpha: Template, beta: Template) -> None:
    # GIVEN alpha (gitlab.reconcile_minutes: 10) and beta (the default, 5)
    # WHEN synthesized THEN each has an enabled rate schedule invoking its reconciler
    for template, rate in ((alpha, "rate(10 minutes)"), (beta, "rate(5 minutes)")):
        reconcile = _function_id(template, "Reconcile")
        found = template.find_resources("AWS::Scheduler::Schedule", {"Properties": {
            "ScheduleExpression": rate, "State": "ENABLED",
            "Target": {"Arn": {"Fn::GetAtt": [reconcile, "Arn"]}}}})
        assert len(found) == 1
        schedule = next(iter(found.values()))
        # AND its role is assumed by EventBridge Scheduler of this account and may only invoke the reconciler
        role_id = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
        trust = template.find_resources("AWS::IAM::Role")[role_id]["Properties"]["AssumeRolePolicyDocument"]
        assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "scheduler.amazonaws.com"}]
        assert "aws:SourceAccount" in json.dumps(trust)
        statements = [st for p in template.find_resources("AWS::IAM::Policy").values()
                      if {"Ref": role_id} in p["Properties"]["Roles"]
                      for st in p["Properties"]["PolicyDocument"]["Statement"]]
        assert [(_actions(st), st["Resource"]) for st in statements] == [
            (["lambda:InvokeFunction"], {"Fn::GetAtt": [reconcile, "Arn"]})]


def test_function_log_groups_have_retention(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized THEN every log group expires its events
    for group in alpha.find_resources("AWS::Logs::LogGroup").values():
        assert group["Properties"].get("RetentionInDays"), group


# --- IAM: what each function may and may not do ------------------------------------------------------

SECRETS = {"gitlab": "alpha/gitlab-token", "gitlab_reader": "alpha/gitlab-reporter-token", "datadog": "alpha/datadog",
           "webhook": "alpha/webhook-token", "llm": "guard/llm-api-key"}
# (registry access, secrets readable, may reach clusters, may answer task tokens). Which functions may write
# the tables is derived from their code in test_least_privilege.py.
EXPECTED_ACCESS = {
    # The planners and the recorders of outcomes set the registry to what the clusters run.
    "Plan": ("read_write", set(), True, False),
    # Also reads the GitOps repository (Reporter token) for the whole-install prechecks.
    "Precheck": ("read", {"datadog", "gitlab_reader"}, True, False),
    # The tenant's custom check code: the clusters and the Datadog secret, no table.
    "CustomChecks": ("none", {"datadog"}, True, False),
    # Reads each cluster's HelmRelease path from the registry.
    "OpenMergeRequest": ("read", {"gitlab"}, False, False),
    # FluxStatus, RestartSidecars and Conclude post Datadog events (merge, soak start, verdict).
    "FluxStatus": ("read", {"datadog"}, True, False),
    "RestartSidecars": ("read", {"datadog"}, True, False),
    "Validate": ("read", {"datadog"}, True, False),
    "Conclude": ("none", {"datadog"}, False, False),
    "Finish": ("read_write", {"gitlab"}, True, False),
    # The Reporter token (never the push token): the Maintainer check of `/guard` comments.
    "GitLabWebhook": ("none", {"webhook", "gitlab_reader"}, False, True),
    # API Gateway's authorizer: the webhook secret and nothing else.
    "WebhookAuthorizer": ("none", {"webhook"}, False, False),
    # Reads MR states and notes, answers the waits whose webhook was lost; follows a rollback MR left to a
    # person and sets the registry to what its clusters then run.
    "Reconcile": ("read_write", {"gitlab", "gitlab_reader"}, True, True),
    "PlanRollback": ("read_write", set(), True, False),
    "AnalyzeFailure": ("read", {"llm"}, True, False),
    "AwaitDecision": ("read", {"gitlab_reader"}, False, False),
    # Datadog: graph snapshots of the failing queries on the rollback MR.
    "OpenRollback": ("read", {"gitlab", "datadog"}, False, False),
    "VerifyRollback": ("read_write", {"gitlab"}, True, False),
    "Notify": ("none", set(), False, False),
    # Records a run its execution could not (a stop), comments on the MR, notifies.
    "ExecutionEnded": ("read_write", {"gitlab"}, True, False),
}


@pytest.mark.parametrize("construct_id", list(EXPECTED_ACCESS))
def test_each_function_gets_only_its_own_grants(alpha: Template, construct_id: str) -> None:
    registry_access, secrets, cluster_access, task_response = EXPECTED_ACCESS[construct_id]
    registry = _table_id(alpha, "guard-alpha-cluster-registry")
    state = _table_id(alpha, "guard-alpha-state")
    # GIVEN function construct_id of tenant alpha
    # WHEN the statements on its role are collected
    statements = _role_statements(alpha, construct_id)
    readers = json.dumps([s["Resource"] for s in statements if "dynamodb:GetItem" in _actions(s)])
    writers = json.dumps([s["Resource"] for s in statements if "dynamodb:PutItem" in _actions(s)])
    secret_grants = _grants(alpha, construct_id, "secretsmanager:")
    # THEN every function but the authorizer and the custom checks reads the state table (writes: see
    # test_least_privilege.py)
    assert (state in readers) == (construct_id not in ("WebhookAuthorizer", "CustomChecks"))
    # AND the registry only as far as its job needs
    assert (registry in readers) == (registry_access != "none")
    assert (registry in writers) == (registry_access == "read_write")
    # AND it reads exactly its own secrets (the webhook cannot read GitLab or Datadog credentials)
    assert {kind for kind, name in SECRETS.items() if f":secret:{name}-" in secret_grants} == secrets
    # AND only the cluster-facing functions may describe clusters and assume guard-* roles
    assert ("role/guard-*" in _grants(alpha, construct_id, "sts:AssumeRole")) == cluster_access
    assert (":cluster/*" in _grants(alpha, construct_id, "eks:DescribeCluster")) == cluster_access
    # AND only the webhook and the reconciler may resume executions
    assert (_grants(alpha, construct_id, "states:SendTask") != "[]") == task_response
    # AND only the planners may read the status of executions (a lock held by an ended one), and only the
    # upgrade state machine's
    described = _grants(alpha, construct_id, "states:DescribeExecution")
    assert (described != "[]") == (construct_id in ("Plan", "PlanRollback"))
    if described != "[]":
        assert "execution:guard-alpha-upgrade-batch:*" in described
    # AND no function may invoke functions, but Precheck its custom checks function (that one ARN, no alias
    # or version wildcard); and no function uses a wildcard action
    invokes = _grants(alpha, construct_id, "lambda:")
    if construct_id == "Precheck":
        assert invokes == json.dumps([{"Fn::GetAtt": [_function_id(alpha, "CustomChecks"), "Arn"]}])
    else:
        assert invokes == "[]"
    assert not [a for s in statements for a in _actions(s) if a.endswith("*") and a != "dynamodb:*"]


# --- state machine -----------------------------------------------------------------------------------

def test_state_machine_is_standard_traced_and_logs_without_payloads(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized THEN upgrade_batch is a STANDARD, traced state machine
    # whose logs leave execution data out (payloads carry merge request details)
    alpha.has_resource_properties("AWS::StepFunctions::StateMachine", {
        "StateMachineName": "guard-alpha-upgrade-batch",
        "StateMachineType": "STANDARD",
        "TracingConfiguration": {"Enabled": True},
        "LoggingConfiguration": {
            "Level": "ALL",
            "IncludeExecutionData": False,
            "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": Match.any_value()}}],
        },
    })
    alpha.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/aws/vendedlogs/states/guard-alpha-upgrade-batch",
    })


def test_definition_binds_every_placeholder_to_a_function_arn(alpha: Template) -> None:
    # GIVEN the synthesized state machine (definition inline, substitutions beside it)
    machine = next(iter(alpha.find_resources("AWS::StepFunctions::StateMachine").values()))["Properties"]
    definition = machine["DefinitionString"]
    assert isinstance(definition, str), "the ASL stays inline, not an S3 asset"
    substitutions = machine["DefinitionSubstitutions"]
    # WHEN CloudFormation's substitution is replayed (each ARN stands in as arn:<logical id>)
    rendered = re.sub(r"\$\{(\w+)\}",
                      lambda m: "arn:" + substitutions[m.group(1)]["Fn::GetAtt"][0], definition)
    # THEN nothing is left to substitute
    assert "${" not in rendered
    # AND every Lambda task invokes the function its placeholder names
    expected = {f"{fid}FunctionArn": {"Fn::GetAtt": [_function_id(alpha, fid), "Arn"]} for fid in ASL_FUNCTIONS}
    assert substitutions == expected
    names = set(re.findall(r'"FunctionName":\s*"(arn:[^"]+)"', rendered))
    assert names == {f"arn:{_function_id(alpha, fid)}" for fid in ASL_FUNCTIONS}
    json.loads(rendered)


def test_state_machine_role_invokes_exactly_the_workflow_functions(alpha: Template) -> None:
    # GIVEN the state machine's role
    machine = next(iter(alpha.find_resources("AWS::StepFunctions::StateMachine").values()))
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = [s for p in alpha.find_resources("AWS::IAM::Policy").values()
                  if {"Ref": role_id} in p["Properties"]["Roles"]
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    # WHEN the lambda:InvokeFunction grants are collected
    invokable = [r for s in statements if "lambda:InvokeFunction" in _actions(s) for r in s["Resource"]]
    # THEN they are the seven workflow functions (unqualified ARNs), not the webhook
    assert sorted(json.dumps(r) for r in invokable) == sorted(
        json.dumps({"Fn::GetAtt": [_function_id(alpha, fid), "Arn"]}) for fid in ASL_FUNCTIONS
    )


# --- the end of every execution -----------------------------------------------------------------------

def test_every_end_of_a_batch_execution_reaches_execution_ended(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized
    machine = next(iter(alpha.find_resources("AWS::StepFunctions::StateMachine")))
    queues = alpha.find_resources("AWS::SQS::Queue")
    assert len(queues) == 1
    queue = next(iter(queues))
    # THEN a rule sends the batch machine's terminal status changes to ExecutionEnded,
    # retried, and dead-lettered to the queue
    alpha.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {
            "source": ["aws.states"],
            "detail-type": ["Step Functions Execution Status Change"],
            "detail": {"status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                       "stateMachineArn": [{"Ref": machine}]},
        },
        "State": "ENABLED",
        "Targets": [Match.object_like({
            "Arn": {"Fn::GetAtt": [_function_id(alpha, "ExecutionEnded"), "Arn"]},
            "RetryPolicy": {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 86400},
            "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [queue, "Arn"]}},
        })],
    })
    # AND the queue is encrypted, and EventBridge may invoke the function
    alpha.has_resource_properties("AWS::SQS::Queue", {"SqsManagedSseEnabled": True})
    alpha.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction", "Principal": "events.amazonaws.com",
        "FunctionName": {"Fn::GetAtt": [_function_id(alpha, "ExecutionEnded"), "Arn"]},
    })


# --- webhook API -------------------------------------------------------------------------------------

def test_webhook_api_is_throttled_logged_and_validated(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized
    # THEN the stage throttles (20 rps, burst 40), keeps access logs and never logs request data
    alpha.has_resource_properties("AWS::ApiGateway::Stage", {
        "MethodSettings": Match.array_with([Match.object_like({
            "HttpMethod": "*", "ResourcePath": "/*",
            "ThrottlingRateLimit": 20, "ThrottlingBurstLimit": 40,
            "DataTraceEnabled": False, "LoggingLevel": "ERROR",
        })]),
        "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
        "TracingEnabled": True,
    })
    # AND POST /webhooks/gitlab proxies to the webhook function, requiring GitLab's headers and a body
    alpha.has_resource_properties("AWS::ApiGateway::Method", {
        "HttpMethod": "POST",
        "AuthorizationType": "CUSTOM",
        "RequestValidatorId": Match.any_value(),
        "RequestParameters": {"method.request.header.X-Gitlab-Token": True,
                              "method.request.header.X-Gitlab-Event": True},
        "RequestModels": {"application/json": Match.any_value()},
        "Integration": Match.object_like({"Type": "AWS_PROXY", "IntegrationHttpMethod": "POST"}),
    })
    method = next(iter(alpha.find_resources("AWS::ApiGateway::Method").values()))
    assert _function_id(alpha, "GitLabWebhook") in json.dumps(method["Properties"]["Integration"]["Uri"])
    alpha.has_resource_properties("AWS::ApiGateway::RequestValidator", {
        "ValidateRequestBody": True, "ValidateRequestParameters": True,
    })
    alpha.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "gitlab"})
    alpha.has_resource_properties("AWS::Lambda::Permission", {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": [_function_id(alpha, "GitLabWebhook"), "Arn"]},
        "Principal": "apigateway.amazonaws.com",
    })


# --- alarms and outputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["ExecutionsFailed", "ExecutionsTimedOut"])
def test_failed_or_timed_out_execution_alarms_to_encrypted_topic(alpha: Template, metric: str) -> None:
    machines = alpha.find_resources("AWS::StepFunctions::StateMachine")
    topic_id = next(iter(alpha.find_resources("AWS::SNS::Topic")))
    # GIVEN tenant alpha (batch and rollout state machines) WHEN synthesized
    # THEN one execution of either that fails (or times out) within 5 minutes raises an alarm on the topic
    assert len(machines) == 2
    for state_machine_id in machines:
        alpha.has_resource_properties("AWS::CloudWatch::Alarm", {
            "Namespace": "AWS/States",
            "MetricName": metric,
            "Dimensions": [{"Name": "StateMachineArn", "Value": {"Ref": state_machine_id}}],
            "Statistic": "Sum",
            "Period": 300,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "EvaluationPeriods": 1,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": topic_id}],
        })
    # AND the topic is KMS-encrypted with a key CloudWatch may use, and refuses plain HTTP
    alpha.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    alpha.has_resource_properties("AWS::SNS::TopicPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
    ])}})
    alpha.has_resource_properties("AWS::KMS::Key", {
        "EnableKeyRotation": True,
        "KeyPolicy": {"Statement": Match.array_with([Match.object_like({
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
        })])},
    })


def test_a_rollback_mr_left_for_a_person_alarms_to_the_topic_for_this_tenant_only(
        alpha: Template, beta: Template) -> None:
    # GIVEN tenants alpha and beta (they may share an account, hence the metric namespace) WHEN synthesized
    for tenant, template in (("alpha", alpha), ("beta", beta)):
        topic_id = next(iter(template.find_resources("AWS::SNS::Topic")))
        # THEN one RollbackNeedsPerson in 5 minutes, emitted by this tenant's functions, alarms on its topic
        template.has_resource_properties("AWS::CloudWatch::Alarm", {
            "Namespace": "GUARD",
            "MetricName": "RollbackNeedsPerson",
            "Dimensions": Match.array_equals([{"Name": "service", "Value": "guard"},
                                              {"Name": "tenant", "Value": tenant}]),
            "Statistic": "Sum",
            "Period": 300,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": topic_id}],
        })
    # AND the functions emit to that namespace with that service name (what the alarm's dimensions assume)
    alpha.has_resource_properties("AWS::Lambda::Function", {"Environment": {"Variables": Match.object_like({
        "POWERTOOLS_METRICS_NAMESPACE": "GUARD", "POWERTOOLS_SERVICE_NAME": "guard", "GUARD_TENANT": "alpha"})}})


def test_outputs_name_what_a_deployer_needs(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized THEN the outputs give the state machine, the webhook URL
    # and both table names
    outputs = alpha.to_json()["Outputs"]
    assert {"StateMachineArn", "WebhookUrl", "RegistryTableName", "StateTableName"} <= set(outputs)
    assert outputs["WebhookUrl"]["Value"]["Fn::Join"][1][-1] == "/webhooks/gitlab"


# --- cdk-nag and config errors -----------------------------------------------------------------------

def test_cdk_nag_finds_nothing_unacknowledged(synthesized: Synthesized) -> None:
    # GIVEN the whole app with AwsSolutionsChecks registered as a validation plugin
    # WHEN it was synthesized
    # THEN the synth passed (a finding fails it), and no report of violations was written
    assert synthesized.synth_error is None, str(synthesized.synth_error)[:4000]
    report = synthesized.outdir / "validation-report.json"
    if report.exists():
        plugins = json.loads(report.read_text())["pluginReports"]
        assert all(p["conclusion"] == "success" for p in plugins), plugins


def test_every_acknowledgement_has_a_specific_reason(synthesized: Synthesized) -> None:
    # GIVEN the acknowledgements recorded in the cloud assembly's metadata
    acknowledged: dict[str, str] = {}
    for metadata in synthesized.outdir.glob("Guard-*.metadata.json"):
        for entries in json.loads(metadata.read_text()).values():
            for entry in entries:
                if entry["type"] == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                    acknowledged.update(entry["data"])
    # WHEN THEN exactly the expected findings are acknowledged, each with a sentence that says why
    assert {rule.split("[")[0] for rule in acknowledged} == {
        # APIG3 (WAF) and APIG4 (authorization) are met now: a web ACL and a token authorizer guard the webhook.
        "AwsSolutions::AwsSolutions-L1", "AwsSolutions::AwsSolutions-IAM5", "AwsSolutions::AwsSolutions-COG4",
        # The ExecutionEnded rule's dead-letter queue is itself a dead-letter queue.
        "AwsSolutions::AwsSolutions-SQS3",
    }
    assert all(len(reason) > 60 for reason in acknowledged.values()), acknowledged


def test_packaged_tenant_config_is_valid_and_names_deployed_tables(synthesized: Synthesized) -> None:
    # GIVEN the source tree staged for tenant alpha's functions
    staged = synthesized.build_dir / "alpha" / "src"
    # WHEN the packaged config is read back the way a handler will read it
    config = parse_config(json.loads((staged / "tenant" / "config.json").read_text()), "tenant/config.json")
    # THEN it is alpha's config, with the table names that were actually deployed
    assert config.tenant == "alpha"
    assert config.aws.dynamodb.table_name == "guard-alpha-cluster-registry"
    assert config.aws.dynamodb.state_table_name == "guard-alpha-state"
    assert config.custom_checks[0].class_ == "MeshGatewaysCheck"
    # AND the tenant's custom checks and the code packages are beside it
    assert (staged / "tenant" / "checks" / "mesh_gateways.py").is_file()
    assert (staged / "guard" / "errors.py").is_file()
    assert (staged / "handlers" / "__init__.py").is_file()


def _misspelt_config(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.yaml"
    bad.write_text((FIXTURES / "beta.yaml").read_text().replace("table_name: beta-fleet", "tabel_name: beta-fleet"))
    return bad


def test_misspelt_config_key_fails_the_synth_naming_the_key(tmp_path: Path) -> None:
    # GIVEN a tenant config with `tabel_name` instead of `table_name`
    bad = _misspelt_config(tmp_path)
    # WHEN the app is built from it
    with pytest.raises(ConfigError) as error:
        build_app({"tenants": [str(bad)], "aws:cdk:bundling-stacks": [], BUILD_DIR_CONTEXT: str(tmp_path)})
    # THEN the error names the file and the key path
    assert str(bad) in str(error.value)
    assert "aws.dynamodb.tabel_name: unknown key (misspelt?)" in str(error.value)


def test_app_entry_point_reports_a_bad_config_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import app as entry_point

    # GIVEN the CDK CLI passing a context whose tenant config has a misspelt key
    bad = _misspelt_config(tmp_path)
    monkeypatch.setenv("CDK_CONTEXT_JSON", json.dumps({"tenants": [str(bad)], "aws:cdk:bundling-stacks": []}))
    # WHEN app.py runs
    code = entry_point.main()
    # THEN it exits non-zero with one readable message on stderr
    err = capsys.readouterr().err
    assert code != 0
    assert "aws.dynamodb.tabel_name: unknown key" in err
    assert "Traceback" not in err


def test_two_configs_for_one_tenant_are_refused(tmp_path: Path) -> None:
    # GIVEN two config files that both say tenant: beta
    copy = tmp_path / "beta-copy.yaml"
    copy.write_text((FIXTURES / "beta.yaml").read_text())
    # WHEN THEN the app refuses to build two Guard-beta stacks
    with pytest.raises(ConfigError, match="tenant 'beta' is already defined"):
        build_app({"tenants": [str(FIXTURES / "beta.yaml"), str(copy)], "aws:cdk:bundling-stacks": [],
                   BUILD_DIR_CONTEXT: str(tmp_path)})


# --- least privilege: sts:AssumeRole only into the tenant's cluster accounts --------------------------

ROLE_IN_ACCOUNT = re.compile(r"^arn:<AWS::Partition>:iam::(?P<account>[0-9]{12}|<AWS::AccountId>):role/guard-\*$")


def _render(value: Any) -> str:
    """A CloudFormation string as text: Refs as <Name>, Fn::Join / Fn::Sub flattened."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_render(part) for part in parts)
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", r"<\1>", value["Fn::Sub"])
    return json.dumps(value)  # anything else (GetAtt, ...) is not an account-scoped role ARN


def _permission_statements(template: Template) -> list[tuple[str, dict[str, Any]]]:
    """Every statement of every permission policy: AWS::IAM::Policy, managed policies and inline role policies."""
    documents: list[tuple[str, dict[str, Any]]] = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for logical_id, policy in template.find_resources(kind).items():
            documents.append((logical_id, policy["Properties"]["PolicyDocument"]))
    for logical_id, role in template.find_resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            documents.append((f"{logical_id}.{inline['PolicyName']}", inline["PolicyDocument"]))
    found = []
    for where, document in documents:
        statements = document["Statement"]
        found += [(where, s) for s in ([statements] if isinstance(statements, dict) else statements)]
    return found


def _may_assume_roles(statement: dict[str, Any]) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if "NotAction" in statement:
        return True  # allows everything but what it names: treated as allowing AssumeRole
    return any(re.fullmatch(a.replace("*", ".*"), "sts:AssumeRole", re.IGNORECASE) for a in _actions(statement))


def _assume_role_resources(template: Template) -> list[tuple[str, str]]:
    found = []
    for where, statement in _permission_statements(template):
        if _may_assume_roles(statement):
            resources = statement.get("Resource", statement.get("NotResource", "*"))
            for resource in resources if isinstance(resources, list) else [resources]:
                found.append((where, _render(resource) if "Resource" in statement else f"NotResource {resource}"))
    return found


@pytest.mark.parametrize(("tenant", "accounts"), [
    ("alpha", {"111122223333", "444455556666"}),  # aws.cluster_accounts set
    ("beta", {"<AWS::AccountId>"}),               # left out: the stack's own account
])
def test_no_policy_lets_a_function_assume_roles_in_any_account(request: pytest.FixtureRequest, tenant: str,
                                                               accounts: set[str]) -> None:
    # GIVEN every permission policy of the tenant's stack (policies, managed policies, inline role policies)
    template: Template = request.getfixturevalue(tenant)
    # WHEN the resources of every statement that may allow sts:AssumeRole are collected
    resources = _assume_role_resources(template)
    # THEN each is a guard-* role in one named account: never `*`, never an account wildcard
    assert resources, "the cluster-facing functions may assume the cluster roles"
    bad = [(where, r) for where, r in resources if not ROLE_IN_ACCOUNT.fullmatch(r)]
    assert not bad, bad
    # AND the accounts are exactly the tenant's cluster accounts
    assert {ROLE_IN_ACCOUNT.fullmatch(r)["account"] for _, r in resources} == accounts  # type: ignore[index]


@pytest.mark.parametrize("construct_id", [c for c, access in EXPECTED_ACCESS.items() if access[2]])
def test_each_cluster_facing_function_may_assume_guard_roles_in_every_listed_account(
        alpha: Template, construct_id: str) -> None:
    # GIVEN alpha, whose config lists two cluster accounts
    # WHEN the AssumeRole grants of a cluster-facing function are read
    granted = {_render(r) for s in _role_statements(alpha, construct_id) if "sts:AssumeRole" in _actions(s)
               for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])}
    # THEN it may reach the guard-* roles of both, and nothing else
    assert granted == {"arn:<AWS::Partition>:iam::111122223333:role/guard-*",
                       "arn:<AWS::Partition>:iam::444455556666:role/guard-*"}


def _guard_account_env(template: Template) -> list[Any]:
    return [fn["Properties"]["Environment"]["Variables"].get("GUARD_ACCOUNT_ID")
            for fn in template.find_resources("AWS::Lambda::Function",
                                              {"Properties": {"Handler": Match.string_like_regexp("^handlers\\.")}}
                                              ).values()]


def test_environment_agnostic_stack_resolves_its_own_account_at_deploy(synthesized: Synthesized,
                                                                       beta: Template) -> None:
    # GIVEN beta, which leaves aws.cluster_accounts out, synthesized without an account
    staged = synthesized.build_dir / "beta" / "src" / "tenant" / "config.json"
    # WHEN its packaged config and its functions' environment are read
    config = parse_config(json.loads(staged.read_text()), "tenant/config.json")
    # THEN the packaged config leaves the key out (the account is unknown at synth)
    assert config.aws.cluster_accounts is None
    # AND every function learns its own account from CloudFormation at deploy
    assert set(map(json.dumps, _guard_account_env(beta))) == {json.dumps({"Ref": "AWS::AccountId"})}


def test_stack_with_a_known_account_packages_it_as_the_cluster_account(tmp_path: Path) -> None:
    # GIVEN beta (no aws.cluster_accounts) synthesized for account 210987654321, as `cdk deploy` does
    # (CDK_DEFAULT_ACCOUNT); the synth raises if a cdk-nag acknowledgement no longer matches its finding
    app = build_app({"tenants": [str(FIXTURES / "beta.yaml")], "aws:cdk:bundling-stacks": [],
                     BUILD_DIR_CONTEXT: str(tmp_path)}, account="210987654321", outdir=str(tmp_path / "out"))
    template = Template.from_json(app.synth().get_stack_by_name("Guard-beta").template)
    # WHEN its packaged config and AssumeRole grants are read
    config = parse_config(json.loads((tmp_path / "beta" / "src" / "tenant" / "config.json").read_text()), "c")
    # THEN both name that one account
    assert config.aws.cluster_accounts == ["210987654321"]
    assert {r for _, r in _assume_role_resources(template)} == {"arn:<AWS::Partition>:iam::210987654321:role/guard-*"}
