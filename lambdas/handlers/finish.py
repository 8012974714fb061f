"""Tasks `RecordSuccess` / `RecordFailure` / `RecordPrechecked` (a dry run): record the outcome, set the
registry to what the clusters run, release the lock, tell the MR."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.finish import FinishService
from guard.vocabulary.outcomes import Outcome

logger = Logger(logger_formatter=redacting_formatter())
metrics = Metrics()


@metrics.log_metrics
@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    repo = runtime.gitops_repo_for_comments(logger.warning)
    service = FinishService(runtime.registry(), runtime.state(), repo, runtime.clock, log_warning=logger.warning,
                            observer=runtime.registry_observer(logger.warning), failures=runtime.failure_store())
    run_id = str(event["run_id"])
    if event.get("outcome") == Outcome.PRECHECKED:  # a dry run: its prechecks passed, nothing changed
        metrics.add_metric(name="BatchDryRunPrechecked", unit=MetricUnit.Count, value=1)
        return service.prechecked(run_id)
    if event.get("outcome") == Outcome.SUCCEEDED:
        metrics.add_metric(name="BatchUpgradeSucceeded", unit=MetricUnit.Count, value=1)
        return service.succeed(run_id, event.get("merge"))
    metrics.add_metric(name="BatchUpgradeFailed", unit=MetricUnit.Count, value=1)
    summary = service.fail(run_id, str(event.get("stage", "unknown")), event.get("error"))
    logger.info("batch failed", extra=summary.model_dump())
    return summary.model_dump()
