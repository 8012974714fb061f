"""Task `Plan`: validate the execution input, read what the batch's clusters run (the registry is set
to it), plan the batch, take its lock."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.plan import BatchPlanner, parse_input

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = parse_input(event.get("input"))
    planner = BatchPlanner(runtime.config(), runtime.registry(), runtime.state(), runtime.clock,
                           own_account=runtime.own_account,
                           executions=StepFunctionsCallbacks(runtime.step_functions()),
                           observer=runtime.registry_observer(logger.warning))
    plan = planner.plan(request, run_id=str(event["execution_name"]), execution_arn=str(event["execution_arn"]))
    logger.info("planned", extra={"run_id": plan.run_id, "batch": plan.batch, "clusters": plan.clusters,
                                  "cluster_count": plan.cluster_count})
    return plan.payload()
