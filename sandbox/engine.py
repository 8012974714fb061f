"""Run the real ASL locally: moto's Step Functions engine in server mode, with Lambda tasks
dispatched in-process to the real handlers, on a compressed clock.

Facts this relies on are in shared LOCAL-ENGINE.md: moto's Lambda needs Docker unless
`LambdaFunction.invoke` is replaced; Wait states, Retry intervals and task timeouts really
sleep unless scaled. Each patch below is the smallest that makes that true here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import boto3
import requests

from sandbox.faults import Crashes, LambdaCrashed

ROOT = Path(__file__).resolve().parent.parent
ASL_DIR = ROOT / "statemachines"

# Function construct id -> handler module (mirrors infra/functions.py).
FUNCTIONS: dict[str, str] = {
    "Plan": "handlers.plan",
    "Precheck": "handlers.precheck",
    "OpenMergeRequest": "handlers.open_merge_request",
    "FluxStatus": "handlers.flux_status",
    "RestartSidecars": "handlers.restart_sidecars",
    "Validate": "handlers.validate",
    "Soak": "handlers.soak",
    "Conclude": "handlers.conclude",
    "Finish": "handlers.finish",
    "GitLabWebhook": "handlers.gitlab_webhook",
    "Reconcile": "handlers.reconcile",
    "PlanRollback": "handlers.plan_rollback",
    "AnalyzeFailure": "handlers.analyze_failure",
    "AwaitDecision": "handlers.await_decision",
    "OpenRollback": "handlers.open_rollback",
    "VerifyRollback": "handlers.verify_rollback",
    "Notify": "handlers.notify",
    "Rollout": "handlers.rollout",
    # Not a task: Precheck invokes it with each cluster (the tenant's custom checks, in their own function).
    "CustomChecks": "handlers.custom_checks",
    # Not a task: EventBridge delivers Step Functions' "Execution Status Change" events to it.
    "ExecutionEnded": "handlers.execution_ended",
}

REGION = "us-east-1"
ACCOUNT = "123456789012"
# Real seconds after which a wait in the rehearsal declares a hang. Only a stuck execution or a
# broken test reaches it: nothing a test asserts depends on how fast this machine is.
HANG_SECONDS = 240.0
# EventBridge retries a failed target invocation (by default 185 times over 24 h, with backoff) before
# the DLQ keeps the event; the rehearsal tries this many times, one after the other.
EVENTBRIDGE_ATTEMPTS = 4

T = TypeVar("T")


class ExecutionEnvironments:
    """One Lambda execution environment per function: at most one invocation of a function at a time.

    Real Lambda never runs two invocations in one execution environment at the same time; a
    second concurrent invocation gets another environment, with its own copy of every module.
    Here every handler module is imported once into this process, so two overlapping
    invocations of one function would share its module state. Powertools'
    `APIGatewayRestResolver` keeps the current event in such a process-wide slot
    (`BaseRouter.current_event`): two GitLab webhooks arriving together would read each
    other's body, and one merge would resume the other MR's execution (shared
    LOCAL-ENGINE.md, "one invocation per environment").

    So each function gets one lock, and an invocation holds its function's lock while the
    handler runs: the rehearsal behaves like one warm environment per function. Different
    functions still run in parallel, as they do on AWS; the parallel iterations of a Map over
    one function run one after the other here (AWS would start more environments), which
    stretches scenario time a little and changes no outcome. The Step Functions dispatcher and
    the API Gateway shim both invoke through `LocalEngine.invoke`, hence through these locks.
    The locks are process-wide (`ENVIRONMENTS`) because the handler modules are.
    """

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, function: str) -> threading.Lock:
        """The lock of `function`'s one environment (construct id, e.g. "GitLabWebhook")."""
        with self._guard:
            return self._locks.setdefault(function, threading.Lock())


ENVIRONMENTS = ExecutionEnvironments()


