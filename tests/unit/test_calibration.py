"""Calibration: the judge replayed on healthy history gives false-rollback rates and thresholds that hold a target."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from guard.judge import JudgeSettings
from guard.rules import RuleKind
from guard.services.calibration import Series, _holding, calibrate, window_pairs

SETTINGS = JudgeSettings()
START = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def history(level: float, *, swing: float = 0.0, noise: float = 0.03, days: int = 1) -> Series:
    """One-minute points: `level`, a slow daily-ish swing of ±`swing` (period 3 h), and deterministic noise."""
    points = {}
    for minute in range(days * 24 * 60):
        ts = (START + timedelta(minutes=minute)).timestamp()
        wave = 1 + swing * math.sin(2 * math.pi * minute / 180)
        jitter = 1 + noise * math.sin(minute * 12.9898) * 0.5
        points[ts] = level * wave * jitter
    return Series(f"avg:q{{l:{level}}}", points)


def test_window_pairs_are_shaped_like_a_run():
    # GIVEN a 60-minute baseline and a 20-minute soak over 3 hours
    pairs = window_pairs(START, START + timedelta(hours=3), 60, 20)
    # THEN each baseline ends where its current window's soak starts, the current window is the soak long,
    # and consecutive current windows do not overlap
    (b0, b1), (c0, c1) = pairs[0]
    assert (b0, b1, c0, c1) == (START, START + timedelta(minutes=60), START + timedelta(minutes=60),
                                START + timedelta(minutes=80))
    assert all(later[1][0] >= earlier[1][1] for earlier, later in pairwise(pairs))
    assert pairs[-1][1][1] <= START + timedelta(hours=3) and len(pairs) == 6
    # AND a soak longer than the baseline reads a current window as long as the baseline only
    (_, _), (c0, c1) = window_pairs(START, START + DAY, 60, 120)[0]
    assert c1 - c0 == timedelta(minutes=60) and c1 == START + timedelta(minutes=180)


def test_steady_healthy_history_never_rolls_back_and_suggests_a_tight_threshold():
    # GIVEN a day of steady latency (±1.5% noise) on two clusters
    histories = {c: {"latency_p95": history(200)} for c in ("eks-a", "eks-b")}
    # WHEN the judge is replayed at +10%
    result = calibrate("dev-1", histories, {"latency_increase_percent": 10}, SETTINGS, start=START, end=START + DAY,
                       baseline_minutes=60, soak_minutes=20, target=0.005)
    # THEN no pair failed, and the threshold that holds 0.5% is far below 10%
    rule = result.rules[0]
    assert (rule.key, rule.false_rollbacks, rule.windows) == ("latency_increase_percent", 0, 2 * result.slots)
    assert result.batch_false_rollbacks == 0 and "Holm" in result.correction
    assert rule.recommended is not None and rule.recommended < 5


def test_a_threshold_inside_healthy_drift_shows_false_rollbacks_and_a_threshold_that_holds():
    # GIVEN latency that swings ±25% every three hours (healthy traffic pattern)
    histories = {"eks-a": {"latency_p95": history(200, swing=0.25)}}
    # WHEN the judge is replayed at +10%
    result = calibrate("dev-1", histories, {"latency_increase_percent": 10}, SETTINGS, start=START, end=START + DAY,
                       baseline_minutes=60, soak_minutes=20, target=0.01)
    # THEN healthy pairs were rolled back, and the suggested threshold is above 10%
    rule = result.rules[0]
    assert rule.false_rollbacks > 0 and rule.rate > 0.01
    assert rule.recommended is not None and rule.recommended > 10
    # AND replayed at the suggested threshold, the rate holds the target
    again = calibrate("dev-1", histories, {"latency_increase_percent": rule.recommended * 1.001}, SETTINGS,
                      start=START, end=START + DAY, baseline_minutes=60, soak_minutes=20, target=0.01)
    assert again.rules[0].rate <= 0.01


def test_absolute_limits_are_set_from_the_levels_seen_and_steady_traffic_never_fails_the_drop_rule():
    # GIVEN error rates around 0.0004 and steady traffic
    histories = {"eks-a": {"error_rate": history(0.0004, noise=0.2), "request_count": history(5000)}}
    thresholds = {"error_rate_max": 0.00041, "request_count_max_decrease_percent": 50, "min_request_count": 1000}
    result = calibrate("dev-1", histories, thresholds, SETTINGS, start=START, end=START + DAY,
                       baseline_minutes=60, soak_minutes=20, target=0.005)
    rules = {r.key: r for r in result.rules}
    # THEN a maximum inside the noise rolls back healthy windows, and the suggestion is above the levels seen
    assert rules["error_rate_max"].false_rollbacks > 0
    assert rules["error_rate_max"].recommended is not None and rules["error_rate_max"].recommended > 0.00041
    # AND min_request_count is never a rollback rule (no suggestion); steady traffic never fails the drop rule
    assert rules["min_request_count"].recommended is None and rules["min_request_count"].false_rollbacks == 0
    assert rules["request_count_max_decrease_percent"].false_rollbacks == 0


@pytest.mark.parametrize("kind, needed, target, expected", [
    (RuleKind.MAX_INCREASE_PERCENT, [1, 2, 3, 4, 50], 0.2, 4),  # one of five may fail: the largest is allowed
    (RuleKind.MAX_INCREASE_PERCENT, [1, 2, 3, 4, 50], 0.1, 50),  # none may: the largest sets it
    (RuleKind.MAX, [0.1, 0.2, 0.9], 0.005, 0.9),
    (RuleKind.MIN, [0.95, 0.99, 0.999], 0.005, 0.95),  # a minimum fails below: the lowest level sets it
    (RuleKind.MIN_REQUEST_COUNT, [1, 2], 0.5, None),
    (RuleKind.MAX, [], 0.005, None),
])
def test_the_threshold_that_holds_a_target_is_an_order_statistic(kind, needed, target, expected):
    assert _holding(kind, needed, target) == expected
