"""Task `AwaitDecision` (.waitForTaskToken): ask on the MR, wait for `/guard proceed|rollback`.

Input:  {"run_id": str, "task_token": str, "reason": str | null (optional)}
Task result (sent by the webhook on a Maintainer's comment): {"decision": "proceed" | "rollback", "by": str}.
No answer within the state's TimeoutSeconds (rollback.decision_timeout_hours) -> States.Timeout: roll back.
Lambda return value (logged only): {"merge_request_url": str, "reason": str}.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.retry import with_lambda_budget
from guard.services.decision import DecisionService

logger = Logger()


@logger.inject_lambda_context
@with_lambda_budget
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = runtime.config()
    service = DecisionService(runtime.state(), runtime.failure_store(), None, None, runtime.gitops_repo(),
                              runtime.clock, timeout_hours=cfg.rollback.decision_timeout_hours)
    reason = event.get("reason")
    asked = service.request(str(event["run_id"]), str(event["task_token"]), str(reason) if reason else None)
    logger.info("decision requested", extra={"merge_request": asked.merge_request_url})
    return asked.model_dump()
