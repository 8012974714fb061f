"""Shared DynamoDB helpers: error mapping and TTLs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from guard.errors import ExternalServiceError, GuardError, TransientError

T = TypeVar("T")

_TRANSIENT = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}


def mapped(operation: str, error: ClientError) -> GuardError:
    """The GUARD error for an AWS ClientError (throttling and 5xx are transient)."""
    code = error.response.get("Error", {}).get("Code", "")
    if code in _TRANSIENT:
        return TransientError(f"DynamoDB {operation}: {code}")
    return ExternalServiceError(f"DynamoDB {operation}: {code}: {error}")


def call(operation: str, fn: Callable[[], T]) -> T:
    """Run a DynamoDB call, mapping AWS errors to GUARD's error names."""
    try:
        return fn()
    except ClientError as e:
        raise mapped(operation, e) from e
    except BotoCoreError as e:
        raise TransientError(f"DynamoDB {operation}: {e}") from e


def is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def ttl(now: datetime, hours: float) -> int:
    """Epoch seconds `hours` after `now`, for the table's `expires_at` TTL attribute."""
    return int((now + timedelta(hours=hours)).timestamp())
