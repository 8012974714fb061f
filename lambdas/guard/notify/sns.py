"""`Notifier` on an SNS topic (boto3). Subscribers filter on the `event` and `batch` attributes."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from guard.errors import ExternalServiceError, TransientError
from guard.notify.base import Notification


def subject(event: Notification) -> str:
    """SNS subjects are printable ASCII, one line, under 100 characters (no emoji)."""
    text = f"GUARD {event.event}: batch {event.batch} -> {event.version}"
    return "".join(ch for ch in text if 32 <= ord(ch) < 127)[:99]


class SnsNotifier:
    name = "sns"

    def __init__(self, client: Any, topic_arn: str) -> None:
        self._sns = client
        self._topic = topic_arn

    def send(self, event: Notification) -> None:
        message = {"default": "\n".join([event.headline(), *event.lines()]),
                   "email": "\n".join([event.headline(), "", *event.lines()]),
                   "sqs": event.model_dump_json(), "lambda": event.model_dump_json(),
                   "https": event.model_dump_json()}
        try:
            self._sns.publish(
                TopicArn=self._topic, Subject=subject(event), MessageStructure="json",
                Message=json.dumps(message),
                MessageAttributes={"event": {"DataType": "String", "StringValue": event.event},
                                   "batch": {"DataType": "String", "StringValue": event.batch}},
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("Throttling", "ThrottlingException", "InternalError", "ServiceUnavailable"):
                raise TransientError(f"SNS publish: {code}") from e
            raise ExternalServiceError(f"SNS publish: {code}") from e
        except BotoCoreError as e:
            raise TransientError(f"SNS publish: {type(e).__name__}") from e
