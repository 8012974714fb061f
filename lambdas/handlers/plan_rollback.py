"""Task `PlanRollback`: a manual rollback input (seed `guard rollback --batch`) becomes a run to roll back.

Input:  {"execution_name": str, "execution_arn": str,
         "input": {"action": "rollback", "batch": str, "reason": str, "requested_by": str | null}}
Output: {"run_id": str, "batch": str, "target_version": str (the version being undone),
         "clusters": [str], "rollback_to": {cluster: version}, "merge_timeout_seconds": int,
         "rollback_timeout_seconds": int (the same; the key the shared OpenRollback state reads),
         "rollback_mr": bool (rollback.auto_create_mr; false ends at RollbackNotCreated),
         "flux_poll_seconds": int}
Errors: InvalidInput, UnknownBatch, UnknownCluster, NothingToRollBack, BatchLocked.
"""

from typing import Any, Literal

from aws_lambda_powertools import Logger
from guard import runtime
from guard.errors import InvalidInput
from guard.services.rollback import plan_manual_rollback
from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = Logger()


class ManualRollbackInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["rollback"]
    batch: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=2_000)
    requested_by: str | None = None


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = ManualRollbackInput.model_validate(event.get("input"))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise InvalidInput(f"{where}: {first['msg']}") from None
    cfg = runtime.config()
    run = plan_manual_rollback(cfg, runtime.registry(), runtime.state(), runtime.failure_store(), runtime.clock,
                               run_id=str(event["execution_name"]), execution_arn=str(event["execution_arn"]),
                               batch=request.batch, reason=request.reason, requested_by=request.requested_by)
    logger.info("manual rollback planned", extra={"run_id": run.run_id, "clusters": run.clusters})
    return {"run_id": run.run_id, "batch": run.batch, "target_version": run.target_version, "clusters": run.clusters,
            "rollback_to": run.from_versions,
            "merge_timeout_seconds": int(cfg.rollback.merge_timeout_hours * 3600),
            "rollback_timeout_seconds": int(cfg.rollback.merge_timeout_hours * 3600),
            "rollback_mr": cfg.rollback.auto_create_mr,
            "flux_poll_seconds": cfg.validation.flux_poll_seconds}
