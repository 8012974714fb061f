"""Calibrate the judge on a batch's own history: how often would healthy windows have been rolled back?

`read_history` reads N days of each cluster's queries from Datadog in bounded requests;
`calibrate` replays the judge on pairs of windows from that history, shaped like a run's
(a baseline of `baseline_window_minutes`, then a current window ending one soak later and no
longer than the baseline), and reports per rule the false-rollback rate at the configured
threshold and the threshold that would have held a target rate. The history is assumed healthy:
every failure in it is a false rollback. Pure apart from the `MetricsProvider` read.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel

from guard.core.run import ClusterVerdict, MetricSummary, VerdictOutcome
from guard.judge import JudgeSettings, judge_batch, judge_cluster
from guard.ports import MetricsProvider
from guard.rules import Rule, RuleKind, parse_rules

# One request reads at most this many buckets per query (a day of one-minute buckets): a long history is
# read in chunks, so no response grows with --days.
MAX_BUCKETS_PER_READ = 1440
_BISECT_STEPS = 14  # ~0.01% of the search range: finer than any threshold a person writes


class Series:
    """One query's history: sorted timestamps and their values, sliced into windows."""

    def __init__(self, query: str, points: dict[float, float]) -> None:
        self.query = query
        self._ts = sorted(points)
        self._values = [points[t] for t in self._ts]

    def __len__(self) -> int:
        return len(self._ts)

    def window(self, start: datetime, end: datetime) -> MetricSummary:
        """The points in [start, end] as the summary a run would have stored."""
        lo, hi = bisect_left(self._ts, start.timestamp()), bisect_right(self._ts, end.timestamp())
        return MetricSummary(query=self.query, start=start, end=end,
                             points=list(zip(self._ts[lo:hi], self._values[lo:hi], strict=True)))


def read_history(metrics: MetricsProvider, queries: dict[str, str], start: datetime, end: datetime,
                 interval_seconds: int) -> dict[str, Series]:
    """Every query over [start, end], read in chunks of at most MAX_BUCKETS_PER_READ buckets."""
    chunk = timedelta(seconds=interval_seconds * MAX_BUCKETS_PER_READ)
    points: dict[str, dict[float, float]] = {name: {} for name in queries}
    at = start
    while at < end:
        until = min(at + chunk, end)
        for name, series in metrics.query(queries, at, until).items():
            for point in series:
                # Chunk edges are inclusive on both sides: a bucket read twice is one bucket.
                points[name][point.ts.timestamp()] = point.value
        at = until
    return {name: Series(queries[name], found) for name, found in points.items()}


class RuleCalibration(BaseModel):
    """One rule over every (cluster, window pair) of the history."""

    key: str  # as the config writes it
    query_name: str
    kind: RuleKind
    configured: float
    windows: int
    false_rollbacks: int  # failed at the configured threshold, after the batch correction
    inconclusive: int
    recommended: float | None = None  # the threshold that holds the target rate; None: not a rollback rule
    judged: int = 0  # window pairs the recommendation rests on (inconclusive ones say nothing)

    @property
    def rate(self) -> float:
        return self.false_rollbacks / self.windows if self.windows else 0.0


class Calibration(BaseModel):
    """What `guard calibrate` prints."""

    batch: str
    clusters: list[str]
    start: datetime
    end: datetime
    baseline_minutes: float
    soak_minutes: float
    current_minutes: float
    slots: int  # window pairs per cluster
    batch_false_rollbacks: int  # slots in which the whole batch (corrected together) would have failed
    target: float
    correction: str
    rules: list[RuleCalibration]


def window_pairs(start: datetime, end: datetime, baseline_minutes: float,
                 soak_minutes: float) -> list[tuple[tuple[datetime, datetime], tuple[datetime, datetime]]]:
    """(baseline, current) windows as a run takes them: the baseline ends at t, the current window ends a
    soak later and is at most as long as the baseline (Validate never reads before the Flux sync).
    Consecutive pairs are one current window apart, so no two current windows overlap."""
    baseline, soak = timedelta(minutes=baseline_minutes), timedelta(minutes=soak_minutes)
    current = min(baseline, soak)
    pairs = []
    t = start + baseline
    while t + soak <= end:
        pairs.append(((t - baseline, t), (t + soak - current, t + soak)))
        t += current
    return pairs


