"""API Gateway `POST /webhooks/gitlab`: GitLab MR events resume the waiting execution;
"Note Hook" comments (`/guard proceed|rollback`) answer a waiting decision.

Imports neither kubernetes, datadog nor openai: it must answer GitLab within a second.
python-gitlab is imported only when a comment needs a Maintainer check.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from guard import runtime
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.errors import InvalidInput, WebhookUnauthorized
from guard.services.decision import DecisionService
from guard.services.webhook import WebhookService, delivery_key, verify_token

logger = Logger()
app = APIGatewayRestResolver()


def _json(status: int, message: str) -> Response:
    import json

    return Response(status_code=status, content_type="application/json", body=json.dumps({"message": message}))


@app.post("/webhooks/gitlab")
def gitlab_webhook() -> Response:
    # Read once: Powertools keeps the current event in one process-wide slot.
    event = app.current_event
    lower = {k.lower(): v for k, v in (event.headers or {}).items()}
    try:
        verify_token(runtime.secret(runtime.config().aws.secrets_manager.webhook_secret), lower.get("x-gitlab-token"))
    except WebhookUnauthorized as e:
        logger.warning("webhook rejected", extra={"reason": str(e)})
        return _json(401, "unauthorized")
    sfn = StepFunctionsCallbacks(runtime.step_functions())

    def decisions() -> DecisionService:
        cfg = runtime.config()
        return DecisionService(runtime.state(), runtime.failure_store(), sfn, runtime.project_members(),
                               runtime.gitops_repo(), runtime.clock,
                               timeout_hours=cfg.rollback.decision_timeout_hours)

    service = WebhookService(runtime.state(), sfn, runtime.clock, decisions=decisions,
                             deliveries=runtime.deliveries())
    try:
        result = service.handle(lower.get("x-gitlab-event"), delivery_key(lower), event.body or "")
    except InvalidInput as e:
        return _json(400, str(e))
    logger.info("webhook handled", extra={"result": result.message})
    return _json(result.status, result.message)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
