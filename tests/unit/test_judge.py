"""The validation judge: a table of metric series and the verdict a person would expect."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from guard.core.run import MetricSummary, VerdictOutcome
from guard.judge import JudgeSettings, complete_points, judge_cluster, mann_whitney_p_greater

PASS, FAIL, INCONCLUSIVE = VerdictOutcome.PASS, VerdictOutcome.FAIL, VerdictOutcome.INCONCLUSIVE
SETTINGS = JudgeSettings(interval_seconds=60, min_data_points=5, significance_min_points=8, confidence=0.95)
UPGRADE = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
BASELINE_START = UPGRADE - timedelta(hours=1)
CURRENT_START = UPGRADE + timedelta(hours=1)  # after the soak

# Realistic noise: ±4% around the level, never a constant series.
NOISE = [1.00, 0.97, 1.03, 0.99, 1.02, 0.96, 1.04, 1.01, 0.98, 1.00, 1.03, 0.97, 1.02, 0.99, 0.99]  # mean 1


def series(level: float, n: int = 15) -> list[float]:
    return [level * NOISE[i % len(NOISE)] for i in range(n)]


def summary(query_name: str, values: list[float], start: datetime, partial: float | None = None,
            interval: int = 60) -> MetricSummary:
    """Complete one-minute buckets from `start`; `partial` adds a last bucket still filling at `end`."""
    t0 = start.timestamp()
    points = [(t0 + i * interval, v) for i, v in enumerate(values)]
    end = start + timedelta(seconds=len(values) * interval)
    if partial is not None:
        points.append((end.timestamp() - interval / 2, partial))  # began 30 s before the window closed
    return MetricSummary(query=f"avg:{query_name}{{cluster_name:eks-dev-1}}", start=start, end=end, points=points)


@dataclass
class Case:
    id: str
    thresholds: dict[str, float]
    baseline: dict[str, list[float]]
    current: dict[str, list[float]]
    expect: VerdictOutcome
    says: list[str] = field(default_factory=list)  # substrings of the explanation of the deciding finding
    current_partial: dict[str, float] = field(default_factory=dict)


LATENCY_10 = {"latency_increase_percent": 10}

CASES = [
    Case("clear latency regression", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(240)},
         expect=FAIL, says=["latency_p95", "200", "240", "+20.0%", "exceeds", "+10%"]),
    Case("latency up 5% is within a 10% threshold", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(210)},
         expect=PASS, says=["+5.0%", "within +10%"]),
    Case("one spike lifts the mean beyond the threshold but the distributions are the same", LATENCY_10,
         baseline={"latency_p95": [200, 184, 216, 194, 206, 198, 202, 208, 192, 200]},
         current={"latency_p95": [200, 180, 220, 190, 210, 196, 204, 199, 600, 200]},
         expect=PASS, says=["within noise", "Mann-Whitney"]),
    Case("improvement", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(150)},
         expect=PASS, says=["-25.0%"]),
    Case("no data after the upgrade", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": []},
         expect=INCONCLUSIVE, says=["0 complete points", "never a pass"]),
    Case("query missing from the current window", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={},
         expect=INCONCLUSIVE, says=["0 complete points"]),
    Case("no baseline to compare with", LATENCY_10,
         baseline={}, current={"latency_p95": series(200)},
         expect=INCONCLUSIVE, says=["baseline has 0 points"]),
    Case("sparse data, even if it looks bad", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": [900, 950, 1000]},
         expect=INCONCLUSIVE, says=["3 complete points", "need 5"]),
    Case("only NaN after the upgrade", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": [math.nan] * 10},
         expect=INCONCLUSIVE),
    Case("low traffic", {**LATENCY_10, "min_request_count": 1000},
         baseline={"latency_p95": series(200)},
         current={"latency_p95": series(200), "request_count": [40.0] * 15},
         expect=INCONCLUSIVE, says=["request_count 600 below the minimum 1000", "too little traffic"]),
    Case("traffic threshold but no request_count query", {**LATENCY_10, "min_request_count": 1000},
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(200)},
         expect=INCONCLUSIVE, says=["request_count has no data"]),
    Case("enough traffic", {**LATENCY_10, "min_request_count": 1000},
         baseline={"latency_p95": series(200)},
         current={"latency_p95": series(200), "request_count": [5000.0] * 15},
         expect=PASS),
    Case("a still-filling last bucket with a low value is not judged", {"custom_api_success_rate_min": 0.999},
         baseline={}, current={"custom_api_success_rate": [0.9995] * 10},
         current_partial={"custom_api_success_rate": 0.5},
         expect=PASS, says=["meets the minimum 0.999"]),
    Case("the same low value in a complete bucket is judged", {"custom_api_success_rate_min": 0.999},
         baseline={}, current={"custom_api_success_rate": [0.9995] * 10 + [0.5]},
         expect=FAIL, says=["is below the minimum 0.999"]),
    Case("custom queue depth above its maximum", {"custom_queue_depth_max": 1000},
         baseline={}, current={"custom_queue_depth": series(1500)},
         expect=FAIL, says=["custom_queue_depth 1500 exceeds the maximum 1000"]),
    Case("custom queue depth within its maximum", {"custom_queue_depth_max": 1000},
         baseline={}, current={"custom_queue_depth": series(120)},
         expect=PASS, says=["within the maximum 1000"]),
    Case("custom cache hit rate below its minimum", {"custom_cache_hit_rate_min": 0.8},
         baseline={}, current={"custom_cache_hit_rate": [0.7] * 10},
         expect=FAIL, says=["custom_cache_hit_rate 0.7 is below the minimum 0.8"]),
    Case("seed error_rate_max", {"error_rate_max": 0.001},
         baseline={}, current={"error_rate": [0.002] * 10},
         expect=FAIL, says=["error_rate 0.002 exceeds the maximum 0.001"]),
    Case("relative rule for a custom query", {"custom_queue_depth_increase_percent": 50},
         baseline={"custom_queue_depth": series(100)}, current={"custom_queue_depth": series(300)},
         expect=FAIL, says=["+200.0%", "+50%"]),
    Case("no threshold applies to any query", {"custom_disk_max": 0.9},
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(200)},
         expect=INCONCLUSIVE, says=["no threshold applies"]),
    Case("no thresholds at all", {},
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(400)},
         expect=INCONCLUSIVE, says=["nothing was judged"]),
    Case("a failure outweighs missing data elsewhere", {**LATENCY_10, "custom_queue_depth_max": 1000},
         baseline={"latency_p95": series(200)},
         current={"latency_p95": [], "custom_queue_depth": series(5000)},
         expect=FAIL, says=["exceeds the maximum 1000"]),
    Case("missing data outweighs a pass elsewhere", {**LATENCY_10, "custom_queue_depth_max": 1000},
         baseline={"latency_p95": series(200)},
         current={"latency_p95": series(200), "custom_queue_depth": []},
         expect=INCONCLUSIVE, says=["custom_queue_depth: 0 complete points"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict_table(case: Case):
    # GIVEN a baseline captured before the upgrade and the window after the soak
    baseline = {n: summary(n, v, BASELINE_START) for n, v in case.baseline.items()}
    current = {n: summary(n, v, CURRENT_START, partial=case.current_partial.get(n)) for n, v in case.current.items()}

    # WHEN the judge compares them under the case's thresholds
    verdict = judge_cluster("eks-dev-1", baseline, current, case.thresholds, SETTINGS)

    # THEN the outcome is the one a person would expect, and it says why with numbers
    assert verdict.outcome == case.expect, verdict.summary()
    deciding = [f for f in verdict.findings if f.outcome == case.expect]
    assert deciding, verdict.summary()
    text = " | ".join(f.explanation for f in deciding)
    for expected in case.says:
        assert expected in text, f"{expected!r} not in {text!r}"
    if case.expect != PASS:
        assert verdict.summary().startswith(f"eks-dev-1: {case.expect.value}: ")


def test_inconclusive_is_never_reported_as_pass():
    # GIVEN every flavour of missing data
    for current in ({}, {"latency_p95": summary("latency_p95", [], CURRENT_START)},
                    {"latency_p95": summary("latency_p95", [200.0] * 4, CURRENT_START)}):
        verdict = judge_cluster("c", {"latency_p95": summary("latency_p95", series(200), BASELINE_START)},
                                current, LATENCY_10, SETTINGS)
        # THEN none of them is a pass
        assert verdict.outcome == INCONCLUSIVE


def test_regression_finding_carries_the_numbers():
    # GIVEN a clear 20% latency regression
    verdict = judge_cluster("c", {"latency_p95": summary("latency_p95", series(200), BASELINE_START)},
                            {"latency_p95": summary("latency_p95", series(240), CURRENT_START)},
                            LATENCY_10, SETTINGS)
    # THEN the finding has baseline, current, threshold, the query text and a tiny p-value
    (finding,) = verdict.findings
    assert finding.rule == "latency_p95_increase_percent"
    assert finding.query.startswith("avg:latency_p95")
    assert finding.baseline == pytest.approx(200, rel=0.01)
    assert finding.current == pytest.approx(240, rel=0.01)
    assert finding.threshold == 10
    assert finding.details["change_percent"] == pytest.approx(20, abs=0.5)
    assert finding.details["p_value"] < 0.01


def test_few_points_let_the_threshold_alone_decide():
    # GIVEN 6 points per window (below significance_min_points=8) and a single spike lifting the mean
    base = [200, 184, 216, 194, 206, 198]
    cur = [200, 180, 220, 190, 210, 600]
    verdict = judge_cluster("c", {"latency_p95": summary("latency_p95", base, BASELINE_START)},
                            {"latency_p95": summary("latency_p95", cur, CURRENT_START)}, LATENCY_10, SETTINGS)
    # THEN there is no significance test to excuse it: it fails
    assert verdict.outcome == FAIL
    assert "p_value" not in verdict.findings[0].details


def test_batch_thresholds_can_be_stricter():
    # GIVEN +8% latency: fine at the tenant's 10%, not at a canary's 5%
    base = {"latency_p95": summary("latency_p95", series(200), BASELINE_START)}
    cur = {"latency_p95": summary("latency_p95", series(216), CURRENT_START)}
    assert judge_cluster("c", base, cur, {"latency_increase_percent": 10}, SETTINGS).outcome == PASS
    assert judge_cluster("c", base, cur, {"latency_increase_percent": 5}, SETTINGS).outcome == FAIL


def test_complete_points_drops_the_filling_bucket_and_nan():
    # GIVEN three complete buckets, a NaN one, and one still filling at the window's end
    s = summary("q", [1.0, 2.0, math.nan, 3.0], CURRENT_START, partial=0.0)
    # THEN only the finished, real values remain
    assert complete_points(s, 60) == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------- Mann-Whitney U
def test_mann_whitney_clearly_separated_samples():
    # GIVEN current = 10..17 and baseline = 0..7 (no overlap)
    # By hand: U1 = 64, mean 32, variance 8*8*17/12 = 90.667, z = (64 - 32 - 0.5)/9.522 = 3.308,
    # p = 0.5 * erfc(3.308 / sqrt(2)) = 4.70e-4
    p = mann_whitney_p_greater([float(v) for v in range(10, 18)], [float(v) for v in range(8)])
    assert p < 0.01
    assert p == pytest.approx(4.70e-4, rel=0.01)


def test_mann_whitney_reversed_samples_are_not_greater():
    p = mann_whitney_p_greater([float(v) for v in range(8)], [float(v) for v in range(10, 18)])
    assert p > 0.99


def test_mann_whitney_small_hand_computed_case():
    # GIVEN current [2, 4], baseline [1, 3]: ranks 2 and 4 -> R1 = 6, U1 = 3, mean 2, variance 4*5/12,
    # z = (3 - 2 - 0.5)/1.291 = 0.387, p = 0.349
    assert mann_whitney_p_greater([2.0, 4.0], [1.0, 3.0]) == pytest.approx(0.3493, abs=1e-3)


def test_mann_whitney_identical_samples_show_no_evidence():
    # GIVEN the same values on both sides (every value tied across groups)
    p = mann_whitney_p_greater([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    # THEN p is at or just above one half: no evidence current is larger
    assert 0.5 <= p < 0.7


def test_mann_whitney_constant_series_is_no_evidence():
    # GIVEN every value equal (zero variance)
    assert mann_whitney_p_greater([3.0] * 10, [3.0] * 10) == 1.0
