"""Judging one measurement with Argo's `successCondition` / `failureCondition`.

Judging follows Argo's table, with one deliberate difference (Coalmine's "no data is not
evidence" principle): when the result is missing, empty or NaN, the measurement is Inconclusive
with message "no data" - unless a condition uses one of the data-aware helpers `isNaN`, `isNil`,
`default` or `len` and evaluates cleanly, in which case the author has said what no data means
(`isNaN(result) || result < 0.05`, `len(result) > 0 && result[0] >= 0.99`) and that is honoured.

Conditions are parsed by bot.analysis.expr_parse and evaluated safely by bot.analysis.expr_eval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bot.analysis.expr_eval import evaluate_condition
from bot.analysis.expr_parse import CompiledCondition, ConditionError, compile_condition
from bot.analysis.measurement import MeasurementPhase

NO_DATA = "no data"


def is_no_data(result: Any) -> bool:
    """Missing, empty, or only NaN: nothing was measured."""
    if result is None:
        return True
    if isinstance(result, float):
        return math.isnan(result)
    if isinstance(result, list):
        return all(isinstance(v, float) and math.isnan(v) for v in result)
    return False


@dataclass(frozen=True)
class Judgement:
    phase: MeasurementPhase
    message: str


def judge_with_reason(
    result: Any, success_condition: str | None, failure_condition: str | None
) -> Judgement:
    """Argo's judgement table plus the no-data rule, with a sentence saying why.

    Raises ConditionError (prefixed with which condition failed) when a condition is invalid or
    cannot be evaluated on data that is present.
    """
    conditions: dict[str, CompiledCondition] = {}
    for name, text in (
        ("successCondition", success_condition),
        ("failureCondition", failure_condition),
    ):
        if text:
            try:
                conditions[name] = compile_condition(text)
            except ConditionError as error:
                raise ConditionError(f"invalid {name}: {error}") from None
    no_data = is_no_data(result)
    if no_data and not any(c.handles_no_data for c in conditions.values()):
        return Judgement("Inconclusive", NO_DATA)
    outcomes: dict[str, bool] = {}
    for name, compiled in conditions.items():
        try:
            outcomes[name] = evaluate_condition(compiled, result)
        except ConditionError as error:
            if no_data:
                return Judgement("Inconclusive", NO_DATA)
            raise ConditionError(
                f"could not evaluate {name} `{compiled.source}`: {error}"
            ) from None
    judgement = _apply_table(outcomes, conditions)
    if no_data:
        return Judgement(judgement.phase, f"{NO_DATA}; {judgement.message}")
    return judgement


def _apply_table(outcomes: dict[str, bool], conditions: dict[str, CompiledCondition]) -> Judgement:
    def said(name: str) -> str:
        return f"{name} `{conditions[name].source}` is {'true' if outcomes[name] else 'false'}"

    success = outcomes.get("successCondition")
    failure = outcomes.get("failureCondition")
    if success is None and failure is None:
        return Judgement("Successful", "no conditions: any value succeeds")
    if failure is None:
        return Judgement("Successful" if success else "Failed", said("successCondition"))
    if success is None:
        return Judgement("Failed" if failure else "Successful", said("failureCondition"))
    if failure:
        return Judgement("Failed", said("failureCondition"))
    if success:
        return Judgement("Successful", said("successCondition"))
    return Judgement("Inconclusive", f"{said('successCondition')} and {said('failureCondition')}")


def judge(
    result: Any, success_condition: str | None, failure_condition: str | None
) -> MeasurementPhase:
    """The phase of one measurement; see judge_with_reason."""
    return judge_with_reason(result, success_condition, failure_condition).phase
