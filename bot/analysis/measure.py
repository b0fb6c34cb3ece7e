"""Take one measurement: run a provider, judge its result, never raise.

The analysis run and the engine only ever see `Measurement`s; every failure on the way - a bad
template, an unreachable Prometheus, a condition that does not evaluate - becomes an `Error`
measurement whose message tells the people in the PR what went wrong.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from bot.analysis.conditions import ConditionError, judge_with_reason
from bot.analysis.measurement import Measurement
from bot.analysis.providers import ProviderError
from bot.analysis.providers.prometheus import query_prometheus
from bot.analysis.providers.web import fetch_web_metric

log = logging.getLogger(__name__)

MAX_VALUE_LENGTH = 120
MAX_LISTED_VALUES = 5


def measure(
    provider: Mapping[str, Any],
    success_condition: str | None,
    failure_condition: str | None,
    *,
    prometheus_url: str | None,
    now: float,
) -> Measurement:
    """Run one already-resolved metric `provider` (Argo's shape: `{"prometheus": {...}}` or
    `{"web": {...}}`) and judge the result with Argo's table and the no-data rule."""
    try:
        result = _fetch(provider, prometheus_url)
    except ProviderError as error:
        return Measurement("Error", None, str(error), now)
    except Exception as error:  # a measurement must never take the run down
        log.exception("metric provider crashed")
        return Measurement(
            "Error", None, f"the metric provider failed: {type(error).__name__}", now
        )
    value = render_value(result)
    try:
        judgement = judge_with_reason(result, success_condition, failure_condition)
    except ConditionError as error:
        return Measurement("Error", value, str(error), now)
    return Measurement(judgement.phase, value, judgement.message, now)


def _fetch(provider: Mapping[str, Any], prometheus_url: str | None) -> Any:
    fetchers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "prometheus": lambda spec: query_prometheus(spec, default_address=prometheus_url),
        "web": fetch_web_metric,
    }
    if not isinstance(provider, Mapping) or len(provider) != 1:
        raise ProviderError(f"a metric needs exactly one provider ({', '.join(fetchers)})")
    ((kind, spec),) = provider.items()
    if kind not in fetchers:
        raise ProviderError(
            f"provider {kind!r} is not supported; Coalmine supports {', '.join(fetchers)}"
        )
    if not isinstance(spec, Mapping):
        raise ProviderError(f"provider.{kind} must be a mapping")
    return fetchers[kind](spec)


def render_value(result: Any) -> str:
    """Short text for reports: `0.9923`, `[0.9923,0.5]`, `NaN`, `[]`, `"ok"`, `true`."""
    if isinstance(result, list):
        shown = ",".join(render_value(v) for v in result[:MAX_LISTED_VALUES])
        more = f",…+{len(result) - MAX_LISTED_VALUES}" if len(result) > MAX_LISTED_VALUES else ""
        return _shorten(f"[{shown}{more}]")
    if isinstance(result, float):
        return _render_float(result)
    if isinstance(result, str):
        return _shorten(result)
    return _shorten(json.dumps(result, sort_keys=True, default=str))


def _render_float(number: float) -> str:
    """Prometheus's spellings for NaN and infinities; six significant digits otherwise, so that
    0.99996 is not shown as 1 next to a 0.9999 threshold."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return f"{number:.6g}"


def _shorten(text: str) -> str:
    text = " ".join(text.split())  # one line: it goes into tables and status descriptions
    return text if len(text) <= MAX_VALUE_LENGTH else text[: MAX_VALUE_LENGTH - 1] + "…"
