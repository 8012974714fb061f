"""Task `ValidateChunk` (inside the Validate Map): judge one chunk of the run's clusters against their
baselines, concurrently (guard.services.fanout).

Input:  {"run_id", "chunk": <n>}, or {"run_id", "cluster_id"} (one cluster: executions started
        before chunking was deployed keep their own state machine version).
Output: {"chunk", "clusters", "passed", "failed", "inconclusive"} counts, or {"cluster_id",
        "verdict"}; the verdicts are stored.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.validate import ValidationService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = ValidationService(runtime.config(), runtime.registry(), runtime.state(), runtime.cluster_connector(),
                                runtime.metrics_provider(), runtime.clock)
    if "chunk" in event:
        counts = service.validate_chunk(str(event["run_id"]), event["chunk"])
        logger.info("chunk validated", extra=counts.model_dump())
        return counts.model_dump()
    verdict = service.validate(str(event["run_id"]), str(event["cluster_id"]))
    logger.info("verdict", extra={"cluster_id": verdict.cluster_id, "summary": verdict.summary()})
    return {"cluster_id": verdict.cluster_id, "verdict": verdict.outcome.value}
