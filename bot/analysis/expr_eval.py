"""A restricted interpreter for parsed Argo conditions (bot.analysis.expr_parse).

Conditions come from repositories, so they run in a `simpleeval` interpreter narrowed to what
expr-lang offers: no Python `eval`, no attribute access except JSON object keys, no calls except
Argo's helpers (`isNaN`, `isInf`, `isNil`, `asInt`, `asFloat`, `default`) and expr's builtins
(`len`, `all`, `any`, ...), and powers capped so a condition cannot make the bot compute for
minutes. A measured string may be a secret, so error messages show only its length.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable
from typing import Any

from simpleeval import DEFAULT_OPERATORS, SimpleEval

from bot.analysis.expr_parse import CompiledCondition, ConditionError, compile_condition

MAX_EXPONENT = 1000
MAX_INTEGER_BITS = 4096


class _MissingValue(ConditionError):
    """An index or key that is not there; `default(...)` turns it into its fallback."""


def _number(value: Any, helper: str) -> float:
    """Argo's helpers take one float; a one-element Prometheus vector is accepted as that float."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConditionError(f"{helper}() expects a number, got {_describe(value)}")
    return float(value)


def _is_nan(value: Any) -> bool:
    return math.isnan(_number(value, "isNaN"))


def _is_inf(value: Any) -> bool:
    return math.isinf(_number(value, "isInf"))


def _is_nil(value: Any) -> bool:
    return value is None or value == []


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConditionError(f"asFloat() cannot convert {_describe(value)}") from None


def _as_int(value: Any) -> int:
    try:
        return int(value) if not isinstance(value, str) else int(value.strip(), 10)
    except (TypeError, ValueError, OverflowError):
        raise ConditionError(f"asInt() cannot convert {_describe(value)}") from None


def _sequence(value: Any, helper: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConditionError(f"{helper}() expects a list, got {_describe(value)}")
    return value


def _predicate_helper(name: str, combine: Callable[[Iterable[bool]], Any]) -> Callable[..., Any]:
    def helper(values: Any, predicate: Callable[[Any], Any]) -> Any:
        return combine(_truth(predicate(v), name) for v in _sequence(values, name))

    return helper


def _truth(value: Any, helper: str) -> bool:
    if not isinstance(value, bool):
        raise ConditionError(f"the predicate of {helper}() must be true or false")
    return value


def _length(value: Any) -> int:
    if isinstance(value, str | dict | list):
        return len(value)
    raise ConditionError(f"len() expects a list, string or object, got {_describe(value)}")


def _power(base: Any, exponent: Any) -> Any:
    """Capped so that a condition cannot make the bot compute for minutes: Python integers grow
    without bound, so `(10 ** 1000) ** 1000` is refused as well as `9 ** 9 ** 9`."""
    if abs(exponent) > MAX_EXPONENT:
        raise ConditionError(f"exponent {exponent} is larger than {MAX_EXPONENT}")
    if isinstance(base, int) and base.bit_length() * abs(exponent) > MAX_INTEGER_BITS:
        raise ConditionError("the power is too large")
    return base**exponent


def _mean(values: Any) -> float:
    numbers = _sequence(values, "mean")
    if not numbers:
        raise _MissingValue("mean() of an empty list")
    return sum(numbers) / len(numbers)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "isNaN": _is_nan,
    "isInf": _is_inf,
    "isNil": _is_nil,
    "asFloat": _as_float,
    "asInt": _as_int,
    "len": _length,
    "abs": abs,
    "min": min,
    "max": max,
    "sum": lambda values: sum(_sequence(values, "sum")),
    "mean": _mean,
    "all": _predicate_helper("all", all),
    "any": _predicate_helper("any", any),
    "none": _predicate_helper("none", lambda checks: not any(checks)),
    "one": _predicate_helper("one", lambda checks: sum(checks) == 1),
    "count": _predicate_helper("count", sum),
    "filter": lambda values, predicate: [
        v for v in _sequence(values, "filter") if _truth(predicate(v), "filter")
    ],
    "map": lambda values, function: [function(v) for v in _sequence(values, "map")],
}
# `default` is evaluated lazily by the interpreter itself (see _Interpreter._eval_call).
_KNOWN_FUNCTIONS = frozenset(_FUNCTIONS) | {"default"}

_OPERATOR_TYPES = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
    ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
)  # fmt: skip
_OPERATORS = {kind: DEFAULT_OPERATORS[kind] for kind in _OPERATOR_TYPES}
_OPERATORS[ast.Pow] = _power


