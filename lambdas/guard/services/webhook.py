"""GitLab webhook: verify, dedupe, and resume (or fail) the execution waiting on the MR.

Dedupe is `guard.stores.deliveries` (one design for MR events and `/guard` comments): the cheap,
stateless filters run first, so ignored events write nothing; what can change an execution runs
inside `Deliveries.once`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping

from guard.core.quote import quoted
from guard.errors import (
    InvalidInput,
    MergeRequestClosed,
    RollbackMergeRequestClosed,
    TaskNoLongerWaiting,
    WebhookUnauthorized,
)
from guard.ports import Clock, TaskCallbacks
from guard.services.decision import DecisionService, NoteCommand, parse_note
from guard.services.webhook_payload import URL_MAX_BYTES, child, json_object, text
from guard.stores.deliveries import Deliveries, WebhookResult
from guard.stores.state import StateStore, TaskTokenRecord
from guard.vocabulary.outcomes import ChangeKind
from guard.vocabulary.stages import Stage

MAX_BODY_BYTES = 1024 * 1024  # GitLab's MR and note events are a few KB; a larger body is not one of them
MAX_DELIVERY_KEY = 255  # a UUID is 36 characters; GitLab's Idempotency-Key is one too
# Internal notes come as "Confidential Note Hook", and only to hooks with confidential comments events on.
# GUARD acts on them like any comment: the author is still checked for Maintainer, and the reconciler,
# which reads every note through the API, would find the command anyway; ignoring them here would only
# delay the same decision.
NOTE_EVENTS = frozenset({"Note Hook", "Confidential Note Hook"})
_DELIVERY_HEADERS = (("idempotency-key", "Idempotency-Key"), ("x-gitlab-event-uuid", "X-Gitlab-Event-UUID"))


def delivery_key(headers: Mapping[str, str]) -> str | None:
    """The key a delivery is deduplicated on, from lower-cased header names.

    `Idempotency-Key` (GitLab 17.4+) stays the same when a person presses "Resend Request" (GitLab
    itself never redelivers: a failed delivery is only logged). Older GitLab sends only
    `X-Gitlab-Event-UUID`, which is new for every delivery, a resend included, so a resend gets past
    the record there. That is harmless: after the first apply the token is deleted,
    and Step Functions would refuse a second answer to it anyway (TaskNoLongerWaiting). With neither header the
    delivery is still applied, for the same reason: GitLab always sends the UUID, so such a
    request comes from someone holding the webhook secret (an operator replaying an event),
    and refusing it would block that manual recovery.

    Either header longer than MAX_DELIVERY_KEY characters is InvalidInput naming it.
    """
    for name, shown in _DELIVERY_HEADERS:
        value = headers.get(name) or ""
        if len(value) > MAX_DELIVERY_KEY:
            raise InvalidInput(f"header {shown} is longer than {MAX_DELIVERY_KEY} characters ({len(value)})")
    return headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid") or None


def body_bytes(body: str | None, base64_encoded: bool) -> bytes | None:
    """The request body's bytes (API Gateway's `isBase64Encoded` undone), or None when it is over MAX_BODY_BYTES.

    A body flagged base64 that is not base64 is InvalidInput.
    """
    if not body:
        return b""
    # Base64 turns 3 bytes into 4 characters, and a text body has at least one byte per character:
    # a body too long as it arrived is refused before it is decoded.
    if len(body) > ((MAX_BODY_BYTES + 2) // 3 * 4 if base64_encoded else MAX_BODY_BYTES):
        return None
    try:
        raw = base64.b64decode(body, validate=True) if base64_encoded else body.encode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError) as e:
        raise InvalidInput("webhook body is flagged base64 but is not base64") from e
    return raw if len(raw) <= MAX_BODY_BYTES else None


def body_text(raw: bytes) -> str:
    """The body as text; InvalidInput when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"webhook body is not UTF-8 text (byte {e.start})") from e


def verify_token(expected: str, received: str | None) -> None:
    """Constant-time comparison; a missing or wrong token is WebhookUnauthorized."""
    if not expected:
        raise WebhookUnauthorized("webhook secret is not configured; refusing every request")
    if received is None or not hmac.compare_digest(expected.encode(), received.encode("utf-8", "surrogatepass")):
        raise WebhookUnauthorized("missing or wrong X-Gitlab-Token")


