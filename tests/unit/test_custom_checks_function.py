"""Precheck runs the tenant's custom checks in their own function and reads back only answers about its cluster."""

from __future__ import annotations

import io
import json
from typing import Any

from botocore.exceptions import ClientError
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.services.custom_checks import LambdaChecks

CLUSTER = Cluster(cluster_id="eks-dev-1", batch_id="dev-1", environment="dev", region="us-east-1",
                  gitlab_project="platform/istio-fleet", flux_config_path="clusters/eks-dev-1/istio/helmrelease.yaml",
                  current_istio_version="1.19.3")


class FakeLambda:
    """Plays lambda:Invoke: records the request and answers what the test set."""

    def __init__(self, answer: Any = None, function_error: str | None = None, fail: bool = False) -> None:
        self.answer, self.function_error, self.fail = answer, function_error, fail
        self.requests: list[dict[str, Any]] = []

    def invoke(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if self.fail:
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}, "Invoke")
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.answer).encode())}
        if self.function_error:
            response["FunctionError"] = self.function_error
        return response


def result(cluster_id: str = "eks-dev-1", status: CheckStatus = CheckStatus.PASS) -> dict[str, Any]:
    return HealthCheckResult(cluster_id=cluster_id, check_name="database_connectivity", status=status,
                             message="ok").model_dump(mode="json")


def test_the_cluster_goes_to_the_function_and_its_results_come_back() -> None:
    # GIVEN the function answering one passing check
    client = FakeLambda({"results": [result()]})
    # WHEN Precheck's runner runs the checks on a cluster
    found = LambdaChecks(client, "guard-alpha-custom-checks").run(CLUSTER)
    # THEN the function got the cluster document, synchronously, and its result is returned
    request = client.requests[0]
    assert request["FunctionName"] == "guard-alpha-custom-checks" and request["InvocationType"] == "RequestResponse"
    assert json.loads(request["Payload"])["cluster"]["cluster_id"] == "eks-dev-1"
    assert [(r.check_name, r.status) for r in found] == [("database_connectivity", CheckStatus.PASS)]


def test_a_failed_or_unreachable_function_is_inconclusive_never_a_pass() -> None:
    # GIVEN a function that raised, and one that could not be invoked
    for client in (FakeLambda({"errorType": "ImportError", "errorMessage": "x"}, function_error="Unhandled"),
                   FakeLambda(fail=True), FakeLambda({"unexpected": 1})):
        # WHEN the checks run THEN the answer is one inconclusive result that says why
        [found] = LambdaChecks(client, "f").run(CLUSTER)
        assert found.status == CheckStatus.INCONCLUSIVE and not found.passed
        assert found.check_name == "custom_checks"


def test_an_answer_about_another_cluster_is_not_this_clusters_answer() -> None:
    # GIVEN tenant code that reports a pass for a different cluster
    client = FakeLambda({"results": [result("eks-prod-1")]})
    # WHEN the checks run THEN that result counts as inconclusive for this cluster
    [found] = LambdaChecks(client, "f").run(CLUSTER)
    assert found.cluster_id == "eks-dev-1" and found.status == CheckStatus.INCONCLUSIVE