class Activity:
    """A counter bumped whenever something happens in the rehearsal that a waiter may be
    waiting for: a Lambda invocation ended (it may have opened an MR, stored a token, ...) or
    an execution ended. Waiters re-check their condition then, instead of polling a timer."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._executions_ended = 0

    def generation(self) -> int:
        with self._condition:
            return self._generation

    def notify(self, execution_ended: bool = False) -> None:
        with self._condition:
            self._generation += 1
            self._executions_ended += execution_ended
            self._condition.notify_all()

    def wait(self, since: int, timeout: float) -> int:
        """Block until something happened after generation `since` (or `timeout` real seconds)."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != since, timeout=timeout)
            return self._generation

    def wait_for_execution_end(self, since: int, timeout: float) -> None:
        """Block until an execution ended after `since` executions had (or `timeout` real seconds)."""
        with self._condition:
            self._condition.wait_for(lambda: self._executions_ended != since, timeout=timeout)

    def executions_ended(self) -> int:
        with self._condition:
            return self._executions_ended

    def wait_until(self, predicate: Callable[[], T | None], what: str, timeout: float = HANG_SECONDS,
                   recheck: float = 0.5) -> T:
        """The first truthy value of `predicate`, re-checked after each activity.

        `timeout` (real seconds) only guards against a hang; `recheck` covers conditions that
        change without activity (a simulator state changed by a test thread).
        """
        deadline = time.monotonic() + timeout
        while True:
            since = self.generation()
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"hang: nothing made {what} true in {timeout:g}s of real time")
            self.wait(since, min(recheck, remaining))


