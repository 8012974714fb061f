"""The `Notifier` port, the message every backend sends, and the fan-out that never fails a workflow."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel

from guard.outbound import plain_text
from guard.ports import Notifier
from guard.vocabulary.events import NotificationEvent

logger = logging.getLogger(__name__)

_HEADLINES = {
    NotificationEvent.STARTED: "🚀 Istio upgrade started",
    NotificationEvent.WAITING_FOR_MERGE: "📝 Merge request waiting for review",
    NotificationEvent.NEEDS_DECISION: "⏸️ Decision needed on the merge request",
    NotificationEvent.SUCCEEDED: "✅ Istio upgrade validated",
    NotificationEvent.FAILED: "❌ Istio upgrade failed",
    NotificationEvent.ROLLED_BACK: "↩️ Istio upgrade rolled back",
}


class Notification(BaseModel):
    """One workflow event for people: batch, version, MR link and the first violation."""

    event: NotificationEvent
    tenant: str
    batch: str
    version: str
    run_id: str
    merge_request_url: str | None = None
    first_violation: str | None = None
    detail: str | None = None
    # Who decided, when a person was asked: "proceeded by @maria despite inconclusive request_count",
    # "no Maintainer answered within 30 min: rolled back" (guard.services.telling).
    decided: str | None = None
    dry_run: bool = False  # `guard run --dry-run`: plan and prechecks only, nothing changes

    def headline(self) -> str:
        if self.dry_run:
            # Nothing is upgraded: "upgrade started" or "upgrade failed" would alarm for no change.
            what = {NotificationEvent.STARTED: "🔎 Istio upgrade dry run started (prechecks only, no MR)",
                    NotificationEvent.FAILED: "🔎 Istio upgrade dry run: the prechecks refused (nothing changed)"}
            return f"{what.get(self.event, _HEADLINES[self.event])}: batch {self.batch} → {self.version}"
        if self.event == NotificationEvent.SUCCEEDED and self.decided:
            # A person let it through: saying "validated" would be untrue.
            return f"☑️ Istio upgrade accepted without a passing validation: batch {self.batch} → {self.version}"
        return f"{_HEADLINES[self.event]}: batch {self.batch} → {self.version}"

    def lines(self) -> list[str]:
        found = [f"Tenant {self.tenant}, run {self.run_id}"]
        if self.decided:
            found.append(self.decided[:1].upper() + self.decided[1:])
        if self.merge_request_url:
            found.append(f"Merge request: {self.merge_request_url}")
        if self.first_violation:
            found.append(f"First violation: {self.first_violation}")
        if self.detail:
            found.append(self.detail)
        return found

    def redacted(self) -> Notification:
        """The same notification with every text field passed through the secret redaction."""
        return self.model_copy(update={k: plain_text(v) for k, v in self.model_dump().items()
                                       if isinstance(v, str) and k != "event"})


class NotifyResult(BaseModel):
    event: str
    sent: list[str]
    failed: list[str]
    skipped: str | None = None


class NotifyService:
    """Sends to every channel; a channel that fails is logged and skipped, never raised."""

    def __init__(self, notifiers: Sequence[Notifier], events: Sequence[str]) -> None:
        self._notifiers = list(notifiers)
        self._events = set(events)

    def notify(self, event: Notification) -> NotifyResult:
        if event.event not in self._events:
            return NotifyResult(event=event.event, sent=[], failed=[],
                                skipped=f"event {event.event} is not in notifications.events")
        if not self._notifiers:
            return NotifyResult(event=event.event, sent=[], failed=[], skipped="no notification channel configured")
        safe = event.redacted()
        sent, failed = [], []
        for notifier in self._notifiers:
            try:
                notifier.send(safe)
                sent.append(notifier.name)
            except Exception as e:  # a notification is courtesy: it must never fail the upgrade's workflow
                logger.warning("notification to %s failed: %s", notifier.name, plain_text(f"{type(e).__name__}: {e}"))
                failed.append(notifier.name)
        return NotifyResult(event=event.event, sent=sent, failed=failed)
