"""The validation judge: current window vs the pre-upgrade baseline, per cluster.

Rules (thresholds come from config, a batch may override them):
- `<query>_increase_percent` (and the seed's `latency_increase_percent` for `latency_p95`,
  `error_rate_increase_percent` for `error_rate`): relative to the baseline mean.
- `<query>_max` / `<query>_min` (and the seed's `error_rate_max`): absolute on the current mean.
- `min_request_count`: total of the `request_count` query in the current window; below it
  the verdict is inconclusive (too little traffic to judge).
Missing or sparse data is inconclusive, never a pass. The newest bucket is dropped while it
is still filling. A relative regression with enough points must also be statistically
significant (one-sided Mann-Whitney U), so noise within the threshold's reach is not a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guard.core.run import ClusterVerdict, MetricFinding, MetricSummary, VerdictOutcome

_ALIASES = {"latency_increase_percent": "latency_p95_increase_percent",
            "error_rate_increase_percent": "error_rate_increase_percent"}


@dataclass(frozen=True)
class JudgeSettings:
    interval_seconds: int = 60
    min_data_points: int = 5
    significance_min_points: int = 8
    confidence: float = 0.95


def complete_points(summary: MetricSummary, interval_seconds: int) -> list[float]:
    """Values of the buckets that had finished filling by the window's end."""
    end = summary.end.timestamp()
    return [v for ts, v in summary.points if ts + interval_seconds <= end + 1e-6 and not math.isnan(v)]


