"""API Gateway REQUEST authorizer of the GitLab webhook: `X-Gitlab-Token` against the webhook secret.

Input: the authorizer event (`headers`, `methodArn`). Output: an Allow or Deny policy for the method.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.services.webhook_auth import TOKEN_HEADER, header, policy, token_matches

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    expected = runtime.secret(runtime.config().aws.secrets_manager.webhook_secret)
    allowed = token_matches(header(event.get("headers"), TOKEN_HEADER), expected)
    if not allowed:
        # Neither the token nor its length is logged: a near-miss would leak part of the secret.
        logger.warning("webhook request refused by the authorizer", extra={"source": (event.get(
            "requestContext") or {}).get("identity", {}).get("sourceIp")})
    return policy(allowed, str(event.get("methodArn", "")))
