"""Webhook abuse: forged, replayed, malformed and oversized requests through the real handler.

GitLab never redelivers, and disables a hook that keeps failing; so no request gets a 5xx. What a
sender got wrong is 4xx (401 token, 400 malformed, 413 too large), what is not GUARD's is 200
"ignored", and what failed on GUARD's side is 200 "not applied" with the delivery left unmarked.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from guard import runtime

from sandbox.apigw import proxy_event
from tests.unit import test_webhook as webhook_tests
from tests.unit.test_webhook import MR, TOKEN, LambdaContext, call, deliveries, gitlab_headers, mr_event

# The moto world and the execution waiting on MR !42, shared with test_webhook.py.
aws, waiting = webhook_tests.aws, webhook_tests.waiting

MIB = 1024 * 1024


def mr_body(**attrs: Any) -> str:
    """A merge event for MR !42 with object_attributes fields replaced (None removes one)."""
    base: dict[str, Any] = {"iid": 42, "url": MR, "action": "merge", "merge_commit_sha": "abc123"}
    merged = {k: v for k, v in (base | attrs).items() if v is not None}
    return json.dumps({"object_kind": "merge_request", "user": {"username": "alice"}, "object_attributes": merged})


def note_body(note: Any = "/guard proceed", **top: Any) -> str:
    payload: dict[str, Any] = {"object_kind": "note", "user": {"id": 7, "username": "maria"},
                               "object_attributes": {"noteable_type": "MergeRequest", "note": note},
                               "merge_request": {"iid": 42, "url": MR}}
    return json.dumps(payload | top)


def with_headers(**extra: str) -> dict[str, str]:
    return gitlab_headers() | extra


NOTE = gitlab_headers(event="Note Hook")

# (id, headers, body, expected status, a fragment of the answer)
CASES: list[tuple[str, dict[str, str], str, int, str]] = [
    # ---- who is asking
    ("no-token", gitlab_headers(token=None), mr_body(), 401, "unauthorized"),
    ("wrong-token-same-length", gitlab_headers(token="x" * len(TOKEN)), mr_body(), 401, "unauthorized"),
    ("forged-token-shorter", gitlab_headers(token="s3"), mr_body(), 401, "unauthorized"),
    ("forged-token-8kb", gitlab_headers(token="s" * 8192), mr_body(), 401, "unauthorized"),
    ("forged-token-empty", gitlab_headers(token=""), mr_body(), 401, "unauthorized"),
    ("forged-token-non-ascii", gitlab_headers(token="s3cr3t-webhook-tökén"), mr_body(), 401, "unauthorized"),
    # ---- not JSON, or not an object
    ("malformed-json", gitlab_headers(), '{"object_attributes": {', 400, "webhook body is not JSON"),
    ("empty-body", gitlab_headers(), "", 400, "webhook body is not JSON"),
    ("json-array", gitlab_headers(), json.dumps([json.loads(mr_body())]), 400, "not a JSON object, got array"),
    ("json-string", gitlab_headers(), json.dumps("merge"), 400, "not a JSON object, got string"),
    ("json-number", gitlab_headers(), "42", 400, "not a JSON object, got number"),
    ("json-null", gitlab_headers(), "null", 400, "not a JSON object, got null"),
    ("nested-too-deep", gitlab_headers(), "[" * 200_000 + "]" * 200_000, 400, "webhook body is not JSON"),
    # ---- wrong types in each field the merge event is read for
    ("object_attributes-missing", gitlab_headers(), json.dumps({"object_kind": "merge_request"}), 400,
     "has no object_attributes"),
    ("object_attributes-list", gitlab_headers(), json.dumps({"object_attributes": [{"url": MR}]}), 400,
     "object_attributes must be an object, got array"),
    ("object_attributes-string", gitlab_headers(), json.dumps({"object_attributes": "merge"}), 400,
     "object_attributes must be an object, got string"),
    ("url-missing", gitlab_headers(), json.dumps({"object_attributes": {"action": "merge"}}), 400,
     "has no object_attributes.url"),
    ("url-number", gitlab_headers(), mr_body(url=42), 400, "object_attributes.url must be a string, got number"),
    ("url-object", gitlab_headers(), mr_body(url={"href": MR}), 400, "url must be a string, got object"),
    ("url-3000-chars", gitlab_headers(), mr_body(url=MR + "x" * 3000), 400, "url is longer than 1024 bytes"),
    ("url-lone-surrogate", gitlab_headers(), mr_body(url=MR + "\ud800"), 400, "not valid Unicode"),
    ("action-list", gitlab_headers(), mr_body(action=["merge"]), 400, "action must be a string, got array"),
    ("action-number", gitlab_headers(), mr_body(action=1), 400, "action must be a string, got number"),
    ("merge_commit_sha-number", gitlab_headers(), mr_body(merge_commit_sha=123), 400,
     "merge_commit_sha must be a string, got number"),
    ("user-string", gitlab_headers(), json.dumps({**json.loads(mr_body()), "user": "alice"}), 400,
     "user must be an object, got string"),
    ("user-list", gitlab_headers(), json.dumps({**json.loads(mr_body()), "user": ["alice"]}), 400,
     "user must be an object, got array"),
    ("username-list", gitlab_headers(), json.dumps({**json.loads(mr_body()), "user": {"username": ["a"]}}), 400,
     "user.username must be a string, got array"),
    # ---- not ours
    ("unknown-event", gitlab_headers(event="Push Hook"), json.dumps({"object_kind": "push"}), 200,
     "ignored: event 'Push Hook'"),
    ("no-event-header", {k: v for k, v in gitlab_headers().items() if k != "X-Gitlab-Event"}, mr_body(), 200,
     "ignored: event"),
    ("event-name-8kb", gitlab_headers(event="E" * 8192), mr_body(), 200, "(8192 characters) is not handled"),
    ("unknown-action", gitlab_headers(), mr_body(action="frobnicate"), 200, "ignored: action 'frobnicate'"),
    ("action-missing", gitlab_headers(), mr_body(action=None), 200, "ignored: action None"),
    ("action-100kb", gitlab_headers(), mr_body(action="m" * 100_000), 200, "(100000 characters)"),
    # ---- too large
    ("body-over-1mib", gitlab_headers(), mr_body(description="d" * MIB), 413, "larger than 1048576 bytes"),
    ("multibyte-body-over-1mib", gitlab_headers(), '{"d": "' + "é" * (MIB // 2 + 10) + '"}', 413, "larger"),
    ("idempotency-key-3000", with_headers(**{"Idempotency-Key": "k" * 3000}), mr_body(), 400,
     "header Idempotency-Key is longer than 255 characters"),
    ("event-uuid-3000", gitlab_headers(delivery="u" * 3000), mr_body(), 400,
     "header X-Gitlab-Event-UUID is longer than 255 characters"),
    # ---- note hooks with malformed bodies
    ("note-json-array", NOTE, "[]", 400, "not a JSON object, got array"),
    ("note-malformed-json", NOTE, "{", 400, "webhook body is not JSON"),
    ("note-object_attributes-missing", NOTE, json.dumps({"object_kind": "note"}), 400, "has no object_attributes"),
    ("note-object_attributes-list", NOTE, note_body(object_attributes=[]), 400,
     "object_attributes must be an object, got array"),
    ("note-noteable_type-list", NOTE, note_body(object_attributes={"noteable_type": ["MergeRequest"]}), 400,
     "noteable_type must be a string, got array"),
    ("note-note-number", NOTE, note_body(note=42), 400, "object_attributes.note must be a string, got number"),
    ("note-merge_request-string", NOTE, note_body(merge_request=MR), 400,
     "merge_request must be an object, got string"),
    ("note-merge_request-missing", NOTE, note_body(merge_request=None), 400, "no merge_request.url"),
    ("note-url-number", NOTE, note_body(merge_request={"iid": 42, "url": 42}), 400,
     "merge_request.url must be a string, got number"),
    ("note-iid-string", NOTE, note_body(merge_request={"iid": "42", "url": MR}), 400,
     "merge_request.iid must be an integer, got string"),
    ("note-user-string", NOTE, note_body(user="maria"), 400, "user must be an object, got string"),
    ("note-user-id-bool", NOTE, note_body(user={"id": True, "username": "maria"}), 400,
     "user.id must be an integer, got boolean"),
    ("note-plain-comment", NOTE, note_body(note="looks good"), 200, "ignored: no /guard command"),
    ("note-on-an-issue", NOTE, note_body(object_attributes={"noteable_type": "Issue", "note": "/guard proceed"}),
     200, "ignored: not a merge request comment"),
]


def call_event(headers: dict[str, str], body: str, *, encoded: bool = False,
               method: str = "POST") -> tuple[int, dict[str, Any]]:
    event = proxy_event(method, "/webhooks/gitlab", headers, body)
    event["isBase64Encoded"] = encoded
    from handlers import gitlab_webhook

    response = gitlab_webhook.handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize(("body", "encoded", "status", "fragment"), [
    (base64.b64encode(b'{"object_attributes": {"url": "\xff\xfe"}}').decode(), True, 400, "not UTF-8"),
    (base64.b64encode(b"\xc3\x28" * 10).decode(), True, 400, "not UTF-8"),
    ("not base64 at all!", True, 400, "not base64"),
    (base64.b64encode(b"x" * (MIB + 1)).decode(), True, 413, "larger"),
    ('{"object_attributes": {"url": "' + "\udcff" + '"}}', False, 400, "not UTF-8"),
], ids=["invalid-utf8-in-json", "invalid-utf8", "flagged-base64-not-base64", "base64-over-1mib", "raw-surrogate"])
def test_a_body_that_is_not_utf8_text_is_400_and_an_oversized_one_413(waiting, body, encoded, status, fragment):
    state, table = waiting
    got, answer = call_event(gitlab_headers(), body, encoded=encoded)
    assert (got, fragment in answer["message"]) == (status, True), answer
    assert state.get_task_token(MR) is not None
    assert deliveries(table) == []


def test_a_base64_encoded_merge_event_is_applied(waiting):
    # GIVEN API Gateway passes the body base64-encoded (a binary media type matched it)
    state, _ = waiting
    body = base64.b64encode(mr_event("merge", merge_commit_sha="abc123").encode()).decode()
    # WHEN it arrives THEN it is decoded and the merge resumes the execution
    status, answer = call_event(gitlab_headers(), body, encoded=True)
    assert (status, answer["message"]) == (200, "run run-1: merge delivered")
    assert state.get_task_token(MR) is None


def test_a_body_of_exactly_one_mib_is_read(waiting):
    # GIVEN a merge event padded to exactly 1 MiB (the bound is inclusive)
    head, tail = mr_body()[:-2] + ', "pad": "', '"}}'
    body = head + "p" * (MIB - len(head) - len(tail)) + tail
    assert len(body.encode()) == MIB
    status, answer = call(gitlab_headers(), body)
    assert (status, answer["message"]) == (200, "run run-1: merge delivered")


def test_another_method_is_a_4xx(waiting):
    status, _ = call_event(gitlab_headers(), mr_body(), method="GET")
    assert 400 <= status < 500


def test_a_replayed_delivery_is_answered_duplicate_and_applied_once(waiting):
    # GIVEN delivery k-1 merged MR !42
    _, table = waiting
    first = call(gitlab_headers(idempotency_key="k-1"), mr_body())
    assert first == (200, {"message": "run run-1: merge delivered"})
    # WHEN someone replays it (same key, same token) twice
    replays = [call(gitlab_headers(idempotency_key="k-1"), mr_body()) for _ in range(2)]
    # THEN each replay gets 200 "duplicate", and nothing is applied again
    assert [s for s, _ in replays] == [200, 200]
    assert all(a["message"].startswith("duplicate delivery ignored") for _, a in replays)
    assert deliveries(table) == ["COMPLETED"]


# ---------------------------------------------------------------- GUARD's side fails: 200, unmarked, counted
def fail_next_call(client: Any, operation: str, code: str, status: int) -> None:
    """The next `operation` on this boto3 client fails with `code` (real botocore, its event hook)."""
    armed = [True]

    def fail(model: Any, **_: Any) -> None:
        if model.name == operation and armed and armed.pop():
            raise ClientError({"Error": {"Code": code, "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": status}}, operation)

    client.meta.events.register("before-call", fail)


@pytest.mark.parametrize(("service", "operation", "code", "status"), [
    ("stepfunctions", "SendTaskSuccess", "ServiceUnavailable", 503),
    ("stepfunctions", "SendTaskSuccess", "ThrottlingException", 400),
    ("dynamodb", "PutItem", "ProvisionedThroughputExceededException", 400),
    ("dynamodb", "PutItem", "InternalServerError", 500),
])
def test_a_failure_on_guards_side_is_200_unmarked_counted_and_applied_on_resend(
        waiting, capsys, service, operation, code, status):
    # GIVEN an execution waiting on MR !42, and the next call to Step Functions (or the delivery record) fails
    state, table = waiting
    fail_next_call(runtime.aws_client(service), operation, code, status)
    # WHEN GitLab delivers the merge
    got, answer = call(gitlab_headers(idempotency_key="k-9"), mr_body())
    # THEN GitLab gets 200 "not applied" (a 5xx would count towards disabling the hook, and is never retried)
    assert got == 200
    assert answer["message"].startswith("not applied")
    # AND the delivery is left unmarked, the execution still waits, and the failure is counted (a CloudWatch metric)
    assert deliveries(table) == []
    assert state.get_task_token(MR) is not None
    assert '"WebhookDeliveryNotApplied":[1.0]' in capsys.readouterr().out
    # WHEN the same delivery is resent THEN it is applied
    assert call(gitlab_headers(idempotency_key="k-9"), mr_body()) == (200, {"message": "run run-1: merge delivered"})
    assert state.get_task_token(MR) is None
    assert deliveries(table) == ["COMPLETED"]


def test_the_state_table_missing_is_200_not_applied(waiting, monkeypatch):
    # GIVEN the function points at a state table that does not exist (a broken deploy)
    monkeypatch.setenv("GUARD_STATE_TABLE", "no-such-table")
    # WHEN a merge arrives THEN GitLab still gets a 200 "not applied", not a 5xx
    status, answer = call(gitlab_headers(), mr_body())
    assert status == 200 and answer["message"].startswith("not applied")
    assert boto3.client("dynamodb", region_name="us-east-1").list_tables()["TableNames"]
