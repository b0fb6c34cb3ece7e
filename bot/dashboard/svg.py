"""The geometry of the dashboard's charts, drawn by its templates as inline SVG.

The PR comment draws its charts with Mermaid (bot.report.charts), which needs JavaScript from
elsewhere; the dashboard's Content-Security-Policy allows none, so its charts are plain SVG
computed here: the canary weight over time as a step line (0-100 %), and one chart per numeric
metric (its values over time, on an axis fitted to them). Pure: coordinates and labels only;
the template escapes the labels. Numbers are printed with fixed decimals so the same rollout
always draws the same picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bot.report.charts import numeric_series
from bot.rollout.durations import format_duration
from bot.rollout.model import RolloutState

WIDTH = 640
HEIGHT = 200
LEFT, RIGHT, TOP, BOTTOM = 56, 36, 14, 30  # margins around the plot
_NAME = 80


@dataclass(frozen=True)
class Tick:
    at: float  # x (on the x-axis) or y (on the y-axis), in the chart's coordinates
    label: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    line: str  # an SVG polyline's points: "x,y x,y …"
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    dots: tuple[Dot, ...] = ()
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def weight_chart(state: RolloutState, now: float) -> Chart | None:
    """The canary weight as a step line from the start to the end (or now); None before the
    rollout set any weight."""
    start = state.started_at
    if start is None or not state.weights:
        return None
    end = state.finished_at if state.finished_at is not None else now
    end = max(end, start + 1.0, *(point.at for point in state.weights))
    scale = _Scale(start, end, 0.0, 100.0)
    weight = 0
    corners = [(start, 0)]
    for point in state.weights:
        corners += [(point.at, weight), (point.at, point.weight)]
        weight = point.weight
    corners.append((end, weight))
    return Chart(
        title="Canary weight (%)",
        line=_points(scale, corners),
        x_ticks=_time_ticks(scale),
        y_ticks=tuple(Tick(scale.y(value), f"{value}%") for value in (0, 25, 50, 75, 100)),
    )


def metric_charts(state: RolloutState) -> list[Chart]:
    """One chart per numeric metric, the same few the PR comment draws
    (bot.report.charts.numeric_series: the most recently measured, their latest values)."""
    start = state.started_at
    series = numeric_series(state.metric_points)
    if start is None or not series:
        return []
    return [_metric_chart(name, points, start) for name, points in series]


def _metric_chart(name: str, points: list[tuple[float, float]], start: float) -> Chart:
    times = [at for at, _ in points]
    values = [value for _, value in points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    scale = _Scale(min(start, *times), max(max(times), start + 1.0), low - pad, high + pad)
    return Chart(
        title=name[:_NAME],
        line=_points(scale, points),
        x_ticks=_time_ticks(scale),
        y_ticks=tuple(Tick(scale.y(value), _number(value)) for value in (low, (low + high) / 2,
                                                                          high)),
        dots=tuple(Dot(round(scale.x(at), 1), round(scale.y(value), 1),
                       f"{_number(value)} at +{format_duration(max(at - start, 0.0))}")
                   for at, value in points),
    )


@dataclass(frozen=True)
class _Scale:
    """Maps (time, value) onto the plot area."""

    t0: float
    t1: float
    v0: float
    v1: float

    def x(self, at: float) -> float:
        return LEFT + (at - self.t0) / (self.t1 - self.t0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        span = self.v1 - self.v0
        return HEIGHT - BOTTOM - (value - self.v0) / span * (HEIGHT - TOP - BOTTOM)


def _points(scale: _Scale, corners: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{scale.x(at):.1f},{scale.y(value):.1f}" for at, value in corners)


def _time_ticks(scale: _Scale) -> tuple[Tick, ...]:
    span = scale.t1 - scale.t0
    return tuple(Tick(round(scale.x(scale.t0 + span * share), 1),
                      "+" + format_duration(span * share))
                 for share in (0.0, 0.25, 0.5, 0.75, 1.0))


def _number(value: float) -> str:
    """Four significant digits, no exponent for ordinary magnitudes."""
    text = f"{value:.4g}"
    return "0" if text == "-0" else text
