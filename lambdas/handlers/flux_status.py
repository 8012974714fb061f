"""Task `CheckFluxSync`: one poll of every cluster's HelmRelease and istiod."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.flux import FluxSyncService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = FluxSyncService(runtime.config(), runtime.registry(), runtime.state(), runtime.cluster_connector(),
                              runtime.clock, markers=runtime.upgrade_markers(logger.warning))
    poll = service.poll(str(event["run_id"]), event.get("deadline"))
    if not poll.synced:
        logger.info("waiting for Flux", extra={"waiting_on": poll.waiting_on})
    return poll.model_dump()
