"""Task `PrecheckChunk` (inside the Prechecks Map): every precheck plus the metric baseline of one chunk
of the run's clusters, concurrently (guard.services.fanout).

Input:  {"run_id", "chunk": <n>}, or {"run_id", "cluster_id"} (one cluster: executions started
        before chunking was deployed keep their own state machine version).
Output: {"chunk", "clusters", "passed"} counts, or {"cluster_id", "passed"}; reports are stored.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.precheck import PrecheckService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    service = PrecheckService(runtime.config(), runtime.registry(), runtime.state(), runtime.cluster_connector(),
                              runtime.metrics_provider(), runtime.clock, checks_dir=runtime.checks_dir(),
                              custom_checks=runtime.custom_checks(), repo=runtime.gitlab_reader_repo(),
                              charts=runtime.chart_repository())
    if "chunk" in event:
        return service.run_chunk(str(event["run_id"]), event["chunk"]).model_dump()
    report = service.run(str(event["run_id"]), str(event["cluster_id"]))
    return {"cluster_id": report.cluster_id, "passed": report.passed}
