"""guard.stats.filtered_adjust: the batch correction over only the tests that could fail.

The judge's tests ask "is the change past the limit?", so a healthy test's p-value is uniform
only at the limit itself and larger inside it. These tests hold the correction to its promise
(family-wise error / false discovery rate at the stated level) at that worst case, by simulation.
"""

from __future__ import annotations

import math
import random

import pytest
from guard.stats import bh_adjust, filtered_adjust, holm_adjust

P = [0.001, 0.02, 0.02, 0.04, 0.3, 0.0001, 0.8, 0.049, 0.51, 0.5]


def test_keeping_every_test_is_plain_holm_and_bh():
    # GIVEN a threshold that keeps every p-value
    # THEN the correction is exactly Holm / Benjamini-Hochberg
    assert filtered_adjust(P, "holm", keep_at=1.0) == pytest.approx(holm_adjust(P))
    assert filtered_adjust(P, "bh", keep_at=1.0) == pytest.approx(bh_adjust(P))


def test_tests_above_the_threshold_are_dropped_and_the_rest_scaled():
    # WHEN the tests with p > 0.5 are dropped
    adjusted = filtered_adjust(P, "holm", keep_at=0.5)
    # THEN the dropped ones (0.8, 0.51) can never fail
    assert adjusted[6] == 1.0 and adjusted[8] == 1.0
    # AND the 8 kept ones are Holm over p / 0.5: the smallest is 8 x 0.0002
    assert adjusted[5] == pytest.approx(8 * 0.0001 / 0.5)
    kept = [p / 0.5 for p in P if p <= 0.5]
    assert sorted(a for a in adjusted if a < 1.0) == pytest.approx(sorted(a for a in holm_adjust(kept) if a < 1.0))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="keep_at"):
        filtered_adjust(P, "holm", keep_at=0)
    with pytest.raises(ValueError, match="method"):
        filtered_adjust(P, "sidak")


def _family_error(rng: random.Random, method: str, m: int, shift: float, reps: int, level: float) -> float:
    """Share of families of m healthy tests with any adjusted p <= level; each p is a one-sided
    z-test whose true change is `shift` standard errors inside the limit (0: exactly at the limit)."""
    hits = 0
    for _ in range(reps):
        p = [0.5 * math.erfc((rng.gauss(0, 1) + shift) / math.sqrt(2)) for _ in range(m)]
        hits += min(filtered_adjust(p, method, keep_at=0.5)) <= level
    return hits / reps


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_healthy_batches_at_the_limit_are_rolled_back_at_most_at_the_stated_rate(method):
    # GIVEN 4,000 healthy batches of 50 tests, every change exactly at the limit (the worst case)
    rng = random.Random(20261201)
    # WHEN each batch is corrected at 5%
    error = _family_error(rng, method, m=50, shift=0.0, reps=4000, level=0.05)
    # THEN at most 5% of the batches have a failure (plus three standard errors of the simulation)
    assert error <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)
    # AND the correction is not idle: it is close to the level there, not far below it
    assert error >= 0.03


def test_healthy_changes_inside_the_limit_fail_far_less_often_and_a_clear_outlier_still_fails():
    # GIVEN healthy batches whose changes sit one standard error inside the limit
    rng = random.Random(7)
    error = _family_error(rng, "holm", m=100, shift=-1.0, reps=2000, level=0.01)
    # THEN false failures are rarer than the level
    assert error <= 0.01
    # AND one test at p = 2e-4 among 99 such healthy ones fails after the correction (few of them
    # could fail), where plain Holm over all 100 needs p <= 1e-4 and lets it pass
    healthy = [0.5 * math.erfc((rng.gauss(0, 1) - 1.0) / math.sqrt(2)) for _ in range(99)]
    adjusted = filtered_adjust([2e-4, *healthy], "holm", keep_at=0.5)
    assert adjusted[0] <= 0.01
    assert holm_adjust([2e-4, *healthy])[0] > 0.01
