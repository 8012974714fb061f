"""How well could any judge do on the benchmark's latency windows? An ideal judge's error rates.

    python benchmarks/judge_bound.py [--seed 1] [--samples 40000]

All misses of benchmarks/judge.py are latency windows (+10% limit, healthy changes within +-5%,
regressions +15% to +50%, noise CV 0.02-0.30). This script gives the best that any judge could
reach on them, so the benchmark's goals can be read against what the data allows.

The ideal judge is given more than the real one: it knows each window's noise level exactly, it
sees no spikes and no drift, and it knows how large healthy and regressed changes are. Its
observation is then the difference of the two windows' mean log levels, normal around the true
log change with variance 2 sigma^2 / n, and the best decision between "healthy" and "regressed"
at a given false-rollback rate is a threshold on the likelihood ratio (Neyman-Pearson). A real
judge sees a noisier version of the same data (spikes and drift added independently), so it
cannot do better. True changes are drawn as the benchmark draws them (uniform on the linear
scale); the likelihood of such a change on the log scale has a closed form.

Per comparison: the miss rate at each false-rollback rate for 15-point, 60-point and mixed windows.
Per batch (50 clusters, 60-point windows, one of them regressed or none): the best batch test
(the mean of the 50 likelihood ratios), at a 1% false rollback of a healthy batch.
"""

from __future__ import annotations

import argparse
import math
import random

LIMIT = 0.10
HEALTHY = (-LIMIT / 2, LIMIT / 2)  # true relative change, as benchmarks/judge.py draws it
REGRESSED = (1.5 * LIMIT, 5 * LIMIT)


def _between(x: float, s: float, span: tuple[float, float]) -> float:
    """Density of x = log(1 + d) + N(0, s^2) with d uniform on `span`.

    With mu = log(1 + d), mu has density e^mu / (b - a) on [log(1 + a), log(1 + b)], and
    e^mu N(mu; x, s^2) = e^(x + s^2 / 2) N(mu; x + s^2, s^2): the integral is two normal tails.
    """
    a, b = span
    lo, hi, centre = math.log(1 + a), math.log(1 + b), x + s * s
    tails = math.erfc((lo - centre) / (s * math.sqrt(2))) - math.erfc((hi - centre) / (s * math.sqrt(2)))
    return math.exp(x + s * s / 2) * tails / 2 / (b - a)


def _window(rng: random.Random, regressed: bool, n: int) -> float:
    """The ideal judge's likelihood ratio for one latency comparison of n points per window."""
    cv = rng.uniform(0.02, 0.30)
    s = math.sqrt(math.log(1 + cv * cv)) * math.sqrt(2 / n)
    x = math.log(1 + rng.uniform(*(REGRESSED if regressed else HEALTHY))) + rng.gauss(0, s)
    healthy = _between(x, s, HEALTHY)
    return math.inf if healthy == 0 else _between(x, s, REGRESSED) / healthy


def _miss_at(healthy: list[float], regressed: list[float], false_rollback: float) -> float:
    cut = sorted(healthy)[min(len(healthy) - 1, int(len(healthy) * (1 - false_rollback)))]
    return sum(r <= cut for r in regressed) / len(regressed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=int, default=40000)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    n = args.samples
    print("ideal judge, latency +10% limit, per comparison: miss rate at a given false-rollback rate")
    for label, lengths in (("15-point", (15,)), ("60-point", (60,)), ("15 and 60 mixed", (15, 60))):
        healthy = [_window(rng, False, lengths[i % len(lengths)]) for i in range(n)]
        regressed = [_window(rng, True, lengths[i % len(lengths)]) for i in range(n)]
        cells = [f"FR {fr:.1%} -> miss {_miss_at(healthy, regressed, fr):.1%}" for fr in (0.005, 0.01, 0.025, 0.05)]
        print(f"  {label:16} " + "   ".join(cells))

    batches = max(2000, n // 10)
    print(f"ideal judge, per batch of 50 clusters (60 points), {batches} batches each way:")

    def batch(regressed: bool) -> float:
        bad = rng.randrange(50) if regressed else -1
        return sum(_window(rng, c == bad, 60) for c in range(50)) / 50

    healthy = [batch(False) for _ in range(batches)]
    regressed = [batch(True) for _ in range(batches)]
    for fr in (0.01, 0.05):
        print(f"  healthy batch rolled back {fr:.0%} -> a latency regression missed "
              f"{_miss_at(healthy, regressed, fr):.1%}")


if __name__ == "__main__":
    main()
