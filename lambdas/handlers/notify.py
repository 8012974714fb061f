"""Task `Notify`: Slack and/or SNS per config. Never fails: a failed channel is logged and reported.

Input:  {"run_id": str, "event": "started" | "waiting_for_merge" | "needs_decision" | "succeeded" | "failed"
         | "rolled_back", "detail": str | null (optional)}
Output: {"event": str, "sent": [channel], "failed": [channel], "skipped": str | null}
"""

from typing import Any, get_args

from aws_lambda_powertools import Logger
from guard import runtime
from guard.notify.base import Event, Notifier, NotifyResult, NotifyService
from guard.services.notification import notify_run

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = str(event.get("event"))
    if name not in get_args(Event):
        logger.warning("unknown notification event", extra={"event": name})
        return NotifyResult(event=name, sent=[], failed=[], skipped=f"unknown event {name!r}").model_dump()
    cfg = runtime.config()
    try:
        channels: list[Notifier] = runtime.notifiers()
        failures = runtime.failure_store()
        state = runtime.state()
    except Exception as e:  # a notification must never fail the workflow, not even its setup
        logger.warning("notification channels unavailable", extra={"error": type(e).__name__})
        return NotifyResult(event=name, sent=[], failed=[], skipped=f"channels unavailable: {type(e).__name__}"
                            ).model_dump()
    detail = event.get("detail")
    result = notify_run(NotifyService(channels, cfg.notifications.events), cfg, state, failures,
                        str(event.get("run_id")), name, str(detail) if detail else None)  # type: ignore[arg-type]
    logger.info("notified", extra=result.model_dump())
    return result.model_dump()
