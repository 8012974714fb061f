"""The webhook's API Gateway authorizer: a request without GitLab's secret never reaches the webhook function.

API Gateway caches the answer per `X-Gitlab-Token` value (infra/webhook_api.py), so GitLab's own
deliveries are let through from the cache while a flood of guessed tokens costs only this small
function (with WAF's per-address rate limit in front of it). The webhook function checks the
token again: the authorizer is a gate, not the only check.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

TOKEN_HEADER = "x-gitlab-token"
# A GitLab secret token is at most 255 characters; a longer header is refused without comparing.
MAX_TOKEN_CHARS = 1024


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """The value of header `name` (HTTP header names are case-insensitive), or None."""
    for key, value in (headers or {}).items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return None


def token_matches(received: str | None, expected: str) -> bool:
    """Constant-time comparison of the received token with the secret; never true for an empty secret."""
    if not expected or received is None or len(received) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(expected.encode(), received.encode("utf-8", "surrogatepass"))


def policy(allowed: bool, method_arn: str) -> dict[str, Any]:
    """The IAM policy API Gateway expects from a REQUEST authorizer: invoke `method_arn`, or deny it (403)."""
    return {
        "principalId": "gitlab" if allowed else "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow" if allowed else "Deny",
                           "Resource": method_arn}],
        },
    }
