"""The validation judge: current window vs the pre-upgrade baseline, per cluster, then per batch.

Rules (guard.rules; thresholds come from config, a batch may override them):
- relative, `<query>_max_increase_percent` / `<query>_max_decrease_percent` (and the seed's
  `latency_increase_percent`, `<query>_increase_percent`): the current window's 20% trimmed mean
  against the baseline's. With enough points the change must also be significant: a one-sided
  Mann-Whitney U test of the current points against the baseline points moved to the limit
  (baseline x 1.10 for +10%), so p answers "could the change still be within the limit?".
- absolute, `<query>_min` / `<query>_max`: the current trimmed mean against the limit, no test.
- `min_request_count`: total of `request_count` in the current window; below it every other
  query is inconclusive (too little traffic to judge), never the throughput rule itself.

A window is judged only when its complete points cover enough of the buckets its length
implies; missing or sparse data is inconclusive, never a pass. For `request_count` after the
upgrade a missing bucket is a bucket with no requests, so a collapse (to no points at all)
fails its decrease rule. `judge_batch` then corrects every rank test of the batch together.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from guard.core.models import CheckStatus, HealthCheckResult
from guard.core.run import ClusterVerdict, Coverage, MetricFinding, MetricSummary, VerdictOutcome
from guard.rules import TRAFFIC_QUERY, Rule, RuleKind, parse_key
from guard.stats import (
    filtered_adjust,
    mann_whitney_p_greater,
    mann_whitney_p_less,
    trimmed_mean,
)

__all__ = ["BATCH_KEEP_AT", "JudgeSettings", "baseline_coverage", "complete_points", "judge_batch", "judge_cluster",
           "mann_whitney_p_greater", "outcome_of", "window_coverage"]

PASS, FAIL, INCONCLUSIVE = VerdictOutcome.PASS, VerdictOutcome.FAIL, VerdictOutcome.INCONCLUSIVE
_ROLLUP = re.compile(r"\.rollup\(\s*[a-z]+\s*,\s*(\d+)\s*\)")
_TRIM = 0.2
_STATISTIC = "20% trimmed mean"
# judge_batch corrects only the tests whose p-value is at most this (their change lies past the
# limit), each as p / BATCH_KEEP_AT. Fixed in advance, as the correction's validity requires; 0.5
# is the usual choice for one-sided tests of an interval null (Ellis, Pecanka & Goeman 2020).
BATCH_KEEP_AT = 0.5


class JudgeSettings(BaseModel):
    """The judge's knobs (config `validation`, see docs/config.md)."""

    model_config = ConfigDict(frozen=True)

    interval_seconds: int = Field(default=60, gt=0)
    min_data_points: int = Field(default=5, ge=1)
    min_coverage: float = Field(default=0.7, gt=0, le=1)
    significance_min_points: int = Field(default=8, ge=3)
    confidence: float = Field(default=0.85, gt=0.5, lt=1)  # see guard.config.models.ValidationConfig
    batch_error_rate: float = Field(default=0.01, gt=0, lt=0.5)
    batch_correction: Literal["holm", "bh"] = "holm"

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 10)


# ---------------------------------------------------------------- windows and coverage
def bucket_seconds(summary: MetricSummary, settings: JudgeSettings) -> tuple[int, str]:
    """(bucket width, where it came from): the points' own spacing when it is clear, else the
    query's `.rollup(…, N)`, else the configured interval."""
    rollups = [int(r) for r in _ROLLUP.findall(summary.query)]
    floor, source = (max(rollups), "rollup") if rollups else (settings.interval_seconds, "config")
    stamps = sorted({ts for ts, _ in summary.points})
    diffs = [round(b - a) for a, b in pairwise(stamps) if b - a >= 1]
    if diffs:
        width, count = max(Counter(diffs).items(), key=lambda kv: (kv[1], -kv[0]))
        # Wider than expected is believed only as Datadog makes coarse buckets: aligned to multiples of
        # their width and nearly all evenly spaced. A sparse series with regular gaps is not that.
        wider_ok = width <= floor or (count >= 0.8 * len(diffs) and all(round(ts) % width == 0 for ts in stamps))
        if count >= 2 and count >= 0.5 * len(diffs) and wider_ok:
            return width, "timestamps"
    return floor, source


