"""The tenant's custom checks, in a function of their own (invoked by Precheck).

Input:  {"cluster": <registry Cluster document>}
Output: {"results": [<HealthCheckResult>, ...]}

Its role reaches the clusters and reads the Datadog secret, nothing else: no table, no GitLab.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.core.models import Cluster
from guard.services.custom_checks import InProcessChecks

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cluster = Cluster.model_validate(event["cluster"])
    results = InProcessChecks(runtime.config().custom_checks, runtime.checks_dir()).run(cluster)
    return {"results": [r.model_dump(mode="json") for r in results]}
