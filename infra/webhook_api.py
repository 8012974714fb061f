"""REST API that receives GitLab webhooks: POST /webhooks/gitlab -> the webhook function."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

WEBHOOK_PATH = "/webhooks/gitlab"


class GitLabWebhookApi(Construct):
    """Regional REST API, throttled, access-logged, rejecting requests without GitLab's headers.

    No authorizer: GitLab cannot sign requests with IAM or Cognito; it sends the shared
    secret in X-Gitlab-Token, which the function compares in constant time.
    """

    def __init__(self, scope: Construct, construct_id: str, *, handler: lambda_.IFunction,
                 api_name: str, rate_limit: int = 20, burst_limit: int = 40,
                 log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention)
        self.api = apigw.RestApi(
            self, "Api",
            rest_api_name=api_name,
            description="GUARD: GitLab merge request and comment webhooks",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-level CloudWatch role is a per-region singleton; set it once per account
            # (docs/deploy.md) instead of letting each tenant's stack fight over it.
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name="prod",
                throttling_rate_limit=rate_limit,
                throttling_burst_limit=burst_limit,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True,
                ),
                # ERROR only and no data trace: request headers carry the webhook token.
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
            ),
        )
        event_model = self.api.add_model(
            "GitLabEvent",
            content_type="application/json",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                type=apigw.JsonSchemaType.OBJECT,
                required=["object_kind"],
                properties={"object_kind": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING)},
            ),
        )
        validator = self.api.add_request_validator(
            "GitLabRequest", validate_request_body=True, validate_request_parameters=True,
        )
        resource = self.api.root.resource_for_path(WEBHOOK_PATH)
        self.method = resource.add_method(
            "POST",
            apigw.LambdaIntegration(handler, proxy=True, allow_test_invoke=False),
            request_validator=validator,
            request_models={"application/json": event_model},
            request_parameters={
                "method.request.header.X-Gitlab-Token": True,
                "method.request.header.X-Gitlab-Event": True,
            },
        )
        self.url = self.api.url_for_path(WEBHOOK_PATH)
        reason_no_auth = ("GitLab webhooks cannot carry IAM signatures or Cognito tokens; each request "
                          "must carry X-Gitlab-Token (required by the request validator) which the "
                          "function checks in constant time against the secret.")
        for rule in ("AwsSolutions::AwsSolutions-APIG4", "AwsSolutions::AwsSolutions-COG4"):
            cdk.Validations.of(self.api).acknowledge(cdk.Acknowledgment(id=rule, reason=reason_no_auth))
        cdk.Validations.of(self.api).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions::AwsSolutions-APIG3",
            reason="One low-volume webhook route: stage throttling (20 rps, burst 40), header and body "
                   "validation and the token check cover it; a WAF web ACL per tenant is not worth its cost.",
        ))
