"""Task `Conclude`: the batch verdict from the stored per-cluster verdicts."""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.core.run import VerdictOutcome
from guard.digest import bounded
from guard.errors import ValidationFailed, ValidationInconclusive
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.validate import conclude, judge_settings

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    state, run_id = runtime.state(), str(event["run_id"])
    markers = runtime.upgrade_markers(logger.warning)
    try:
        verdicts = conclude(state, run_id, judge_settings(runtime.config().validation))
    except (ValidationFailed, ValidationInconclusive) as e:
        outcome = VerdictOutcome.FAIL if isinstance(e, ValidationFailed) else VerdictOutcome.INCONCLUSIVE
        markers.verdict(state.get_run(run_id), outcome, str(e))  # best effort: never hides the verdict
        raise
    markers.verdict(state.get_run(run_id), VerdictOutcome.PASS, "Every cluster passed.")
    # The task's result is state data (256 KB): the first clusters and the count; the verdicts are stored.
    return {"batch_verdict": "pass", "clusters": bounded([v.cluster_id for v in verdicts]),
            "cluster_count": len(verdicts)}