class LambdaContext:
    """What Powertools reads from the Lambda context object."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _import_handler(module: str) -> Callable[[Any, Any], Any]:
    import importlib

    handler: Callable[[Any, Any], Any] = importlib.import_module(module).handler
    return handler


class LocalEngine:
    """moto server + the batch state machine + in-process handlers.

    `speedup` compresses Wait states, Retry intervals and `TimeoutSecondsPath` timeouts;
    the handlers get the same factor through the ScaledClock the caller installs.

    `start()` / `stop()` run the moto server; in between, `begin(speedup)` / `end()` bracket
    one rehearsal (environment, patches, empty backends), so a test session can run many
    scenarios on one server. `start()` also begins a rehearsal, `stop()` ends it.
    """

    def __init__(self, speedup: float = 1.0, names: dict[str, str] | None = None) -> None:
        self.speedup = speedup
        self.names = names or {}
        self.port = 0
        self.endpoint = ""
        self.invocations: list[tuple[str, float]] = []  # (function, ms)
        self.activity = Activity()
        self._stack: ExitStack | None = None
        self._server: Any = None
        self._in_flight = 0
        self._in_flight_lock = threading.Condition()
        # Execution end events the ExecutionEnded function failed on (what the DLQ would keep).
        self.undelivered: list[tuple[dict[str, Any], str]] = []
        self._ended: set[str] = set()  # executions whose end was delivered (a stop is seen twice)
        # Invocations to kill after their handler returned (sandbox/faults.py); emptied by begin().
        self.crashes = Crashes()
        # Called with (function, event) before each invocation's handler runs: a fault cell arms its
        # fault when the workflow reaches a stage. Emptied by begin().
        self.before_invoke: list[Callable[[str, Any], None]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalEngine:
        """Start the moto server and begin a rehearsal at this engine's speedup."""
        self.serve()
        return self.begin(self.speedup)

    def stop(self) -> None:
        self.end()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def serve(self) -> LocalEngine:
        """Start the moto server (once)."""
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # moto logs every failed state with its whole parse tree; the history says it better.
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        _, self.port = self._server.get_host_and_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self

    def begin(self, speedup: float) -> LocalEngine:
        """One rehearsal: AWS environment pointing at the server, patches, empty backends."""
        if self._server is None:
            raise RuntimeError("the moto server is not running: call serve() first")
        if self._stack is not None:
            raise RuntimeError("a rehearsal is already running on this engine")
        self.speedup = speedup
        self.invocations = []
        self.undelivered, self._ended = [], set()
        self.crashes.clear()
        self.before_invoke = []
        self._stack = ExitStack()
        env = {
            "MOTO_PORT": str(self.port),  # moto's SFN engine calls Lambda through this port
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_SERVICE_NAME": "guard",
            "POWERTOOLS_METRICS_NAMESPACE": "GUARD",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        self._stack.enter_context(mock.patch.dict(os.environ, env))
        # moto's backends live in the process, not the server: start every rehearsal empty.
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10)
        requests.post(f"{self.endpoint}/moto-api/config",
                      json={"stepfunctions": {"execute_state_machine": True}}, timeout=10)
        self._patch_moto()
        return self

    def end(self) -> None:
        """Stop what still runs (a test may leave an execution waiting), then undo `begin`."""
        if self._stack is None:
            return
        try:
            self.stop_executions()
        finally:
            self._stack.close()
            self._stack = None

    def stop_executions(self) -> None:
        """Stop every running execution and wait for the handlers still running to return."""
        if self._server is None:
            return
        sfn = self.client("stepfunctions")
        for machine in sfn.list_state_machines()["stateMachines"]:
            for page in sfn.get_paginator("list_executions").paginate(
                    stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"):
                for execution in page["executions"]:
                    sfn.stop_execution(executionArn=execution["executionArn"], error="RehearsalEnded")
        # A stopped execution may still be inside a handler: let it return before the next rehearsal.
        with self._in_flight_lock:
            self._in_flight_lock.wait_for(lambda: self._in_flight == 0, timeout=30)

    def __enter__(self) -> LocalEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)

    def resource(self, service: str) -> Any:
        return boto3.resource(service, endpoint_url=self.endpoint, region_name=REGION)

    # ------------------------------------------------------------------ moto patches
    def _patch_moto(self) -> None:
        from moto.awslambda.models import LambdaFunction
        from moto.stepfunctions.parser.api import ExecutionStatus
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
        from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSecondsPath
        from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
        from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

        assert self._stack is not None
        engine = self
        original_terminated = BaseExecutionWorkerCommunication.terminated
        original_stop = Execution.stop

        def stop(execution: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
            # moto's worker only notices a stop when the task it waits on ends (a task-token wait:
            # at its timeout). Step Functions aborts at once, and EventBridge hears of it then.
            # A worker that has not built its environment yet cannot be stopped: give it a moment.
            deadline = time.monotonic() + 10
            while (execution.exec_worker is not None and getattr(execution.exec_worker, "env", None) is None
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            original_stop(execution, stop_date, error, cause)
            if execution.exec_status == ExecutionStatus.RUNNING:
                execution.exec_status, execution.stop_date = ExecutionStatus.ABORTED, stop_date
                try:
                    engine.deliver_execution_ended(execution)
                finally:
                    engine.activity.notify(execution_ended=True)

        def terminated(communication: Any) -> None:
            original_terminated(communication)
            try:
                engine.deliver_execution_ended(communication.execution)
            finally:
                engine.activity.notify(execution_ended=True)

        def invoke(fn: Any, body: str, request_headers: Any, response_headers: Any) -> bytes:
            return engine._dispatch(fn.function_name, body, response_headers)

        def wait_interval(fn: Any, env: Any, wait_seconds: float) -> None:
            if wait_seconds > 0:
                env.program_state_event.wait(wait_seconds / engine.speedup)

        original_timeout = TimeoutSecondsPath._eval_seconds

        def scaled_timeout(fn: Any, env: Any) -> float:
            return max(0.05, original_timeout(fn, env) / engine.speedup)

        class _ScaledTime:
            def sleep(self, seconds: float) -> None:
                time.sleep(seconds / engine.speedup)

            def __getattr__(self, name: str) -> Any:
                return getattr(time, name)

        self._stack.enter_context(mock.patch.object(LambdaFunction, "invoke", invoke))
        self._stack.enter_context(mock.patch.object(WaitFunction, "_wait_interval", wait_interval))
        self._stack.enter_context(mock.patch.object(TimeoutSecondsPath, "_eval_seconds", scaled_timeout))
        self._stack.enter_context(mock.patch.object(retrier_decl, "time", _ScaledTime()))
        self._stack.enter_context(mock.patch.object(BaseExecutionWorkerCommunication, "terminated", terminated))
        self._stack.enter_context(mock.patch.object(Execution, "stop", stop))
        self._patch_sfn_sync()

    def _patch_sfn_sync(self) -> None:
        """Make `states:startExecution.sync:2` work on moto 5.2.5 (shared LOCAL-ENGINE.md).

        moto's SFN integration leaves request/response normalisation to no-op hooks, so
        (1) `StateMachineArn`/`Input`/`Name` reach boto3 PascalCase and the server finds no
        `stateMachineArn`; (2) a child started without `Name` is called "None" (the second
        one collides); (3) DescribeExecution's datetimes break the JSON encoding of the task
        result. Real Step Functions returns PascalCase keys and epoch-millisecond dates.
        """
        from datetime import datetime

        from botocore.session import get_session
        from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn import (
            StateTaskServiceSfn,
        )

        assert self._stack is not None
        model = get_session().get_service_model("stepfunctions")
        original = StateTaskServiceSfn._normalise_parameters

        def normalise_parameters(task: Any, parameters: dict[str, Any], boto_service_name: str | None = None,
                                 service_action_name: str | None = None) -> None:
            original(task, parameters, boto_service_name, service_action_name)
            action = task._get_boto_service_action(service_action_name)
            operation = model.operation_model("".join(p.title() for p in action.split("_")))
            task._to_boto_request(parameters, operation.input_shape)
            if action == "start_execution" and not parameters.get("name"):
                parameters["name"] = str(uuid.uuid4())

        def normalise_response(task: Any, response: Any, boto_service_name: str | None = None,
                               service_action_name: str | None = None) -> None:
            if not isinstance(response, dict):
                return
            for key, value in list(response.items()):
                if isinstance(value, datetime):
                    response[key] = int(value.timestamp() * 1000)
            action = task._get_boto_service_action(service_action_name)
            operation = model.operation_model("".join(p.title() for p in action.split("_")))
            task._from_boto_response(response, operation.output_shape)

        self._stack.enter_context(mock.patch.object(StateTaskServiceSfn, "_normalise_parameters",
                                                    normalise_parameters))
        self._stack.enter_context(mock.patch.object(StateTaskServiceSfn, "_normalise_response",
                                                    normalise_response, create=True))

    def invoke(self, logical: str, event: Any) -> Any:
        """Run function `logical`'s handler on `event` in its one environment (`ENVIRONMENTS`):
        waits while another invocation of the same function runs. Raises what the handler raises."""
        handler = _import_handler(FUNCTIONS[logical])  # imported once per process, looked up each time
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            with ENVIRONMENTS.lock(logical):
                for hook in list(self.before_invoke):
                    hook(logical, event)
                started = time.perf_counter()
                try:
                    result = handler(event, LambdaContext(self.names.get(logical, logical)))
                    if self.crashes.take(logical, event) is not None:
                        raise LambdaCrashed(f"{logical}: Runtime exited with error: signal: killed "
                                            "(the fault suite killed it after its side effects)")
                    return result
                finally:
                    self.invocations.append((logical, (time.perf_counter() - started) * 1000))
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
                self._in_flight_lock.notify_all()
            self.activity.notify()

    def in_flight(self) -> int:
        """How many handler invocations are running now."""
        with self._in_flight_lock:
            return self._in_flight

    def deliver_execution_ended(self, execution: Any) -> None:
        """What EventBridge does on AWS: the rule on "Step Functions Execution Status Change" invokes
        ExecutionEnded with the event. Delivered before the end is signalled (`Activity`), so a waiter
        that sees an execution end sees its run recorded and its lock released. Retried like EventBridge
        retries (`EVENTBRIDGE_ATTEMPTS`); a last failure is kept in `undelivered`, as the DLQ would keep it."""
        with self._in_flight_lock:
            if self._stack is None or execution.exec_arn in self._ended:  # between rehearsals, or told already
                return
            self._ended.add(execution.exec_arn)
        event = execution_status_change(execution)
        for attempt in range(1, EVENTBRIDGE_ATTEMPTS + 1):
            try:
                self.invoke("ExecutionEnded", event)
                return
            except Exception as e:  # EventBridge retries then dead-letters; it never fails the execution
                if attempt == EVENTBRIDGE_ATTEMPTS:
                    self.undelivered.append((event, f"{type(e).__name__}: {e}"))

    def _dispatch(self, function_name: str, body: str, response_headers: Any) -> bytes:
        logical = next((k for k, v in self.names.items() if v == function_name), function_name)
        event = json.loads(body) if body else {}
        try:
            return json.dumps(self.invoke(logical, event)).encode()
        except LambdaCrashed as e:  # Step Functions names a runtime that died "Lambda.Unknown" (sandbox/faults.py)
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": "Lambda.Unknown", "errorMessage": str(e)}).encode()
        except Exception as e:  # report like Lambda does, so Retry/Catch match the error name
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(e).__name__, "errorMessage": str(e),
                               "stackTrace": traceback.format_exception(e)[-3:]}).encode()

    # ------------------------------------------------------------------ deployment (what CDK makes)
    def function_name(self, logical: str) -> str:
        """The Lambda function name of FUNCTIONS entry `logical` (what its ARN and invocations name)."""
        return self.names.setdefault(logical, f"guard-{logical}")

    def deploy(self, registry_table: str, state_table: str, asl_file: str = "upgrade_batch.asl.json") -> str:
        """Tables, functions and the state machine; returns the state machine ARN."""
        from guard.stores.schema import create_tables

        create_tables(self.client("dynamodb"), registry_table, state_table)
        iam = self.client("iam")
        role = iam.create_role(RoleName=f"guard-local-{uuid.uuid4().hex[:6]}", AssumeRolePolicyDocument="{}")
        role_arn = role["Role"]["Arn"]
        awslambda = self.client("lambda")
        substitutions: dict[str, str] = {}
        for logical in FUNCTIONS:
            name = self.function_name(logical)
            arn = awslambda.create_function(
                FunctionName=name, Runtime="python3.12", Role=role_arn, Handler=f"{FUNCTIONS[logical]}.handler",
                Code={"ZipFile": _empty_zip()}, Timeout=300,
            )["FunctionArn"]
            substitutions[f"{logical}FunctionArn"] = arn
        definition = (ASL_DIR / asl_file).read_text()
        for key, value in substitutions.items():
            definition = definition.replace("${" + key + "}", value)
        if "${" in definition:
            raise RuntimeError(f"{asl_file}: unsubstituted placeholder left")
        sfn = self.client("stepfunctions")
        return str(sfn.create_state_machine(name=f"guard-{asl_file.split('.')[0]}-{uuid.uuid4().hex[:6]}",
                                            definition=definition, roleArn=role_arn, type="STANDARD")
                   ["stateMachineArn"])

    def deploy_rollout(self, batch_state_machine_arn: str, asl_file: str = "rollout.asl.json") -> str:
        """The rollout state machine, its children being `batch_state_machine_arn`; returns its ARN.

        Call after `deploy` (the Rollout function must exist).
        """
        awslambda = self.client("lambda")
        substitutions = {
            "RolloutFunctionArn": awslambda.get_function(FunctionName=self.names["Rollout"])
            ["Configuration"]["FunctionArn"],
            "UpgradeBatchStateMachineArn": batch_state_machine_arn,
        }
        definition = (ASL_DIR / asl_file).read_text()
        for key, value in substitutions.items():
            definition = definition.replace("${" + key + "}", value)
        if "${" in definition:
            raise RuntimeError(f"{asl_file}: unsubstituted placeholder left")
        role = self.client("iam").create_role(RoleName=f"guard-local-rollout-{uuid.uuid4().hex[:6]}",
                                              AssumeRolePolicyDocument="{}")
        return str(self.client("stepfunctions").create_state_machine(
            name=f"guard-rollout-{uuid.uuid4().hex[:6]}", definition=definition,
            roleArn=role["Role"]["Arn"], type="STANDARD")["stateMachineArn"])