def window_coverage(summary: MetricSummary, settings: JudgeSettings, *, missing_is_zero: bool = False,
                    width: tuple[int, str] | None = None) -> tuple[list[float], Coverage]:
    """The values of the window's complete buckets and how much of the window they cover.

    A bucket still filling at the window's end is left out (it would read low for counts).
    `missing_is_zero` fills every expected bucket without a point with 0 (a count metric that
    counted nothing); coverage still reports what came back.
    """
    seconds, source = width or bucket_seconds(summary, settings)
    start, end = summary.start.timestamp(), summary.end.timestamp()
    expected = max(0, int((end - start + 1e-6) // seconds))
    values = {ts: v for ts, v in summary.points
                if start - seconds < ts and ts + seconds <= end + 1e-6 and not math.isnan(v)}
    found = min(len(values), expected)
    required = max(settings.min_data_points, math.ceil(settings.min_coverage * expected - 1e-9))
    points = [values[ts] for ts in sorted(values)]
    if missing_is_zero:
        points += [0.0] * (expected - found)
    return points, Coverage(bucket_seconds=seconds, bucket_source=source, expected=expected, found=found,
                            required=required)


def complete_points(summary: MetricSummary, interval_seconds: int) -> list[float]:
    """Values of the buckets that had finished filling by the window's end (bucket width inferred
    from the points when they make it clear, else `interval_seconds`)."""
    return window_coverage(summary, JudgeSettings(interval_seconds=interval_seconds))[0]


def baseline_coverage(baseline: dict[str, MetricSummary], thresholds: dict[str, float],
                      settings: JudgeSettings) -> dict[str, Coverage | None]:
    """Can this baseline be judged? Coverage per query that a relative rule compares against
    (None: the query has no baseline at all). Pure, for a precheck to call before the change."""
    result: dict[str, Coverage | None] = {}
    for rule in _rules(thresholds, set(baseline) | _rule_queries(thresholds))[0]:
        if rule.kind.relative:
            summary = baseline.get(rule.query_name)
            result[rule.query_name] = window_coverage(summary, settings)[1] if summary else None
    return result


# ---------------------------------------------------------------- one cluster
def judge_cluster(cluster_id: str, baseline: dict[str, MetricSummary], current: dict[str, MetricSummary],
                  thresholds: dict[str, float], settings: JudgeSettings) -> ClusterVerdict:
    """One verdict with a finding per rule; every finding says its numbers in words.

    Pure: the same inputs give the same verdict. p-values are raw (per comparison);
    `judge_batch` corrects them across the batch.
    """
    names = set(current) | set(baseline)
    rules, unusable = _rules(thresholds, names)
    findings = [MetricFinding(query_name="-", query="-", rule=key, outcome=INCONCLUSIVE, threshold=thresholds[key],
                              explanation=f"{key}: its query was not read in either window; nothing to judge it on")
                for key in unusable]
    traffic: MetricFinding | None = None
    for rule in rules:
        base, cur = baseline.get(rule.query_name), current.get(rule.query_name)
        if rule.kind == RuleKind.MIN_REQUEST_COUNT:
            traffic = _traffic(rule, cur, settings)
            findings.append(traffic)
        elif rule.kind.relative:
            volume = next((r.limit for r in rules if r.kind == RuleKind.MIN_REQUEST_COUNT), None)
            findings.append(_relative(rule, base, cur, settings, volume))
        else:
            findings.append(_absolute(rule, cur, settings))

    if traffic is not None and traffic.outcome == INCONCLUSIVE:
        # Too little traffic makes every other query noise; the throughput rule still judges the drop.
        findings = [f if f is traffic or (f.query_name == TRAFFIC_QUERY and f.rule.endswith("decrease_percent"))
                    or f.outcome == INCONCLUSIVE
                    else f.model_copy(update={"outcome": INCONCLUSIVE,
                                              "explanation": f"{f.explanation} — not judged: too little traffic"})
                    for f in findings]
    if not findings:
        findings.append(MetricFinding(query_name="-", query="-", rule="any", outcome=INCONCLUSIVE,
                                      explanation="no threshold applies to any configured query; nothing was judged"))
    return ClusterVerdict(cluster_id=cluster_id, outcome=outcome_of(findings, []), findings=findings, current=current)


def outcome_of(findings: list[MetricFinding], post_checks: list[HealthCheckResult]) -> VerdictOutcome:
    """A failure anywhere fails (a failed post-check too, even with too little data); then anything
    unanswered is inconclusive; only an all-clear is a pass."""
    outcomes = {f.outcome for f in findings}
    statuses = {c.status for c in post_checks}
    if FAIL in outcomes or CheckStatus.FAIL in statuses:
        return FAIL
    if INCONCLUSIVE in outcomes or CheckStatus.INCONCLUSIVE in statuses:
        return INCONCLUSIVE
    return PASS


def _rule_queries(thresholds: dict[str, float]) -> set[str]:
    return {TRAFFIC_QUERY} if "min_request_count" in thresholds else set()


def _rules(thresholds: dict[str, float], names: set[str]) -> tuple[list[Rule], list[str]]:
    """(rules whose query was read, keys that name no read query). One rule per canonical name;
    the config refuses two spellings of the same rule, so which one wins here does not matter."""
    rules: dict[str, Rule] = {}
    unusable = []
    for key in sorted(thresholds):
        try:
            query, kind = parse_key(key, frozenset(names))
        except ValueError:
            unusable.append(key)
            continue
        rule = Rule(key=key, query_name=query, kind=kind, limit=float(thresholds[key]))
        rules[rule.name] = rule
    return [rules[n] for n in sorted(rules)], unusable


def _traffic(rule: Rule, cur: MetricSummary | None, settings: JudgeSettings) -> MetricFinding:
    minimum = rule.limit
    if cur is None:
        return MetricFinding(query_name=TRAFFIC_QUERY, query="(request_count not configured)", rule=rule.name,
                             outcome=INCONCLUSIVE, threshold=minimum,
                             explanation="request_count has no data: too little traffic to judge")
    points, coverage = window_coverage(cur, settings, missing_is_zero=True)
    total = sum(points)
    ok = total >= minimum
    return MetricFinding(
        query_name=TRAFFIC_QUERY, query=cur.query, rule=rule.name, outcome=PASS if ok else INCONCLUSIVE,
        current=total, threshold=minimum, statistic="sum", current_coverage=coverage,
        explanation=(f"request_count {total:g} in the window meets the minimum {minimum:g}" if ok else
                     f"request_count {total:g} below the minimum {minimum:g}: too little traffic to judge"
                     if coverage.found else "request_count has no data: too little traffic to judge"),
    )


def _absolute(rule: Rule, cur: MetricSummary | None, settings: JudgeSettings) -> MetricFinding:
    name, limit = rule.query_name, rule.limit
    if cur is None:
        return _missing(rule, None, "after the upgrade", None)
    points, coverage = window_coverage(cur, settings)
    if not coverage.enough:
        return _missing(rule, cur, "after the upgrade", coverage)
    level = trimmed_mean(points, _TRIM)
    bad = level > limit if rule.kind == RuleKind.MAX else level < limit
    if rule.kind == RuleKind.MAX:
        words = "exceeds the maximum" if bad else "within the maximum"
    else:
        words = "is below the minimum" if bad else "meets the minimum"
    return MetricFinding(
        query_name=name, query=cur.query, rule=rule.name, outcome=FAIL if bad else PASS, current=level,
        threshold=limit, statistic=_STATISTIC, current_coverage=coverage,
        details={"current_points": len(points)},
        explanation=f"{name} {level:.4g} {words} {limit:g} ({_STATISTIC}; absolute limit, no test; "
                    f"coverage {coverage.found}/{coverage.expected})",
    )


def _missing(rule: Rule, summary: MetricSummary | None, side: str, coverage: Coverage | None,
             baseline_coverage: Coverage | None = None) -> MetricFinding:
    after = side == "after the upgrade"
    found = coverage.text() if coverage else "no series"
    return MetricFinding(
        query_name=rule.query_name, query=summary.query if summary else rule.query_name, rule=rule.name,
        outcome=INCONCLUSIVE, threshold=rule.limit,
        current_coverage=coverage if after else None,
        baseline_coverage=baseline_coverage if after else coverage,
        details={"current_points" if after else "baseline_points": coverage.found if coverage else 0},
        explanation=f"{rule.query_name}: too little data {side}: {found}; no data is never a pass",
    )


def _relative(rule: Rule, base: MetricSummary | None, cur: MetricSummary | None, settings: JudgeSettings,
              min_requests: float | None) -> MetricFinding:
    name, limit = rule.query_name, rule.limit
    up = rule.kind == RuleKind.MAX_INCREASE_PERCENT
    traffic = name == TRAFFIC_QUERY
    if base is None:
        return _missing(rule, cur, "before the upgrade (baseline)", None)
    base_points, base_cov = window_coverage(base, settings)
    if not base_cov.enough:
        return _missing(rule, cur or base, "before the upgrade (baseline)", base_cov)
    if cur is None:
        return _missing(rule, base, "after the upgrade", None, baseline_coverage=base_cov)
    width = bucket_seconds(cur, settings)
    if traffic and width[0] != base_cov.bucket_seconds and len(cur.points) < 3:
        width = (base_cov.bucket_seconds, "baseline")  # too few points after to tell their spacing
    cur_points, cur_cov = window_coverage(cur, settings, missing_is_zero=traffic, width=width)
    if traffic and not up:
        # A count that collapsed reports no buckets: judge the zeros, but only against real traffic.
        if cur_cov.expected < settings.min_data_points:
            return _missing(rule, cur, "after the upgrade", cur_cov, baseline_coverage=base_cov)
        if min_requests is not None:
            volume = sum(base_points) * cur_cov.expected / max(base_cov.found, 1)
            if volume < min_requests:
                return MetricFinding(
                    query_name=name, query=cur.query, rule=rule.name, outcome=INCONCLUSIVE, threshold=limit,
                    baseline_coverage=base_cov, current_coverage=cur_cov,
                    explanation=f"{name}: the baseline had too little traffic ({volume:.4g} per window, "
                                f"minimum {min_requests:g}) to judge a drop")
    elif not cur_cov.enough:
        return _missing(rule, cur, "after the upgrade", cur_cov, baseline_coverage=base_cov)

    b, c = trimmed_mean(base_points, _TRIM), trimmed_mean(cur_points, _TRIM)
    if b != 0:
        change = (c - b) / abs(b) * 100
    else:
        change = 0.0 if c == b else math.copysign(math.inf, c - b)
    beyond = change > limit if up else change < -limit
    sign = "+" if up else "-"
    change_text = f"{change:+.1f}%" if math.isfinite(change) else "from 0"
    text = f"{name} {b:.4g} → {c:.4g} ({change_text})"
    covered = f"coverage {base_cov.found}/{base_cov.expected} before, {cur_cov.found}/{cur_cov.expected} after"
    fields: dict[str, object] = {
        "query_name": name, "query": cur.query, "rule": rule.name, "baseline": b, "current": c,
        "threshold": limit, "statistic": _STATISTIC, "change_percent": round(change, 3) if math.isfinite(change)
        else None, "baseline_coverage": base_cov, "current_coverage": cur_cov, "beyond_limit": beyond,
    }
    details: dict[str, float | int] = {"baseline_points": len(base_points), "current_points": len(cur_points)}
    if math.isfinite(change):
        details["change_percent"] = round(change, 2)

    if min(len(base_points), len(cur_points)) < settings.significance_min_points:
        verdict = FAIL if beyond else PASS
        words = "exceeds" if beyond else "within"
        return MetricFinding(**fields, outcome=verdict, details=details,  # type: ignore[arg-type]
                             explanation=f"{text} {words} {sign}{limit:g}% ({_STATISTIC}s; no test: fewer than "
                                         f"{settings.significance_min_points} points; {covered})")

    factor = 1 + limit / 100 if up else 1 - limit / 100
    at_limit = [v * factor for v in base_points]
    p = mann_whitney_p_greater(cur_points, at_limit) if up else mann_whitney_p_less(cur_points, at_limit)
    alpha = settings.alpha
    test = f"Mann-Whitney U, one-sided, current {'>' if up else '<'} baseline × {factor:.4g}"
    details["p_value"] = round(p, 6)
    significant = p <= alpha
    outcome = FAIL if beyond and significant else PASS
    if outcome == FAIL:
        words = "exceeds" if up else "drops beyond"
    elif beyond:
        words = "beyond" if up else "drops beyond"
    else:
        words = "within"
    verdict_words = "" if outcome == FAIL or not beyond else " but within noise"
    return MetricFinding(
        **fields, outcome=outcome, details=details, test=test, p_value=p, alpha=alpha,  # type: ignore[arg-type]
        explanation=f"{text} {words} {sign}{limit:g}%{verdict_words} ({_STATISTIC}s; Mann-Whitney p={p:.2g} "
                    f"{'≤' if significant else '>'} {alpha:g} that it is past the limit; {covered})",
    )


# ---------------------------------------------------------------- the batch
def judge_batch(verdicts: list[ClusterVerdict], *, error_rate: float = 0.01,
                correction: Literal["holm", "bh"] = "holm") -> list[ClusterVerdict]:
    """Final verdicts of a validated batch: every rank test of every cluster corrected together.

    Holm keeps the chance that a healthy batch has any false failure at or below `error_rate`
    (family-wise); Benjamini-Hochberg keeps the expected share of false failures among the
    failures at or below it. Each test asks "is the change past the limit?", a null that is an
    interval: a healthy change well inside the limit gives a p-value near 1, not a uniform one. So
    the correction counts only the tests that could fail, those with p <= `BATCH_KEEP_AT` (their
    change lies past the limit), each as p / `BATCH_KEEP_AT` (guard.stats.filtered_adjust): a
    clear outlier is not diluted by the 99 healthy clusters around it, and the error stays within
    `error_rate`. A relative rule still fails only when its raw test did and its adjusted p-value
    is within `error_rate`. Absolute `_min`/`_max` limits, inconclusive findings and post-checks
    are not statistical tests and stay as they are. Pure and idempotent: it reads only the raw
    p-values, so correcting corrected verdicts changes nothing.
    """
    tested = [(vi, fi) for vi, v in enumerate(verdicts) for fi, f in enumerate(v.findings)
              if f.p_value is not None and f.outcome != INCONCLUSIVE]
    raw = [verdicts[vi].findings[fi].p_value or 0.0 for vi, fi in tested]
    adjusted = filtered_adjust(raw, correction, BATCH_KEEP_AT)
    label = _correction_label(raw, error_rate, correction)
    by_verdict: dict[int, dict[int, MetricFinding]] = {}
    for (vi, fi), adj in zip(tested, adjusted, strict=True):
        f = verdicts[vi].findings[fi]
        raw_fail = bool(f.beyond_limit) and (f.p_value or 0.0) <= (f.alpha if f.alpha is not None else 1.0)
        fails = raw_fail and adj <= error_rate
        base_text = f.explanation.split(" → after correction")[0]
        note = ""
        if raw_fail and not fails:
            note = f" → after correction adjusted p={adj:.2g} > {error_rate:g}: within noise"
        by_verdict.setdefault(vi, {})[fi] = f.model_copy(update={
            "outcome": FAIL if fails else PASS, "adjusted_p_value": adj, "correction": label,
            "explanation": base_text + note,
        })
    final = []
    for vi, v in enumerate(verdicts):
        findings = [by_verdict.get(vi, {}).get(fi, f) for fi, f in enumerate(v.findings)]
        first = v.uncorrected_outcome or v.outcome
        final.append(v.model_copy(update={"findings": findings, "outcome": outcome_of(findings, v.post_checks),
                                          "uncorrected_outcome": first, "correction": label}))
    return final


def _correction_label(raw: list[float], error_rate: float, correction: Literal["holm", "bh"]) -> str:
    """Which correction applied, in words a person can check: how many tests could fail, of how many."""
    if not raw:
        return "no correction: no rank tests in this batch (absolute limits are never corrected)"
    kept = sum(p <= BATCH_KEEP_AT for p in raw)
    rate = f"family-wise error {error_rate:g}" if correction == "holm" else f"false discovery rate {error_rate:g}"
    name = "Holm" if correction == "holm" else "Benjamini-Hochberg"
    scale = f"p ≤ {BATCH_KEEP_AT:g} counted as p/{BATCH_KEEP_AT:g}"
    if not kept:
        return f"{name}: none of {len(raw)} tests could fail (all p > {BATCH_KEEP_AT:g}), {rate}"
    return f"{name} over the {kept} of {len(raw)} tests that could fail ({scale}), {rate}"
