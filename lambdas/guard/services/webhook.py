"""GitLab webhook: verify, dedupe, and resume (or fail) the execution waiting on the MR."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from guard.clock import Clock
from guard.errors import InvalidInput, TaskNoLongerWaiting, WebhookUnauthorized
from guard.ports import TaskCallbacks  # also re-exported: services/rollback.py still imports it from here
from guard.stores.state import StateStore

if TYPE_CHECKING:
    from guard.services.decision import DecisionService


class WebhookResult(BaseModel):
    status: int
    message: str


def verify_token(expected: str, received: str | None) -> None:
    """Constant-time comparison; a missing or wrong token is WebhookUnauthorized."""
    if not expected:
        raise WebhookUnauthorized("webhook secret is not configured; refusing every request")
    if received is None or not hmac.compare_digest(expected.encode(), received.encode()):
        raise WebhookUnauthorized("missing or wrong X-Gitlab-Token")


class WebhookService:
    """`decisions` builds the decision service on first use (it needs GitLab; MR events do not)."""

    def __init__(self, state: StateStore, sfn: TaskCallbacks, clock: Clock,
                 decisions: Callable[[], DecisionService] | None = None) -> None:
        self._state = state
        self._sfn = sfn
        self._clock = clock
        self._decisions = decisions

    def handle(self, event_name: str | None, delivery_id: str | None, body: str) -> WebhookResult:
        """Act on one verified delivery: merge/close of an MR GUARD waits on, or a `/guard` comment on it."""
        if event_name == "Note Hook" and self._decisions is not None:
            return self._decisions().handle_note(delivery_id, body)
        if event_name != "Merge Request Hook":
            return WebhookResult(status=200, message=f"ignored: event {event_name!r} is not handled")
        try:
            payload = json.loads(body or "")
        except ValueError as e:
            raise InvalidInput(f"webhook body is not JSON: {e}") from e
        attrs = payload.get("object_attributes") if isinstance(payload, dict) else None
        if not isinstance(attrs, dict) or not attrs.get("url"):
            raise InvalidInput("webhook body has no object_attributes.url")
        action = attrs.get("action")
        if action not in ("merge", "close"):
            return WebhookResult(status=200, message=f"ignored: action {action!r}")

        url = str(attrs["url"])
        waiting = self._state.get_task_token(url)
        if waiting is None:
            return WebhookResult(status=200, message="ignored: no GUARD execution waits on this merge request")
        if waiting.kind == "decision":  # that wait ends with a `/guard` comment, not a merge or close
            return WebhookResult(status=200, message="ignored: the execution waits for a /guard decision")
        # Dedupe after the cheap filters: GitLab redelivers with the same event UUID.
        if delivery_id and not self._state.first_delivery(delivery_id, self._clock.now()):
            return WebhookResult(status=200, message="duplicate delivery ignored")

        user = (payload.get("user") or {}).get("username", "someone")
        try:
            if action == "merge":
                self._sfn.send_task_success(taskToken=waiting.task_token, output=json.dumps({
                    "merge_commit_sha": attrs.get("merge_commit_sha"), "merge_request_url": url,
                    "merged_by": user}))
            elif waiting.kind == "rollback":
                self._sfn.send_task_failure(
                    taskToken=waiting.task_token, error="RollbackMergeRequestClosed",
                    cause=f"rollback merge request {url} was closed without merging by {user}; "
                          "the clusters stay on the new version")
            else:
                self._sfn.send_task_failure(
                    taskToken=waiting.task_token, error="MergeRequestClosed",
                    cause=f"merge request {url} was closed without merging by {user}")
        except TaskNoLongerWaiting as e:
            # Timed out, stopped, answered already: nothing to resume, and a resend would not change that.
            self._state.delete_task_token(url)
            return WebhookResult(status=200, message=f"execution no longer waiting ({e})")
        except Exception:
            if delivery_id:
                # Not acted on: a resend of this delivery must not be swallowed as a duplicate.
                self._state.forget_delivery(delivery_id)
            raise
        self._state.delete_task_token(url)
        return WebhookResult(status=200, message=f"run {waiting.run_id}: {action} delivered")
