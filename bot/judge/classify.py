"""One metric's samples → pass | high | low | nodata, with the words and numbers that explain it.

The steps, per metric:
1. Missing values (null, NaN, ±inf) are removed, or counted as 0 with `replace_missing`.
2. Fewer than `min_samples` values left on either side: nodata. Never pass: no data is not
   evidence that the canary is good. The minimum counts what was measured, before outliers
   are removed, so that dropping one wild minute from a window of exactly the minimum does not
   turn a measured metric into nodata (bench/judge: at 10 one-minute samples, counting after
   removal made a third of all cases nodata).
3. Optionally, outliers are removed from each side on its own (Tukey fences, `outlier_factor`
   times the interquartile range beyond the quartiles). A side whose IQR is 0 (say an error
   count that is mostly 0) keeps every value: with no spread there is no yardstick for "far".
   Values between the quartiles always stay, so neither side is ever emptied.
4. Every value on both sides equal: pass (deterministically; see bot/judge/stats.py).
5. Otherwise the two-sided Mann-Whitney U test. High: significant (p < 1 - confidence), the
   canary ranks higher, the direction says an increase is bad (increase or either), and the
   effect exceeds the allowed increase. Low mirrors it. Anything else passes. An undefined
   effect (a mean ratio of negative values) skips the effect check, so significance decides.
6. A high or low whose effect is beyond the critical increase or decrease is a critical breach:
   the whole case fails whatever the other metrics say (a metric with `critical` set fails the
   case on any high or low; see bot/judge/score.py). A critical margin needs a defined effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.judge.model import (
    DEFAULT_ALLOWED,
    Classification,
    Direction,
    EffectMeasure,
    MetricResult,
    MetricSpec,
    Side,
)
from bot.judge.stats import RankTest, Shift, all_equal, cles, hodges_lehmann, mean_ratio, rank_tests


@dataclass(frozen=True)
class _Prepared:
    spec: MetricSpec
    canary: np.ndarray
    baseline: np.ndarray
    canary_side: Side
    baseline_side: Side

    @property
    def enough(self) -> bool:
        measured = min(self.canary_side.count + self.canary_side.outliers,
                       self.baseline_side.count + self.baseline_side.outliers)
        return measured >= self.spec.min_samples


def classify_metrics(specs: Sequence[MetricSpec]) -> list[MetricResult]:
    """Classify every metric, in order; the rank tests of all of them run as one batch."""
    prepared = [_prepare(spec) for spec in specs]
    judged = [p for p in prepared if p.enough]
    tests = iter(rank_tests([(p.canary, p.baseline) for p in judged]))
    return [_judge(p, next(tests)) if p.enough else _nodata(p) for p in prepared]


def _clean(values: Sequence[float | None], spec: MetricSpec) -> tuple[np.ndarray, Side]:
    raw = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    finite = np.isfinite(raw)
    missing = int(raw.size - np.count_nonzero(finite))
    kept = np.where(finite, raw, 0.0) if spec.replace_missing else raw[finite]
    outliers = 0
    if spec.remove_outliers and kept.size:
        q1, q3 = np.percentile(kept, [25, 75])
        spread = (q3 - q1) * spec.outlier_factor
        if spread > 0:
            inside = (kept >= q1 - spread) & (kept <= q3 + spread)
            outliers = int(kept.size - np.count_nonzero(inside))
            kept = kept[inside]
    mean = float(np.mean(kept)) if kept.size else math.nan
    return kept, Side(count=int(kept.size), mean=mean, missing=missing, outliers=outliers)


def _prepare(spec: MetricSpec) -> _Prepared:
    canary, canary_side = _clean(spec.canary, spec)
    baseline, baseline_side = _clean(spec.baseline, spec)
    return _Prepared(spec, canary, baseline, canary_side, baseline_side)


def _allowed(spec: MetricSpec) -> tuple[float, float]:
    increase, decrease = DEFAULT_ALLOWED[spec.effect]
    return (increase if spec.allowed_increase is None else spec.allowed_increase,
            decrease if spec.allowed_decrease is None else spec.allowed_decrease)


def _nodata(p: _Prepared) -> MetricResult:
    spec = p.spec
    removed = [
        f"{count} {what} removed from the {side}"
        for side, s in (("canary", p.canary_side), ("baseline", p.baseline_side))
        for what, count in (("missing values", s.missing), ("outliers", s.outliers))
        if count and not (what == "missing values" and spec.replace_missing)
    ]
    measured = [s.count + s.outliers for s in (p.canary_side, p.baseline_side)]
    text = (f"{spec.name}: no data: canary has {measured[0]} samples, baseline "
            f"{measured[1]}; at least {spec.min_samples} each are needed")
    increase, decrease = _allowed(spec)
    return MetricResult(
        name=spec.name, classification=Classification.NODATA,
        explanation=text + "".join(f"; {r}" for r in removed),
        canary=p.canary_side, baseline=p.baseline_side, critical=spec.critical,
        confidence=spec.confidence, effect=spec.effect,
        allowed_increase=increase, allowed_decrease=decrease)


def _judge(p: _Prepared, test: RankTest) -> MetricResult:
    spec = p.spec
    increase, decrease = _allowed(spec)
    equal = all_equal(p.canary, p.baseline)
    shift = (Shift(0.0, 0.0, 0.0) if equal
             else hodges_lehmann(p.canary, p.baseline, spec.confidence))
    if spec.effect is EffectMeasure.CLES:
        effect: float | None = cles(test, p.canary.size, p.baseline.size)
    else:
        effect = mean_ratio(p.canary_side.mean, p.baseline_side.mean)
    significant = test.p_value < 1 - spec.confidence
    middle = p.canary.size * p.baseline.size / 2
    bad_up = spec.direction in (Direction.INCREASE, Direction.EITHER)
    bad_down = spec.direction in (Direction.DECREASE, Direction.EITHER)
    classification = Classification.PASS
    if significant and test.u > middle and bad_up and (effect is None or effect > increase):
        classification = Classification.HIGH
    elif significant and test.u < middle and bad_down and (effect is None or effect < decrease):
        classification = Classification.LOW
    breach = effect is not None and (
        (classification is Classification.HIGH and spec.critical_increase is not None
         and effect > spec.critical_increase)
        or (classification is Classification.LOW and spec.critical_decrease is not None
            and effect < spec.critical_decrease))
    if equal:
        text = f"{spec.name}: canary and baseline are all equal ({p.canary[0]:g})"
    else:
        text = _explain(spec, classification, effect, test, significant, breach,
                        higher=test.u > middle)
    return MetricResult(
        name=spec.name, classification=classification, explanation=text,
        canary=p.canary_side, baseline=p.baseline_side, critical=spec.critical,
        critical_breach=breach, p_value=test.p_value, shift=shift.estimate,
        shift_low=shift.low, shift_high=shift.high, confidence=spec.confidence,
        effect=spec.effect, effect_size=effect,
        allowed_increase=increase, allowed_decrease=decrease)


def _explain(spec: MetricSpec, classification: Classification, effect: float | None,
             test: RankTest, significant: bool, breach: bool, higher: bool) -> str:
    """E.g. "p99 latency 23 % higher on canary (mean ratio 1.23), p = 0.003, allowed +10 %"."""
    p = "p < 0.001" if test.p_value < 0.001 else f"p = {_p(test.p_value)}"
    text = f"{_effect_words(spec, effect)}, {p}, allowed {_allowance(spec)}"
    if classification is not Classification.PASS:
        if breach:
            margin = (spec.critical_increase if classification is Classification.HIGH
                      else spec.critical_decrease)
            text += f"; beyond the critical {_margin(spec.effect, margin)}, which fails the case"
        return text
    if not significant:
        return text + "; not significant"
    bad = Direction.INCREASE if higher else Direction.DECREASE
    if spec.direction not in (bad, Direction.EITHER):
        return text + f"; {'higher' if higher else 'lower'} is not bad for this metric"
    return text + "; within the allowance"


def _p(value: float) -> str:
    return f"{value:.3f}" if value < 0.01 else f"{value:.2f}"


def _effect_words(spec: MetricSpec, effect: float | None) -> str:
    if spec.effect is EffectMeasure.CLES:
        share = 100 * (effect or 0.0)
        return (f"{spec.name} higher on canary in {share:.0f} % of canary-baseline pairs "
                f"(CLES {effect:.2f})")
    if effect is None:
        return f"{spec.name} mean ratio undefined (a mean below 0)"
    if math.isinf(effect):
        return f"{spec.name} above 0 on canary, 0 on baseline (mean ratio unbounded)"
    change = (effect - 1) * 100
    if round(change) == 0:
        return f"{spec.name} about the same on canary (mean ratio {effect:.2f})"
    way = "higher" if change > 0 else "lower"
    return f"{spec.name} {abs(change):.0f} % {way} on canary (mean ratio {effect:.2f})"


def _margin(measure: EffectMeasure, value: float | None) -> str:
    if value is None:
        return "none"
    if measure is EffectMeasure.CLES:
        return f"CLES {value:.2f}"
    change = (value - 1) * 100
    return f"{change:+.0f} %".replace("-", "−")


def _allowance(spec: MetricSpec) -> str:
    increase, decrease = _allowed(spec)
    if spec.direction is Direction.INCREASE:
        return _margin(spec.effect, increase)
    if spec.direction is Direction.DECREASE:
        return _margin(spec.effect, decrease)
    return f"{_margin(spec.effect, increase)} / {_margin(spec.effect, decrease)}"

