"""The result of one metric measurement, shared by the providers and the pure run semantics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.judge.model import Judgement

MeasurementPhase = Literal["Successful", "Failed", "Inconclusive", "Error"]


@dataclass(frozen=True)
class Measurement:
    """One judged sample; `value` is what the provider returned, rendered as text for reports."""

    phase: MeasurementPhase
    value: str | None
    message: str = ""  # why: "no data", "connection refused", "result[0] >= 0.99 is false"
    at: float = 0.0  # epoch seconds when taken
    judgement: Judgement | None = None  # a kayenta metric's verdict, metric by metric
