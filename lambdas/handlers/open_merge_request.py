"""Task `OpenMergeRequest` (.waitForTaskToken): branch, commit, MR; the webhook resumes the execution."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.merge_request import MergeRequestService
from guard.vocabulary.events import NotificationEvent

from handlers import notify

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = MergeRequestService(runtime.config(), runtime.registry(), runtime.state(), runtime.gitops_repo(),
                                  runtime.clock)
    mr = service.open(str(event["run_id"]), str(event["task_token"]))
    logger.info("merge request open, waiting for merge", extra={"merge_request": mr.web_url})
    notify.send(str(event["run_id"]), NotificationEvent.WAITING_FOR_MERGE)
    return {"merge_request_url": mr.web_url}
