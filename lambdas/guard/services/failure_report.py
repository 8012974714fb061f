"""Markdown of the failure data a person reads on the MR: violations per cluster, numbers first."""

from __future__ import annotations

from guard.core.evidence import ClusterEvidence, FailureEvidence
from guard.outbound import untrusted_block, untrusted_inline
from guard.redact import redact


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _cell(text: str, limit: int | None = None) -> str:
    # Names, messages and explanations carry cluster text (event messages, pod names): inert, redacted first.
    return untrusted_inline(text, limit)


def cluster_markdown(c: ClusterEvidence, *, details: bool = True) -> list[str]:
    lines = [f"### `{c.cluster_id}`: {c.outcome} ({c.from_version} → {c.to_version})", ""]
    if c.violations:
        lines += ["| check | outcome | baseline | current | threshold | explanation |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {_cell(v.name)} | {v.outcome} | {_num(v.baseline)} | {_num(v.current)} | {_num(v.threshold)} "
                  f"| {_cell(v.explanation)} |" for v in c.violations]
    else:
        lines.append("_no violation recorded_")
    if details and c.series:
        lines += ["", "| query | baseline min / mean / max / last | current min / mean / max / last |", "|---|---|---|"]
        for s in c.series:
            def four(d: dict[str, float] | None) -> str:
                return "no data" if not d else " / ".join(_num(d.get(k)) for k in ("min", "mean", "max", "last"))
            lines.append(f"| {s.query_name} | {four(s.baseline)} | {four(s.current)} |")
    if details:
        bad = [p for p in c.pods if not p.ready or p.crash_looping or p.restarts]
        if bad:
            lines += ["", "Pods not healthy: " + ", ".join(
                f"{_cell(f'{p.namespace}/{p.name}')} ({'CrashLoopBackOff' if p.crash_looping else _cell(p.phase)}, "
                f"{p.restarts} restarts)" for p in bad[:10])]
        warnings = [e for e in c.events if e.type == "Warning"][:5]
        if warnings:
            lines += ["", "Recent warning events:", ""]
            lines += [f"- {_cell(f'{e.namespace}/{e.involved_object}')} {_cell(e.reason)} ×{e.count}: "
                      f"{_cell(e.message, 200)}" for e in warnings]
    if c.notes:
        lines += ["", *(untrusted_block(n) for n in c.notes)]
    return lines


SUMMARY_ROWS = 100
"""Clusters in the summary table of a failure report; the rest are counted."""

DETAILED = 20
"""Clusters whose violations, series, pods and events a failure report shows in full."""


def failure_markdown(evidence: FailureEvidence | None, *, details: bool = True) -> str:
    """Violations table per cluster (and, with `details`, series summary, pods and events); redacted.
    It reads the first `SUMMARY_ROWS` clusters of `evidence` (`FailureStore.get_evidence(run, SUMMARY_ROWS)`)
    and the counts of its summary.

    Many failing clusters: a summary table first (outcome and violations per cluster, the first
    `SUMMARY_ROWS`), then the full report of the first `DETAILED`, then how many were left out and where
    they are. GitLab escapes HTML in GUARD's bodies, so there is no collapsible section: a cut and a count."""
    if evidence is None or not evidence.clusters:
        return "_no failure evidence was recorded_\n"
    clusters = evidence.clusters
    tally = evidence.tally()  # every failing cluster, though `clusters` may be only the first (`SUMMARY_ROWS`)
    total = max(tally.cluster_count, len(clusters))
    lines: list[str] = []
    if total > DETAILED:
        lines += [f"**{total} clusters** did not pass: "
                  + ", ".join(f"{outcome} {n}" for outcome, n in tally.outcomes.items()) + ".", "",
                  "| cluster | outcome | violations |", "|---|---|---|"]
        lines += [f"| `{c.cluster_id}` | {c.outcome} | "
                  f"{_cell(', '.join(dict.fromkeys(v.name for v in c.violations)) or '—', 300)} |"
                  for c in clusters[:SUMMARY_ROWS]]
        if total > SUMMARY_ROWS:
            lines.append(f"| … | {total - SUMMARY_ROWS} more clusters | see `guard status <execution>` |")
        lines += ["", f"The first {DETAILED} in full:", ""]
    for c in clusters[:DETAILED]:
        lines += [*cluster_markdown(c, details=details), ""]
    if total > DETAILED:
        lines.append(f"_{total - DETAILED} more clusters: see `guard status <execution>`._")
    return redact("\n".join(lines))
