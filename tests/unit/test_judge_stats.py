"""The judge's statistics against values computed another way: by hand, by brute force, by scipy."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from bot.judge.stats import RankTest, cles, hodges_lehmann, mean_ratio, rank_tests


def arr(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def test_rank_test_matches_a_hand_computed_normal_approximation() -> None:
    # canary [1,2,3] vs baseline [4,5,6]: U = 0, mean 4.5, sd sqrt(3*3*7/12); continuity 0.5.
    z = (0 - 4.5 + 0.5) / math.sqrt(9 * 7 / 12)
    expected = math.erfc(abs(z) / math.sqrt(2))  # two-sided
    [test] = rank_tests([(arr([1, 2, 3]), arr([4, 5, 6]))])
    assert test.u == 0
    assert test.p_value == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.0809, abs=1e-4)


def test_rank_test_tie_correction_by_hand() -> None:
    canary, baseline = [1, 1, 2, 3], [1, 2, 2, 4]
    # U by counting pairs (a tie counts 1/2) and the tie-corrected variance from its formula.
    u = sum(1.0 if c > b else 0.5 if c == b else 0.0 for c in canary for b in baseline)
    n = m = 4
    tie_groups = [3, 3, 1, 1]  # three 1s, three 2s, one 3, one 4
    ties = sum(t ** 3 - t for t in tie_groups)
    sd = math.sqrt(n * m / 12 * ((n + m + 1) - ties / ((n + m) * (n + m - 1))))
    z = (abs(u - n * m / 2) - 0.5) / sd
    [test] = rank_tests([(arr(canary), arr(baseline))])
    assert test.u == u == 6.0
    assert test.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)


def test_batched_tests_equal_one_call_per_pair_in_order() -> None:
    rng = np.random.default_rng(3)
    pairs = [(rng.normal(size=n) + 0.3, rng.normal(size=m))
             for n, m in [(10, 10), (12, 9), (10, 10), (30, 30), (12, 9), (10, 10)]]
    pairs.insert(2, (arr([5, 5, 5]), arr([5, 5])))  # all equal, answered without scipy
    got = rank_tests(pairs)
    for (canary, baseline), test in zip(pairs[:2] + pairs[3:], got[:2] + got[3:], strict=True):
        one = mannwhitneyu(canary, baseline, alternative="two-sided", method="asymptotic")
        assert test.u == pytest.approx(one.statistic)
        assert test.p_value == pytest.approx(one.pvalue, rel=1e-12)
    assert got[2] == RankTest(u=3.0, p_value=1.0)


def test_constant_sides_are_judged_deterministically() -> None:
    """Kayenta jitters constant samples; here equal data is p = 1 and unequal constants are an
    ordinary (tie-corrected) test, the same every time."""
    [equal] = rank_tests([(arr([7] * 12), arr([7] * 12))])
    assert equal.p_value == 1.0
    first = rank_tests([(arr([8] * 12), arr([7] * 12))])
    assert first == rank_tests([(arr([8] * 12), arr([7] * 12))])
    assert first[0].p_value < 1e-5 and first[0].u == 144


def test_hodges_lehmann_estimate_is_the_median_of_all_differences() -> None:
    rng = np.random.default_rng(5)
    for n, m in [(7, 9), (10, 10), (1, 4), (15, 8)]:
        canary, baseline = rng.normal(size=n) * 3, rng.normal(size=m)
        brute = statistics.median(c - b for c, b in itertools.product(canary, baseline))
        assert hodges_lehmann(canary, baseline, 0.98).estimate == pytest.approx(brute)


def test_a_pure_shift_is_estimated_exactly_and_inside_its_interval() -> None:
    baseline = arr(range(20))
    shift = hodges_lehmann(baseline + 5, baseline, 0.98)
    assert shift.estimate == 5
    assert shift.low < 5 < shift.high


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.98])
def test_interval_is_exactly_the_shifts_the_rank_test_does_not_reject(confidence) -> None:
    """Inverting scipy's test: a shift just inside either end is not rejected at 1 - confidence,
    one just outside is; this holds for every random sample tried (no ties)."""
    rng = np.random.default_rng(int(confidence * 100))
    alpha = 1 - confidence
    for _ in range(60):
        n, m = rng.integers(5, 35, size=2)
        canary, baseline = rng.normal(size=n) + 0.4, rng.normal(size=m)
        interval = hodges_lehmann(canary, baseline, confidence)
        d = np.sort(np.subtract.outer(canary, baseline).ravel())
        lo, hi = np.searchsorted(d, interval.low), np.searchsorted(d, interval.high)
        assert 0 < lo and hi < d.size - 1  # these sizes always reach the confidence
        inside = [(d[lo] + d[lo + 1]) / 2, (d[hi - 1] + d[hi]) / 2]
        outside = [(d[lo - 1] + d[lo]) / 2, (d[hi] + d[hi + 1]) / 2]
        for delta in inside:
            assert mannwhitneyu(canary - delta, baseline, method="asymptotic").pvalue >= alpha
        for delta in outside:
            assert mannwhitneyu(canary - delta, baseline, method="asymptotic").pvalue < alpha


def test_too_few_samples_for_the_confidence_give_the_whole_range() -> None:
    shift = hodges_lehmann(arr([1, 2]), arr([10, 20]), 0.98)
    assert (shift.low, shift.high) == (-19, -8)


@pytest.mark.parametrize(("canary", "baseline", "expected"), [
    (2.0, 1.0, 2.0),
    (0.5, 2.0, 0.25),
    (0.0, 0.0, 1.0),
    (0.3, 0.0, math.inf),
    (-1.0, 2.0, None),
    (1.0, -2.0, None),
])
def test_mean_ratio(canary, baseline, expected) -> None:
    assert mean_ratio(canary, baseline) == expected


def test_cles_counts_pairs_with_ties_as_half() -> None:
    canary, baseline = arr([1, 2, 3]), arr([2, 2])
    [test] = rank_tests([(canary, baseline)])
    # pairs: 1<2,1<2 → 0; 2=2,2=2 → 1; 3>2,3>2 → 2; total 3 of 6
    assert cles(test, 3, 2) == 0.5
