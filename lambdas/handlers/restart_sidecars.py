"""Task `RestartSidecars`: one poll of the sidecar restart waves (rollout sequencing)."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.sidecars import SidecarRolloutService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = SidecarRolloutService(runtime.config(), runtime.registry(), runtime.state(),
                                    runtime.cluster_connector(), runtime.clock,
                                    markers=runtime.upgrade_markers(logger.warning))
    poll = service.poll(str(event["run_id"]), event.get("deadline"))
    logger.info("sidecar restart poll", extra=poll.model_dump())
    return poll.model_dump()
