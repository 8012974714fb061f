"""Webhook deliveries applied at most once: one design for merge/close events and `/guard` comments.

Rules
- The key is the delivery's `Idempotency-Key` (GitLab keeps it across a manual "Resend Request";
  GitLab never redelivers by itself), else its `X-Gitlab-Event-UUID` (new on every delivery, a
  resend included); `guard.services.webhook.delivery_key` picks it.
- Before applying, an in-progress record is written (conditional put). After applying, it
  becomes completed and keeps the answer. When applying raises, the record is deleted, so a
  resend (or the reconciler) applies the delivery: a failure never marks it done.
- The same key while the first copy is applied → 200 "in progress". The same key after it was
  applied → 200 "duplicate", with the first answer; nothing is applied again.
- An answer with `final=False` (nothing done that a later resend could not do better: nobody
  waited on the MR yet) is not recorded either.
- A delivery without a key is applied without dedupe (see `delivery_key` for why).

Why Powertools' idempotency utility rather than a hand-written conditional put: it already
implements these states (in progress with an expiry, completed with the stored answer, deleted
on an exception) against DynamoDB, and it is cheap here. Measured on the shared 2-core build
machine (`python -X importtime`, and fresh interpreters timed with perf_counter):
- `aws_lambda_powertools.utilities.idempotency` + its DynamoDB persistence layer, imported after
  the handler's own imports (event_handler) and boto3: ~3 ms.
- Imported cold without boto3: ~83 ms median, ~78 ms of which is boto3 itself, which the webhook
  needs on its first request anyway. The handler module's import now includes boto3, but module
  import + building its boto3 clients is unchanged: 339 ms before, 334 ms after (min of 15).
So the ~360 ms that LOCAL-ENGINE.md gives for event_handler + idempotency is almost all
event_handler and boto3, both paid already.

Records live in the state table: pk `DELIVERY`, sk `DELIVERY#<md5 of the key>`, `status`,
`data` (the first answer), `expires_at` (the table's TTL) and `in_progress_expiration` (ms).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from guard.errors import GuardError, TransientError
from guard.stores.dynamo import mapped

_PREFIX = "DELIVERY"


class WebhookResult(BaseModel):
    """The answer to one webhook delivery (what GitLab shows), kept as the delivery's outcome."""

    status: int
    message: str
    # False: nothing was applied that a resend could not apply later (nobody waited yet); not recorded.
    final: bool = Field(default=True, exclude=True)


class _InProgressBudget:
    """What Powertools reads the in-progress expiry from (in place of the Lambda context).

    A fixed bound rather than the invocation's real context: the webhook function times out
    after 15 s and API Gateway after 29 s, so after 30 s the first copy is surely dead and a
    resend may apply. Registering each invocation's context on a config shared by invocations
    would be request state in a global.
    """

    def __init__(self, seconds: int) -> None:
        self._ms = seconds * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self._ms


class _NotRecorded(Exception):
    """Carries a non-final answer out of the idempotent call; Powertools deletes the record on any exception."""

    def __init__(self, result: WebhookResult) -> None:
        super().__init__(result.message)
        self.result = result


def _replayed(response: Any, idempotent_data: DataRecord) -> dict[str, Any]:
    first = response.get("message", "?") if isinstance(response, dict) else "?"
    return {"status": 200, "message": f"duplicate delivery ignored (already applied: {first})"}


@lru_cache(maxsize=8)
def _powertools(client: Any, table_name: str, keep_seconds: int,
                in_progress_seconds: int) -> tuple[DynamoDBPersistenceLayer, IdempotencyConfig]:
    # One persistence layer per config, built once per client: the layer keeps the first config it
    # is given, and each construction registers another user-agent hook on the shared client.
    config = IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=keep_seconds,
                               lambda_context=cast(Any, _InProgressBudget(in_progress_seconds)),
                               response_hook=_replayed)
    layer = DynamoDBPersistenceLayer(table_name, boto3_client=client, key_attr="pk", sort_key_attr="sk",
                                     static_pk_value=_PREFIX, expiry_attr="expires_at")
    return layer, config


def _store_error(error: Exception) -> GuardError:
    cause = error.__cause__
    if isinstance(cause, ClientError):
        return mapped("webhook delivery record", cause)
    if isinstance(cause, BotoCoreError):
        return TransientError(f"DynamoDB webhook delivery record: {cause}")
    # The record changed under us (or an unexpected failure): a resend settles it.
    return TransientError(f"webhook delivery record: {error}")


class Deliveries:
    """Applies each webhook delivery once. `client` is a boto3 DynamoDB client; `table_name` the state table."""

    def __init__(self, client: Any, table_name: str, *, keep_hours: float = 72, in_progress_seconds: int = 30) -> None:
        self._layer, self._config = _powertools(client, table_name, int(keep_hours * 3600), in_progress_seconds)

    def once(self, key: str | None, apply: Callable[[], WebhookResult]) -> WebhookResult:
        """`apply()`'s answer the first time `key` is seen; "in progress" / "duplicate" for a copy.

        Exceptions from `apply` propagate and leave the delivery unmarked. Failures of the
        record itself are TransientError (throttling, 5xx) or ExternalServiceError.
        """
        if not key:
            return apply()

        def recorded(delivery: dict[str, str]) -> dict[str, Any]:
            result = apply()
            if not result.final:
                raise _NotRecorded(result)
            return result.model_dump()

        # Decorated per call: the wrapped function closes over this request's `apply`.
        run = idempotent_function(recorded, data_keyword_argument="delivery", config=self._config,
                                  persistence_store=self._layer, key_prefix=_PREFIX)
        try:
            return WebhookResult.model_validate(run(delivery={"key": key}))
        except _NotRecorded as e:
            return e.result
        except IdempotencyAlreadyInProgressError:
            return WebhookResult(status=200, message="delivery in progress: another copy is being applied")
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as e:
            raise _store_error(e) from e
