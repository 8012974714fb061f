"""EventBridge rule target: a batch execution ended (Step Functions "Execution Status Change").

Input:  the EventBridge event; `detail` is {executionArn, stateMachineArn, name, status, startDate,
        stopDate, input, output, error, cause} with status SUCCEEDED | FAILED | TIMED_OUT | ABORTED.
Output: {"run_id", "status", "action": "unknown_run" | "other_execution" | "recorded" | "cleaned", ...}
Errors: what the state table raises (TransientError ...): EventBridge retries, then the DLQ keeps the event.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.alarms import needs_person
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.ending import EndingService, ExecutionEnded
from guard.services.outcome import OutcomeRecorder

from handlers.notify import send

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ended = ExecutionEnded.model_validate(event.get("detail") or {})
    repo = runtime.gitops_repo_for_comments(logger.warning)
    outcomes = OutcomeRecorder(runtime.registry(), runtime.state(), repo, runtime.clock, log_warning=logger.warning,
                               observer=runtime.registry_observer(logger.warning))
    result = EndingService(runtime.state(), runtime.failure_store(), outcomes, notify=send, repo=repo,
                           needs_person=needs_person).ended(ended)
    logger.info("execution ended", extra=result.model_dump())
    return result.model_dump()
