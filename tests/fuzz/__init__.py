"""Property-based fuzzing of every parser that reads input from outside: webhooks, repo config,
Argo manifests, YAML.

The strategies here are shared by the fuzz modules. Mutations start from documents that are
valid, because a parser's interesting failures sit just beside the happy path (a field deleted,
a string where a mapping belongs), which purely random input rarely reaches.

Runs are derandomised so a failure reproduces on every machine; raise `max_examples` locally to
search further.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)

json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
"""Any JSON document (what `json.loads` may hand a parser)."""

odd_strings = st.sampled_from(
    [
        "",
        " ",
        "x" * 100_000,
        "\u0000",
        "\ud800",  # a lone surrogate: valid in a Python str and in JSON text, not in UTF-8
        "🚀" * 50,
        "ﬁ\u202e\u200b",
        "../../etc/passwd",
        "{{args.x}}",
        "-1",
        "1e309",
        "null",
    ]
)
"""Strings that break careless code: empty, huge, NUL, surrogates, bidi marks, numbers."""

replacements = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | odd_strings
    | st.text(max_size=20)
    | st.just([])
    | st.just({})
    | json_values
    # YAML mappings may have non-string keys (numbers, booleans, null) next to string ones.
    | st.dictionaries(st.integers() | st.booleans() | st.none() | st.text(max_size=5),
                      json_values, min_size=2, max_size=3)
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position (tuple of keys and indexes) inside nested dicts and lists."""
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    else:
        return found
    for key, value in items:
        path = (*prefix, key)
        found.append(path)
        found.extend(_paths(value, path))
    return found


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 4) -> Any:
    """`base` with a few fields deleted, replaced by another type, or given an odd string."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(replacements)
    return doc