class WebhookService:
    """`decisions` builds the decision service on first use (it needs GitLab; MR events do not).

    `deliveries` records which deliveries were applied (the handler passes the state table's);
    without it nothing is recorded and every copy of a delivery is applied.
    """

    def __init__(self, state: StateStore, sfn: TaskCallbacks, clock: Clock,
                 decisions: Callable[[], DecisionService] | None = None,
                 deliveries: Deliveries | None = None) -> None:
        self._state = state
        self._sfn = sfn
        self._clock = clock
        self._decisions = decisions
        self._deliveries = deliveries

    def handle(self, event_name: str | None, key: str | None, body: str) -> WebhookResult:
        """Act once on one verified delivery: merge/close of an MR GUARD waits on, or a `/guard` comment on it.

        `key` is `delivery_key(headers)`; None applies the delivery without dedupe.
        """
        decisions = self._decisions
        if event_name in NOTE_EVENTS and decisions is not None:
            note = parse_note(body)
            if isinstance(note, WebhookResult):
                return note
            command: NoteCommand = note
            # Only a command some execution waits for needs GitLab (and so the token secret): any other
            # comment is answered from the state table, so a GitLab or Secrets Manager outage cannot turn
            # ordinary comments into failed deliveries (GitLab disables a hook that keeps failing).
            waiting = self._state.get_task_token(command.merge_request_url)
            if waiting is None or waiting.kind != ChangeKind.DECISION:
                return WebhookResult(status=200, message="ignored: no GUARD decision waits on this merge request",
                                     final=False)
            return self._once(key, lambda: decisions().decide(command))
        if event_name != "Merge Request Hook":
            return WebhookResult(status=200, message=f"ignored: event {quoted(event_name)} is not handled")
        payload = json_object(body)
        attrs = child(payload, "object_attributes", "object_attributes", required=True)
        url = text(attrs, "url", "object_attributes.url", required=True, max_bytes=URL_MAX_BYTES) or ""
        action = text(attrs, "action", "object_attributes.action")
        merge_commit_sha = text(attrs, "merge_commit_sha", "object_attributes.merge_commit_sha")
        user = text(child(payload, "user", "user"), "username", "user.username") or "someone"
        if action not in ("merge", "close"):
            return WebhookResult(status=200, message=f"ignored: action {quoted(action) if action else None}")
        return self._once(key, lambda: self._resume(url, action, merge_commit_sha, user))

    def _once(self, key: str | None, apply: Callable[[], WebhookResult]) -> WebhookResult:
        return self._deliveries.once(key, apply) if self._deliveries is not None else apply()

    def _resume(self, url: str, action: str, merge_commit_sha: str | None, user: str) -> WebhookResult:
        waiting = self._state.get_task_token(url)
        if waiting is None:
            # Not final: the token may be stored later (a retried OpenMergeRequest); a resend must apply then.
            return WebhookResult(status=200, message="ignored: no GUARD execution waits on this merge request",
                                 final=False)
        if waiting.kind == ChangeKind.DECISION:  # that wait ends with a `/guard` comment, not a merge or close
            return WebhookResult(status=200, message="ignored: the execution waits for a /guard decision",
                                 final=False)
        return resume_on_merge_request(self._state, self._sfn, waiting, action, merge_commit_sha, user)


def resume_on_merge_request(state: StateStore, sfn: TaskCallbacks, waiting: TaskTokenRecord,
                            action: str, merge_commit_sha: str | None, user: str) -> WebhookResult:
    """Answer the upgrade or rollback wait on `waiting`'s MR: "merge" resumes it, "close" fails it.

    Shared by the webhook and the reconciler (`guard.services.reconcile`), so both send the same
    output and errors. The token is deleted after the answer; an execution that no longer waits
    (timed out, stopped, or answered already by the other path) is TaskNoLongerWaiting: the
    token is deleted too and nothing else happens.
    """
    url = waiting.merge_request_url
    try:
        if action == "merge":
            # `stage`: what the run does next, so the console's output of the wait says where it is.
            sfn.send_task_success(taskToken=waiting.task_token, output=json.dumps({
                "merge_commit_sha": merge_commit_sha, "merge_request_url": url,
                "merged_by": user, "stage": (Stage.VERIFYING_ROLLBACK if waiting.kind == ChangeKind.ROLLBACK
                                             else Stage.WAITING_FOR_FLUX).value}))
        elif waiting.kind == ChangeKind.ROLLBACK:
            sfn.send_task_failure(
                taskToken=waiting.task_token, error=RollbackMergeRequestClosed.__name__,
                cause=f"rollback merge request {url} was closed without merging by {user}; "
                      "the clusters stay on the new version")
        else:
            sfn.send_task_failure(
                taskToken=waiting.task_token, error=MergeRequestClosed.__name__,
                cause=f"merge request {url} was closed without merging by {user}")
    except TaskNoLongerWaiting as e:
        # Timed out, stopped, answered already: nothing to resume, and a resend would not change that.
        state.delete_task_token(url, task_token=waiting.task_token)
        return WebhookResult(status=200, message=f"execution no longer waiting ({e})")
    # Any other failure propagates: the delivery stays unmarked; the webhook handler answers 200 and counts
    # it, and the reconciler (or a resend) applies it later.
    state.delete_task_token(url, task_token=waiting.task_token)  # only the token answered, never a newer one
    return WebhookResult(status=200, message=f"run {waiting.run_id}: {action} delivered")
