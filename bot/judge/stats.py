"""The statistics of the judge: rank test, Hodges-Lehmann shift and interval, effect sizes.

Deterministic: nothing here draws a random number. Kayenta adds tiny Gaussian noise to constant
samples so that its rank test does not divide by zero; here a comparison whose values are all
equal is answered directly (p = 1, shift 0: there is nothing to tell the sides apart), and one
constant side against a varying one goes through the ordinary test, whose tie correction
handles it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import mannwhitneyu


@dataclass(frozen=True)
class RankTest:
    """Two-sided Mann-Whitney U of canary against baseline."""

    u: float  # canary's U: pairs with canary > baseline, a tie counting one half
    p_value: float


@dataclass(frozen=True)
class Shift:
    """Hodges-Lehmann estimate of canary - baseline and its confidence interval."""

    estimate: float
    low: float
    high: float


def all_equal(canary: np.ndarray, baseline: np.ndarray) -> bool:
    """Every value on both sides is the same number: no test can tell the sides apart."""
    first = canary[0]
    return bool(np.all(canary == first) and np.all(baseline == first))


def rank_tests(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[RankTest]:
    """The Mann-Whitney U test for each (canary, baseline) pair, in order.

    scipy's asymptotic method: the normal approximation with tie correction and continuity
    correction, the same approximation the shift's interval below uses, so the p-value and the
    interval agree. Pairs of the same sizes go to scipy in one call along the last axis: one call
    per pair spends ~350 microseconds in scipy's argument handling, a batch of 100 pairs ~7 per
    pair (measured on the 2-core CI machine), and the case stream of `coalmine judge` is mostly
    metrics of equal window lengths. Both sides must be non-empty.
    """
    results: list[RankTest | None] = [None] * len(pairs)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, (canary, baseline) in enumerate(pairs):
        if all_equal(canary, baseline):
            results[index] = RankTest(u=canary.size * baseline.size / 2, p_value=1.0)
        else:
            by_shape.setdefault((canary.size, baseline.size), []).append(index)
    for indexes in by_shape.values():
        canaries = np.stack([pairs[i][0] for i in indexes])
        baselines = np.stack([pairs[i][1] for i in indexes])
        done = mannwhitneyu(canaries, baselines, use_continuity=True, alternative="two-sided",
                            method="asymptotic", axis=-1)
        for row, index in enumerate(indexes):
            results[index] = RankTest(u=float(done.statistic[row]),
                                      p_value=float(done.pvalue[row]))
    return [r for r in results if r is not None]


def hodges_lehmann(canary: np.ndarray, baseline: np.ndarray, confidence: float) -> Shift:
    """The median of all canary - baseline differences, with a distribution-free interval.

    Own implementation of the textbook large-sample interval (Hollander & Wolfe, "Nonparametric
    Statistical Methods", the two-sample shift): sort the n*m differences D; the interval is
    [D(C), D(nm + 1 - C)] with C = nm/2 - z * sd(U) + 1/2 rounded down, z the normal quantile of
    (1 + confidence)/2 and sd(U) the tie-corrected standard deviation of U under no shift. These
    are the shifts the rank test above would not reject at 1 - confidence. (R's wilcox.test and
    Kayenta find the same end points by root-finding the test statistic; the two can differ by
    one order statistic.) When the samples are too small to reach the confidence, C is 1 and the
    interval is the whole range of differences.
    """
    n, m = canary.size, baseline.size
    pairs = n * m
    differences = np.subtract.outer(canary, baseline).ravel()
    _, tie_sizes = np.unique(np.concatenate((canary, baseline)), return_counts=True)
    ties = float(np.sum(tie_sizes.astype(np.float64) ** 3 - tie_sizes))
    total = n + m
    variance = pairs / 12 * ((total + 1) - ties / (total * (total - 1)))
    z = float(ndtri((1 + confidence) / 2))
    c = math.floor(pairs / 2 - z * math.sqrt(max(variance, 0.0)) + 0.5)
    c = min(max(c, 1), (pairs + 1) // 2)
    low_index, high_index = c - 1, pairs - c
    mid_low, mid_high = (pairs - 1) // 2, pairs // 2
    ordered = np.partition(differences, sorted({low_index, mid_low, mid_high, high_index}))
    estimate = (float(ordered[mid_low]) + float(ordered[mid_high])) / 2
    return Shift(estimate=estimate, low=float(ordered[low_index]), high=float(ordered[high_index]))


def mean_ratio(canary_mean: float, baseline_mean: float) -> float | None:
    """Canary mean / baseline mean; None when a ratio means nothing (a negative mean).

    Both means 0 is no change (1.0); a baseline mean of 0 under a positive canary mean is an
    unbounded increase (inf), which exceeds any allowance. Kayenta returns NaN for a zero mean
    and then skips the effect check, so a canary erring where the baseline never did would be
    judged on significance alone; here it is the increase it is.
    """
    if canary_mean < 0 or baseline_mean < 0:
        return None
    if baseline_mean == 0:
        return 1.0 if canary_mean == 0 else math.inf
    return canary_mean / baseline_mean


def cles(test: RankTest, canary_count: int, baseline_count: int) -> float:
    """Common-language effect size: P(canary > baseline) + P(tie) / 2 over all pairs."""
    return test.u / (canary_count * baseline_count)
