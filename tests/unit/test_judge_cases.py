"""The case reader: malformed input is a CaseError naming its key; the output is strict JSON."""

from __future__ import annotations

import copy
import json
import math

import pytest

from bot.judge.cases import CaseError, parse_case, result_json
from bot.judge.model import Direction, EffectMeasure
from bot.judge.score import judge_cases

GOOD = {
    "id": "release-42",
    "thresholds": {"pass": 95, "marginal": 75},
    "metrics": [{
        "name": "p99 latency", "direction": "increase", "critical": False,
        "canary": [float(120 + i % 7) for i in range(12)],
        "baseline": [float(100 + i % 7) for i in range(12)],
    }],
}


def with_change(path: str, value):
    """GOOD with one key set (value ...: delete it); path like "metrics.0.canary"."""
    case = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = case
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return case


def test_a_good_case_reads_with_defaults() -> None:
    case = parse_case(GOOD)
    [metric] = case.metrics
    assert (case.id, case.thresholds.passing, case.thresholds.marginal) == ("release-42", 95, 75)
    assert metric.direction is Direction.INCREASE and metric.effect is EffectMeasure.MEAN_RATIO
    assert metric.allowed_increase is None and metric.min_samples == 10
    assert not metric.remove_outliers and not metric.replace_missing


def test_every_optional_field_reads() -> None:
    case = with_change("metrics.0.effectSize", "cles")
    case["groupWeights"] = {"latency": 2}
    case["metrics"][0].update({
        "allowedIncrease": 0.7, "allowedDecrease": 0.3, "criticalIncrease": 0.9,
        "criticalDecrease": 0.1, "minSamples": 5, "confidence": 0.95, "nanStrategy": "replace",
        "outliers": "remove", "outlierFactor": 1.5, "weight": 2, "group": "latency"})
    case["metrics"][0]["canary"][3] = None
    metric = parse_case(case).metrics[0]
    assert (metric.effect, metric.allowed_increase, metric.critical_decrease) == (
        EffectMeasure.CLES, 0.7, 0.1)
    assert (metric.min_samples, metric.confidence, metric.replace_missing,
            metric.remove_outliers, metric.outlier_factor, metric.weight, metric.group) == (
        5, 0.95, True, True, 1.5, 2.0, "latency")
    assert metric.canary[3] is None
    assert parse_case(case).group_weights == {"latency": 2.0}


