"""Safe evaluation of Argo Rollouts `successCondition` / `failureCondition` expressions.

Argo evaluates conditions with expr-lang (`utils/evaluate/evaluate.go`), exposing `result` and the
helpers `isNaN`, `isInf`, `isNil`, `asInt`, `asFloat` and `default`, plus expr's builtins (`len`,
`all`, `any`, ...). Repositories written for Argo must keep working, so the small syntax
differences (`&&`, `||`, `!`, `a ? b : c`, `{# > 0.9}` predicates, `nil`/`true`/`false`) are
translated to Python and evaluated by a restricted `simpleeval` interpreter: no Python `eval`, no
attribute access except JSON object keys, no calls except the helpers below.

Judging follows Argo's table, with one deliberate difference (Coalmine's "no data is not
evidence" principle): when the result is missing, empty or NaN, the measurement is Inconclusive
with message "no data" - unless a condition uses one of the data-aware helpers `isNaN`, `isNil`,
`default` or `len` and evaluates cleanly, in which case the author has said what no data means
(`isNaN(result) || result < 0.05`, `len(result) > 0 && result[0] >= 0.99`) and that is honoured.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from simpleeval import DEFAULT_OPERATORS, SimpleEval

from bot.analysis.measurement import MeasurementPhase

MAX_CONDITION_LENGTH = 2000
MAX_EXPONENT = 1000
MAX_INTEGER_BITS = 4096
NO_DATA = "no data"
DATA_AWARE_HELPERS = frozenset({"isNaN", "isNil", "default", "len"})


class ConditionError(ValueError):
    """A condition that cannot be parsed or evaluated; upstream it becomes an Error measurement."""


class _MissingValue(ConditionError):
    """An index or key that is not there; `default(...)` turns it into its fallback."""


# ---------------------------------------------------------------------------------------------
# expr syntax -> Python syntax

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<op>&&|\|\||\?\?|\?\.|!=|[!?:\#{}()\[\]^])
    |(?P<text>[^"'!?:\#{}()\[\]^&|`]+|[&|])
    """,
    re.VERBOSE | re.DOTALL,
)
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_ITEM = "_item"  # the closure parameter that expr writes as `#`
_SIMPLE_REPLACEMENTS = {"&&": " and ", "||": " or ", "!": " not ", "#": f" {_ITEM} ", "^": "**"}
_UNSUPPORTED_OPERATORS = {
    "??": "the ?? operator is not supported; use default(value, fallback)",
    "?.": "the ?. operator is not supported",
}


@dataclass
class _Group:
    opener: str
    items: list[str | _Group]


def _tokenize(condition: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(condition):
        match = _TOKEN.match(condition, position)
        if match is None:
            raise ConditionError(f"unexpected {condition[position]!r} at column {position + 1}")
        tokens.append(match.group())
        position = match.end()
    return tokens


def _nest(tokens: list[str]) -> list[str | _Group]:
    root = _Group("", [])
    stack = [root]
    for token in tokens:
        if token in _OPENERS:
            group = _Group(token, [])
            stack[-1].items.append(group)
            stack.append(group)
        elif token in _OPENERS.values():
            if len(stack) == 1 or _OPENERS[stack[-1].opener] != token:
                raise ConditionError(f"unbalanced {token!r}")
            stack.pop()
        else:
            stack[-1].items.append(token)
    if len(stack) > 1:
        raise ConditionError(f"unclosed {stack[-1].opener!r}")
    return root.items


def _render(items: list[str | _Group]) -> str:
    question = next((i for i, item in enumerate(items) if item == "?"), None)
    if question is not None:
        return _render_ternary(items[:question], items[question + 1 :])
    return "".join(_render_item(item) for item in items)


def _render_ternary(test: list[str | _Group], rest: list[str | _Group]) -> str:
    """`a ? b : c` (right-associative, as in expr) becomes `(b) if (a) else (c)`."""
    pending = 0
    for index, item in enumerate(rest):
        if item == "?":
            pending += 1
        elif item == ":" and pending:
            pending -= 1
        elif item == ":":
            then, otherwise = rest[:index], rest[index + 1 :]
            return f"(({_render(then)}) if ({_render(test)}) else ({_render(otherwise)}))"
    raise ConditionError("'?' without a matching ':'")


def _render_item(item: str | _Group) -> str:
    if isinstance(item, _Group):
        inner = _render(item.items)
        if item.opener == "{":
            return f"(lambda {_ITEM}: ({inner}))"
        return f"{item.opener}{inner}{_OPENERS[item.opener]}"
    if item in _UNSUPPORTED_OPERATORS:
        raise ConditionError(_UNSUPPORTED_OPERATORS[item])
    return _SIMPLE_REPLACEMENTS.get(item, item)


def to_python(condition: str) -> str:
    """Translate expr syntax to the Python subset the evaluator accepts (strings stay verbatim)."""
    return _render(_nest(_tokenize(condition)))


# ---------------------------------------------------------------------------------------------
# helpers visible to conditions


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


# ---------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class CompiledCondition:
    """A parsed condition; compile once when config is loaded to report syntax errors early."""

    source: str
    tree: ast.expr

    @property
    def handles_no_data(self) -> bool:
        """True when the author wrote what no data means, with isNaN / isNil / default / len."""
        return any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in DATA_AWARE_HELPERS
            for node in ast.walk(self.tree)
        )


def compile_condition(condition: str) -> CompiledCondition:
    """Parse an Argo condition; raises ConditionError naming what is wrong."""
    if not condition.strip():
        raise ConditionError("the condition is empty")
    if len(condition) > MAX_CONDITION_LENGTH:
        raise ConditionError(f"the condition is longer than {MAX_CONDITION_LENGTH} characters")
    try:
        tree = ast.parse(to_python(condition).strip(), mode="eval").body
    except SyntaxError as error:
        raise ConditionError(f"cannot parse `{condition}`: {error.msg}") from None
    except RecursionError:
        raise ConditionError(f"cannot parse `{condition}`: nested too deeply") from None
    return CompiledCondition(source=condition, tree=tree)


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
