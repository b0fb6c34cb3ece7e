"""Mermaid charts of a rollout for the PR comment: the canary weight over time and the latest
numeric measurements. Pure rendering; GitHub and GitLab draw `xychart-beta` blocks themselves.

- one chart of the canary weight over time: a numeric x-axis of seconds since the rollout
  started, y-axis 0-100 %, the weight sampled as a step function on an even grid of at most
  CHART_POINTS points. Mermaid draws the i-th of n values at x = i·(span+1)/n on a numeric axis,
  so the weight is sampled at exactly those times (the last one at the end, so the final weight
  always shows); a weight held for less than one grid cell may not show;
- one chart per numeric metric (at most METRIC_CHARTS), because metrics have their own scales
  (ratios, milliseconds, counts) that would be flattened on the weight's 0-100 axis, and because
  they are measured at their own times: each chart has one category per measurement, labelled by
  the time since the rollout started, and a y-axis fitted to the values. Values like "[0.99]"
  are read as 0.99; errors, NaN and non-numbers are left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from bot.rollout.durations import format_duration
from bot.rollout.model import MetricPoint, RolloutState

CHART_POINTS = 50
METRIC_CHARTS = 3
METRIC_CHART_POINTS = 40
_NAME = 60  # characters of a metric name in a chart title

# Characters Mermaid takes literally inside a quoted xychart string: no quote, backtick, `%%`
# comment, `;` statement end or markup.
_CHART_UNSAFE = re.compile(r"[^\w .,:/()+\-]")


def rollout_charts(state: RolloutState, now: float) -> list[str]:
    """The canary weight over time, then the latest numeric metrics (folded), as Mermaid."""
    start = state.started_at
    if start is None or not state.weights:
        return []
    end = state.finished_at if state.finished_at is not None else max(now, start)
    lines = ["", *_weight_chart(state, start, end)]
    metric_charts = [
        _metric_chart(name, points, start) for name, points in numeric_series(state.metric_points)
    ]
    if metric_charts:
        lines += ["", "<details><summary>Metric charts</summary>", ""]
        for chart in metric_charts:
            lines += [*chart, ""]
        lines.append("</details>")
    return lines


def _weight_chart(state: RolloutState, start: float, end: float) -> list[str]:
    span = max(math.ceil(end - start), 2)
    count = min(CHART_POINTS, span)
    # Mermaid places value i at i·(span+1)/count on a numeric axis; sample exactly there,
    # except that the last value is the weight at the end, so a final abort (to 0) or
    # completion (to 100) always shows.
    times = [start + i * (span + 1) / count for i in range(count - 1)] + [end]
    weights = [_weight_at(state, t) for t in times]
    return [
        "```mermaid",
        "xychart-beta",
        '    title "Canary weight (%)"',
        f'    x-axis "seconds since start" 0 --> {span}',
        '    y-axis "canary %" 0 --> 100',
        f"    line [{', '.join(str(w) for w in weights)}]",
        "```",
    ]


def _weight_at(state: RolloutState, at: float) -> int:
    weight = 0
    for point in state.weights:
        if point.at > at:
            break
        weight = point.weight
    return weight


def numeric_series(
    points: Iterable[MetricPoint],
) -> list[tuple[str, list[tuple[float, float]]]]:
    """(metric, [(time, value)]) for the METRIC_CHARTS most recently measured metrics with
    numeric values, each limited to its latest METRIC_CHART_POINTS values."""
    series: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        value = parse_number(point.value)
        if value is not None:
            series.setdefault(point.metric, []).append((point.at, value))
    newest = sorted(series, key=lambda name: series[name][-1][0], reverse=True)[:METRIC_CHARTS]
    return [(name, series[name][-METRIC_CHART_POINTS:]) for name in series if name in newest]


def _metric_chart(name: str, points: list[tuple[float, float]], start: float) -> list[str]:
    labels: list[str] = []
    for at, _ in points:
        label = format_duration(max(at - start, 0.0))
        repeat = 2
        while label in labels:  # Mermaid merges equal categories into one
            label = f"{format_duration(max(at - start, 0.0))} ({repeat})"
            repeat += 1
        labels.append(label)
    values = [value for _, value in points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    categories = ", ".join(f'"{label}"' for label in labels)
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{_chart_text(name)}"',
        f'    x-axis "time since start" [{categories}]',
        f'    y-axis "value" {_number(low - pad)} --> {_number(high + pad)}',
        f"    line [{', '.join(_number(v) for v in values)}]",
        "```",
    ]


def parse_number(value: str | None) -> float | None:
    """The number a measurement shows: "0.99" or a one-element vector "[0.99]"; None for no
    value, several values, NaN, infinities and anything else."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
        if "," in text:
            return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number(value: float) -> str:
    """A decimal Mermaid's lexer accepts: no exponent (`1e-05` would not parse), six
    significant digits."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = min(max(5 - magnitude, 0), 12)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _chart_text(text: str) -> str:
    return _CHART_UNSAFE.sub("_", text)[:_NAME] or "_"
