"""Scoring as a table: weights, groups, critical metrics, nodata, thresholds; and batching."""

from __future__ import annotations

import numpy as np
import pytest

from bot.judge.model import (
    Case,
    Classification,
    Direction,
    MetricResult,
    MetricSpec,
    Side,
    Thresholds,
    Verdict,
)
from bot.judge.score import judge_cases, score_case

P, H, L, N = (Classification.PASS, Classification.HIGH, Classification.LOW,
              Classification.NODATA)
SIDE = Side(count=20, mean=1.0, missing=0, outliers=0)


def judged(*metrics: tuple, group_weights: dict[str, float] | None = None,
           passing: float = 95, marginal: float = 75):
    """metrics: (classification, options) with options weight, group, critical, breach."""
    specs, results = [], []
    for index, (classification, options) in enumerate(metrics):
        name = f"m{index}"
        specs.append(MetricSpec(name=name, canary=(), baseline=(),
                                weight=options.get("weight", 1.0), group=options.get("group"),
                                critical=options.get("critical", False)))
        results.append(MetricResult(name=name, classification=classification, explanation="",
                                    canary=SIDE, baseline=SIDE,
                                    critical=options.get("critical", False),
                                    critical_breach=options.get("breach", False)))
    case = Case(id="c", thresholds=Thresholds(passing, marginal), metrics=tuple(specs),
                group_weights=group_weights or {})
    return score_case(case, results)


@pytest.mark.parametrize(("metrics", "group_weights", "score", "verdict"), [
    ([(P, {}), (P, {})], None, 100, Verdict.PASS),
    ([(P, {}), (H, {})], None, 50, Verdict.FAIL),
    ([(P, {}), (P, {}), (P, {}), (L, {})], None, 75, Verdict.MARGINAL),  # marginal is >=
    ([(P, {"weight": 3}), (H, {"weight": 1})], None, 75, Verdict.MARGINAL),
    ([(P, {"weight": 19}), (H, {"weight": 1})], None, 95, Verdict.PASS),  # pass is >=
    # groups: lat is half passing (weight 1), err passes (weight 3) → (0.5 + 3) / 4
    ([(P, {"group": "lat"}), (H, {"group": "lat"}), (P, {"group": "err"})],
     {"lat": 1, "err": 3}, 87.5, Verdict.MARGINAL),
    # a group's weight defaults to the sum of its metrics' weights
    ([(P, {"group": "lat"}), (H, {"group": "lat"}), (P, {})], None, 66.67, Verdict.FAIL),
    # nodata counts in no denominator: one of three is under half
    ([(P, {}), (P, {}), (N, {})], None, 100, Verdict.PASS),
    ([(P, {}), (H, {}), (N, {})], None, 50, Verdict.FAIL),
    # a group with no data drops out instead of counting as 100
    ([(H, {"group": "a"}), (P, {"group": "b"}), (N, {"group": "c"})], {"c": 100}, 50,
     Verdict.FAIL),
])
def test_scoring_table(metrics, group_weights, score, verdict) -> None:
    result = judged(*metrics, group_weights=group_weights)
    assert (result.score, result.verdict) == (score, verdict)


@pytest.mark.parametrize(("metrics", "verdict", "words"), [
    ([(P, {}), (P, {}), (H, {"critical": True})], Verdict.FAIL, "m2 is high: a critical metric"),
    ([(P, {}), (P, {}), (L, {"breach": True})], Verdict.FAIL,
     "m2 is low: beyond its critical margin"),
    # a proven failure outranks missing data
    ([(N, {}), (N, {}), (H, {"critical": True})], Verdict.FAIL, "a critical metric"),
    ([(P, {}), (P, {}), (N, {"critical": True})], Verdict.NODATA,
     "no data for critical metric m2"),
    ([(P, {}), (N, {})], Verdict.NODATA, "1 of 2 metrics have no data (half or more)"),
    ([(N, {}), (N, {})], Verdict.NODATA, "2 of 2 metrics"),
    ([], Verdict.NODATA, "no metrics"),
])
def test_cases_decided_before_weighing_score_zero(metrics, verdict, words) -> None:
    result = judged(*metrics)
    assert result.verdict is verdict and result.score == 0
    assert words in result.explanation


def test_a_critical_metric_that_passes_decides_nothing() -> None:
    result = judged((P, {"critical": True}), (H, {}), (P, {}), (P, {}))
    assert (result.score, result.verdict) == (75, Verdict.MARGINAL)


def test_nodata_never_passes_even_with_a_pass_threshold_of_zero() -> None:
    assert judged((N, {}), (N, {}), passing=0, marginal=0).verdict is Verdict.NODATA


def test_explanation_names_the_score_and_what_did_not_pass() -> None:
    result = judged((P, {}), (H, {}), (N, {}))
    assert result.explanation == ("score 50 against pass 95, marginal 75; not passing: m1 (high);"
                                  " no data: m2")


def test_judging_a_batch_equals_judging_each_case_alone() -> None:
    rng = np.random.default_rng(9)
    cases = []
    for k in range(40):
        n = int(rng.choice([8, 12, 20]))
        metrics = tuple(
            MetricSpec(name=f"m{j}", direction=Direction.INCREASE,
                       canary=tuple(rng.lognormal(0, 0.1, n) * (1 + 0.3 * (k % 4 == j))),
                       baseline=tuple(rng.lognormal(0, 0.1, n)))
            for j in range(3))
        cases.append(Case(id=str(k), thresholds=Thresholds(95, 75), metrics=metrics))
    together = judge_cases(cases)
    assert together == [judge_cases([case])[0] for case in cases]
    assert {r.verdict for r in together} >= {Verdict.PASS, Verdict.FAIL, Verdict.NODATA}
