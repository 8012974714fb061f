"""Task `Notify`: turn a workflow event of a run into a `Notification` and fan it out."""

from __future__ import annotations

from guard.config.models import TenantConfig
from guard.core.run import VerdictOutcome
from guard.errors import GuardError
from guard.notify.base import Notification, NotifyResult, NotifyService
from guard.services.observation import AT_END
from guard.services.telling import decided, doubts
from guard.stores.failure import FailureStore
from guard.stores.state import StateStore
from guard.vocabulary.events import NotificationEvent


def build_notification(config: TenantConfig, state: StateStore, failures: FailureStore | None, run_id: str,
                       event: NotificationEvent, detail: str | None = None) -> Notification:
    """Batch, version, MR link (the rollback MR for rolled_back) and the first violation of the run."""
    run = state.get_run(run_id)
    first: str | None = None
    rollback = failures.get_rollback(run_id) if failures else None
    evidence = failures.get_evidence(run_id, first=0) if failures else None  # its summary: the first violation
    if evidence:
        first = evidence.first_violation()
    bad_news = (NotificationEvent.NEEDS_DECISION, NotificationEvent.FAILED, NotificationEvent.ROLLED_BACK)
    if first is None and event in bad_news:
        for cluster_id in run.clusters:
            verdict = state.get_verdict(run_id, cluster_id)
            if verdict and verdict.outcome != VerdictOutcome.PASS:
                first = verdict.summary()
                break
    url = run.merge_request_url
    if event == NotificationEvent.ROLLED_BACK and rollback and rollback.merge_request_url:
        url = rollback.merge_request_url
    if detail is None and event in (NotificationEvent.FAILED, NotificationEvent.ROLLED_BACK) and run.cause:
        detail = f"{run.error or 'Error'}: {run.cause}"
    ended = (NotificationEvent.SUCCEEDED, NotificationEvent.FAILED, NotificationEvent.ROLLED_BACK)
    disagreed = [n.removeprefix(f"{AT_END}: ") for n in run.registry_notes if n.startswith(f"{AT_END}: ")]
    if event in ended and disagreed:  # a cluster not running what GUARD expected is news, whatever the outcome
        # First, and cut short itself: the whole detail is cut at 1,000 characters below.
        detail = "\n".join(p for p in (("Registry: " + "; ".join(disagreed))[:500], detail) if p)
    said = None
    if failures and event in (NotificationEvent.SUCCEEDED, NotificationEvent.ROLLED_BACK, NotificationEvent.FAILED):
        decision = failures.get_decision(run_id)
        if decision is not None and not (rollback and rollback.manual):
            said = decided(decision, doubts(state, run))
    return Notification(event=event, tenant=config.tenant, batch=run.batch, version=run.target_version,
                        run_id=run_id, merge_request_url=url, first_violation=first,
                        detail=detail[:1_000] if detail else None, decided=said, dry_run=run.options.dry_run)


def notify_run(service: NotifyService, config: TenantConfig, state: StateStore, failures: FailureStore | None,
               run_id: str, event: NotificationEvent, detail: str | None = None) -> NotifyResult:
    """Never raises for a notification: a run that cannot be read is reported as skipped."""
    try:
        notification = build_notification(config, state, failures, run_id, event, detail)
    except GuardError as e:
        return NotifyResult(event=event, sent=[], failed=[], skipped=f"cannot read run {run_id}: {e}")
    return service.notify(notification)
