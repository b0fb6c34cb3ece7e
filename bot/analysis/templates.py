"""Analysis templates as data, and the `{{args.name}}` resolution Argo performs when a run starts.

Templates are parsed from `AnalysisTemplate` / `ClusterAnalysisTemplate` manifests by
`bot.rollout.strategy`. Placeholders stay unresolved in the parsed template and are filled in
only when a run starts, as in Argo, so one template can serve many steps with different args.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

# `{{args.name}}` or `{{ args.name }}`, the only placeholders Argo resolves in a metric.
_PLACEHOLDER = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.\-]+)\s*\}\}")


class UnresolvedArgument(Exception):
    """A placeholder or a required template argument has no value when the run starts."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unresolved argument '{name}'")
        self.name = name


SUPPORTED_PROVIDERS = ("prometheus", "web")


def provider_kind(provider: Mapping[str, Any]) -> str:
    """ "prometheus" or "web": the single key of an Argo-shaped provider mapping."""
    return next(iter(provider))


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a template; `count` may still hold a `{{args.x}}` string until resolved."""

    name: str
    provider: dict[str, Any]  # Argo's shape, validated: {"prometheus": {...}} or {"web": {...}}
    success_condition: str = ""
    failure_condition: str = ""
    interval: float | None = None  # seconds
    initial_delay: float | None = None  # seconds
    count: int | str | None = None
    failure_limit: int = 0  # -1 disables
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    consecutive_success_limit: int = 0  # 0 disables

    @property
    def effective_count(self) -> int | None:
        """Measurements the metric needs: neither count nor interval means one; interval only
        means unbounded (None), until the run is terminated."""
        count = self.count if isinstance(self.count, int) else 0
        if count == 0:
            return 1 if self.interval is None else None
        return count


@dataclass(frozen=True)
class TemplateArg:
    name: str
    value: str | None = None  # None: the rollout must supply it


@dataclass(frozen=True)
class AnalysisTemplate:
    name: str
    metrics: tuple[MetricSpec, ...]
    args: tuple[TemplateArg, ...] = ()
    cluster_scope: bool = False  # ClusterAnalysisTemplate
    source: str = ""  # file it came from, for messages


@dataclass(frozen=True)
class Arg:
    """An argument supplied by the rollout (step or background analysis)."""

    name: str
    value: str


def merge_args(templates: Sequence[AnalysisTemplate], supplied: Iterable[Arg]) -> dict[str, str]:
    """Template defaults overridden by supplied args, as Argo's MergeArgs.

    Like Argo, a supplied arg that no template declares is ignored, and a declared arg left
    without a value is an error.
    """
    declared: dict[str, str | None] = {}
    for template in templates:
        for arg in template.args:
            if declared.get(arg.name) is None:
                declared[arg.name] = arg.value
    for arg in supplied:
        if arg.name in declared:
            declared[arg.name] = arg.value
    for name, value in declared.items():
        if value is None:
            raise UnresolvedArgument(name)
    return {name: value for name, value in declared.items() if value is not None}


def substitute(text: str, values: dict[str, str]) -> str:
    """`text` with every `{{args.name}}` replaced; an unknown name raises UnresolvedArgument."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise UnresolvedArgument(name)
        return values[name]

    return _PLACEHOLDER.sub(value_of, text)


def _substitute_all(value: Any, values: dict[str, str]) -> Any:
    """Every string inside a JSON-like value with its placeholders filled, as Argo resolves
    the whole metric at once."""
    if isinstance(value, str):
        return substitute(value, values)
    if isinstance(value, list):
        return [_substitute_all(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_all(v, values) for k, v in value.items()}
    return value


def _resolve_count(count: int | str | None, values: dict[str, str]) -> int | None:
    if not isinstance(count, str):
        return count
    text = substitute(count, values).strip()
    if not text.isdigit():
        raise ValueError(f"count {text!r} is not a whole number")
    return int(text)


def resolve_metrics(
    templates: Sequence[AnalysisTemplate], supplied: Iterable[Arg]
) -> tuple[MetricSpec, ...]:
    """The metrics of all `templates`, merged as Argo merges templates, with args filled in.

    Raises UnresolvedArgument for a missing value and ValueError for a metric that is invalid
    once resolved (duplicate names across templates, a count that is not a number).
    """
    values = merge_args(templates, supplied)
    resolved: list[MetricSpec] = []
    seen: set[str] = set()
    for template in templates:
        for metric in template.metrics:
            if metric.name in seen:
                raise ValueError(f"metric '{metric.name}' is defined by more than one template")
            seen.add(metric.name)
            resolved.append(
                replace(
                    metric,
                    provider=_substitute_all(metric.provider, values),
                    success_condition=substitute(metric.success_condition, values),
                    failure_condition=substitute(metric.failure_condition, values),
                    count=_resolve_count(metric.count, values),
                )
            )
    return tuple(resolved)
