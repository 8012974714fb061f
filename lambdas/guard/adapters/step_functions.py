"""Step Functions task callbacks on the boto3 `stepfunctions` client, with AWS error codes
mapped to GUARD's errors so services catch domain errors, never SDK class names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from guard.errors import ExternalServiceError, GuardError, TaskNoLongerWaiting, TransientError
from guard.ports import ExecutionStatus

# SendTaskSuccess/SendTaskFailure codes meaning "nothing waits on this token any more":
# the wait timed out or its execution ended (TaskTimedOut), the task is gone (TaskDoesNotExist),
# or the token is malformed or unknown, which is also what an answered token may give (InvalidToken).
_NO_LONGER_WAITING = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
_THROTTLED = frozenset({"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
                        "KmsThrottlingException"})


def mapped(operation: str, error: ClientError) -> GuardError:
    """The GUARD error for a Step Functions ClientError (throttling and 5xx are transient)."""
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _NO_LONGER_WAITING:
        return TaskNoLongerWaiting(f"Step Functions {operation}: {code}")
    if code in _THROTTLED or status >= 500:
        return TransientError(f"Step Functions {operation}: {code or status}")
    return ExternalServiceError(f"Step Functions {operation}: {code}: {error}")


class StepFunctionsCallbacks:
    """`guard.ports.TaskCallbacks` and `guard.ports.Executions` on a boto3 `stepfunctions` client
    (built at the handler edge)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def send_task_success(self, *, taskToken: str, output: str) -> None:
        """Resume the execution waiting on `taskToken` with `output` (JSON) as the task result."""
        self._call("SendTaskSuccess", lambda: self._client.send_task_success(taskToken=taskToken, output=output))

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> None:
        """Fail the task waiting on `taskToken` with `error` (what Catch matches) and `cause`."""
        self._call("SendTaskFailure",
                   lambda: self._client.send_task_failure(taskToken=taskToken, error=error, cause=cause))

    def describe_execution(self, execution_arn: str) -> ExecutionStatus:
        """`guard.ports.Executions`: the execution's status; GONE when Step Functions does not know it."""
        try:
            described = self._client.describe_execution(executionArn=execution_arn)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") == "ExecutionDoesNotExist":
                return ExecutionStatus(execution_arn=execution_arn, status="GONE")
            raise mapped("DescribeExecution", e) from e
        except BotoCoreError as e:
            raise TransientError(f"Step Functions DescribeExecution: {e}") from e
        return ExecutionStatus(execution_arn=execution_arn, status=str(described["status"]),
                               stop_date=described.get("stopDate"))

    @staticmethod
    def _call(operation: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except ClientError as e:
            raise mapped(operation, e) from e
        except BotoCoreError as e:  # connection refused, read timeout: worth another try
            raise TransientError(f"Step Functions {operation}: {e}") from e