def _epoch_ms(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def execution_status_change(execution: Any) -> dict[str, Any]:
    """The EventBridge event Step Functions sends when `execution` (moto's) reaches a terminal status."""
    status = execution.exec_status.value
    error, cause = execution.error, execution.cause
    if status == "ABORTED":  # moto keeps StopExecution's error and cause on the stopped program only
        stopped = execution.exec_worker.env.program_state() if execution.exec_worker else None
        error, cause = getattr(stopped, "error", None), getattr(stopped, "cause", None)
    output = execution.output if status == "SUCCEEDED" else None
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": ACCOUNT,
        "time": (execution.stop_date.isoformat() if execution.stop_date else None),
        "region": REGION,
        "resources": [execution.exec_arn],
        "detail": {
            "executionArn": execution.exec_arn,
            "stateMachineArn": execution.state_machine_arn,
            "name": execution.name,
            "status": status,
            "startDate": _epoch_ms(execution.start_date),
            "stopDate": _epoch_ms(execution.stop_date),
            "input": json.dumps(execution.input_data),
            "output": json.dumps(output) if output is not None else None,
            "error": str(error) if error else None,
            "cause": str(cause) if cause else None,
        },
    }


def _empty_zip() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


@contextmanager
def local_engine(speedup: float = 1.0) -> Iterator[LocalEngine]:
    engine = LocalEngine(speedup=speedup)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
