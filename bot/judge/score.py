"""Metric results → a 0-100 score and a verdict (pass | marginal | fail | nodata).

Rules, in order:
1. A critical metric classed high or low, or any metric beyond its critical margin: score 0,
   verdict fail. A proven failure outranks missing data elsewhere.
2. A critical metric with no data: score 0, verdict nodata (it cannot be judged, so neither can
   the case).
3. No metrics, or nodata on half of them or more (Kayenta's rule): score 0, verdict nodata.
4. Otherwise the weighted share of passing metrics among those with data, times 100, rounded to
   two decimals: score >= pass is pass, >= marginal is marginal, else fail.

Weights: metrics that share a `group` are scored together, each by its `weight` (default 1);
a metric without a group is a group of its own. A group's weight is `groupWeights[group]` of
the case when given, else the sum of its metrics' weights, so with no groups and no weights the
score is simply the percentage of metrics with data that pass. Nodata metrics count in no
denominator, and a group with no data at all drops out (Kayenta counts an empty group as 100,
which would let missing data raise a score).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.judge.classify import classify_metrics
from bot.judge.model import Case, CaseResult, Classification, MetricResult, Verdict


def judge_cases(cases: Sequence[Case]) -> list[CaseResult]:
    """Judge every case; the metrics of all cases are classified in one batch."""
    results = iter(classify_metrics([m for case in cases for m in case.metrics]))
    return [score_case(case, [next(results) for _ in case.metrics]) for case in cases]


def score_case(case: Case, results: Sequence[MetricResult]) -> CaseResult:
    nodata = [r for r in results if r.classification is Classification.NODATA]
    failed = [r for r in results
              if r.classification in (Classification.HIGH, Classification.LOW)]
    deciding = [r for r in failed if r.critical or r.critical_breach]

    def done(verdict: Verdict, score: float, why: str) -> CaseResult:
        return CaseResult(id=case.id, verdict=verdict, score=score, explanation=why,
                          metrics=tuple(results))

    if deciding:
        return done(Verdict.FAIL, 0.0, "; ".join(
            f"{r.name} is {r.classification}: "
            + ("a critical metric" if r.critical else "beyond its critical margin")
            for r in deciding))
    critical_nodata = [r.name for r in nodata if r.critical]
    if critical_nodata:
        return done(Verdict.NODATA, 0.0,
                    f"no data for critical metric {', '.join(critical_nodata)}")
    if not results:
        return done(Verdict.NODATA, 0.0, "no metrics")
    if 2 * len(nodata) >= len(results):
        return done(Verdict.NODATA, 0.0,
                    f"{len(nodata)} of {len(results)} metrics have no data (half or more)")
    score = _weighted_score(case, results)
    thresholds = case.thresholds
    if score >= thresholds.passing:
        verdict = Verdict.PASS
    elif score >= thresholds.marginal:
        verdict = Verdict.MARGINAL
    else:
        verdict = Verdict.FAIL
    why = f"score {score:g} against pass {thresholds.passing:g}, marginal {thresholds.marginal:g}"
    if failed:
        why += "; not passing: " + ", ".join(f"{r.name} ({r.classification})" for r in failed)
    if nodata:
        why += "; no data: " + ", ".join(r.name for r in nodata)
    return done(verdict, score, why)


def _weighted_score(case: Case, results: Sequence[MetricResult]) -> float:
    # group key → (metric weight passing, metric weight with data, group weight)
    groups: dict[tuple[str, str], list[float]] = {}
    for index, (spec, result) in enumerate(zip(case.metrics, results, strict=True)):
        if result.classification is Classification.NODATA:
            continue
        key = ("group", spec.group) if spec.group is not None else ("metric", str(index))
        tally = groups.setdefault(key, [0.0, 0.0, 0.0])
        if result.classification is Classification.PASS:
            tally[0] += spec.weight
        tally[1] += spec.weight
        tally[2] += spec.weight
    total = weighted = 0.0
    for (kind, name), (passing, counted, summed) in groups.items():
        weight = case.group_weights.get(name, summed) if kind == "group" else summed
        if counted > 0:
            weighted += weight * passing / counted
            total += weight
    return round(100 * weighted / total, 2) if total > 0 else 0.0
