"""The baseline precheck: a baseline the judge could not compare against refuses the run before any MR."""

from __future__ import annotations

import pytest
from guard.core.models import CheckStatus
from guard.core.run import MetricSummary
from guard.judge import JudgeSettings
from guard.services.precheck import baseline_judgeable

from tests.unit.test_judge import BASELINE_START, series, summary

SETTINGS = JudgeSettings(interval_seconds=60, min_data_points=5, min_coverage=0.7)
EXAMPLE = {"latency_increase_percent": 10, "error_rate_max": 0.001, "min_request_count": 1000,
           "request_count_max_decrease_percent": 50, "custom_queue_depth_max": 1000}
HOUR = 60


def baseline(**values: list[float | None]) -> dict[str, MetricSummary]:
    return {name: summary(name, points, BASELINE_START, buckets=HOUR) for name, points in values.items()}


def full(level: float) -> list[float | None]:
    return list(series(level, HOUR))


def test_a_full_baseline_passes_naming_what_will_be_compared():
    # GIVEN an hour of latency and request counts (the only queries a relative rule compares)
    result = baseline_judgeable("eks-dev-1", baseline(latency_p95=full(200), request_count=full(5000)), EXAMPLE,
                                SETTINGS)
    # THEN the check passes; error_rate and custom_queue_depth (absolute limits) need no baseline
    assert result.status == CheckStatus.PASS
    assert result.message == "baseline judgeable (latency_p95, request_count)"


@pytest.mark.parametrize("latency, says", [
    ([], "latency_p95: 0/60 buckets of 60s (0%), need 42"),
    ([200.0] * 30, "latency_p95: 30/60 buckets of 60s (50%), need 42"),
])
def test_an_empty_or_sparse_baseline_fails_naming_query_and_coverage(latency, says):
    # GIVEN a baseline whose latency series is empty or covers half the hour
    result = baseline_judgeable("eks-dev-1", baseline(latency_p95=latency, request_count=full(5000)), EXAMPLE,
                                SETTINGS)
    # THEN the precheck fails saying which query, what was found and what is required
    assert result.status == CheckStatus.FAIL
    assert says in result.message and "cannot be judged" in result.message
    assert result.cluster_id == "eks-dev-1" and "latency_p95" in result.details


def test_too_little_traffic_in_the_baseline_fails_when_min_request_count_is_set():
    # GIVEN a full hour of latency but only 10 requests a minute (600 < min_request_count 1000)
    result = baseline_judgeable("eks-dev-1", baseline(latency_p95=full(200), request_count=[10.0] * HOUR),
                                EXAMPLE, SETTINGS)
    # THEN every other query would be "too little traffic to judge": refused now, saying so
    assert result.status == CheckStatus.FAIL
    assert "request_count: 600 requests in the baseline window, below min_request_count 1000" in result.message


def test_queries_without_a_relative_rule_may_have_an_empty_baseline():
    # GIVEN only absolute limits and min_request_count (they read the window after the upgrade alone)
    thresholds = {"error_rate_max": 0.001, "custom_queue_depth_max": 1000}
    result = baseline_judgeable("eks-dev-1", baseline(error_rate=[], custom_queue_depth=[], latency_p95=[]),
                                thresholds, SETTINGS)
    # THEN there is nothing the baseline must cover
    assert result.status == CheckStatus.PASS and "no relative rule" in result.message


def test_request_count_gaps_in_a_busy_baseline_are_not_missing_traffic_for_the_volume_check():
    # GIVEN request_count reported for the first 20 minutes of the hour only, 5000 a minute
    sparse: list[float | None] = [5000.0] * 20 + [None] * 40
    result = baseline_judgeable("eks-dev-1", baseline(latency_p95=full(200), request_count=sparse), EXAMPLE,
                                SETTINGS)
    # THEN the decrease rule cannot be judged (coverage), but the volume is plenty: only coverage is named
    assert result.status == CheckStatus.FAIL
    assert "request_count: 20/60 buckets" in result.message and "below min_request_count" not in result.message

