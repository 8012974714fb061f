"""The CLI's AWS access outlasts expiring credentials and throttling; config and stack are found as the seed says."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from guard.errors import ConfigError, InvalidInput, TransientError
from guard.retry import RetryPolicy

from cli.aws import Aws
from cli.where import LocalStackInfo, find_config, resolve, write_local_stack

ARN = "arn:aws:states:us-east-1:123456789012:execution:m:run-1"


class StepFunctionsStandIn:
    """Answers Step Functions' JSON protocol on 127.0.0.1 with scripted (status, body) replies, as AWS
    answers: `ExpiredTokenException` / `ThrottlingException` as HTTP 400 with `__type`."""

    def __init__(self, replies: list[tuple[int, dict[str, Any]]]) -> None:
        self.replies = replies
        self.seen: list[tuple[str, str]] = []  # (X-Amz-Target, the access key in the Authorization header)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization", "")
                key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else ""
                stand_in.seen.append((self.headers.get("X-Amz-Target", ""), key))
                status, body = stand_in.replies.pop(0) if stand_in.replies else (500, {"__type": "InternalFailure"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StepFunctionsStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


DESCRIBED = {"executionArn": ARN, "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
             "name": "run-1", "status": "RUNNING", "startDate": 1767225600.0, "input": "{}"}


def sessions_counting(keys: list[str]) -> Any:
    """A session factory whose n-th session signs with access key keys[n] (as a renewed role session would)."""
    import boto3

    made = iter(keys)

    def factory(region_name: str | None = None) -> Any:
        return boto3.Session(aws_access_key_id=next(made), aws_secret_access_key="s", aws_session_token="t",
                             region_name=region_name)

    return factory


def test_expired_credentials_are_resolved_again_and_the_read_goes_on() -> None:
    # GIVEN Step Functions that refuses the first session's token as expired, then answers
    with StepFunctionsStandIn([(400, {"__type": "com.amazon.coral.service#ExpiredTokenException",
                                      "message": "The security token included in the request is expired"}),
                               (200, DESCRIBED)]) as sfn:
        aws = Aws("us-east-1", endpoint_url=sfn.url, session_factory=sessions_counting(["AKIAOLD", "AKIANEW"]),
                  policy=RetryPolicy(attempts=3, sleep=lambda s: None))
        # WHEN the CLI describes the execution
        described = aws.call("stepfunctions", "describe_execution", executionArn=ARN)
    # THEN it built a new session, signed the retry with the new credentials, and got the answer
    assert described["status"] == "RUNNING"
    assert aws.renewals == 1
    assert [key for _, key in sfn.seen] == ["AKIAOLD", "AKIANEW"]


def test_throttled_reads_back_off_and_then_succeed() -> None:
    # GIVEN Step Functions that throttles seven reads in a row (more than botocore's own 5 attempts)
    throttled = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
    with StepFunctionsStandIn([throttled] * 7 + [(200, DESCRIBED)]) as sfn:
        waits: list[float] = []
        aws = Aws("us-east-1", endpoint_url=sfn.url, session_factory=sessions_counting(["AKIA1"] * 3),
                  policy=RetryPolicy(attempts=4, sleep=waits.append))
        # WHEN it reads
        described = aws.call("stepfunctions", "describe_execution", executionArn=ARN)
    # THEN the project's policy waited between botocore's rounds and the read succeeded, no session renewed
    assert described["name"] == "run-1"
    assert len(waits) == 1 and aws.renewals == 0
    assert len(sfn.seen) == 8


def test_a_read_that_keeps_failing_becomes_a_transient_error_the_follow_survives() -> None:
    throttled = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
    with StepFunctionsStandIn([throttled] * 50) as sfn:
        aws = Aws("us-east-1", endpoint_url=sfn.url, session_factory=sessions_counting(["AKIA1"] * 3),
                  policy=RetryPolicy(attempts=2, sleep=lambda s: None))
        with pytest.raises(TransientError, match="ThrottlingException"):
            aws.call("stepfunctions", "describe_execution", executionArn=ARN)


# ------------------------------------------------------------------ finding the config and the stack
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HOME", str(tmp_path))
    yield tmp_path


def args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "tenant": None, "state_machine_arn": None, "region": None, **given})


def test_the_seeds_default_config_is_read_from_home(home: Path) -> None:
    # GIVEN ~/.guard/config.yaml as the seed writes it (no tenant:)
    (home / ".guard").mkdir()
    (home / ".guard" / "config.yaml").write_text("batches: [{name: prod-canary, clusters: [eks-canary]}]\n")
    # WHEN a command looks for its config without --config THEN it finds that file, the default tenant
    assert find_config(None) == home / ".guard" / "config.yaml"
    # AND with the default tenant's local stack running, the command uses it without flags
    info = LocalStackInfo(tenant="default", pid=os.getpid(), endpoint="http://127.0.0.1:1", region="us-east-1",
                          state_machine_arn="arn:sm", rollout_state_machine_arn="arn:rsm", registry_table="r",
                          state_table="s", speedup=400, gitlab_url="http://127.0.0.1:2",
                          webhook_url="http://127.0.0.1:3/webhooks/gitlab", config="c", started_at=time.time(),
                          idle_timeout_seconds=60)
    write_local_stack(info)
    found = resolve(args())
    assert (found.tenant, found.batch_arn, found.state_table, found.speedup) == ("default", "arn:sm", "s", 400)
    assert found.config.batches[0].name == "prod-canary"


def test_a_dead_local_stack_is_ignored(home: Path) -> None:
    # GIVEN a stack file left by a process that is gone, and no config
    dead = LocalStackInfo(tenant="default", pid=2 ** 22 + 12345, endpoint="http://127.0.0.1:1", region="us-east-1",
                          state_machine_arn="arn:sm", rollout_state_machine_arn="arn:rsm", registry_table="r",
                          state_table="s", speedup=400, gitlab_url="g", webhook_url="w", config="c",
                          started_at=time.time(), idle_timeout_seconds=60)
    write_local_stack(dead)
    # WHEN a command resolves where to act THEN it says how to name a GUARD instead of using the dead stack
    with pytest.raises(InvalidInput, match="guard local up"):
        resolve(args())


def test_a_missing_config_file_is_named(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config nope\.yaml: no such file"):
        find_config("nope.yaml")
