"""The `RollbackNeedsPerson` metric the stack's alarm watches (infra/alarms.py): counted whenever
GUARD leaves a rollback merge request open without watching it. One place, so every function
counts it with the same namespace, service and tenant dimensions the alarm matches."""

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from guard import runtime
from guard.outbound import redacting_formatter
from guard.vocabulary.metrics import NAMESPACE, ROLLBACK_NEEDS_PERSON, SERVICE, TENANT_DIMENSION

logger = Logger(logger_formatter=redacting_formatter())
# The alarm matches the service dimension exactly: set it here, not only through the env.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE, service=SERVICE)


def needs_person(reason: str) -> None:
    """Count RollbackNeedsPerson now (flushed at once: the invocation may fail right after)."""
    logger.warning("a rollback merge request needs a person", extra={"reason": reason})
    metrics.add_dimension(name=TENANT_DIMENSION, value=runtime.config().tenant)
    metrics.add_metric(name=ROLLBACK_NEEDS_PERSON, unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()
