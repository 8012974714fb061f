"""Task `PlanRollback`: a manual rollback input (seed `guard rollback --batch`) becomes a run to roll back.

Input:  {"execution_name": str, "execution_arn": str,
         "input": {"action": "rollback", "batch": str, "reason": str, "requested_by": str | null}}
Output: the one `Plan` (guard.core.run.Plan) with `rollback_to` {cluster: version} (the first clusters;
        the rollback record holds them all); `target_version`
        is the version being undone, `rollback_timeout_seconds` the rollback MR's wait, and
        `rollback_mr` is rollback.auto_create_mr (false ends at RollbackNotCreated).
Errors: InvalidInput, UnknownBatch, UnknownCluster, ConfigError (e.g. a cluster role outside aws.cluster_accounts),
        NothingToRollBack, BatchLocked.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.core.run import ManualRollbackInput
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.plan import BatchPlanner, parse_model

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = parse_model(ManualRollbackInput, event.get("input"), "rollback input")
    planner = BatchPlanner(runtime.config(), runtime.registry(), runtime.state(), runtime.clock,
                           failures=runtime.failure_store(), own_account=runtime.own_account,
                           executions=StepFunctionsCallbacks(runtime.step_functions()),
                           observer=runtime.registry_observer(logger.warning))
    plan = planner.plan_rollback(request, run_id=str(event["execution_name"]),
                                 execution_arn=str(event["execution_arn"]))
    logger.info("manual rollback planned", extra={"run_id": plan.run_id, "clusters": plan.clusters,
                                                  "cluster_count": plan.cluster_count})
    return plan.payload()
