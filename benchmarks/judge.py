"""How often the judge is right, on a seeded corpus of labelled one-minute windows (stdlib only).

    PYTHONPATH=lambdas:. python benchmarks/judge.py [--seed 7] [--batches 200]

Healthy windows: log-normal noise (CV 0.02-0.30), spikes x2-4 (up to 10% of points), a slow
drift up to +-5%, and a true change of at most half the threshold. Regressions: a true effect
of at least 1.5x the threshold (latency up, error rate over its maximum, throughput down, custom
metrics past their minimum/maximum). Cases in between are left out on purpose: no judge can be
held to a verdict there. Too little data: empty windows, 3 points, 90% of points missing, 0-3
requests a minute. Half of the throughput windows end with a bucket still filling. A throughput
window that collapsed (empty or near zero after a baseline with traffic) is a regression.

Per comparison it prints detection, false rollback, false pass on too little data and
inconclusive-right, per window length; per batch (50 clusters x 4 queries, 60-point windows,
`judge_batch`) the false-rollback rate of a healthy batch and the detection rate when one
cluster regresses on one query.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "lambdas")]

from guard.core.run import ClusterVerdict, MetricSummary, VerdictOutcome  # noqa: E402
from guard.judge import JudgeSettings, judge_batch, judge_cluster  # noqa: E402

SETTINGS = JudgeSettings()
T0 = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
LATENCY_UP = 10.0  # latency_increase_percent
THROUGHPUT_DOWN = 50.0  # request_count_max_decrease_percent
ERROR_MAX = 0.001
QUEUE_MAX = 1000.0
JOBS_MIN = 100.0
MIN_REQUESTS = 1000.0
THRESHOLDS = {
    "latency": {"latency_increase_percent": LATENCY_UP},
    "error_rate": {"error_rate_max": ERROR_MAX},
    "throughput": {"request_count_max_decrease_percent": THROUGHPUT_DOWN},
    "queue_max": {"custom_queue_depth_max": QUEUE_MAX},
    "jobs_min": {"custom_jobs_done_min": JOBS_MIN},
}
QUERY = {"latency": "latency_p95", "error_rate": "error_rate", "throughput": "request_count",
         "queue_max": "custom_queue_depth", "jobs_min": "custom_jobs_done"}


@dataclass
class Case:
    kind: str  # healthy | regression | little
    length: int
    verdict: VerdictOutcome


def noisy(rng: random.Random, level: float, n: int, cv: float, spikes: float, drift: float) -> list[float]:
    """Log-normal noise around `level` (mean preserved), occasional spikes, a linear drift."""
    sigma = math.sqrt(math.log(1 + cv * cv))
    values = []
    for i in range(n):
        v = level * math.exp(rng.gauss(-sigma * sigma / 2, sigma)) * (1 + drift * i / max(n - 1, 1))
        if rng.random() < spikes:
            v *= rng.uniform(2, 4)
        values.append(v)
    return values


def window(name: str, values: list[float | None], start: datetime, filling: float | None = None) -> MetricSummary:
    """One-minute buckets from `start`; None leaves a bucket out; `filling` adds a bucket still filling."""
    t = start.timestamp()
    points = [(t + 60 * i, v) for i, v in enumerate(values) if v is not None]
    end = start + timedelta(minutes=len(values))
    if filling is not None:
        points.append((end.timestamp() - 30, filling))
    return MetricSummary(query=f"q:{name}", start=start, end=end, points=points)


def levels(rng: random.Random, case: str, regress: bool) -> tuple[float, float]:
    """(baseline level, current level) for one rule, with a true effect on the chosen side."""
    if case == "latency":
        base = rng.uniform(50, 800)
        effect = rng.uniform(1.5, 5) * LATENCY_UP if regress else rng.uniform(-0.5, 0.5) * LATENCY_UP
        return base, base * (1 + effect / 100)
    if case == "throughput":
        base = rng.uniform(1000, 20000)
        effect = rng.uniform(1.5, 2) * THROUGHPUT_DOWN if regress else rng.uniform(-0.5, 0.5) * THROUGHPUT_DOWN
        return base, base * max(0.0, 1 - effect / 100)
    limit = {"error_rate": ERROR_MAX, "queue_max": QUEUE_MAX, "jobs_min": JOBS_MIN}[case]
    if case == "jobs_min":
        cur = limit / rng.uniform(1.5, 4) if regress else limit * rng.uniform(2, 10)
    else:
        cur = limit * rng.uniform(1.5, 4) if regress else limit * rng.uniform(0.1, 0.5)
    return cur * rng.uniform(0.8, 1.2), cur


def traffic(rng: random.Random, n: int, per_minute: float) -> list[float | None]:
    return [max(0.0, round(v)) for v in noisy(rng, per_minute, n, 0.1, 0, 0)]


def one_case(rng: random.Random, case: str, n: int, label: str,
             baseline_start: datetime = T0) -> tuple[dict[str, MetricSummary], dict[str, MetricSummary]]:
    """Baseline and current windows of one cluster for one rule (plus request_count for the volume rule)."""
    current_start = baseline_start + timedelta(hours=2)
    name = QUERY[case]
    cv, spikes = rng.uniform(0.02, 0.30), rng.uniform(0, 0.10)
    b_level, c_level = levels(rng, case, label == "regression")
    base_vals: list[float | None] = list(noisy(rng, b_level, n, cv, spikes, rng.uniform(-0.05, 0.05)))
    cur_vals: list[float | None] = list(noisy(rng, c_level, n, cv, spikes, rng.uniform(-0.05, 0.05)))
    req_base, req_cur = traffic(rng, n, 2000), traffic(rng, n, 2000)
    filling = None
    if case == "throughput":
        base_vals, cur_vals = [round(v or 0.0) for v in base_vals], [round(v or 0.0) for v in cur_vals]
        if rng.random() < 0.5:
            filling = (cur_vals[-1] or 0.0) * rng.uniform(0.05, 0.9)  # the newest bucket, still filling
        if label == "collapse":
            cur_vals = [] if rng.random() < 0.5 else [float(rng.randint(0, 3)) for _ in range(n)]
            cur_vals = cur_vals + [None] * (n - len(cur_vals))
            filling = None
        req_base, req_cur = base_vals, cur_vals
    if label == "little":
        how = rng.choice(["empty", "three", "sparse", "quiet"])
        if how == "empty":
            side = rng.choice(["current", "baseline"]) if case == "latency" else "current"
            if side == "current":
                cur_vals = [None] * n
            else:
                base_vals = [None] * n
        elif how == "three":
            keep = set(rng.sample(range(n), 3))
            cur_vals = [v if i in keep else None for i, v in enumerate(cur_vals)]
        elif how == "sparse":
            keep = set(rng.sample(range(n), max(1, n // 10)))
            cur_vals = [v if i in keep else None for i, v in enumerate(cur_vals)]
        else:
            req_cur = [float(rng.randint(0, 3)) for _ in range(n)]
            req_base = [float(rng.randint(0, 3)) for _ in range(n)]
    baseline = {name: window(name, base_vals, baseline_start)}
    current = {name: window(name, cur_vals, current_start, filling)}
    if case != "throughput":
        baseline["request_count"] = window("request_count", req_base, baseline_start)
        current["request_count"] = window("request_count", req_cur, current_start)
    return baseline, current


def per_comparison(rng: random.Random) -> list[Case]:
    cases = []
    for n in (15, 60):
        plan = [(case, "healthy", 120) for case in THRESHOLDS]
        plan += [(case, "regression", 60) for case in THRESHOLDS]
        plan += [(case, "little", 40) for case in ("latency", "error_rate", "queue_max", "jobs_min")]
        plan += [("throughput", "collapse", 40)]
        for case, label, count in plan:
            for _ in range(count):
                baseline, current = one_case(rng, case, n, label)
                thresholds = {**THRESHOLDS[case], "min_request_count": MIN_REQUESTS}
                verdict = judge_cluster("c", baseline, current, thresholds, SETTINGS)
                kind = "regression" if label == "collapse" else label
                cases.append(Case(kind=kind, length=n, verdict=verdict.outcome))
    return cases


def batch(rng: random.Random, regress: bool, clusters: int = 50) -> list[ClusterVerdict]:
    bad = (rng.randrange(clusters), rng.choice(["latency", "error_rate", "throughput", "queue_max"])) \
        if regress else None
    verdicts = []
    for c in range(clusters):
        baseline: dict[str, MetricSummary] = {}
        current: dict[str, MetricSummary] = {}
        thresholds: dict[str, float] = {"min_request_count": MIN_REQUESTS}
        for case in ("latency", "error_rate", "throughput", "queue_max"):
            label = "regression" if bad == (c, case) else "healthy"
            b, cur = one_case(rng, case, 60, label)
            baseline.update({k: v for k, v in b.items() if k == QUERY[case]})
            current.update({k: v for k, v in cur.items() if k == QUERY[case]})
            thresholds.update(THRESHOLDS[case])
        verdicts.append(judge_cluster(f"c{c}", baseline, current, thresholds, SETTINGS))
    return judge_batch(verdicts, error_rate=SETTINGS.batch_error_rate, correction=SETTINGS.batch_correction)


def rate(hits: int, total: int) -> str:
    return f"{100 * hits / total:5.1f}% ({hits}/{total})" if total else "   n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--confidence", type=float, default=None,
                        help="per-comparison confidence (default: the judge's default setting)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    global SETTINGS
    if args.confidence is not None:
        SETTINGS = JudgeSettings(confidence=args.confidence)

    cases = per_comparison(rng)
    healthy = sum(c.kind == "healthy" for c in cases)
    print(f"per comparison: {len(cases)} windows ({healthy} healthy), seed {args.seed}")
    for length in (15, 60, None):
        subset = [c for c in cases if length is None or c.length == length]
        count = Counter((c.kind, c.verdict) for c in subset)
        totals = Counter(c.kind for c in subset)
        title = f"{length}-point windows" if length else "all windows"
        print(f"  {title}:")
        print(f"    detection            {rate(count['regression', VerdictOutcome.FAIL], totals['regression'])}"
              f"   (inconclusive {rate(count['regression', VerdictOutcome.INCONCLUSIVE], totals['regression'])})")
        print(f"    false rollback       {rate(count['healthy', VerdictOutcome.FAIL], totals['healthy'])}"
              f"   (inconclusive {rate(count['healthy', VerdictOutcome.INCONCLUSIVE], totals['healthy'])})")
        print(f"    false pass, little   {rate(count['little', VerdictOutcome.PASS], totals['little'])}")
        print(f"    inconclusive-right   {rate(count['little', VerdictOutcome.INCONCLUSIVE], totals['little'])}")

    false_rollbacks = sum(any(v.outcome == VerdictOutcome.FAIL for v in batch(rng, False))
                          for _ in range(args.batches))
    detected = sum(any(v.outcome == VerdictOutcome.FAIL for v in batch(rng, True))
                   for _ in range(args.batches))
    print(f"per batch (50 clusters x 4 queries, 60-point windows, confidence {SETTINGS.confidence:g}, "
          f"{SETTINGS.batch_correction} at "
          f"{SETTINGS.batch_error_rate:g}):")
    print(f"    false rollback       {rate(false_rollbacks, args.batches)}")
    print(f"    detection            {rate(detected, args.batches)}")


if __name__ == "__main__":
    main()
