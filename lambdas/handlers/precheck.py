"""Task `PrecheckCluster` (inside a Map): every precheck on one cluster plus its metric baseline."""

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
    report = service.run(str(event["run_id"]), str(event["cluster_id"]))
    return {"cluster_id": report.cluster_id, "passed": report.passed}
