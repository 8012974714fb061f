"""Notifications: Slack incoming webhook against a local HTTP server, SNS on moto (delivered to SQS)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from guard.notify.base import Notification, NotifyService
from guard.notify.slack import SlackNotifier
from guard.notify.sns import SnsNotifier
from guard.vocabulary.events import NotificationEvent
from moto import mock_aws

GITLAB_TOKEN = "glpat-" + "N0tReal" * 3
EVENT = Notification(event="failed", tenant="acme", batch="prod-canary", version="1.21.0", run_id="run-1",
                     merge_request_url="https://gitlab.example.com/platform/istio-fleet/-/merge_requests/7",
                     first_violation="eks-prod-1: latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%",
                     detail=f"ValidationFailed: GitLab said 401 for token {GITLAB_TOKEN}")


class SlackStub:
    """A local Slack incoming webhook: records each JSON body; answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = status
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = b"ok" if stub.status == 200 else b"invalid_payload"
                self.send_response(stub.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXXX"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    stub = SlackStub()
    yield stub
    stub.close()


def test_slack_gets_batch_version_mr_link_and_first_violation_without_secrets(slack):
    # GIVEN a failed-upgrade notification whose detail quotes a token
    service = NotifyService([SlackNotifier(slack.url, timeout_seconds=2)], ["failed"])

    # WHEN it is sent
    result = service.notify(EVENT)

    # THEN Slack received one message with what a person needs, and no secret
    assert result.sent == ["slack"] and result.failed == []
    assert len(slack.received) == 1
    text = slack.received[0]["text"]
    assert text.startswith("❌ Istio upgrade failed: batch prod-canary → 1.21.0")
    assert "Merge request: https://gitlab.example.com/platform/istio-fleet/-/merge_requests/7" in text
    assert "First violation: eks-prod-1: latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%" in text
    assert GITLAB_TOKEN not in json.dumps(slack.received[0]) and "[REDACTED]" in text
    assert slack.received[0]["blocks"][0]["text"]["text"] == "*❌ Istio upgrade failed: batch prod-canary → 1.21.0*"


def test_a_failing_channel_is_reported_not_raised(slack):
    # GIVEN Slack refuses the message and another channel is unreachable
    slack.status = 400
    down = SlackNotifier("http://127.0.0.1:9/hook", timeout_seconds=1)
    service = NotifyService([SlackNotifier(slack.url), down], ["failed"])

    # WHEN the notification is sent THEN nothing raises; both failures are reported
    result = service.notify(EVENT)
    assert result.sent == [] and result.failed == ["slack", "slack"]


def test_events_not_configured_are_skipped(slack):
    service = NotifyService([SlackNotifier(slack.url)], ["failed", "rolled_back"])
    result = service.notify(EVENT.model_copy(update={"event": "started"}))
    assert result.skipped == "event started is not in notifications.events" and slack.received == []


def test_sns_publishes_a_message_a_queue_subscriber_receives(monkeypatch):
    # GIVEN an SNS topic with an SQS subscription (moto)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="guard-notifications")["TopicArn"]
        queue = sqs.create_queue(QueueName="guard-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

        # WHEN a rolled-back notification is sent
        rolled = EVENT.model_copy(update={"event": NotificationEvent.ROLLED_BACK})
        result = NotifyService([SnsNotifier(sns, topic)], ["rolled_back"]).notify(rolled)

        # THEN the subscriber gets the structured event with an ASCII subject and filterable attributes
        assert result.sent == ["sns"]
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        assert len(messages) == 1
        envelope = json.loads(messages[0]["Body"])
        assert envelope["Subject"] == "GUARD rolled_back: batch prod-canary -> 1.21.0"
        assert envelope["MessageAttributes"]["event"]["Value"] == "rolled_back"
        body = json.loads(envelope["Message"])
        assert (body["batch"], body["version"], body["merge_request_url"]) == (
            "prod-canary", "1.21.0", EVENT.merge_request_url)
        assert body["first_violation"] == EVENT.first_violation
        assert GITLAB_TOKEN not in messages[0]["Body"]
