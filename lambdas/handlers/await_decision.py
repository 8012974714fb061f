"""Task `AwaitDecision` (.waitForTaskToken): ask on the MR, wait for `/guard proceed|rollback`;
and task `DecisionTimedOut`: the wait timed out, ask GitLab once more.

AwaitDecision input:  {"run_id": str, "task_token": str, "reason": str | null (optional)}
Task result (sent by the webhook or the reconciler on a Maintainer's comment):
  {"decision": "proceed" | "rollback", "by": str}.
Lambda return value (logged only): {"merge_request_url": str, "reason": str}.

DecisionTimedOut input: {"run_id": str, "action": "timed_out"} (after States.Timeout,
rollback.decision_timeout_hours). Returns {"decision", "by", "timed_out"}: a Maintainer's command found in the
notes (its webhook was lost) as if delivered; otherwise "rollback", by null, timed_out true, and the MR is
told no Maintainer answered. Raises when GitLab cannot be read (the state machine then rolls back).
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.decision import DecisionService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    hours = runtime.config().rollback.decision_timeout_hours
    if event.get("action") == "timed_out":
        # No Step Functions client: the token is dead, the answer is this task's result.
        service = DecisionService(runtime.state(), runtime.failure_store(), None, runtime.project_members(),
                                  runtime.gitlab_reader_repo(), runtime.clock, timeout_hours=hours,
                                  bot_usernames=runtime.config().gitlab.bot_usernames)
        taken = service.after_timeout(str(event["run_id"]))
        logger.info("decision wait timed out", extra=taken.model_dump())
        return taken.model_dump()
    service = DecisionService(runtime.state(), runtime.failure_store(), None, None, runtime.gitlab_reader_repo(),
                              runtime.clock, timeout_hours=hours, registry=runtime.registry())
    reason = event.get("reason")
    asked = service.request(str(event["run_id"]), str(event["task_token"]), str(reason) if reason else None)
    logger.info("decision requested", extra={"merge_request": asked.merge_request_url})
    return asked.model_dump()
