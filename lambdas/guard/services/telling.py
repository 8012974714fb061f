"""What GUARD says happened, in the words every channel uses (MR notes, Slack, the execution's output).

One place for the sentences that must stay true: an upgrade a Maintainer let through despite an
inconclusive or failing validation was *not* validated ("proceeded by @maria despite inconclusive
request_count"), and a rollback after a decision nobody answered says so ("no Maintainer answered
within 30 min: rolled back"). The words are plain text; each channel escapes them on its way out
(`guard.outbound`).
"""

from __future__ import annotations

from pydantic import BaseModel

from guard.core.run import RunRecord, VerdictOutcome
from guard.stores.failure import DecisionRecord
from guard.stores.state import StateStore

_SHOWN = 5
"""Query or check names a doubt lists before counting the rest."""


def duration(hours: float) -> str:
    """`0.5` -> "30 min", `24` -> "24 h", `1.5` -> "1 h 30 min": how a person says a timeout."""
    minutes = round(hours * 60)
    if minutes < 60:
        return f"{minutes} min"
    whole, rest = divmod(minutes, 60)
    return f"{whole} h" + (f" {rest} min" if rest else "")


class Doubts(BaseModel):
    """What validation did not confirm: query and post-check names, by outcome, over the run's clusters."""

    failing: list[str] = []
    inconclusive: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.failing or self.inconclusive)

    def text(self) -> str:
        """"failing latency_p95 and inconclusive request_count" (empty when validation confirmed everything)."""
        parts = [f"{word} {_names(names)}" for word, names in (("failing", self.failing),
                                                               ("inconclusive", self.inconclusive)) if names]
        return " and ".join(parts)

    def verdict_word(self) -> str:
        """How validation ended, in a word a person reads first."""
        return "failed" if self.failing else "was inconclusive" if self.inconclusive else "passed"


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def doubts(state: StateStore, run: RunRecord) -> Doubts:
    """The queries and post-checks that did not pass on any of the run's clusters, from the stored verdicts."""
    failing: dict[str, None] = {}
    inconclusive: dict[str, None] = {}
    for cluster_id in run.clusters:
        verdict = state.get_verdict(run.run_id, cluster_id)
        if verdict is None or verdict.outcome == VerdictOutcome.PASS:
            continue
        for finding in verdict.findings:
            if finding.outcome == VerdictOutcome.FAIL:
                failing[finding.query_name] = None
            elif finding.outcome == VerdictOutcome.INCONCLUSIVE:
                inconclusive[finding.query_name] = None
        for check in verdict.post_checks:
            if not check.passed:
                failing[check.check_name] = None
    return Doubts(failing=list(failing), inconclusive=[n for n in inconclusive if n not in failing])


def proceeded(by: str, found: Doubts) -> str:
    """"proceeded by @maria despite inconclusive request_count": a person's override, never "validated"."""
    despite = found.text()
    return f"proceeded by @{by}" + (f" despite {despite}" if despite else " without a passing validation")


def no_answer(hours: float) -> str:
    """"no Maintainer answered within 30 min": why a rollback happened that nobody decided."""
    return f"no Maintainer answered within {duration(hours)}"


def decided(record: DecisionRecord | None, found: Doubts) -> str | None:
    """The sentence for the decision a run took, if a decision was asked for: who decided what, or nobody."""
    if record is None:
        return None
    if record.timed_out or record.by is None:
        return (f"{no_answer(record.timeout_hours)}: rolled back" if record.timeout_hours
                else "no Maintainer answered: rolled back")
    if record.decision == "proceed":
        return proceeded(record.by, found)
    return f"rolled back by @{record.by} (`/guard rollback`)" + (f" after {found.text()}" if found else "")
