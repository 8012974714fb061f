"""Task `Notify`: Slack and/or SNS per config. Never fails: a failed channel is logged and reported.

Input:  {"run_id": str, "event": "started" | "waiting_for_merge" | "needs_decision" | "succeeded" | "failed"
         | "rolled_back", "detail": str | null (optional)}
Output: {"event": str, "sent": [channel], "failed": [channel], "skipped": str | null}
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.notify.base import NotifyResult, NotifyService
from guard.outbound import redacted_errors, redacting_formatter
from guard.ports import Notifier
from guard.retry import with_lambda_budget
from guard.services.notification import notify_run
from guard.vocabulary.events import NotificationEvent

logger = Logger(logger_formatter=redacting_formatter())


def send(run_id: str, name: str, detail: str | None = None) -> dict[str, Any]:
    """Notify `name` for `run_id` on every configured channel; never raises (other handlers use it too)."""
    try:
        event = NotificationEvent(name)
    except ValueError:
        logger.warning("unknown notification event", extra={"event": name})
        return NotifyResult(event=name, sent=[], failed=[], skipped=f"unknown event {name!r}").model_dump()
    try:
        cfg = runtime.config()
        channels: list[Notifier] = runtime.notifiers()
        failures = runtime.failure_store()
        state = runtime.state()
        result = notify_run(NotifyService(channels, cfg.notifications.events), cfg, state, failures,
                            run_id, event, detail)
    except Exception as e:  # a notification must never fail the workflow, not even its setup
        logger.warning("notification not sent", extra={"event": name, "error": type(e).__name__})
        return NotifyResult(event=name, sent=[], failed=[], skipped=f"channels unavailable: {type(e).__name__}"
                            ).model_dump()
    logger.info("notified", extra=result.model_dump())
    return result.model_dump()


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    detail = event.get("detail")
    return send(str(event.get("run_id")), str(event.get("event")), str(detail) if detail else None)
