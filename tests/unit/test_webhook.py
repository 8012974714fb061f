"""GitLab webhook behind API Gateway: verify the token, dedupe, and resume the execution waiting on the MR."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from guard import runtime
from guard.errors import InvalidInput, TaskNoLongerWaiting, TransientError
from guard.services.webhook import WebhookResult, WebhookService, delivery_key
from guard.stores.deliveries import Deliveries
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, TaskTokenRecord
from handlers import gitlab_webhook
from moto import mock_aws

from sandbox.apigw import proxy_event
from tests.support.clock import FakeClock

REGION = "us-east-1"
TOKEN = "s3cr3t-webhook-token"
SECRET_NAME = "guard/unit/gitlab-webhook-token"
MR = "https://gitlab.example.com/platform/istio-fleet/-/merge_requests/42"
NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)


class LambdaContext:
    """What Powertools reads from the Lambda context."""

    function_name = "guard-unit-GitLabWebhook"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:guard-unit-GitLabWebhook"
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/guard-unit-GitLabWebhook"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


class RecordingStepFunctions:
    """Implements guard.ports.TaskCallbacks; records what would resume or fail an execution."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.successes: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self._fail_with = fail_with
        self.during_call: Any = None  # run inside the call, to play a concurrent redelivery

    def send_task_success(self, *, taskToken: str, output: str) -> None:
        self._maybe_fail()
        self.successes.append({"taskToken": taskToken, "output": json.loads(output)})

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> None:
        self._maybe_fail()
        self.failures.append({"taskToken": taskToken, "error": error, "cause": cause})

    def _maybe_fail(self) -> None:
        if self.during_call is not None:
            hook, self.during_call = self.during_call, None
            hook()
        if self._fail_with is not None:
            error, self._fail_with = self._fail_with, None
            raise error


def clock() -> FakeClock:
    """Webhooks never wait: a sleep here is a bug, and the clock refuses it."""
    return FakeClock(NOW, on_sleep="refuse")


def mr_event(action: str, url: str = MR, **attrs: Any) -> str:
    return json.dumps({
        "object_kind": "merge_request",
        "user": {"username": "alice"},
        "object_attributes": {"iid": 42, "url": url, "action": action, "state": "merged", **attrs},
    })


