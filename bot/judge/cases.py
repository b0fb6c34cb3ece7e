"""The JSON shape of `coalmine judge --cases`: a decoded case → `Case`, a `CaseResult` → JSON.

Reading is strict: a wrong type, a value out of range or an unknown key (a misspelt
`allowedIncrese` would otherwise silently judge with the default) is a `CaseError` naming the
key path, e.g. `metrics[1].canary[3]: expected a number or null, got "12ms"`. Missing sample
values may be written as null (or NaN/Infinity, which Python's JSON reader accepts); the
classifier removes or replaces them. Numbers in the output that are not finite (an unbounded
mean ratio) are written as null, so the output is strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bot.judge.model import (
    DEFAULT_ALLOWED,
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_OUTLIER_FACTOR,
    MAX_PAIRS,
    NEUTRAL,
    Case,
    CaseResult,
    Direction,
    EffectMeasure,
    MetricResult,
    MetricSpec,
    Side,
    Thresholds,
)

CASE_KEYS = frozenset({"id", "thresholds", "metrics", "groupWeights"})
# How a metric is judged; a case's metric adds its name and samples to these.
SETTING_KEYS = frozenset({
    "direction", "critical", "effectSize", "allowedIncrease", "allowedDecrease",
    "criticalIncrease", "criticalDecrease", "minSamples", "confidence", "nanStrategy", "outliers",
    "outlierFactor", "weight", "group",
})
METRIC_KEYS = SETTING_KEYS | {"name", "canary", "baseline"}


class CaseError(ValueError):
    """A case that cannot be judged; the message starts with the key path."""


def parse_case(data: Any) -> Case:
    if not isinstance(data, dict):
        raise CaseError(f"expected a JSON object, got {_kind(data)}")
    _no_unknown(data, CASE_KEYS, "")
    case_id = data.get("id")
    if not isinstance(case_id, str):
        raise CaseError(f"id: expected a string, got {_kind(case_id)}")
    thresholds = data.get("thresholds")
    if not isinstance(thresholds, dict):
        raise CaseError(f"thresholds: expected an object with pass and marginal, "
                        f"got {_kind(thresholds)}")
    _no_unknown(thresholds, frozenset({"pass", "marginal"}), "thresholds.")
    passing = _number(thresholds.get("pass"), "thresholds.pass", low=0, high=100)
    marginal = _number(thresholds.get("marginal"), "thresholds.marginal", low=0, high=100)
    if marginal > passing:
        raise CaseError(f"thresholds.marginal: {marginal:g} is above pass {passing:g}")
    metrics = data.get("metrics")
    if not isinstance(metrics, list):
        raise CaseError(f"metrics: expected a list, got {_kind(metrics)}")
    weights = data.get("groupWeights", {})
    if not isinstance(weights, dict):
        raise CaseError(f"groupWeights: expected an object, got {_kind(weights)}")
    group_weights = {
        str(group): _number(weight, f"groupWeights.{group}", low=0, above=True)
        for group, weight in weights.items()
    }
    return Case(id=case_id, thresholds=Thresholds(passing=passing, marginal=marginal),
                metrics=tuple(_metric(m, f"metrics[{i}]") for i, m in enumerate(metrics)),
                group_weights=group_weights)


def _metric(data: Any, path: str) -> MetricSpec:
    if not isinstance(data, dict):
        raise CaseError(f"{path}: expected an object, got {_kind(data)}")
    _no_unknown(data, METRIC_KEYS, f"{path}.")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise CaseError(f"{path}.name: expected a non-empty string, got {_kind(name)}")
    canary = _samples(data.get("canary"), f"{path}.canary")
    baseline = _samples(data.get("baseline"), f"{path}.baseline")
    if len(canary) * len(baseline) > MAX_PAIRS:
        raise CaseError(f"{path}: {len(canary)} canary x {len(baseline)} baseline samples are "
                        f"more than {MAX_PAIRS:,} pairs; aggregate to coarser intervals")
    return metric_settings(data, path, name=name, canary=canary, baseline=baseline)


def metric_settings(data: Mapping[str, Any], path: str, *, name: str,
                    canary: tuple[float | None, ...] = (),
                    baseline: tuple[float | None, ...] = ()) -> MetricSpec:
    """How one metric is judged, from its SETTING_KEYS in `data` (other keys are the caller's
    to check): the same reading for a `--cases` line and for a kayenta provider's metric."""
    effect = _choice(data, "effectSize", EffectMeasure, EffectMeasure.MEAN_RATIO, path)
    neutral = NEUTRAL[effect]
    top = math.inf if effect is EffectMeasure.MEAN_RATIO else 1.0
    default_increase, default_decrease = DEFAULT_ALLOWED[effect]
    increase = _optional(data, "allowedIncrease", path, low=neutral, high=top)
    decrease = _optional(data, "allowedDecrease", path, low=0, high=neutral)
    critical_increase = _optional(data, "criticalIncrease", path,
                                  low=default_increase if increase is None else increase, high=top)
    critical_decrease = _optional(data, "criticalDecrease", path, low=0,
                                  high=default_decrease if decrease is None else decrease)
    critical = data.get("critical", False)
    if not isinstance(critical, bool):
        raise CaseError(f"{path}.critical: expected true or false, got {_kind(critical)}")
    min_samples = data.get("minSamples", DEFAULT_MIN_SAMPLES)
    if not isinstance(min_samples, int) or isinstance(min_samples, bool) or min_samples < 1:
        raise CaseError(f"{path}.minSamples: expected an integer of at least 1, "
                        f"got {_kind(min_samples)}")
    group = data.get("group")
    if group is not None and not isinstance(group, str):
        raise CaseError(f"{path}.group: expected a string, got {_kind(group)}")
    return MetricSpec(
        name=name, canary=canary, baseline=baseline,
        direction=_choice(data, "direction", Direction, Direction.EITHER, path),
        critical=critical, effect=effect,
        allowed_increase=increase, allowed_decrease=decrease,
        critical_increase=critical_increase, critical_decrease=critical_decrease,
        min_samples=min_samples,
        confidence=_number(data.get("confidence", DEFAULT_CONFIDENCE), f"{path}.confidence",
                           low=0.5, high=1, below=True),
        replace_missing=_choice(data, "nanStrategy", {"remove": False, "replace": True},
                                False, path),
        remove_outliers=_choice(data, "outliers", {"keep": False, "remove": True}, False, path),
        outlier_factor=_number(data.get("outlierFactor", DEFAULT_OUTLIER_FACTOR),
                               f"{path}.outlierFactor", low=0, above=True),
        weight=_number(data.get("weight", 1.0), f"{path}.weight", low=0, above=True),
        group=group,
    )


