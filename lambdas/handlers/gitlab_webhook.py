"""API Gateway `POST /webhooks/gitlab`: GitLab MR events resume the waiting execution;
"Note Hook" comments (`/guard proceed|rollback`) answer a waiting decision.

Never 5xx: GitLab does not redeliver, and it disables a hook that keeps failing. A request too
large is 413, one without the right token 401, a malformed one 400, one that is not ours 200.
A failure on GUARD's side (DynamoDB throttled, Step Functions unavailable, the secret unreadable)
is answered 200 "not applied", with the cause logged and the `WebhookDeliveryNotApplied` metric
counted: the delivery is left unmarked, so a resend (or the reconciler) applies it later.

Imports neither kubernetes, datadog nor openai: it must answer GitLab within a second.
python-gitlab is imported only when a comment needs a Maintainer check.
"""

import json
import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from guard import runtime
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.errors import InvalidInput, WebhookUnauthorized
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.decision import DecisionService
from guard.services.webhook import (
    MAX_BODY_BYTES,
    WebhookService,
    body_bytes,
    body_text,
    delivery_key,
    verify_token,
)
from guard.stores.deliveries import WebhookResult

logger = Logger(logger_formatter=redacting_formatter())
# The stack sets the namespace; the default keeps a flush from ever failing the answer without it.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "GUARD")
app = APIGatewayRestResolver()


def _json(status: int, message: str) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps({"message": message}))


@app.post("/webhooks/gitlab")
def gitlab_webhook() -> Response:
    # Read once: Powertools keeps the current event in one process-wide slot.
    event = app.current_event
    lower = {str(k).lower(): str(v) for k, v in (event.headers or {}).items()}
    try:
        raw = body_bytes(event.body, bool(event.is_base64_encoded))
        if raw is None:
            return _json(413, f"webhook body is larger than {MAX_BODY_BYTES} bytes")
        result = _handle(lower, raw)
    except WebhookUnauthorized as e:
        logger.warning("webhook rejected", extra={"reason": str(e)})
        return _json(401, "unauthorized")
    except InvalidInput as e:
        logger.warning("webhook refused", extra={"reason": str(e)})
        return _json(400, str(e))
    except Exception as e:
        # GUARD's side failed (everything a sender controls is refused above). The delivery is unmarked
        # (Deliveries deletes its record when applying raises), so a resend or the reconciler applies it.
        logger.exception("webhook delivery not applied", extra={"error": type(e).__name__})
        metrics.add_metric(name="WebhookDeliveryNotApplied", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()  # here, not by @log_metrics: most requests count nothing, and that would warn
        return _json(200, f"not applied: GUARD could not process this delivery now ({type(e).__name__}); "
                          "it will be applied on a resend or by the reconciler")
    logger.info("webhook handled", extra={"result": result.message})
    return _json(result.status, result.message)


def _handle(headers: dict[str, str], raw: bytes) -> WebhookResult:
    verify_token(runtime.secret(runtime.config().aws.secrets_manager.webhook_secret), headers.get("x-gitlab-token"))
    key = delivery_key(headers)
    text = body_text(raw)
    sfn = StepFunctionsCallbacks(runtime.step_functions())

    def decisions() -> DecisionService:  # built on first use: only a /guard comment needs GitLab
        return runtime.decision_service(sfn)

    service = WebhookService(runtime.state(), sfn, runtime.clock, decisions=decisions,
                             deliveries=runtime.deliveries())
    return service.handle(headers.get("x-gitlab-event"), key, text)


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