# ---------------------------------------------------------------- moto world for the real handler
@contextmanager
def moto_webhook_world(env: pytest.MonkeyPatch, directory: Path) -> Iterator[tuple[StateStore, Any]]:
    """moto with the webhook secret and GUARD's tables, and the env the real handler reads."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                        "GUARD_REGISTRY_TABLE": "guard-unit-registry", "GUARD_STATE_TABLE": "guard-unit-state",
                        "POWERTOOLS_SERVICE_NAME": "guard-webhook-test"}.items():
        env.setenv(name, value)
    env.delenv("AWS_ENDPOINT_URL", raising=False)
    config = {"tenant": "unit", "aws": {"region": REGION, "secrets_manager": {"webhook_secret": SECRET_NAME}},
              "batches": [{"name": "dev-1", "clusters": ["eks-dev-1"]}]}
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    env.setenv("GUARD_CONFIG_FILE", str(path))
    runtime.reset()
    try:
        with mock_aws():
            boto3.client("secretsmanager", region_name=REGION).create_secret(Name=SECRET_NAME, SecretString=TOKEN)
            _, table = create_tables(boto3.resource("dynamodb", region_name=REGION),
                                     "guard-unit-registry", "guard-unit-state")
            yield StateStore(table), table
    finally:
        runtime.reset()


@pytest.fixture
def aws(monkeypatch, tmp_path):
    with moto_webhook_world(monkeypatch, tmp_path) as world:
        yield world


@pytest.fixture
def waiting(aws):
    """An execution paused on MR !42."""
    state, table = aws
    state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="token-42", run_id="run-1"), NOW, 72)
    return state, table


def call(headers: dict[str, str], body: str) -> tuple[int, dict[str, Any]]:
    response = gitlab_webhook.handler(proxy_event("POST", "/webhooks/gitlab", headers, body), LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def gitlab_headers(token: str | None = TOKEN, event: str = "Merge Request Hook",
                   delivery: str | None = None, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event,
               "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4())}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers


def deliveries(table) -> list[str]:
    """Status of each delivery record in the state table (INPROGRESS / COMPLETED)."""
    return [i["status"] for i in table.scan(ConsistentRead=True)["Items"] if i["pk"] == "DELIVERY"]


def ledger(client: Any = None, **kwargs: Any) -> Deliveries:
    """Delivery records in the state table, as runtime.deliveries() builds them (its own plain client)."""
    return Deliveries(client or boto3.client("dynamodb", region_name=REGION), "guard-unit-state", **kwargs)


def fail_next(client: Any, operation: str, code: str = "ProvisionedThroughputExceededException") -> None:
    """The next DynamoDB `operation` on `client` fails as a throttled call does (real boto3, botocore's event hook)."""
    armed = [True]

    def throttle(**_: Any) -> None:
        if armed and armed.pop():
            raise ClientError({"Error": {"Code": code, "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)

    client.meta.events.register(f"before-call.dynamodb.{operation}", throttle)


def test_missing_token_is_401_and_touches_nothing(waiting):
    # GIVEN an execution waiting on MR !42
    state, table = waiting
    # WHEN a merge event arrives without X-Gitlab-Token
    status, body = call(gitlab_headers(token=None), mr_event("merge"))
    # THEN it is refused, and the execution still waits
    assert status == 401
    assert body == {"message": "unauthorized"}
    assert state.get_task_token(MR) is not None
    assert deliveries(table) == []


def test_wrong_token_is_401_and_the_token_record_is_untouched(waiting):
    state, table = waiting
    status, body = call(gitlab_headers(token="guess"), mr_event("merge"))
    assert status == 401
    assert "s3cr3t" not in json.dumps(body)
    assert state.get_task_token(MR) == TaskTokenRecord(merge_request_url=MR, task_token="token-42", run_id="run-1")
    assert deliveries(table) == []


def test_header_names_are_case_insensitive(waiting):
    # GIVEN a proxy in front that lower-cases header names
    state, _ = waiting
    headers = {k.lower(): v for k, v in gitlab_headers().items()}
    status, body = call(headers, mr_event("merge", merge_commit_sha="abc123"))
    assert status == 200, body
    assert state.get_task_token(MR) is None


def test_non_merge_request_event_is_ignored(waiting):
    state, _ = waiting
    status, body = call(gitlab_headers(event="Push Hook"), json.dumps({"object_kind": "push"}))
    assert status == 200
    assert body["message"].startswith("ignored")
    assert state.get_task_token(MR) is not None


def test_event_for_an_mr_nobody_waits_on_is_ignored(waiting):
    state, table = waiting
    status, body = call(gitlab_headers(), mr_event("merge", url=MR.replace("/42", "/7")))
    assert status == 200
    assert body["message"] == "ignored: no GUARD execution waits on this merge request"
    assert state.get_task_token(MR) is not None
    assert deliveries(table) == []


@pytest.mark.parametrize("action", ["open", "update", "approved", "reopen"])
def test_other_mr_actions_are_ignored(waiting, action):
    state, _ = waiting
    status, body = call(gitlab_headers(), mr_event(action))
    assert status == 200
    assert body["message"] == f"ignored: action '{action}'"
    assert state.get_task_token(MR) is not None


@pytest.mark.parametrize("body", ["{not json", "", "[1, 2]", json.dumps({"object_attributes": {"action": "merge"}})])
def test_malformed_body_is_400(waiting, body):
    state, _ = waiting
    status, answer = call(gitlab_headers(), body)
    assert status == 400
    assert "webhook body" in answer["message"]
    assert state.get_task_token(MR) is not None


def test_merge_through_the_handler_answers_and_forgets_the_token(waiting):
    # GIVEN an execution waiting on MR !42 (Step Functions is moto here)
    state, _ = waiting
    # WHEN GitLab reports the merge
    status, body = call(gitlab_headers(), mr_event("merge", merge_commit_sha="abc123"))
    # THEN GitLab gets 200 and nobody waits on the MR any more
    assert status == 200
    assert body["message"] == "run run-1: merge delivered"
    assert state.get_task_token(MR) is None


def test_a_resend_keeps_the_idempotency_key_and_is_answered_duplicate(waiting):
    # GIVEN GitLab delivered the merge with Idempotency-Key k-1, and it was applied
    _, table = waiting
    status, body = call(gitlab_headers(idempotency_key="k-1"), mr_event("merge", merge_commit_sha="abc123"))
    assert (status, body["message"]) == (200, "run run-1: merge delivered")
    # WHEN someone presses "Resend" (GitLab keeps the Idempotency-Key, the event UUID is new)
    status, body = call(gitlab_headers(idempotency_key="k-1"), mr_event("merge", merge_commit_sha="abc123"))
    # THEN it is answered as a duplicate, with the first answer
    assert status == 200
    assert body["message"] == "duplicate delivery ignored (already applied: run run-1: merge delivered)"
    assert deliveries(table) == ["COMPLETED"]


def test_without_an_idempotency_key_the_event_uuid_is_the_key(waiting):
    # GIVEN an older GitLab: no Idempotency-Key; delivery d-1 was applied
    _, table = waiting
    call(gitlab_headers(delivery="d-1"), mr_event("merge", merge_commit_sha="abc123"))
    # WHEN the same event UUID arrives again
    status, body = call(gitlab_headers(delivery="d-1"), mr_event("merge", merge_commit_sha="abc123"))
    # THEN the UUID was the key: a duplicate
    assert status == 200 and body["message"].startswith("duplicate delivery ignored")
    assert deliveries(table) == ["COMPLETED"]


def test_a_delivery_with_neither_header_is_applied_without_a_record(waiting):
    # GIVEN someone holding the webhook secret replays a merge event by hand, with no delivery headers
    state, table = waiting
    headers = {"X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Merge Request Hook"}
    # WHEN it arrives
    status, body = call(headers, mr_event("merge", merge_commit_sha="abc123"))
    # THEN it is applied (no dedupe is possible, and nothing is recorded)
    assert (status, body["message"]) == (200, "run run-1: merge delivered")
    assert state.get_task_token(MR) is None
    assert deliveries(table) == []


@pytest.mark.parametrize(("headers", "key"), [
    ({"idempotency-key": "k-1", "x-gitlab-event-uuid": "u-1"}, "k-1"),
    ({"x-gitlab-event-uuid": "u-1"}, "u-1"),
    ({"idempotency-key": "", "x-gitlab-event-uuid": "u-1"}, "u-1"),
    ({}, None),
])
def test_delivery_key_prefers_the_idempotency_key(headers, key):
    assert delivery_key(headers) == key


def test_secret_not_readable_is_not_a_401_nor_a_5xx(waiting, capsys):
    # GIVEN the config names a secret that does not exist (GUARD's side is broken, not the request)
    state, table = waiting
    boto3.client("secretsmanager", region_name=REGION).delete_secret(SecretId=SECRET_NAME,
                                                                      ForceDeleteWithoutRecovery=True)
    runtime.reset()
    # WHEN a merge event arrives
    status, body = call(gitlab_headers(), mr_event("merge"))
    # THEN GitLab gets 200 "not applied" (not "unauthorized", and no 5xx that would disable the hook)
    assert status == 200
    assert body["message"].startswith("not applied")
    # AND nothing was applied, and the failure is counted for the alarm
    assert state.get_task_token(MR) is not None
    assert deliveries(table) == []
    assert '"WebhookDeliveryNotApplied"' in capsys.readouterr().out


# ---------------------------------------------------------------- the service with a recording fake
@pytest.fixture
def service(waiting):
    state, table = waiting
    sfn = RecordingStepFunctions()
    return WebhookService(state, sfn, clock(), deliveries=ledger()), sfn, state, table


def test_merge_sends_task_success_with_the_merge_commit(service):
    svc, sfn, state, _ = service
    # WHEN MR !42 is merged by alice
    result = svc.handle("Merge Request Hook", "d-1", mr_event("merge", merge_commit_sha="abc123"))
    # THEN the waiting execution resumes with the merge commit, and the token is forgotten
    assert result.status == 200
    assert sfn.successes == [{"taskToken": "token-42", "output": {
        "merge_commit_sha": "abc123", "merge_request_url": MR, "merged_by": "alice", "stage": "waiting_for_flux"}}]
    assert sfn.failures == []
    assert state.get_task_token(MR) is None


def test_close_sends_task_failure_merge_request_closed(service):
    svc, sfn, state, _ = service
    result = svc.handle("Merge Request Hook", "d-1", mr_event("close"))
    assert result.status == 200
    assert sfn.successes == []
    assert len(sfn.failures) == 1
    failure = sfn.failures[0]
    assert failure["taskToken"] == "token-42"
    assert failure["error"] == "MergeRequestClosed"
    assert MR in failure["cause"] and "alice" in failure["cause"]
    assert state.get_task_token(MR) is None


def test_a_resend_after_success_is_not_applied_again(service):
    # GIVEN d-1 resumed the execution
    svc, sfn, _, table = service
    svc.handle("Merge Request Hook", "d-1", mr_event("merge", merge_commit_sha="abc123"))
    # WHEN it is resent
    result = svc.handle("Merge Request Hook", "d-1", mr_event("merge", merge_commit_sha="abc123"))
    # THEN the record answers (not the missing token): a duplicate, and nothing is sent again
    assert result.status == 200 and result.message.startswith("duplicate delivery ignored")
    assert len(sfn.successes) == 1 and sfn.failures == []
    assert deliveries(table) == ["COMPLETED"]


def test_a_copy_arriving_while_the_first_is_applied_is_answered_in_progress(waiting):
    # GIVEN the first copy of d-1 is inside SendTaskSuccess, in one Lambda environment
    state, table = waiting
    inside, release = threading.Event(), threading.Event()
    sfn = RecordingStepFunctions()

    def block() -> None:
        inside.set()
        release.wait(10)

    sfn.during_call = block
    first: list[WebhookResult] = []
    worker = threading.Thread(target=lambda: first.append(WebhookService(state, sfn, clock(), deliveries=ledger())
                                                          .handle("Merge Request Hook", "d-1", mr_event("merge"))))
    worker.start()
    assert inside.wait(10), "the first copy never reached Step Functions"
    # WHEN the second copy arrives in another environment (its own clients)
    other_sfn = RecordingStepFunctions()
    other_state = StateStore(boto3.resource("dynamodb", region_name=REGION).Table("guard-unit-state"))
    second = WebhookService(other_state, other_sfn, clock(), deliveries=ledger()).handle(
        "Merge Request Hook", "d-1", mr_event("merge"))
    release.set()
    worker.join(10)
    # THEN GitLab gets 200 "in progress" for it, and only the first copy resumed the execution
    assert second.status == 200 and "in progress" in second.message
    assert other_sfn.successes == [] and other_sfn.failures == []
    assert [r.message for r in first] == ["run run-1: merge delivered"]
    assert len(sfn.successes) == 1
    assert deliveries(table) == ["COMPLETED"]


def test_a_delivery_that_failed_to_resume_is_applied_on_resend(waiting):
    # GIVEN Step Functions throttles the first attempt to resume the execution
    state, table = waiting
    sfn = RecordingStepFunctions(fail_with=TransientError("SendTaskSuccess: ThrottlingException"))
    svc = WebhookService(state, sfn, clock(), deliveries=ledger())
    with pytest.raises(TransientError):
        svc.handle("Merge Request Hook", "d-1", mr_event("merge", merge_commit_sha="abc123"))
    assert state.get_task_token(MR) is not None
    assert deliveries(table) == []  # not marked done
    # WHEN GitLab (or a person) resends the same delivery
    result = svc.handle("Merge Request Hook", "d-1", mr_event("merge", merge_commit_sha="abc123"))
    # THEN it resumes the execution instead of being swallowed as a duplicate
    assert result.message == "run run-1: merge delivered"
    assert len(sfn.successes) == 1
    assert state.get_task_token(MR) is None


def test_a_delivery_the_state_store_failed_is_applied_on_resend(waiting):
    # GIVEN DynamoDB throttles the token look-up of the first copy of d-1
    state, table = waiting
    fail_next(table.meta.client, "GetItem")
    sfn = RecordingStepFunctions()
    svc = WebhookService(state, sfn, clock(), deliveries=ledger())
    with pytest.raises(TransientError, match="ProvisionedThroughputExceededException"):
        svc.handle("Merge Request Hook", "d-1", mr_event("close"))
    assert sfn.failures == [] and deliveries(table) == []
    # WHEN the delivery is resent
    result = svc.handle("Merge Request Hook", "d-1", mr_event("close"))
    # THEN the close is applied
    assert result.message == "run run-1: close delivered"
    assert [f["error"] for f in sfn.failures] == ["MergeRequestClosed"]


def test_a_record_left_in_progress_frees_the_delivery_after_the_in_progress_window(waiting):
    # GIVEN the first copy of d-1 failed, and so did deleting its in-progress record
    state, table = waiting
    sfn = RecordingStepFunctions(fail_with=TransientError("SendTaskSuccess: ThrottlingException"))
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    fail_next(dynamodb, "DeleteItem")
    svc = WebhookService(state, sfn, clock(), deliveries=ledger(dynamodb, in_progress_seconds=1))
    with pytest.raises(TransientError, match="webhook delivery record"):
        svc.handle("Merge Request Hook", "d-1", mr_event("merge"))
    assert deliveries(table) == ["INPROGRESS"]
    # WHEN it is resent at once THEN it is still taken for a copy in progress
    assert "in progress" in svc.handle("Merge Request Hook", "d-1", mr_event("merge")).message
    # WHEN it is resent after the window (as long as the function's timeout in production)
    time.sleep(1.2)
    # THEN it is applied
    assert svc.handle("Merge Request Hook", "d-1", mr_event("merge")).message == "run run-1: merge delivered"
    assert len(sfn.successes) == 1


def test_a_merge_nobody_waited_on_yet_is_applied_on_resend_once_the_token_exists(aws):
    # GIVEN MR !42 was merged before GUARD stored its token (a retried OpenMergeRequest task)
    state, table = aws
    sfn = RecordingStepFunctions()
    svc = WebhookService(state, sfn, clock(), deliveries=ledger())
    first = svc.handle("Merge Request Hook", "d-1", mr_event("merge"))
    assert first.message == "ignored: no GUARD execution waits on this merge request"
    assert deliveries(table) == []  # nothing applied, nothing recorded
    # WHEN the token is stored and the delivery is resent
    state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="token-42", run_id="run-1"), NOW, 72)
    result = svc.handle("Merge Request Hook", "d-1", mr_event("merge"))
    # THEN the merge resumes the execution
    assert result.message == "run run-1: merge delivered"
    assert [s["taskToken"] for s in sfn.successes] == ["token-42"]


def test_an_execution_that_stopped_waiting_is_forgotten(waiting):
    # GIVEN the execution's wait already timed out
    state, table = waiting
    sfn = RecordingStepFunctions(fail_with=TaskNoLongerWaiting("Step Functions SendTaskSuccess: TaskTimedOut"))
    result = WebhookService(state, sfn, clock(), deliveries=ledger()).handle(
        "Merge Request Hook", "d-1", mr_event("merge"))
    # THEN GitLab still gets 200, and the stale token is dropped
    assert result.status == 200
    assert "execution no longer waiting" in result.message and "TaskTimedOut" in result.message
    assert state.get_task_token(MR) is None
    # AND the delivery is done: a resend would not change anything
    assert deliveries(table) == ["COMPLETED"]


def test_service_rejects_a_body_without_the_mr_url(service):
    svc, sfn, _, _ = service
    with pytest.raises(InvalidInput, match=r"object_attributes\.url"):
        svc.handle("Merge Request Hook", "d-1", json.dumps({"object_attributes": {"action": "merge"}}))
    assert sfn.successes == sfn.failures == []
