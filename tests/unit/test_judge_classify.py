"""One metric's classification, as a table: direction, margins, minimum data, NaN, outliers."""

from __future__ import annotations

import math

import pytest

from bot.judge.classify import classify_metrics
from bot.judge.model import (
    Classification,
    Direction,
    EffectMeasure,
    MetricResult,
    MetricSpec,
)

# 20 baseline samples spread 100..119; the canary is the same series scaled by a factor, so the
# mean ratio is exactly the factor and the rank test sees a clean shift.
BASELINE = tuple(100.0 + (7 * i) % 20 for i in range(20))


def canary(factor: float) -> tuple[float, ...]:
    return tuple(v * factor for v in BASELINE)


def one(**spec) -> MetricResult:
    spec.setdefault("name", "p99 latency")
    spec.setdefault("baseline", BASELINE)
    [result] = classify_metrics([MetricSpec(**spec)])
    return result


HIGH, LOW, PASS, NODATA = (Classification.HIGH, Classification.LOW, Classification.PASS,
                           Classification.NODATA)
UP, DOWN, EITHER = Direction.INCREASE, Direction.DECREASE, Direction.EITHER


@pytest.mark.parametrize(("direction", "factor", "extra", "expected", "words"), [
    (UP, 1.3, {}, HIGH, "30 % higher on canary (mean ratio 1.30), p < 0.001, allowed +10 %"),
    (UP, 0.7, {}, PASS, "lower is not bad for this metric"),
    (DOWN, 0.7, {}, LOW, "30 % lower on canary (mean ratio 0.70), p < 0.001, allowed −10 %"),
    (DOWN, 1.3, {}, PASS, "higher is not bad for this metric"),
    (EITHER, 1.3, {}, HIGH, "allowed +10 % / −10 %"),
    (EITHER, 0.7, {}, LOW, "30 % lower on canary"),
    # significant, but within the allowance; a tighter allowance makes it high
    (UP, 1.05, {}, PASS, ("5 % higher on canary (mean ratio 1.05), p = 0.01, allowed +10 %; "
                         "within the allowance")),
    (UP, 1.05, {"allowed_increase": 1.02}, HIGH, "allowed +2 %"),
    (DOWN, 0.95, {"allowed_decrease": 0.98}, LOW, "allowed −2 %"),
    # the same data: nothing to see
    (EITHER, 1.0, {}, PASS, ("about the same on canary (mean ratio 1.00), p = 1.00, allowed "
                            "+10 % / −10 %; not significant")),
    # common-language effect size instead of the mean ratio
    (UP, 1.3, {"effect": EffectMeasure.CLES}, HIGH,
     ("higher on canary in 100 % of canary-baseline pairs (CLES 1.00), p < 0.001, allowed "
     "CLES 0.60")),
    (UP, 1.05, {"effect": EffectMeasure.CLES, "allowed_increase": 0.99}, PASS,
     "within the allowance"),
])
def test_classification_table(direction, factor, extra, expected, words) -> None:
    result = one(canary=canary(factor), direction=direction, **extra)
    assert result.classification is expected
    assert words in result.explanation
    assert result.explanation.startswith("p99 latency")


def test_significance_uses_the_confidence() -> None:
    # A small shift in noisy data: p between 0.02 and 0.10.
    noisy = tuple(100.0 + (37 * i) % 41 for i in range(12))
    shifted = tuple(v + 13 for v in noisy)
    default = one(canary=shifted, baseline=noisy, direction=UP, allowed_increase=1.0)
    assert 0.02 < default.p_value < 0.1
    assert default.classification is PASS and "not significant" in default.explanation
    loose = one(canary=shifted, baseline=noisy, direction=UP, allowed_increase=1.0,
                confidence=0.9)
    assert loose.classification is HIGH


def test_the_result_carries_the_numbers_it_explains() -> None:
    result = one(canary=canary(1.3), direction=UP)
    assert result.effect_size == pytest.approx(1.3)
    assert result.p_value < 0.001
    assert result.shift_low <= result.shift <= result.shift_high
    assert result.shift == pytest.approx(0.3 * 109.5, abs=3)
    assert (result.canary.count, result.baseline.count) == (20, 20)
    assert result.canary.mean == pytest.approx(1.3 * result.baseline.mean)


def test_below_the_minimum_samples_is_nodata_never_pass() -> None:
    few = canary(1.0)[:9]
    result = one(canary=few, baseline=few)
    assert result.classification is NODATA
    assert result.p_value is None
    assert result.explanation == ("p99 latency: no data: canary has 9 samples, baseline 9; "
                                  "at least 10 each are needed")
    assert one(canary=few, baseline=few, min_samples=9).classification is PASS
    assert one(canary=(), baseline=BASELINE).classification is NODATA