def mann_whitney_p_greater(current: list[float], baseline: list[float]) -> float:
    """One-sided p-value that `current` tends to be larger than `baseline` (normal approx., ties corrected)."""
    n1, n2 = len(current), len(baseline)
    ranked = sorted([(v, 0) for v in current] + [(v, 1) for v in baseline])
    ranks = [0.0] * len(ranked)
    tie_term = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        tie_term += t ** 3 - t
        i = j + 1
    r1 = sum(r for r, (_, group) in zip(ranks, ranked, strict=True) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (u1 - n1 * n2 / 2 - 0.5) / math.sqrt(variance)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _rules(thresholds: dict[str, float], queries: set[str]) -> list[tuple[str, str, float]]:
    """(query, kind, limit) for every threshold whose query exists. kind: increase_percent|min|max."""
    rules = []
    for key, limit in sorted(thresholds.items()):
        key = _ALIASES.get(key, key)
        for kind in ("increase_percent", "min", "max"):
            suffix = f"_{kind}"
            if key.endswith(suffix) and key[: -len(suffix)] in queries:
                rules.append((key[: -len(suffix)], kind, limit))
                break
    return rules


def judge_cluster(cluster_id: str, baseline: dict[str, MetricSummary], current: dict[str, MetricSummary],
                  thresholds: dict[str, float], settings: JudgeSettings) -> ClusterVerdict:
    """One verdict with a finding per rule; every finding says its numbers in words."""
    findings: list[MetricFinding] = []
    names = set(current) | set(baseline)

    min_requests = thresholds.get("min_request_count")
    if min_requests is not None:
        findings.append(_traffic_finding(current.get("request_count"), min_requests, settings))

    for query_name, kind, limit in _rules(thresholds, names):
        findings.append(_apply(query_name, kind, limit, baseline.get(query_name), current.get(query_name), settings))

    if not findings:
        findings.append(MetricFinding(query_name="-", query="-", rule="any", outcome=VerdictOutcome.INCONCLUSIVE,
                                      explanation="no threshold applies to any configured query; "
                                                  "nothing was judged"))
    outcomes = {f.outcome for f in findings}
    outcome = (VerdictOutcome.FAIL if VerdictOutcome.FAIL in outcomes
               else VerdictOutcome.INCONCLUSIVE if VerdictOutcome.INCONCLUSIVE in outcomes
               else VerdictOutcome.PASS)
    return ClusterVerdict(cluster_id=cluster_id, outcome=outcome, findings=findings, current=current)


def _traffic_finding(summary: MetricSummary | None, minimum: float, settings: JudgeSettings) -> MetricFinding:
    points = complete_points(summary, settings.interval_seconds) if summary else []
    total = sum(points)
    ok = bool(points) and total >= minimum
    return MetricFinding(
        query_name="request_count", query=summary.query if summary else "(request_count not configured)",
        rule="min_request_count", outcome=VerdictOutcome.PASS if ok else VerdictOutcome.INCONCLUSIVE,
        current=total if points else None, threshold=minimum,
        explanation=(f"request_count {total:g} in the window meets the minimum {minimum:g}" if ok else
                     f"request_count {total:g} below the minimum {minimum:g}: too little traffic to judge"
                     if points else "request_count has no data: too little traffic to judge"),
    )


def _apply(name: str, kind: str, limit: float, base: MetricSummary | None, cur: MetricSummary | None,
           settings: JudgeSettings) -> MetricFinding:
    source = cur or base
    query = source.query if source else name
    rule = f"{name}_{kind}"
    cur_points = complete_points(cur, settings.interval_seconds) if cur else []
    if len(cur_points) < settings.min_data_points:
        return MetricFinding(query_name=name, query=query, rule=rule, outcome=VerdictOutcome.INCONCLUSIVE,
                             threshold=limit, details={"current_points": len(cur_points)},
                             explanation=f"{name}: {len(cur_points)} complete points after the upgrade, "
                                         f"need {settings.min_data_points}: no data is never a pass")
    current = _mean(cur_points)
    if kind in ("min", "max"):
        bad = current > limit if kind == "max" else current < limit
        word = "exceeds the maximum" if kind == "max" else "is below the minimum"
        ok_word = "within the maximum" if kind == "max" else "meets the minimum"
        return MetricFinding(
            query_name=name, query=query, rule=rule, current=current, threshold=limit,
            outcome=VerdictOutcome.FAIL if bad else VerdictOutcome.PASS,
            explanation=f"{name} {current:.4g} {word if bad else ok_word} {limit:g}",
            details={"current_points": len(cur_points)},
        )

    base_points = complete_points(base, settings.interval_seconds) if base else []
    if len(base_points) < settings.min_data_points:
        return MetricFinding(query_name=name, query=query, rule=rule, outcome=VerdictOutcome.INCONCLUSIVE,
                             current=current, threshold=limit, details={"baseline_points": len(base_points)},
                             explanation=f"{name}: baseline has {len(base_points)} points, need "
                                         f"{settings.min_data_points}; cannot compare")
    baseline = _mean(base_points)
    if baseline == 0:
        change = math.inf if current > 0 else 0.0
    else:
        change = (current - baseline) / abs(baseline) * 100
    beyond = change > limit
    details: dict[str, float | int] = {"baseline_points": len(base_points), "current_points": len(cur_points),
                                       "change_percent": round(change, 2) if math.isfinite(change) else -1}
    text = f"{name} {baseline:.4g} → {current:.4g} ({change:+.1f}%)"
    if beyond and min(len(base_points), len(cur_points)) >= settings.significance_min_points:
        p = mann_whitney_p_greater(cur_points, base_points)
        details["p_value"] = round(p, 5)
        if p > 1 - settings.confidence:
            return MetricFinding(query_name=name, query=query, rule=rule, baseline=baseline, current=current,
                                 threshold=limit, outcome=VerdictOutcome.PASS, details=details,
                                 explanation=f"{text} beyond +{limit:g}% but within noise "
                                             f"(Mann-Whitney p={p:.3f} > {1 - settings.confidence:.2f})")
    return MetricFinding(
        query_name=name, query=query, rule=rule, baseline=baseline, current=current, threshold=limit,
        outcome=VerdictOutcome.FAIL if beyond else VerdictOutcome.PASS, details=details,
        explanation=f"{text} {'exceeds' if beyond else 'within'} +{limit:g}%",
    )
