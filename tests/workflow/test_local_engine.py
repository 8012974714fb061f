"""What the rehearsal promises about Lambda itself: one invocation per execution environment."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from handlers import gitlab_webhook

pytestmark = pytest.mark.workflow


def test_overlapping_webhook_deliveries_run_one_at_a_time_each_with_its_own_body(
        world_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the rehearsal's API Gateway in front of the webhook function, each invocation taking 0.2 s
    world = world_for("default", human={"action": "ignore"})
    assert world.webhook is not None
    inside: list[str] = []
    overlapped: list[list[str]] = []
    handler = gitlab_webhook.handler

    def slow_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        inside.append(event["headers"]["X-Gitlab-Event-UUID"])
        if len(inside) > 1:
            overlapped.append(list(inside))
        time.sleep(0.2)  # long enough for the other delivery to arrive meanwhile
        try:
            return handler(event, context)
        finally:
            inside.remove(event["headers"]["X-Gitlab-Event-UUID"])

    monkeypatch.setattr(gitlab_webhook, "handler", slow_handler)
    merge = json.dumps({"object_kind": "merge_request", "user": {"username": "alice"},
                        "object_attributes": {"iid": 7, "action": "merge", "merge_commit_sha": "f" * 40,
                                              "url": "http://gitlab.invalid/platform/istio-fleet/-/merge_requests/7"}})
    answers: dict[str, int] = {}

    def deliver(uuid: str, body: str) -> None:
        answers[uuid] = requests.post(f"{world.webhook.url}/webhooks/gitlab", data=body, timeout=30, headers={
            "X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": world.webhook_token,
            "X-Gitlab-Event-UUID": uuid}).status_code

    # WHEN a well-formed merge event and a malformed one arrive at the same time
    deliveries = [threading.Thread(target=deliver, args=("well-formed", merge)),
                  threading.Thread(target=deliver, args=("malformed", "{not json"))]
    for delivery in deliveries:
        delivery.start()
    for delivery in deliveries:
        delivery.join()

    # THEN the function ran them one after the other, as one Lambda environment would,
    # and each was answered from its own body (the merge nobody waits on is ignored, the other refused)
    assert overlapped == []
    assert answers == {"well-formed": 200, "malformed": 400}