@pytest.mark.parametrize(("path", "value", "message"), [
    ("id", ..., "id: expected a string, got null"),
    ("id", 7, "id: expected a string, got 7"),
    ("thresholds", [95, 75], "thresholds: expected an object with pass and marginal, got a list"),
    ("thresholds.pass", ..., "thresholds.pass: expected a number, got null"),
    ("thresholds.pass", "95", "thresholds.pass: expected a number, got '95'"),
    ("thresholds.marginal", 101, "thresholds.marginal: 101 is outside [0, 100]"),
    ("thresholds.marginal", 96, "thresholds.marginal: 96 is above pass 95"),
    ("thresholds.fail", 10, "thresholds.fail: unknown key"),
    ("metrics", {}, "metrics: expected a list, got an object"),
    ("metrics.0", "p99", "metrics[0]: expected an object, got 'p99'"),
    ("metrics.0.name", "", "metrics[0].name: expected a non-empty string"),
    ("metrics.0.canary", ..., "metrics[0].canary: expected a list of numbers, got null"),
    ("metrics.0.baseline", "1,2,3", "metrics[0].baseline: expected a list of numbers"),
    ("metrics.0.canary.3", "12ms", "metrics[0].canary[3]: expected a number or null, got '12ms'"),
    ("metrics.0.canary.0", True, "metrics[0].canary[0]: expected a number or null, got true"),
    ("metrics.0.direction", "up", ("metrics[0].direction: expected one of "
                                  "increase|decrease|either, got 'up'")),
    ("metrics.0.effectSize", "ratio", "metrics[0].effectSize: expected one of meanRatio|cles"),
    ("metrics.0.critical", "yes", "metrics[0].critical: expected true or false, got 'yes'"),
    ("metrics.0.allowedIncrese", 1.2, "metrics[0].allowedIncrese: unknown key"),
    ("metrics.0.allowedIncrease", 0.9, "metrics[0].allowedIncrease: 0.9 is outside [1, inf]"),
    ("metrics.0.allowedDecrease", 1.2, "metrics[0].allowedDecrease: 1.2 is outside [0, 1]"),
    ("metrics.0.criticalIncrease", 1.05, "metrics[0].criticalIncrease: 1.05 is outside [1.1,"),
    ("metrics.0.criticalDecrease", 0.95, "metrics[0].criticalDecrease: 0.95 is outside [0, 0.9]"),
    ("metrics.0.minSamples", 0, "metrics[0].minSamples: expected an integer of at least 1"),
    ("metrics.0.minSamples", 2.5, "metrics[0].minSamples: expected an integer of at least 1"),
    ("metrics.0.confidence", 1, "metrics[0].confidence: 1 is outside [0.5, 1)"),
    ("metrics.0.confidence", math.nan, "metrics[0].confidence: expected a number, got nan"),
    ("metrics.0.nanStrategy", "drop", "metrics[0].nanStrategy: expected one of remove|replace"),
    ("metrics.0.outliers", "trim", "metrics[0].outliers: expected one of keep|remove"),
    ("metrics.0.outlierFactor", 0, "metrics[0].outlierFactor: 0 is outside (0, inf]"),
    ("metrics.0.weight", -1, "metrics[0].weight: -1 is outside (0, inf]"),
    ("metrics.0.group", 3, "metrics[0].group: expected a string, got 3"),
    ("groupWeights", [1], "groupWeights: expected an object, got a list"),
    # JSON integers are unbounded: one beyond a float would overflow the arithmetic
    ("metrics.0.canary.1", 10 ** 400, ("metrics[0].canary[1]: expected a number or null, got a "
                                      "number too large")),
    ("thresholds.pass", 10 ** 400, "thresholds.pass: expected a number, got a number too large"),
])
def test_malformed_cases_name_the_key(path, value, message) -> None:
    with pytest.raises(CaseError) as caught:
        parse_case(with_change(path, value))
    assert str(caught.value).startswith(message)


def test_a_case_that_is_not_an_object() -> None:
    with pytest.raises(CaseError, match="expected a JSON object, got a list"):
        parse_case([GOOD])


def test_cles_margins_are_checked_on_their_own_scale() -> None:
    case = with_change("metrics.0.effectSize", "cles")
    case["metrics"][0]["allowedIncrease"] = 1.2
    with pytest.raises(CaseError, match=r"allowedIncrease: 1.2 is outside \[0.5, 1\]"):
        parse_case(case)


def test_too_many_pairs_are_refused_before_any_work() -> None:
    case = with_change("metrics.0.canary", [1.0] * 2001)
    case["metrics"][0]["baseline"] = [1.0] * 2000
    with pytest.raises(CaseError, match="2001 canary x 2000 baseline samples are more than "
                                        "4,000,000 pairs"):
        parse_case(case)


def test_output_is_strict_json_even_for_an_unbounded_ratio() -> None:
    case = with_change("metrics.0.baseline", [0.0] * 12)
    [result] = judge_cases([parse_case(case)])
    out = result_json(result)
    text = json.dumps(out, allow_nan=False)  # raises on NaN or Infinity
    metric = json.loads(text)["metrics"][0]
    assert metric["classification"] == "high"
    assert metric["effectSize"]["value"] is None
    assert set(out) == {"id", "verdict", "score", "explanation", "metrics"}
    assert out["verdict"] == "fail" and out["score"] == 0.0
