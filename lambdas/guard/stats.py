"""Small, dependency-free statistics for the judge (no numpy/scipy in the Lambda bundle).

tests/unit/test_stats.py cross-checks these against scipy where scipy is installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default, `method='linear'`)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def trimmed_mean(values: Sequence[float], proportion: float = 0.2) -> float:
    """Mean after cutting `proportion` of the values from each end (scipy's `trim_mean`).

    Robust to a few spikes or dips (up to `proportion` of the points on either side) while
    keeping most of the mean's efficiency on well-behaved data.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("trimmed mean of no values")
    cut = int(proportion * n)
    kept = ordered[cut: n - cut]
    return sum(kept) / len(kept)


def mann_whitney_p_greater(current: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value that `current` tends to be larger than `baseline`.

    Normal approximation with tie and continuity correction (scipy's `mannwhitneyu(...,
    alternative='greater', method='asymptotic')`); 1.0 when every value is tied.
    """
    n1, n2 = len(current), len(baseline)
    if n1 == 0 or n2 == 0:
        return 1.0
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
    z = (u1 - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney_p_less(current: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value that `current` tends to be smaller than `baseline`."""
    return mann_whitney_p_greater(baseline, current)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (reject where adjusted <= the family-wise error rate)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (reject where adjusted <= the false discovery rate)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted = [1.0] * m
    running = 1.0
    for back, i in enumerate(order):
        rank = m - back
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted


def filtered_adjust(p_values: Sequence[float], method: str = "holm", keep_at: float = 0.5) -> list[float]:
    """Holm or Benjamini-Hochberg over only the p-values at or below `keep_at`, each divided by it.

    For tests of an interval null ("the change is within the limit"), a null p-value is uniform
    only at the edge of the interval and stochastically larger inside it, so most healthy tests
    sit far above any level and merely inflate the count a correction divides by. Discarding the
    p-values above a threshold fixed in advance and rescaling the rest by it (a conditional
    p-value: P(p <= t | p <= keep_at) <= t / keep_at for such nulls) keeps the family-wise error
    (Holm) or false discovery rate (BH) at the stated level: Ellis, Pecanka & Goeman (2020),
    "Gaining power in multiple testing of interval hypotheses via conditionalization";
    Zhao, Small & Su (2019), "Multiple testing when many p-values are uniformly conservative".
    Discarded tests get an adjusted p-value of 1.
    """
    if not 0 < keep_at <= 1:
        raise ValueError(f"keep_at must be in (0, 1], got {keep_at}")
    if method not in ("holm", "bh"):
        raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")
    kept = [i for i, p in enumerate(p_values) if p <= keep_at]
    scaled = [p_values[i] / keep_at for i in kept]
    adjusted = holm_adjust(scaled) if method == "holm" else bh_adjust(scaled)
    result = [1.0] * len(p_values)
    for i, a in zip(kept, adjusted, strict=True):
        result[i] = a
    return result
