"""The Step Functions adapter: real boto3 against moto's Step Functions engine (a real
`.waitForTaskToken` wait), and against botocore's Stubber for the answers moto never gives
(throttling, 5xx, a refused output)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.errors import ExternalServiceError, TaskNoLongerWaiting, TransientError
from moto import mock_aws

from tests.adapter.failure_world import closed_port_url

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/guard-states"


def wait_until(condition: Callable[[], Any], what: str, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Waits:
    """A state machine with one `.waitForTaskToken` task; the token is published to SQS."""

    def __init__(self, timeout_seconds: int = 60) -> None:
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self._sqs = boto3.client("sqs", region_name=REGION)
        self._queue = self._sqs.create_queue(QueueName=f"tokens-{timeout_seconds}")["QueueUrl"]
        definition = {"StartAt": "AwaitMerge", "States": {"AwaitMerge": {
            "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {"QueueUrl": self._queue, "MessageBody": {"token.$": "$$.Task.Token"}},
            "TimeoutSeconds": timeout_seconds, "End": True}}}
        self._machine = self.sfn.create_state_machine(name=f"guard-wait-{timeout_seconds}", roleArn=ROLE,
                                                      definition=json.dumps(definition))["stateMachineArn"]

    def start(self, name: str) -> tuple[str, str]:
        """Start an execution; returns (execution ARN, the task token it waits on)."""
        arn = self.sfn.start_execution(stateMachineArn=self._machine, name=name)["executionArn"]
        message = wait_until(lambda: self._sqs.receive_message(QueueUrl=self._queue).get("Messages"), "the token")
        return arn, json.loads(message[0]["Body"])["token"]

    def status(self, arn: str) -> str:
        return str(self.sfn.describe_execution(executionArn=arn)["status"])


@pytest.fixture
def engine(monkeypatch) -> Iterator[None]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


def test_success_resumes_the_waiting_execution_with_the_output(engine):
    # GIVEN an execution waiting on a task token
    waits = Waits()
    arn, token = waits.start("merge-42")
    # WHEN the adapter answers it
    StepFunctionsCallbacks(waits.sfn).send_task_success(taskToken=token, output=json.dumps({"merged_by": "alice"}))
    # THEN the execution succeeds with that output
    wait_until(lambda: waits.status(arn) == "SUCCEEDED", "the execution to succeed")
    assert json.loads(waits.sfn.describe_execution(executionArn=arn)["output"]) == {"merged_by": "alice"}


def test_failure_fails_the_waiting_task_with_the_error_name(engine):
    waits = Waits()
    arn, token = waits.start("close-42")
    StepFunctionsCallbacks(waits.sfn).send_task_failure(taskToken=token, error="MergeRequestClosed",
                                                        cause="closed by alice")
    wait_until(lambda: waits.status(arn) == "FAILED", "the execution to fail")
    assert waits.sfn.describe_execution(executionArn=arn)["error"] == "MergeRequestClosed"


@pytest.mark.parametrize("answer", ["success", "failure"])
def test_an_unknown_token_is_task_no_longer_waiting(engine, answer):
    # GIVEN Step Functions knows no wait for this token
    callbacks = StepFunctionsCallbacks(boto3.client("stepfunctions", region_name=REGION))
    # WHEN the adapter answers it THEN the domain error says nothing waits (not a ClientError name)
    with pytest.raises(TaskNoLongerWaiting, match="InvalidToken"):
        if answer == "success":
            callbacks.send_task_success(taskToken="not-a-token", output="{}")
        else:
            callbacks.send_task_failure(taskToken="not-a-token", error="MergeRequestClosed", cause="closed")


def test_the_token_of_a_timed_out_wait_is_task_no_longer_waiting(engine):
    # GIVEN a wait that timed out before anyone merged
    waits = Waits(timeout_seconds=1)
    arn, token = waits.start("slow-merge")
    wait_until(lambda: waits.status(arn) == "FAILED", "the wait to time out")
    # WHEN the merge arrives late THEN the adapter says nothing waits any more
    with pytest.raises(TaskNoLongerWaiting):
        StepFunctionsCallbacks(waits.sfn).send_task_success(taskToken=token, output="{}")


# ---------------------------------------------------------------- answers moto never gives
def stubbed(code: str, status: int) -> StepFunctionsCallbacks:
    client = boto3.client("stepfunctions", region_name=REGION, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    stub = Stubber(client)
    stub.add_client_error("send_task_success", service_error_code=code, http_status_code=status,
                          expected_params={"taskToken": "token-42", "output": "{}"})
    stub.activate()
    return StepFunctionsCallbacks(client)


@pytest.mark.parametrize(("code", "status", "error"), [
    ("TaskTimedOut", 400, TaskNoLongerWaiting),
    ("TaskDoesNotExist", 400, TaskNoLongerWaiting),
    ("ThrottlingException", 400, TransientError),
    ("ServiceUnavailable", 503, TransientError),
    ("InternalFailure", 500, TransientError),
    ("InvalidOutput", 400, ExternalServiceError),
    ("AccessDeniedException", 400, ExternalServiceError),
])
def test_aws_error_codes_map_to_guard_errors(code, status, error):
    # GIVEN Step Functions answers SendTaskSuccess with `code`
    # WHEN the adapter sends THEN it raises the GUARD error Retry/Catch and services match on
    with pytest.raises(error, match=code):
        stubbed(code, status).send_task_success(taskToken="token-42", output="{}")


def test_an_unreachable_endpoint_is_transient():
    # GIVEN nothing listens where Step Functions should be
    client = boto3.client("stepfunctions", region_name=REGION, endpoint_url=closed_port_url().rsplit("/", 2)[0],
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1))
    # WHEN the adapter sends THEN the connection error is worth a retry
    with pytest.raises(TransientError, match="SendTaskFailure"):
        StepFunctionsCallbacks(client).send_task_failure(taskToken="token-42", error="MergeRequestClosed",
                                                         cause="closed")