def test_missing_values_are_removed_and_counted_or_replaced() -> None:
    values = list(canary(1.0)[:12])
    values[1] = values[4] = None
    values[7] = math.nan
    values[9] = math.inf
    removed = one(canary=tuple(values))
    assert removed.classification is NODATA  # 8 left of 12
    assert removed.canary.missing == 4
    assert "4 missing values removed from the canary" in removed.explanation
    replaced = one(canary=tuple(values), replace_missing=True)
    assert replaced.classification is not NODATA
    assert replaced.canary.count == 12 and replaced.canary.missing == 4
    assert replaced.canary.mean == pytest.approx(sum(v for v in values[:12]
                                                     if v is not None and math.isfinite(v)) / 12)


def test_outlier_removal_keeps_one_wild_sample_from_deciding() -> None:
    spiky = list(canary(1.05))  # significant (p = 0.01) but within the allowed +10 %
    spiky[5] = 5000.0  # one stalled minute: the mean ratio becomes ~3.3
    kept = one(canary=tuple(spiky), direction=UP)
    assert kept.classification is HIGH and kept.canary.outliers == 0
    removed = one(canary=tuple(spiky), direction=UP, remove_outliers=True)
    assert removed.classification is PASS
    assert removed.canary.outliers == 1 and removed.canary.count == 19


def test_outlier_removal_leaves_a_side_without_spread_alone() -> None:
    errors = (0.0,) * 16 + (1.0, 2.0, 1.0, 3.0)  # IQR 0: every non-zero would be "far"
    result = one(canary=errors, baseline=(0.0,) * 20, remove_outliers=True, direction=UP)
    assert result.canary.outliers == 0 and result.canary.count == 20
    assert result.effect_size == math.inf


def test_minimum_counts_what_was_measured_before_outliers_go() -> None:
    spiky = list(canary(1.0)[:10])
    spiky[3] = 5000.0
    result = one(canary=tuple(spiky), baseline=BASELINE[:10], remove_outliers=True)
    assert result.canary.count == 9 and result.canary.outliers == 1
    assert result.classification is PASS


def test_baseline_without_errors_and_a_canary_with_them_is_an_unbounded_increase() -> None:
    errors = (0.0, 2.0, 1.0, 3.0, 0.0, 2.0, 4.0, 1.0, 2.0, 3.0, 1.0, 2.0)
    result = one(canary=errors, baseline=(0.0,) * 12, direction=UP, critical_increase=5.0)
    assert result.classification is HIGH
    assert result.effect_size == math.inf
    assert result.critical_breach
    assert "above 0 on canary, 0 on baseline (mean ratio unbounded)" in result.explanation


def test_all_equal_data_passes_with_no_randomness() -> None:
    result = one(canary=(3.0,) * 12, baseline=(3.0,) * 12, direction=EITHER)
    assert result.classification is PASS
    assert (result.p_value, result.shift, result.effect_size) == (1.0, 0.0, 1.0)
    assert result.explanation == "p99 latency: canary and baseline are all equal (3)"


def test_undefined_effect_lets_significance_decide() -> None:
    negative = tuple(-v for v in BASELINE)
    result = one(canary=tuple(v + 30 for v in negative), baseline=negative, direction=UP)
    assert result.effect_size is None
    assert result.classification is HIGH
    assert "mean ratio undefined" in result.explanation


@pytest.mark.parametrize(("factor", "margins", "breach"), [
    (1.6, {"critical_increase": 1.5}, True),
    (1.3, {"critical_increase": 1.5}, False),
    (1.3, {}, False),
    (0.4, {"critical_decrease": 0.5}, True),
    (0.6, {"critical_decrease": 0.5}, False),
])
def test_critical_margin(factor, margins, breach) -> None:
    result = one(canary=canary(factor), direction=EITHER, **margins)
    assert result.critical_breach is breach
    assert ("which fails the case" in result.explanation) is breach


def test_a_critical_metric_is_marked_critical() -> None:
    assert one(canary=canary(1.3), critical=True).critical
    assert not one(canary=canary(1.3)).critical


def test_metrics_of_mixed_sizes_keep_their_order() -> None:
    specs = [MetricSpec(name=f"m{k}", canary=canary(f)[:n], baseline=BASELINE[:n],
                        direction=UP)
             for k, (f, n) in enumerate([(1.3, 20), (1.0, 15), (1.3, 5), (1.3, 15), (1.0, 20)])]
    got = [r.classification for r in classify_metrics(specs)]
    assert got == [HIGH, PASS, NODATA, HIGH, PASS]
    assert [r.name for r in classify_metrics(specs)] == ["m0", "m1", "m2", "m3", "m4"]
