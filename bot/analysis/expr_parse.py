"""Argo Rollouts conditions (expr-lang) read into a Python expression tree, never run here.

Argo evaluates `successCondition` / `failureCondition` with expr-lang
(`utils/evaluate/evaluate.go`). Repositories written for Argo must keep working, so expr's small
syntax differences (`&&`, `||`, `!`, `a ? b : c`, `{# > 0.9}` predicates, `nil`/`true`/`false`)
are translated to Python syntax (strings stay verbatim) and parsed with `ast`.
bot.analysis.expr_eval evaluates the tree in a restricted interpreter, and bot.analysis.conditions
judges measurements with it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

MAX_CONDITION_LENGTH = 2000
DATA_AWARE_HELPERS = frozenset({"isNaN", "isNil", "default", "len"})


class ConditionError(ValueError):
    """A condition that cannot be parsed or evaluated; upstream it becomes an Error measurement."""


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