def _samples(values: Any, path: str) -> tuple[float | None, ...]:
    if not isinstance(values, list):
        raise CaseError(f"{path}: expected a list of numbers, got {_kind(values)}")
    for index, value in enumerate(values):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, int | float)
                                  or not _fits_a_float(value)):
            raise CaseError(f"{path}[{index}]: expected a number or null, got {_kind(value)}")
    return tuple(values)


def _fits_a_float(value: float) -> bool:
    """JSON integers are unbounded; one beyond a float's range would crash the arithmetic."""
    return isinstance(value, float) or abs(value) < 2 ** 1023


def _choice(data: Mapping[str, Any], key: str, options: Any, default: Any, path: str) -> Any:
    """One of `options` (an enum class or a name → value mapping) by its JSON name."""
    if key not in data:
        return default
    names = ({member.value: member for member in options} if isinstance(options, type)
             else dict(options))
    value = data[key]
    if not isinstance(value, str) or value not in names:
        raise CaseError(f"{path}.{key}: expected one of {'|'.join(names)}, got {_kind(value)}")
    return names[value]


def _optional(data: Mapping[str, Any], key: str, path: str, *, low: float,
              high: float) -> float | None:
    if key not in data:
        return None
    return _number(data[key], f"{path}.{key}", low=low, high=high)


def _number(value: Any, path: str, *, low: float = -math.inf, high: float = math.inf,
            above: bool = False, below: bool = False) -> float:
    """A finite number in [low, high]; `above`/`below` make that end exclusive."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not _fits_a_float(value) or not math.isfinite(value)):
        raise CaseError(f"{path}: expected a number, got {_kind(value)}")
    if value < low or (above and value == low) or value > high or (below and value == high):
        lower = "(" if above else "["
        upper = ")" if below else "]"
        raise CaseError(f"{path}: {value:g} is outside {lower}{low:g}, {high:g}{upper}")
    return float(value)


def _no_unknown(data: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise CaseError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else "a long string"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value!r}" if _fits_a_float(value) else "a number too large"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def result_json(result: CaseResult) -> dict[str, Any]:
    return {
        "id": result.id,
        "verdict": result.verdict.value,
        "score": result.score,
        "explanation": result.explanation,
        "metrics": [_metric_json(m) for m in result.metrics],
    }


def _metric_json(m: MetricResult) -> dict[str, Any]:
    return {
        "name": m.name,
        "classification": m.classification.value,
        "explanation": m.explanation,
        "critical": m.critical,
        "criticalBreach": m.critical_breach,
        "pValue": _finite(m.p_value),
        "shift": {"estimate": _finite(m.shift), "low": _finite(m.shift_low),
                  "high": _finite(m.shift_high), "confidence": m.confidence},
        "effectSize": {"measure": m.effect.value, "value": _finite(m.effect_size),
                       "allowedIncrease": m.allowed_increase,
                       "allowedDecrease": m.allowed_decrease},
        "canary": _side_json(m.canary),
        "baseline": _side_json(m.baseline),
    }


def _side_json(side: Side) -> dict[str, Any]:
    return {"count": side.count, "mean": _finite(side.mean), "missing": side.missing,
            "outliers": side.outliers}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
