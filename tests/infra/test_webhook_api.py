"""The webhook API survives a flood: WAF's per-source rate limit, a token authorizer, sources if configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Match, Template
from guard.services.webhook_auth import header, policy, token_matches

from infra.application import BUILD_DIR_CONTEXT, build_app

from .conftest import FIXTURES
from .test_stack import _function_id

pytestmark = pytest.mark.infra


def test_waf_blocks_a_source_above_its_rate_and_guards_the_stage(alpha: Template) -> None:
    # GIVEN tenant alpha (no source ranges configured) WHEN synthesized
    # THEN a regional web ACL blocks any one address above the configured rate per 5 minutes
    alpha.has_resource_properties("AWS::WAFv2::WebACL", {
        "Scope": "REGIONAL",
        "DefaultAction": {"Allow": {}},
        "Rules": [Match.object_like({
            "Name": "PerSourceRateLimit",
            "Action": {"Block": {}},
            "Statement": {"RateBasedStatement": Match.object_like({"Limit": 300, "AggregateKeyType": "IP"})},
        })],
    })
    # AND it is associated with the webhook API's stage
    acl = next(iter(alpha.find_resources("AWS::WAFv2::WebACL")))
    association = next(iter(alpha.find_resources("AWS::WAFv2::WebACLAssociation").values()))["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl, "Arn"]}
    stage = next(iter(alpha.find_resources("AWS::ApiGateway::Stage")))
    assert "/restapis/" in json.dumps(association["ResourceArn"])
    assert {"Ref": stage} in association["ResourceArn"]["Fn::Join"][1]


def test_the_webhook_method_needs_the_token_authorizer_which_caches_per_token(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized THEN the POST method is authorized by a REQUEST authorizer
    method = next(m for m in alpha.find_resources("AWS::ApiGateway::Method").values()
                  if m["Properties"]["HttpMethod"] == "POST")["Properties"]
    assert method["AuthorizationType"] == "CUSTOM"
    authorizer = alpha.find_resources("AWS::ApiGateway::Authorizer")
    assert method["AuthorizerId"] == {"Ref": next(iter(authorizer))}
    props = next(iter(authorizer.values()))["Properties"]
    # AND the authorizer keys its cached answer on X-Gitlab-Token and runs the authorizer function
    assert props["Type"] == "REQUEST"
    assert props["IdentitySource"] == "method.request.header.X-Gitlab-Token"
    assert props["AuthorizerResultTtlInSeconds"] == 300
    assert _function_id(alpha, "WebhookAuthorizer") in json.dumps(props["AuthorizerUri"])


def test_configured_gitlab_ranges_are_the_only_sources(tmp_path: Path) -> None:
    # GIVEN beta with GitLab's egress ranges configured
    config = tmp_path / "beta.yaml"
    config.write_text((FIXTURES / "beta.yaml").read_text() + "\ngitlab:\n  webhook_source_cidrs: "
                      "['34.74.90.64/28', '2600:1900:4000::/44']\n")
    app = build_app({"tenants": [str(config)], "aws:cdk:bundling-stacks": [], BUILD_DIR_CONTEXT: str(tmp_path)},
                    outdir=str(tmp_path / "out"))
    template = Template.from_json(app.synth().get_stack_by_name("Guard-beta").template)
    # WHEN synthesized (cdk-nag on) THEN WAF blocks by default and admits only those ranges
    template.has_resource_properties("AWS::WAFv2::WebACL", {"DefaultAction": {"Block": {}}})
    template.has_resource_properties("AWS::WAFv2::IPSet", {"Addresses": ["34.74.90.64/28"],
                                                           "IPAddressVersion": "IPV4"})
    template.has_resource_properties("AWS::WAFv2::IPSet", {"Addresses": ["2600:1900:4000::/44"],
                                                           "IPAddressVersion": "IPV6"})
    # AND the API's resource policy denies every other source address
    policy_doc = json.dumps(next(iter(template.find_resources("AWS::ApiGateway::RestApi").values()))
                            ["Properties"]["Policy"])
    assert '"Effect": "Deny"' in policy_doc and "NotIpAddress" in policy_doc and "34.74.90.64/28" in policy_doc
    # AND every WAF description is one CloudFormation accepts (no quotes or parentheses: F3031 fails the deploy)
    from .test_tenants import WAF_DESCRIPTION
    descriptions = [r["Properties"]["Description"] for kind in ("AWS::WAFv2::WebACL", "AWS::WAFv2::IPSet")
                    for r in template.find_resources(kind).values()]
    assert len(descriptions) == 3 and all(WAF_DESCRIPTION.match(d) for d in descriptions), descriptions


@pytest.mark.parametrize(("received", "allowed"), [
    ("s3cret-token", True), ("s3cret-tokem", False), ("", False), (None, False), ("s3cret-token" * 100, False)])
def test_the_authorizer_compares_the_token_with_the_secret(received: str | None, allowed: bool) -> None:
    # GIVEN the webhook secret WHEN a request's token is checked THEN only the exact secret is allowed
    assert token_matches(received, "s3cret-token") is allowed
    # AND an empty secret allows nothing
    assert token_matches("", "") is False


def test_the_authorizer_answers_with_a_policy_for_the_method() -> None:
    # GIVEN headers in any case WHEN read and answered THEN the policy allows or denies exactly that method
    assert header({"X-GitLab-Token": "t"}, "x-gitlab-token") == "t"
    arn = "arn:aws:execute-api:eu-west-1:111122223333:abc/prod/POST/webhooks/gitlab"
    assert policy(False, arn)["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": arn}]
    assert policy(True, arn)["policyDocument"]["Statement"][0]["Effect"] == "Allow"
