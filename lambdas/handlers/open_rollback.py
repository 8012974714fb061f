"""Task `OpenRollback` (.waitForTaskToken): the rollback MR; the webhook resumes the execution on merge.

Input:  {"run_id": str, "task_token": str, "reason": str | null (optional)}
Task result (what the execution receives):
  merged -> {"merge_commit_sha": str, "merge_request_url": str, "merged_by": str}  (webhook)
  closed -> error RollbackMergeRequestClosed                                      (webhook)
Lambda return value (logged only): {"status": "waiting_for_merge", "clusters", "versions", "merge_request_url"}.
Whether to open a rollback MR at all is decided by the state machine (`$.plan.rollback_mr`).
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.retry import with_lambda_budget
from guard.services.rollback import RollbackService

logger = Logger()


@logger.inject_lambda_context
@with_lambda_budget
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = RollbackService(runtime.config(), runtime.registry(), runtime.state(), runtime.failure_store(),
                              runtime.gitops_repo(), runtime.clock, log_warning=logger.warning)
    reason = event.get("reason")
    opened = service.open(str(event["run_id"]), str(event["task_token"]), str(reason) if reason else None)
    logger.info("rollback", extra={"status": opened.status, "merge_request": opened.merge_request_url})
    return opened.model_dump()
