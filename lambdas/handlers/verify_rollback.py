"""Task `VerifyRollback` (poll): clusters back on their previous version; then the outcome is recorded.

Input:  {"run_id": str, "deadline": str | null (from the previous poll), "merge": {...} | null (optional)}
Output: {"done": bool, "deadline": str, "waiting_on": [str],
         "status": "rolled_back" | "rollback_failed" | null, "error": "RolledBack" | "RollbackFailed" | null,
         "cause": str | null, "merge_request_url": str | null}
When done the run, registry history and batch result are written, the lock released and the MRs told;
the execution should then fail with `error` / `cause` (no RecordFailure: it would overwrite the outcome).
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.rollback import RollbackService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    repo = runtime.gitops_repo_for_comments(logger.warning)
    service = RollbackService(runtime.config(), runtime.registry(), runtime.state(), runtime.failure_store(), repo,
                              runtime.clock, connector=runtime.cluster_connector(), log_warning=logger.warning,
                              observer=runtime.registry_observer(logger.warning))
    deadline = event.get("deadline")
    merge = event.get("merge")
    poll = service.verify(str(event["run_id"]), str(deadline) if deadline else None,
                          merge if isinstance(merge, dict) else None)
    logger.info("rollback poll", extra={"done": poll.done, "status": poll.status, "waiting_on": poll.waiting_on})
    return poll.model_dump()
