"""Task `Soak`: one check of the run's soak; the state machine waits `wait_seconds` and checks again
until `done` (the length is read at every check: `guard monitor --soak-period` moves the end)."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.soak import SoakService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = SoakService(runtime.config(), runtime.state(), runtime.clock, log_warning=logger.warning)
    return service.check(str(event["run_id"]), int(event["planned_seconds"])).model_dump(mode="json")
