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
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import requests

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
    "Conclude": "handlers.conclude",
    "Finish": "handlers.finish",
    "GitLabWebhook": "handlers.gitlab_webhook",
    "PlanRollback": "handlers.plan_rollback",
    "AnalyzeFailure": "handlers.analyze_failure",
    "AwaitDecision": "handlers.await_decision",
    "OpenRollback": "handlers.open_rollback",
    "VerifyRollback": "handlers.verify_rollback",
    "Notify": "handlers.notify",
    "Rollout": "handlers.rollout",
}

REGION = "us-east-1"
ACCOUNT = "123456789012"


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
    """

    def __init__(self, speedup: float = 1.0, names: dict[str, str] | None = None) -> None:
        self.speedup = speedup
        self.names = names or {}
        self.port = 0
        self.endpoint = ""
        self.invocations: list[tuple[str, float]] = []  # (function, ms)
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._stack = ExitStack()
        self._server: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalEngine:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # moto logs every failed state with its whole parse tree; the history says it better.
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        _, self.port = self._server.get_host_and_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
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
        # moto's backends live in the process, not the server: start every world empty.
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10)
        requests.post(f"{self.endpoint}/moto-api/config",
                      json={"stepfunctions": {"execute_state_machine": True}}, timeout=10)
        self._patch_moto()
        return self

    def stop(self) -> None:
        self._stack.close()
        if self._server is not None:
            self._server.stop()
            self._server = None

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
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
        from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSecondsPath
        from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

        engine = self

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

    def _dispatch(self, function_name: str, body: str, response_headers: Any) -> bytes:
        logical = next((k for k, v in self.names.items() if v == function_name), function_name)
        handler = self._handlers.get(logical)
        if handler is None:
            handler = self._handlers[logical] = _import_handler(FUNCTIONS[logical])
        event = json.loads(body) if body else {}
        started = time.perf_counter()
        try:
            result = handler(event, LambdaContext(function_name))
            return json.dumps(result).encode()
        except Exception as e:  # report like Lambda does, so Retry/Catch match the error name
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(e).__name__, "errorMessage": str(e),
                               "stackTrace": traceback.format_exception(e)[-3:]}).encode()
        finally:
            self.invocations.append((logical, (time.perf_counter() - started) * 1000))

    # ------------------------------------------------------------------ deployment (what CDK makes)
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
            name = self.names.setdefault(logical, f"guard-{logical}")
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
