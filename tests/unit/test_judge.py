"""The validation judge: a table of metric series and the verdict a person would expect."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from guard.core.run import ClusterVerdict, MetricFinding, MetricSummary, VerdictOutcome
from guard.judge import (
    JudgeSettings,
    baseline_coverage,
    complete_points,
    judge_batch,
    judge_cluster,
    mann_whitney_p_greater,
)

PASS, FAIL, INCONCLUSIVE = VerdictOutcome.PASS, VerdictOutcome.FAIL, VerdictOutcome.INCONCLUSIVE
SETTINGS = JudgeSettings(interval_seconds=60, min_data_points=5, significance_min_points=8, confidence=0.95)
UPGRADE = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
BASELINE_START = UPGRADE - timedelta(hours=1)
CURRENT_START = UPGRADE + timedelta(hours=1)  # after the soak

# Realistic noise: ±4% around the level, never a constant series.
NOISE = [1.00, 0.97, 1.03, 0.99, 1.02, 0.96, 1.04, 1.01, 0.98, 1.00, 1.03, 0.97, 1.02, 0.99, 0.99]  # mean 1


def series(level: float, n: int = 15) -> list[float]:
    return [level * NOISE[i % len(NOISE)] for i in range(n)]


def summary(query_name: str, values: list[float | None], start: datetime, partial: float | None = None,
            interval: int = 60, buckets: int | None = None) -> MetricSummary:
    """Buckets of `interval` from `start` (None: no point for that bucket) in a window of `buckets`
    buckets (default: as many as values, at least 10); `partial` adds a last bucket still filling."""
    t0 = start.timestamp()
    points = [(t0 + i * interval, v) for i, v in enumerate(values) if v is not None]
    end = start + timedelta(seconds=(buckets or max(len(values), 10)) * interval)
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
         expect=PASS, says=["within +10%", "trimmed means", "Mann-Whitney"]),
    Case("improvement", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(150)},
         expect=PASS, says=["-25.0%"]),
    Case("no data after the upgrade", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": []},
         expect=INCONCLUSIVE, says=["too little data after the upgrade", "0/10 buckets", "never a pass"]),
    Case("query missing from the current window", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={},
         expect=INCONCLUSIVE, says=["too little data after the upgrade: no series"]),
    Case("no baseline to compare with", LATENCY_10,
         baseline={}, current={"latency_p95": series(200)},
         expect=INCONCLUSIVE, says=["too little data before the upgrade (baseline)"]),
    Case("sparse data, even if it looks bad", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": [900, 950, 1000]},
         expect=INCONCLUSIVE, says=["3/10 buckets", "need 7"]),
    Case("only NaN after the upgrade", LATENCY_10,
         baseline={"latency_p95": series(200)}, current={"latency_p95": [math.nan] * 10},
         expect=INCONCLUSIVE),
    Case("low traffic", {**LATENCY_10, "min_request_count": 1000},
         baseline={"latency_p95": series(200)},
         current={"latency_p95": series(200), "request_count": [40.0] * 15},
         expect=INCONCLUSIVE, says=["request_count 600 below the minimum 1000", "too little traffic"]),
    Case("traffic threshold but no request_count query (the config refuses this)", {**LATENCY_10,
                                                                                      "min_request_count": 1000},
         baseline={"latency_p95": series(200)}, current={"latency_p95": series(200)},
         expect=INCONCLUSIVE, says=["min_request_count: its query was not read"]),
    Case("enough traffic", {**LATENCY_10, "min_request_count": 1000},
         baseline={"latency_p95": series(200)},
         current={"latency_p95": series(200), "request_count": [5000.0] * 15},
         expect=PASS),
    Case("a still-filling last bucket with a low value is not judged", {"custom_api_success_rate_min": 0.999},
         baseline={}, current={"custom_api_success_rate": [0.9995] * 10},
         current_partial={"custom_api_success_rate": 0.5},
         expect=PASS, says=["meets the minimum 0.999"]),
    Case("one low complete bucket is a dip, not a verdict", {"custom_api_success_rate_min": 0.999},
         baseline={}, current={"custom_api_success_rate": [0.9995] * 14 + [0.5]},
         expect=PASS, says=["meets the minimum 0.999"]),
    Case("a sustained drop below the minimum fails", {"custom_api_success_rate_min": 0.999},
         baseline={}, current={"custom_api_success_rate": [0.9995] * 5 + [0.99] * 10},
         expect=FAIL, says=["is below the minimum 0.999", "absolute limit, no test"]),
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
         expect=INCONCLUSIVE, says=["custom_disk_max: its query was not read"]),
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
         expect=INCONCLUSIVE, says=["custom_queue_depth: too little data after the upgrade: 0/10"]),
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
    assert finding.rule == "latency_p95_max_increase_percent"
    assert finding.query.startswith("avg:latency_p95")
    assert finding.baseline == pytest.approx(200, rel=0.01)
    assert finding.current == pytest.approx(240, rel=0.01)
    assert finding.threshold == 10
    assert finding.details["change_percent"] == pytest.approx(20, abs=0.5)
    assert finding.details["p_value"] < 0.01
    assert finding.p_value is not None and finding.p_value < 0.01  # raw, before any batch correction
    assert finding.statistic == "20% trimmed mean"
    assert finding.current_coverage is not None and finding.current_coverage.found == 15
    assert finding.test is not None and "Mann-Whitney" in finding.test


def test_few_points_let_the_robust_change_alone_decide():
    # GIVEN 6-minute windows (below significance_min_points=8): one spike, then a sustained rise
    base = [200, 184, 216, 194, 206, 198]
    spike = judge_cluster("c", {"latency_p95": summary("latency_p95", base, BASELINE_START, buckets=6)},
                          {"latency_p95": summary("latency_p95", [200, 180, 220, 190, 210, 600], CURRENT_START,
                                                  buckets=6)}, LATENCY_10, SETTINGS)
    rise = judge_cluster("c", {"latency_p95": summary("latency_p95", base, BASELINE_START, buckets=6)},
                         {"latency_p95": summary("latency_p95", [260, 250, 270, 255, 265, 600], CURRENT_START,
                                                 buckets=6)}, LATENCY_10, SETTINGS)
    # THEN there is no test, the spike is trimmed away, and the sustained rise fails
    assert spike.outcome == PASS
    assert rise.outcome == FAIL
    assert "p_value" not in rise.findings[0].details and "no test" in rise.findings[0].explanation


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


# ---------------------------------------------------------------- Judge v2: direction, coverage, volume
THROUGHPUT_50 = {"request_count_max_decrease_percent": 50, "min_request_count": 1000}


def test_throughput_collapse_to_no_points_fails_the_decrease_rule():
    # GIVEN real traffic before and not a single request_count point after the upgrade
    verdict = judge_cluster("c", {"request_count": summary("request_count", series(5000), BASELINE_START)},
                            {"request_count": summary("request_count", [], CURRENT_START, buckets=15)},
                            THROUGHPUT_50, SETTINGS)
    # THEN the throughput rule fails (a count that stopped reports nothing), it is not "no data"
    assert verdict.outcome == FAIL, verdict.summary()
    drop = next(f for f in verdict.findings if f.rule == "request_count_max_decrease_percent")
    assert drop.outcome == FAIL and drop.change_percent == -100


def test_throughput_halved_by_a_filling_bucket_is_not_a_drop():
    # GIVEN steady traffic whose newest bucket is still filling (a tenth of a minute counted)
    verdict = judge_cluster("c", {"request_count": summary("request_count", series(5000), BASELINE_START)},
                            {"request_count": summary("request_count", series(4900), CURRENT_START, partial=500)},
                            THROUGHPUT_50, SETTINGS)
    # THEN the filling bucket is left out and the rule passes
    assert verdict.outcome == PASS, verdict.summary()


def test_too_little_traffic_makes_other_queries_inconclusive_but_a_fail_outranks_it():
    # GIVEN latency that looks doubled, with 2 requests a minute after the upgrade (5000 before)
    baseline = {"latency_p95": summary("latency_p95", series(200), BASELINE_START),
                "request_count": summary("request_count", series(5000), BASELINE_START)}
    current = {"latency_p95": summary("latency_p95", series(400), CURRENT_START),
               "request_count": summary("request_count", [2.0] * 15, CURRENT_START)}
    only_volume = judge_cluster("c", baseline, current, {**LATENCY_10, "min_request_count": 1000}, SETTINGS)
    with_drop = judge_cluster("c", baseline, current, {**LATENCY_10, **THROUGHPUT_50}, SETTINGS)
    # THEN latency is not judged on that traffic (inconclusive), and the collapse itself fails
    assert only_volume.outcome == INCONCLUSIVE
    assert "too little traffic" in only_volume.summary()
    assert with_drop.outcome == FAIL
    latency = next(f for f in with_drop.findings if f.query_name == "latency_p95")
    assert latency.outcome == INCONCLUSIVE


def test_decrease_rule_catches_a_sustained_drop_and_ignores_a_short_gap():
    # GIVEN throughput down to a third, and separately a 3-minute gap in otherwise steady traffic
    base = {"request_count": summary("request_count", series(5000), BASELINE_START)}
    third = judge_cluster("c", base, {"request_count": summary("request_count", series(1600), CURRENT_START)},
                          THROUGHPUT_50, SETTINGS)
    gappy = series(5000)
    gappy[5:8] = [None, None, None]  # type: ignore[list-item]
    gap = judge_cluster("c", base, {"request_count": summary("request_count", gappy, CURRENT_START)},
                        THROUGHPUT_50, SETTINGS)
    # THEN the drop fails with its numbers, and the gap decides nothing
    assert third.outcome == FAIL
    assert "-68" in third.summary() and "-50%" in third.summary()
    assert gap.outcome == PASS, gap.summary()


def test_sparse_window_is_inconclusive_with_coverage_found_and_required():
    # GIVEN a 60-minute window with one point in ten
    values: list[float | None] = [200.0 if i % 10 == 3 else None for i in range(60)]
    verdict = judge_cluster("c", {"latency_p95": summary("latency_p95", series(200, 60), BASELINE_START)},
                            {"latency_p95": summary("latency_p95", values, CURRENT_START)}, LATENCY_10, SETTINGS)
    # THEN it is not judged, and the explanation gives coverage found vs required
    assert verdict.outcome == INCONCLUSIVE
    assert "6/60 buckets of 60s (10%), need 42" in verdict.summary()


def test_bucket_width_is_taken_from_the_timestamps():
    # GIVEN Datadog answering with 5-minute buckets for an hour although 60 s is configured
    base = summary("latency_p95", series(200, 12), BASELINE_START, interval=300)
    cur = summary("latency_p95", series(240, 12), CURRENT_START, interval=300)
    verdict = judge_cluster("c", {"latency_p95": base}, {"latency_p95": cur}, LATENCY_10, SETTINGS)
    # THEN the window is fully covered at 12 buckets, and the regression is found
    (finding,) = verdict.findings
    assert finding.current_coverage is not None
    assert (finding.current_coverage.bucket_seconds, finding.current_coverage.expected) == (300, 12)
    assert verdict.outcome == FAIL


def test_increase_within_noise_is_not_a_failure():
    # GIVEN a +12% step on very noisy latency (±30%), only 15 points each
    noisy = [1.0, 0.62, 1.35, 0.8, 1.22, 0.7, 1.3, 0.95, 1.1, 0.75, 1.28, 0.9, 1.05, 0.68, 1.3]
    verdict = judge_cluster("c", {"latency_p95": summary("latency_p95", [200 * v for v in noisy], BASELINE_START)},
                            {"latency_p95": summary("latency_p95", [224 * v for v in noisy[::-1]], CURRENT_START)},
                            LATENCY_10, SETTINGS)
    # THEN it passes: the test cannot tell it from a change within +10%, and it says so
    (finding,) = verdict.findings
    assert verdict.outcome == PASS
    assert finding.beyond_limit is True and "within noise" in finding.explanation


def test_the_same_inputs_give_the_same_verdict():
    base = {"latency_p95": summary("latency_p95", series(200), BASELINE_START)}
    cur = {"latency_p95": summary("latency_p95", series(260), CURRENT_START)}
    assert judge_cluster("c", base, cur, LATENCY_10, SETTINGS) == judge_cluster("c", base, cur, LATENCY_10, SETTINGS)


def test_baseline_coverage_says_whether_a_baseline_can_be_judged():
    # GIVEN a full latency baseline and an almost empty request_count baseline
    baseline = {"latency_p95": summary("latency_p95", series(200), BASELINE_START),
                "request_count": summary("request_count", [5000.0, 5000.0], BASELINE_START, buckets=15)}
    coverage = baseline_coverage(baseline, {**LATENCY_10, **THROUGHPUT_50, "error_rate_max": 0.01}, SETTINGS)
    # THEN each relatively judged query says its coverage (absolute rules need no baseline)
    assert set(coverage) == {"latency_p95", "request_count"}
    assert coverage["latency_p95"] is not None and coverage["latency_p95"].enough
    assert coverage["request_count"] is not None and not coverage["request_count"].enough


# ---------------------------------------------------------------- the batch
def _verdict(cluster: str, current_level: float) -> ClusterVerdict:
    return judge_cluster(cluster, {"latency_p95": summary("latency_p95", series(200, 60), BASELINE_START)},
                         {"latency_p95": summary("latency_p95", series(current_level, 60), CURRENT_START),
                          "custom_queue_depth": summary("custom_queue_depth", series(100, 60), CURRENT_START)},
                         {**LATENCY_10, "custom_queue_depth_max": 1000}, SETTINGS)


def _noisy_verdict(cluster: str, current_level: float) -> ClusterVerdict:
    """60 minutes of latency around 200 ms, then around `current_level`: log-normal noise (CV 10%)
    from a fixed seed, so the p-value moves smoothly with the level."""
    rng = random.Random(1)
    base: list[float | None] = [200 * rng.lognormvariate(0, 0.1) for _ in range(60)]
    cur: list[float | None] = [current_level * rng.lognormvariate(0, 0.1) for _ in range(60)]
    return judge_cluster(cluster, {"latency_p95": summary("latency_p95", base, BASELINE_START)},
                         {"latency_p95": summary("latency_p95", cur, CURRENT_START)}, LATENCY_10, SETTINGS)


def _latency(verdict: ClusterVerdict) -> MetricFinding:
    return next(f for f in verdict.findings if f.query_name == "latency_p95")


def test_batch_correction_demotes_a_marginal_failure_and_keeps_a_clear_one():
    # GIVEN 40 clusters: 38 unchanged, one barely significant past +10%, one clearly regressed
    marginal = next(v for level in range(225, 260)
                    if (v := _noisy_verdict("marginal", level)).outcome == FAIL and (_latency(v).p_value or 1) > 0.01)
    verdicts = [_verdict(f"ok-{i}", 200) for i in range(38)] + [marginal, _verdict("bad", 300)]

    # WHEN the batch is judged together (Holm, family-wise error 1%)
    final = {v.cluster_id: v for v in judge_batch(verdicts, error_rate=0.01, correction="holm")}

    # THEN the clear one still fails, the marginal one no longer does, and each says which correction applied
    assert final["bad"].outcome == FAIL
    assert final["marginal"].outcome == PASS and final["marginal"].uncorrected_outcome == FAIL
    # (only the two whose change lies past the limit could fail: the correction counts those)
    assert final["ok-0"].correction == ("Holm over the 2 of 40 tests that could fail (p ≤ 0.5 counted as p/0.5), "
                                        "family-wise error 0.01")
    latency = _latency(final["marginal"])
    assert latency.adjusted_p_value is not None and latency.p_value is not None
    assert latency.adjusted_p_value >= latency.p_value
    assert "after correction" in latency.explanation
    assert "Holm over the 2 of 40 tests" in final["bad"].summary()


def test_a_clear_outlier_is_not_diluted_by_the_healthy_clusters_of_its_batch():
    # GIVEN 49 unchanged clusters and one whose rise past +10% is clear on its own (p well below 1%)
    # but would not survive a correction that divides by all 50 tests
    outlier = next(v for level in range(225, 260)
                   if 2e-4 < (_latency(v := _noisy_verdict("outlier", level)).p_value or 1) < 2e-3)
    verdicts = [_verdict(f"ok-{i}", 200) for i in range(49)] + [outlier]
    # WHEN the batch is judged together
    final = {v.cluster_id: v for v in judge_batch(verdicts, error_rate=0.01, correction="holm")}
    # THEN it still fails: the healthy clusters, far inside the limit, could not fail and are not counted
    assert final["outlier"].outcome == FAIL
    assert final["outlier"].correction is not None and "the 1 of 50 tests" in final["outlier"].correction
    assert all(v.outcome == PASS for k, v in final.items() if k != "outlier")


def test_batch_correction_never_touches_absolute_limits_and_is_idempotent():
    # GIVEN a cluster over an absolute maximum, in a batch of many
    over = judge_cluster("over", {}, {"custom_queue_depth": summary("custom_queue_depth", series(1500),
                                                                    CURRENT_START)},
                         {"custom_queue_depth_max": 1000}, SETTINGS)
    verdicts = [_verdict(f"ok-{i}", 200) for i in range(20)] + [over]
    once = judge_batch(verdicts, error_rate=0.01, correction="bh")
    # THEN it still fails, and correcting corrected verdicts changes nothing
    assert {v.cluster_id for v in once if v.outcome == FAIL} == {"over"}
    assert judge_batch(once, error_rate=0.01, correction="bh") == once
    assert once[0].correction == ("Benjamini-Hochberg: none of 20 tests could fail (all p > 0.5), "
                                  "false discovery rate 0.01")
