"""Task `AnalyzeFailure`: gather the evidence, ask the LLM (optional), store both.

Never raises for the analysis itself: a disabled LLM, a timeout, an error or a malformed
answer is stored and returned as "analysis unavailable: <reason>", and the workflow goes on
to the decision or the rollback. Only a missing run record (nothing to act on) raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import BaseModel

from guard.config.models import TenantConfig
from guard.core.evidence import FailureEvidence
from guard.core.run import VerdictOutcome
from guard.digest import bounded
from guard.errors import AnalysisUnavailable, GuardError
from guard.outbound import untrusted_block, untrusted_inline
from guard.ports import Clock, FailureAnalyst
from guard.redact import redact
from guard.services.evidence import EvidenceService
from guard.services.failure_report import DETAILED
from guard.stores.failure import AnalysisRecord, FailureStore
from guard.stores.state import StateStore

logger = logging.getLogger(__name__)


ANALYSIS_SAMPLE = 20
"""Failing clusters whose evidence the LLM reads (`FailureEvidence.sample`): a prompt of tens of thousands
of characters has room for the details of a few tens, and every kind of failure is among them; the
prompt also gives the counts over every failing cluster."""


def unavailable_text(reason: str | None) -> str:
    return f"analysis unavailable: {reason or 'unknown reason'}"


class AnalysisOutcome(BaseModel):
    """The task's output (`$.analysis`): small, the details are in the state table."""

    available: bool
    text: str  # the summary, or "analysis unavailable: <reason>"
    failing_clusters: list[str]  # the first ones (state data must not grow with the batch): the evidence has all
    failing_count: int = 0
    verdict: str  # fail | inconclusive
    needs_decision: bool
    first_violation: str | None = None
    stage: str | None = None  # where the run is, and the MR to act on: what the console shows a person
    merge_request_url: str | None = None


class AnalysisService:
    """`analyze(run_id)`; `analyst_factory` is only called when the analysis is enabled."""

    def __init__(self, config: TenantConfig, state: StateStore, failures: FailureStore, evidence: EvidenceService,
                 analyst_factory: Callable[[], FailureAnalyst] | None, clock: Clock) -> None:
        self._config = config
        self._state = state
        self._failures = failures
        self._evidence = evidence
        self._analyst_factory = analyst_factory
        self._clock = clock

    def analyze(self, run_id: str, enable_llm_analysis: bool | None = None) -> AnalysisOutcome:
        run = self._state.get_run(run_id)
        # The clusters are read for what is shown: the failure report's detailed ones and the LLM's sample.
        collected = self._evidence.collect(run_id, sample=ANALYSIS_SAMPLE, first=DETAILED)
        self._failures.put_evidence(collected, self._clock.now())
        verdict = "fail" if any(c.outcome == VerdictOutcome.FAIL for c in collected.clusters) else "inconclusive"
        wanted = enable_llm_analysis if enable_llm_analysis is not None else run.options.enable_llm_analysis
        record = self._analysis(collected.sample(ANALYSIS_SAMPLE), verdict, wanted)
        self._failures.put_analysis(record)
        needs_decision = verdict == "inconclusive" or self._config.rollback.require_manual_approval
        text = (record.summary or "") if record.available else unavailable_text(record.reason)
        return AnalysisOutcome(available=record.available, text=text[:500],
                               failing_clusters=bounded([c.cluster_id for c in collected.clusters]),
                               failing_count=len(collected.clusters), verdict=verdict,
                               needs_decision=needs_decision, first_violation=collected.first_violation(),
                               stage=run.stage, merge_request_url=run.merge_request_url)

    def _analysis(self, evidence: FailureEvidence, verdict: str, wanted: bool | None) -> AnalysisRecord:
        llm = self._config.llm
        now = self._clock.now()

        sampled, failing = [c.cluster_id for c in evidence.clusters], evidence.tally().cluster_count

        def unavailable(reason: str) -> AnalysisRecord:
            return AnalysisRecord(run_id=evidence.run_id, available=False, reason=redact(reason)[:500],
                                  provider=llm.provider, model=llm.model, at=now, sampled_clusters=sampled,
                                  failing_clusters=failing)

        if not llm.enabled:
            return unavailable("LLM analysis is disabled (llm.enabled: false)")
        if wanted is False:
            return unavailable("LLM analysis was turned off for this run (enable_llm_analysis: false)")
        if verdict == "inconclusive" and not llm.analyze_inconclusive:
            return unavailable("the verdict is inconclusive and llm.analyze_inconclusive is false")
        if self._analyst_factory is None:
            return unavailable("no LLM client configured")
        analyst: FailureAnalyst | None = None
        try:
            analyst = self._analyst_factory()
            analysis = analyst.analyze(evidence)
        except AnalysisUnavailable as e:
            return unavailable(str(e))
        except GuardError as e:  # e.g. the API key secret cannot be read
            return unavailable(f"{type(e).__name__}: {e}")
        except Exception as e:  # the analysis is optional by design: nothing here may block the rollback
            logger.exception("LLM analysis failed unexpectedly")
            return unavailable(f"unexpected {type(e).__name__}")
        return AnalysisRecord(run_id=evidence.run_id, available=True, provider=analyst.provider, model=analyst.model,
                              prompt_chars=int(getattr(analyst, "last_prompt_chars", 0)), at=now,
                              sampled_clusters=sampled, failing_clusters=failing, **analysis.model_dump())


def analysis_markdown(record: AnalysisRecord | None) -> str:
    """The seed's shape: AI Failure Analysis / Summary / Root Cause Analysis / Recommended Actions.

    Everything the LLM wrote is quoted and made inert (`guard.outbound`): the evidence it read may
    carry text chosen by anyone who can write a log line, and no line of it may become a GitLab quick
    action, a `/guard` command, a mention, an image or HTML in a note GUARD posts.
    """
    lines = ["## AI Failure Analysis", ""]
    if record is None or not record.available:
        lines.append(f"_{untrusted_inline(unavailable_text(record.reason if record else 'no analysis was recorded'))}_")
        return "\n".join(lines) + "\n"
    lines += ["### Summary", "", untrusted_block(record.summary or ""), "", "### Root Cause Analysis", "",
              untrusted_block(record.root_cause or "")]
    if record.evidence:
        lines += ["", "### Evidence", "", *(f"> - {untrusted_inline(e)}" for e in record.evidence)]
    lines += ["", "### Recommended Actions", ""]
    actions = [f"> {i}. {untrusted_inline(a)}" for i, a in enumerate(record.recommended_actions, 1)]
    lines += actions if actions else ["_none given_"]
    who = f"{untrusted_inline(record.provider or '')} {untrusted_inline(record.model or '')}"
    lines += ["", f"_{who}; generated from the evidence below, may be wrong._"]
    return "\n".join(lines) + "\n"
