"""REST API that receives GitLab webhooks: POST /webhooks/gitlab -> the webhook function.

Three gates stand before the function, so a flood cannot use up what GitLab's deliveries need:
WAF (a per-source-address rate limit; with `gitlab.webhook_source_cidrs`, only those addresses,
also enforced by the API's resource policy), a REQUEST authorizer that checks `X-Gitlab-Token`
(its answer cached per token value, so GitLab's deliveries are let through from the cache), and the
stage throttle. GitLab disables a hook after 4 failed deliveries in a row (VENDOR-FACTS.md).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

WEBHOOK_PATH = "/webhooks/gitlab"


class GitLabWebhookApi(Construct):
    """Regional REST API behind WAF and a token authorizer, throttled, access-logged.

    GitLab cannot sign requests with IAM or Cognito; it sends the shared secret in X-Gitlab-Token,
    which `authorizer` (and then the function) compares in constant time. `rate_limit_per_5_minutes`
    is WAF's limit per source address; `source_cidrs` (GitLab's egress ranges) admits only those.
    """

    def __init__(self, scope: Construct, construct_id: str, *, handler: lambda_.IFunction,
                 authorizer: lambda_.IFunction, api_name: str, rate_limit: int = 20, burst_limit: int = 40,
                 rate_limit_per_5_minutes: int = 300, source_cidrs: list[str] | None = None,
                 log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention)
        self.api = apigw.RestApi(
            self, "Api",
            rest_api_name=api_name,
            description="GUARD: GitLab merge request and comment webhooks",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            policy=_source_policy(source_cidrs),
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
        # A request without the header is refused (401) by API Gateway itself; the answer for a given
        # token value is cached, so the authorizer runs once per token per TTL.
        self.authorizer = apigw.RequestAuthorizer(
            self, "TokenAuthorizer", handler=authorizer,
            identity_sources=[apigw.IdentitySource.header("X-Gitlab-Token")],
            results_cache_ttl=cdk.Duration.minutes(5),
        )
        resource = self.api.root.resource_for_path(WEBHOOK_PATH)
        self.method = resource.add_method(
            "POST",
            apigw.LambdaIntegration(handler, proxy=True, allow_test_invoke=False),
            authorizer=self.authorizer,
            authorization_type=apigw.AuthorizationType.CUSTOM,
            request_validator=validator,
            request_models={"application/json": event_model},
            request_parameters={
                "method.request.header.X-Gitlab-Token": True,
                "method.request.header.X-Gitlab-Event": True,
            },
        )
        self.url = self.api.url_for_path(WEBHOOK_PATH)
        self.web_acl = _web_acl(self, api_name, rate_limit_per_5_minutes, source_cidrs)
        wafv2.CfnWebACLAssociation(self, "WebAclAssociation", resource_arn=self.api.deployment_stage.stage_arn,
                                   web_acl_arn=self.web_acl.attr_arn)
        cdk.Validations.of(self.api).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions::AwsSolutions-COG4",
            reason="GitLab webhooks cannot carry Cognito tokens; a REQUEST authorizer checks X-Gitlab-Token "
                   "against the webhook secret in constant time, behind WAF's per-source rate limit.",
        ))


def _source_policy(cidrs: list[str] | None) -> iam.PolicyDocument | None:
    """With GitLab's egress ranges: a resource policy that denies every other source address."""
    if not cidrs:
        return None
    invoke = "execute-api:/*"
    return iam.PolicyDocument(statements=[
        iam.PolicyStatement(effect=iam.Effect.ALLOW, principals=[iam.AnyPrincipal()],
                            actions=["execute-api:Invoke"], resources=[invoke]),
        iam.PolicyStatement(effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
                            actions=["execute-api:Invoke"], resources=[invoke],
                            conditions={"NotIpAddress": {"aws:SourceIp": list(cidrs)}}),
    ])


def _web_acl(scope: Construct, name: str, per_5_minutes: int, cidrs: list[str] | None) -> wafv2.CfnWebACL:
    """A regional web ACL: block a source above `per_5_minutes` requests; with `cidrs`, admit only them."""

    def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        return wafv2.CfnWebACL.VisibilityConfigProperty(cloud_watch_metrics_enabled=True, metric_name=metric,
                                                         sampled_requests_enabled=True)

    rules = [wafv2.CfnWebACL.RuleProperty(
        name="PerSourceRateLimit", priority=0,
        action=wafv2.CfnWebACL.RuleActionProperty(block={}),
        statement=wafv2.CfnWebACL.StatementProperty(rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
            limit=per_5_minutes, aggregate_key_type="IP", evaluation_window_sec=300)),
        visibility_config=visibility(f"{name}-rate"),
    )]
    default = wafv2.CfnWebACL.DefaultActionProperty(allow={})
    if cidrs:
        default = wafv2.CfnWebACL.DefaultActionProperty(block={})
        for version in ("IPV4", "IPV6"):
            listed = [c for c in cidrs if (":" in c) == (version == "IPV6")]
            if not listed:
                continue
            ip_set = wafv2.CfnIPSet(scope, f"GitLabSources{version}", scope="REGIONAL", ip_address_version=version,
                                    addresses=listed, description="GitLab webhook egress ranges")
            rules.append(wafv2.CfnWebACL.RuleProperty(
                name=f"GitLabSources{version}", priority=len(rules),
                action=wafv2.CfnWebACL.RuleActionProperty(allow={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    ip_set_reference_statement=wafv2.CfnWebACL.IPSetReferenceStatementProperty(arn=ip_set.attr_arn)),
                visibility_config=visibility(f"{name}-{version.lower()}-sources"),
            ))
    return wafv2.CfnWebACL(scope, "WebAcl", scope="REGIONAL", default_action=default, rules=rules,
                           visibility_config=visibility(name), name=name,
                           description="GUARD webhook: per-source rate limit, and GitLab ranges only when set")
