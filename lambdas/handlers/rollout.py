"""Tasks of the rollout state machine: `start`, `claim`, `record`, `finish` (field `action`)."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.errors import InvalidInput
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.rollout.service import RolloutService, parse_rollout_input, rollout_summary

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = RolloutService(runtime.config(), runtime.registry(), runtime.state(), runtime.rollouts(),
                             runtime.clock)
    action = event.get("action")
    if action == "start":
        request = parse_rollout_input(event.get("input"))
        record = service.start(request, rollout_id=str(event["execution_name"]),
                               execution_arn=str(event["execution_arn"]))
        logger.info("rollout planned", extra={"rollout_id": record.rollout_id, "waves": record.waves})
        return {**service.map_items(record), "plan": rollout_summary(record)["batches"]}
    if action == "claim":
        return service.claim(str(event["rollout_id"]), str(event["batch"]))
    if action == "record":
        record = service.record_wave(str(event["rollout_id"]), list(event.get("results") or []))
        return {"rollout_id": record.rollout_id}
    if action == "finish":
        return service.finish(str(event["rollout_id"]))
    raise InvalidInput(f"unknown rollout action {action!r}")