# ---------------------------------------------------------------------------------------------
# the interpreter


class _Interpreter(SimpleEval):
    """simpleeval narrowed to expr's needs: JSON-key attributes, named helpers, closures, lists."""

    def __init__(self, result: Any) -> None:
        names = {"result": result, "true": True, "false": False, "nil": None}
        names |= {"True": True, "False": False, "None": None}
        super().__init__(operators=_OPERATORS, functions=dict(_FUNCTIONS), names=names)
        for kind in (ast.JoinedStr, ast.FormattedValue, ast.Assign, ast.AugAssign, ast.Import):
            self.nodes.pop(kind, None)
        self.nodes[ast.Lambda] = self._eval_lambda
        self.nodes[ast.List] = lambda node: [self._eval(element) for element in node.elts]

    def _eval_call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in _KNOWN_FUNCTIONS:
            shown = ast.unparse(node.func)
            raise ConditionError(f"unknown function {shown}(); known: {_known_functions()}")
        if node.keywords:
            raise ConditionError(f"{node.func.id}() takes no keyword arguments")
        if node.func.id == "default":
            return self._eval_default(node.args)
        return self.functions[node.func.id](*(self._eval(arg) for arg in node.args))

    def _eval_default(self, args: list[ast.expr]) -> Any:
        if len(args) != 2:
            raise ConditionError("default() takes a value and a fallback")
        try:
            value = self._eval(args[0])
        except _MissingValue:
            return self._eval(args[1])
        return self._eval(args[1]) if value is None or value == [] else value

    def _eval_lambda(self, node: ast.Lambda) -> Callable[[Any], Any]:
        parameters = node.args
        if (
            len(parameters.args) != 1
            or parameters.vararg
            or parameters.kwarg
            or parameters.kwonlyargs
        ):
            raise ConditionError("a predicate takes exactly one value (#)")
        name = parameters.args[0].arg

        def call(value: Any) -> Any:
            outer = self.names
            self.names = {**outer, name: value}
            try:
                return self._eval(node.body)
            finally:
                self.names = outer

        return call

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(key, bool) or not isinstance(key, int | str | slice):
            raise ConditionError(f"cannot index with {_describe(key)}")
        try:
            return container[key]
        except IndexError:
            raise _MissingValue(
                f"{ast.unparse(node.value)} has no element {key} (it holds {_describe(container)})"
            ) from None
        except KeyError:
            raise _MissingValue(f"{ast.unparse(node.value)} has no key {key!r}") from None
        except TypeError:
            raise ConditionError(f"cannot index {_describe(container)}") from None

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise ConditionError(f"access to .{node.attr} is not allowed")
        container = self._eval(node.value)
        if not isinstance(container, dict):
            raise ConditionError(f"cannot read .{node.attr} of {_describe(container)}")
        if node.attr not in container:
            raise _MissingValue(f"{ast.unparse(node.value)} has no key {node.attr!r}")
        return container[node.attr]


def _known_functions() -> str:
    return ", ".join(sorted(_KNOWN_FUNCTIONS))


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} value{'s' if len(value) != 1 else ''}"
    if value is None:
        return "nil"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):  # a measured string may be a secret: only its length is shown
        return f"a string of {len(value)} character{'s' if len(value) != 1 else ''}"
    shown = repr(value)
    return f"{type(value).__name__} {shown if len(shown) <= 40 else shown[:39] + '…'}"


def evaluate_condition(condition: str | CompiledCondition, result: Any) -> bool:
    """Evaluate one condition against a provider result; it must yield true or false."""
    compiled = (
        condition if isinstance(condition, CompiledCondition) else compile_condition(condition)
    )
    try:
        outcome = _Interpreter(result).eval(compiled.source, previously_parsed=compiled.tree)
    except ConditionError:
        raise
    except TypeError as error:
        raise ConditionError(_type_error_message(error, result)) from None
    except Exception as error:  # noqa: BLE001 - the sandbox boundary: every failure is reported
        raise ConditionError(str(error) or type(error).__name__) from None
    if not isinstance(outcome, bool):
        raise ConditionError(f"expected true or false, got {_describe(outcome)}")
    return outcome


def _type_error_message(error: TypeError, result: Any) -> str:
    if isinstance(result, list):
        return f"{error}; result is {_describe(result)}, compare an element such as result[0]"
    return str(error)
