"""Take one measurement: run a provider, judge its result, never raise.

The analysis run and the engine only ever see `Measurement`s; every failure on the way - a bad
template, an unreachable Prometheus, a condition that does not evaluate - becomes an `Error`
measurement whose message tells the people in the PR what went wrong.

Providers reach only what the server's egress policy allows (bot.egress). What they return may
still be anything the endpoint sent, so the value kept for reports is shown only when it is a
number, a boolean or a short list of numbers; anything else is described by type and length,
never printed (a metadata endpoint's token must not end up in a PR comment).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from bot.analysis.conditions import judge_with_reason
from bot.analysis.expr_parse import ConditionError
from bot.analysis.measurement import Measurement
from bot.analysis.providers import ProviderError
from bot.analysis.providers.kayenta import measure_kayenta
from bot.analysis.providers.prometheus import query_prometheus
from bot.analysis.providers.web import fetch_web_metric
from bot.egress import DENY_ALL, Egress

log = logging.getLogger(__name__)

MAX_LISTED_VALUES = 10  # a longer list, or one with anything but numbers, is only described
MEASURING_THREADS = 8


class BackgroundMeasurements:
    """A few daemon threads that take measurements away from the job and the lock that asked.

    A metric endpoint may take up to its (capped) timeout to answer; meanwhile the worker must
    stay free for commands, ticks and other repositories' merges. The threads are daemons: a
    measurement lost with its process is asked for again by the engine after
    MEASUREMENT_TIMEOUT_SECONDS, like one whose answer never came.
    """

    def __init__(self, threads: int = MEASURING_THREADS) -> None:
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._threads = threads
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work()` on one of the threads (started on first use)."""
        with self._lock:
            if self._started < self._threads:
                self._started += 1
                threading.Thread(target=self._loop, name=f"measure-{self._started}",
                                 daemon=True).start()
        self._work.put(work)

    def _loop(self) -> None:
        while True:
            work = self._work.get()
            try:
                work()
            except Exception:  # one failed hand-back must not stop the thread
                log.exception("a background measurement failed")


def measure(
    provider: Mapping[str, Any],
    success_condition: str | None,
    failure_condition: str | None,
    *,
    prometheus_url: str | None,
    egress: Egress = DENY_ALL,
    now: float,
    run_started_at: float | None = None,
) -> Measurement:
    """Run one already-resolved metric `provider` (Argo's shape: `{"prometheus": {...}}` or
    `{"web": {...}}`) and judge the result with Argo's table and the no-data rule.

    Every request the provider makes must be allowed by `egress` (without one, only the
    server's own `prometheus_url` is reachable); a refusal is an Error measurement naming the
    destination and the reason. `run_started_at` is the analysis run's start (a kayenta
    metric with lookback reads from it)."""
    try:
        if isinstance(provider, Mapping) and set(provider) == {"kayenta"}:  # judged, no conditions
            return measure_kayenta(provider["kayenta"], default_address=prometheus_url,
                                   egress=egress, now=now, run_started_at=run_started_at)
        result = _fetch(provider, prometheus_url, egress)
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


def _fetch(provider: Mapping[str, Any], prometheus_url: str | None, egress: Egress) -> Any:
    fetchers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "prometheus": lambda spec: query_prometheus(
            spec, default_address=prometheus_url, egress=egress
        ),
        "web": lambda spec: fetch_web_metric(spec, egress=egress),
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
    """Text for reports: `0.9923`, `NaN`, `true`, `[0.9923,0.5]`, `[]`, `null`; anything else
    only by type and length: `string of 412 characters`, `object with 3 keys`, `list of 12
    values`. A provider's answer is whatever the endpoint sent, which may be a credential."""
    if result is None:
        return "null"
    if _is_number(result) or isinstance(result, bool):
        return _render_scalar(result)
    if (
        isinstance(result, list)
        and len(result) <= MAX_LISTED_VALUES
        and all(_is_number(v) for v in result)
    ):
        return "[" + ",".join(_render_scalar(v) for v in result) + "]"
    return describe_value(result)


def describe_value(value: Any) -> str:
    """The type and size of `value`, without any of its content."""
    if isinstance(value, str):
        return f"string of {_count(len(value), 'character')}"
    if isinstance(value, dict):
        return f"object with {_count(len(value), 'key')}"
    if isinstance(value, list):
        return f"list of {_count(len(value), 'value')}"
    return type(value).__name__


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _render_scalar(value: float) -> str:
    """A number or a boolean (both ints to Python); huge integers only by their size."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _render_float(value)
    text = str(value)
    return text if len(text) <= 20 else f"integer of {len(text.lstrip('-'))} digits"


def _render_float(number: float) -> str:
    """Prometheus's spellings for NaN and infinities; six significant digits otherwise, so that
    0.99996 is not shown as 1 next to a 0.9999 threshold."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return f"{number:.6g}"