def calibrate(batch: str, histories: dict[str, dict[str, Series]], thresholds: dict[str, float],
              settings: JudgeSettings, *, start: datetime, end: datetime, baseline_minutes: float,
              soak_minutes: float, target: float) -> Calibration:
    """Replay the judge on every window pair of every cluster's history (`histories[cluster][query]`)."""
    queries = frozenset(q for history in histories.values() for q in history)
    rules = parse_rules(thresholds, queries)
    pairs = window_pairs(start, end, baseline_minutes, soak_minutes)
    counts = {r.name: [0, 0, 0] for r in rules}  # windows, false rollbacks, inconclusive
    # Per rule, what each judged (cluster, pair) would need to pass: the critical limit of a relative rule,
    # the current level of an absolute one.
    critical: dict[str, list[float]] = {r.name: [] for r in rules}
    batch_failures = 0
    correction = "no correction"
    for (b0, b1), (c0, c1) in pairs:
        verdicts: list[ClusterVerdict] = []
        for cluster, history in histories.items():
            base = {name: s.window(b0, b1) for name, s in history.items()}
            cur = {name: s.window(c0, c1) for name, s in history.items()}
            verdict = judge_cluster(cluster, base, cur, thresholds, settings)
            verdicts.append(verdict)
            for rule in rules:
                finding = next((f for f in verdict.findings if f.rule == rule.name), None)
                if finding is None or finding.outcome == VerdictOutcome.INCONCLUSIVE:
                    continue
                if rule.kind.relative:
                    critical[rule.name].append(_critical_limit(rule, cluster, base, cur, thresholds, settings))
                elif rule.kind in (RuleKind.MIN, RuleKind.MAX) and finding.current is not None:
                    critical[rule.name].append(finding.current)
        final = judge_batch(verdicts, error_rate=settings.batch_error_rate, correction=settings.batch_correction)
        correction = (final[0].correction or correction) if final else correction
        batch_failures += any(v.outcome == VerdictOutcome.FAIL for v in final)
        for verdict in final:
            for finding in verdict.findings:
                if finding.rule in counts:
                    counts[finding.rule][0] += 1
                    counts[finding.rule][1] += finding.outcome == VerdictOutcome.FAIL
                    counts[finding.rule][2] += finding.outcome == VerdictOutcome.INCONCLUSIVE
    return Calibration(
        batch=batch, clusters=list(histories), start=start, end=end, baseline_minutes=baseline_minutes,
        soak_minutes=soak_minutes, current_minutes=min(baseline_minutes, soak_minutes), slots=len(pairs),
        batch_false_rollbacks=batch_failures, target=target, correction=correction,
        rules=[RuleCalibration(key=r.key, query_name=r.query_name, kind=r.kind, configured=r.limit,
                               windows=counts[r.name][0], false_rollbacks=counts[r.name][1],
                               inconclusive=counts[r.name][2], judged=len(critical[r.name]),
                               recommended=_holding(r.kind, critical[r.name], target))
               for r in rules])


def _holding(kind: RuleKind, needed: list[float], target: float) -> float | None:
    """The threshold at which at most `target` of the judged pairs would have failed.

    A pair fails a relative or `_max` rule when its needed value is above the threshold, a `_min` rule
    when below: allow floor(target * n) such pairs and the next one sets the threshold.
    """
    if kind == RuleKind.MIN_REQUEST_COUNT or not needed:
        return None
    allowed = math.floor(target * len(needed))
    if kind == RuleKind.MIN:
        return sorted(needed)[min(allowed, len(needed) - 1)]
    return sorted(needed, reverse=True)[min(allowed, len(needed) - 1)]


def _critical_limit(rule: Rule, cluster: str, base: dict[str, MetricSummary], cur: dict[str, MetricSummary],
                    thresholds: dict[str, float], settings: JudgeSettings) -> float:
    """The smallest limit of this relative rule at which this pair passes (0: it passes at any limit).

    The pair is judged with this rule alone (and `min_request_count`, which decides whether there is enough
    traffic to judge at all), per comparison: no batch correction, so the figure errs towards safety.
    """
    gate = {"min_request_count": thresholds["min_request_count"]} if "min_request_count" in thresholds else {}

    def fails(limit: float) -> bool:
        verdict = judge_cluster(cluster, base, cur, {**gate, rule.key: limit}, settings)
        return any(f.rule == rule.name and f.outcome == VerdictOutcome.FAIL for f in verdict.findings)

    ceiling = 99.99 if rule.kind == RuleKind.MAX_DECREASE_PERCENT else 10_000.0
    lo = 1e-6
    if not fails(lo):
        return 0.0
    if fails(ceiling):
        return ceiling
    return _bisect(fails, lo, ceiling)


def _bisect(fails: Callable[[float], bool], lo: float, hi: float) -> float:
    """The boundary between a failing `lo` and a passing `hi` (the verdict only gets milder as the limit grows)."""
    for _ in range(_BISECT_STEPS):
        mid = math.sqrt(lo * hi) if hi / lo > 4 else (lo + hi) / 2  # geometric first: limits span decades
        lo, hi = (mid, hi) if fails(mid) else (lo, mid)
    return hi
