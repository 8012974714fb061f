"""Where the tenant's custom checks run: in a function of their own, or (locally) in this process.

Custom check code is the tenant's, imported from its checks folder. In Precheck's process it would
run with Precheck's role (state-table writes, registry reads) beside its Datadog keys. In
production it runs in the CustomChecks function, whose role may only reach the clusters and read
the Datadog secret (infra/functions.py); Precheck sends it the cluster document and reads back the
results. Whatever goes wrong there is no answer about the cluster: the check is inconclusive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from guard.checks.custom import load_custom_checks, run_custom_checks
from guard.config.models import CustomCheckConfig
from guard.core.models import Cluster, HealthCheckResult

CHECK_NAME = "custom_checks"


class CustomChecks(Protocol):
    """Runs every configured custom check on one cluster."""

    def run(self, cluster: Cluster) -> list[HealthCheckResult]:
        """One result per check (a check that cannot run is FAIL or INCONCLUSIVE, never missing)."""
        ...


class InProcessChecks:
    """The checks imported and run here (the CustomChecks function itself, and the local rehearsal's default)."""

    def __init__(self, specs: list[CustomCheckConfig], folder: Path) -> None:
        self._specs = specs
        self._folder = folder

    def run(self, cluster: Cluster) -> list[HealthCheckResult]:
        return run_custom_checks(load_custom_checks(self._specs, self._folder), cluster)


class LambdaChecks:
    """The checks run by the CustomChecks function; `client` is a boto3 Lambda client."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self._function_name = function_name

    def run(self, cluster: Cluster) -> list[HealthCheckResult]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke(FunctionName=self._function_name, InvocationType="RequestResponse",
                                           Payload=json.dumps({"cluster": cluster.model_dump(mode="json")}).encode())
            payload = json.loads(response["Payload"].read() or b"null")
        except (ClientError, BotoCoreError, ValueError) as e:
            return [HealthCheckResult.inconclusive(cluster.cluster_id, CHECK_NAME,
                                                   f"the custom checks function could not be invoked: {e}")]
        if response.get("FunctionError"):
            kind = payload.get("errorType", "error") if isinstance(payload, dict) else "error"
            return [HealthCheckResult.inconclusive(cluster.cluster_id, CHECK_NAME,
                                                   f"the custom checks function failed ({kind})")]
        try:
            results = [HealthCheckResult.model_validate(r) for r in payload["results"]]
        except (TypeError, KeyError, ValidationError) as e:
            return [HealthCheckResult.inconclusive(cluster.cluster_id, CHECK_NAME,
                                                   f"the custom checks function answered something else: "
                                                   f"{type(e).__name__}")]
        # The checks' code is the tenant's: a result about another cluster is not this cluster's answer.
        return [r if r.cluster_id == cluster.cluster_id else HealthCheckResult.inconclusive(
            cluster.cluster_id, r.check_name[:100], f"answered for cluster {r.cluster_id[:100]!r}")
            for r in results]
