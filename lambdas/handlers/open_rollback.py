"""Task `OpenRollback` (.waitForTaskToken): the rollback MR; the webhook resumes the execution on merge;
and task `RollbackWaitTimedOut`: that wait timed out, ask GitLab once more.

OpenRollback input:  {"run_id": str, "task_token": str, "reason": str | null (optional)}
Task result (what the execution receives):
  merged -> {"merge_commit_sha": str, "merge_request_url": str, "merged_by": str}  (webhook, reconciler)
  closed -> error RollbackMergeRequestClosed                                      (webhook, reconciler)
Lambda return value (in the TaskSubmitted event, so bounded): {"status": "waiting_for_merge", "clusters" (the first
10), "cluster_count", "versions" (theirs), "merge_request_url"}.
Whether to open a rollback MR at all is decided by the state machine (`$.plan.rollback_mr`).

RollbackWaitTimedOut input: {"run_id": str, "action": "timed_out"} (after States.Timeout,
rollback.merge_timeout_hours). Merged after all -> the merge fields above (verification goes on); closed ->
RollbackMergeRequestClosed; still open -> left open with a comment, RollbackNeedsPerson counted, error
RollbackMergeRequestTimeout.

GUARD never closes a rollback MR. Whenever it leaves one open without watching it (here, or when its task
token could not be stored: TaskTokenNotStored), the `RollbackNeedsPerson` metric (dimension tenant) raises
the stack's alarm.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.alarms import needs_person
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.rollback import RollbackService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = RollbackService(runtime.config(), runtime.registry(), runtime.state(), runtime.failure_store(),
                              runtime.gitops_repo(), runtime.clock, log_warning=logger.warning,
                              needs_person=needs_person, markers=runtime.upgrade_markers(logger.warning))
    if event.get("action") == "timed_out":
        merged = service.after_timeout(str(event["run_id"]))
        logger.info("rollback merged after its wait timed out", extra={"merge_request": merged.merge_request_url})
        return merged.model_dump()
    reason = event.get("reason")
    opened = service.open(str(event["run_id"]), str(event["task_token"]), str(reason) if reason else None)
    logger.info("rollback", extra={"status": opened.status, "merge_request": opened.merge_request_url})
    return opened.model_dump()
