"""Analysis templates as data, and the `{{args.name}}` resolution Argo performs when a run starts.

Templates are parsed from `AnalysisTemplate` / `ClusterAnalysisTemplate` manifests by
`bot.rollout.strategy`. Placeholders stay unresolved in the parsed template and are filled in
only when a run starts, as in Argo, so one template can serve many steps with different args.

Arguments whose value comes from the cluster (`valueFrom.secretKeyRef`, `valueFrom.fieldRef`)
cannot be known here: their placeholders stay in the resolved metric, which lists them in
`MetricSpec.value_from`, and the shell fills them in just before each measurement
(bot.analysis.providers.valuefrom). So a secret is read as the repository's account when it is needed,
and never stored in the rollout's state (Argo likewise resolves secrets at each measurement).
A run's `dryRun` and `measurementRetention` rules (the rollout's and the templates', merged as
Argo merges them) become each metric's `dry_run` and `measurement_limit`.
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


SUPPORTED_PROVIDERS = ("prometheus", "web", "job")
MEASUREMENT_HISTORY_LIMIT = 10  # Argo's default number of measurements kept per metric
# `valueFrom` kinds resolved by the shell at measurement time: ("secretKeyRef", name, key) and
# ("fieldRef", path). (`podTemplateHashValue` is a plain value once parsed: see bot.rollout.steps.)
SECRET_KEY_REF = "secretKeyRef"
FIELD_REF = "fieldRef"
ValueFrom = tuple[str, ...]


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
    dry_run: bool = False  # measured and shown, never deciding the run (Argo's dryRun)
    measurement_limit: int = MEASUREMENT_HISTORY_LIMIT  # measurements kept (measurementRetention)
    # Arguments still to resolve from the cluster before each measurement: (name, valueFrom).
    value_from: tuple[tuple[str, ValueFrom], ...] = ()

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
    value: str | None = None  # None: the rollout must supply it (unless value_from is set)
    value_from: ValueFrom = ()  # ("secretKeyRef", name, key)


@dataclass(frozen=True)
class AnalysisTemplate:
    name: str
    metrics: tuple[MetricSpec, ...]
    args: tuple[TemplateArg, ...] = ()
    cluster_scope: bool = False  # ClusterAnalysisTemplate
    source: str = ""  # file it came from, for messages
    dry_run: tuple[str, ...] = ()  # metric name regexes (spec.dryRun[].metricName)
    measurement_retention: tuple[tuple[str, int], ...] = ()  # (metric name regex, limit)


@dataclass(frozen=True)
class Arg:
    """An argument supplied by the rollout (step or background analysis)."""

    name: str
    value: str = ""
    value_from: ValueFrom = ()  # ("fieldRef", path): read from the workload when measured


@dataclass(frozen=True)
class RunRules:
    """A rollout's `dryRun` and `measurementRetention` for one analysis (step or background)."""

    dry_run: tuple[str, ...] = ()
    measurement_retention: tuple[tuple[str, int], ...] = ()


def merge_args(templates: Sequence[AnalysisTemplate], supplied: Iterable[Arg]) -> dict[str, str]:
    """Template defaults overridden by supplied args, as Argo's MergeArgs.

    Like Argo, a supplied arg that no template declares is ignored, and a declared arg left
    without a value is an error. Arguments valued from the cluster are left out (see
    `merge_arg_sources`)."""
    return merge_arg_sources(templates, supplied)[0]


def merge_arg_sources(
    templates: Sequence[AnalysisTemplate], supplied: Iterable[Arg]
) -> tuple[dict[str, str], dict[str, ValueFrom]]:
    """(values, valued from the cluster) of the merged arguments: the template's default (a
    value or a valueFrom), overridden by what the rollout supplies."""
    declared: dict[str, str | ValueFrom | None] = {}
    for template in templates:
        for arg in template.args:
            if declared.get(arg.name) is None:
                declared[arg.name] = arg.value_from or arg.value
    for arg in supplied:
        if arg.name in declared:
            declared[arg.name] = arg.value_from or arg.value
    values: dict[str, str] = {}
    deferred: dict[str, ValueFrom] = {}
    for name, value in declared.items():
        if value is None:
            raise UnresolvedArgument(name)
        if isinstance(value, tuple):
            deferred[name] = value
        else:
            values[name] = value
    return values, deferred


def substitute(text: str, values: Mapping[str, str], keep: Iterable[str] = ()) -> str:
    """`text` with every `{{args.name}}` replaced; an unknown name raises UnresolvedArgument.
    Placeholders of the names in `keep` (valued from the cluster later) are left as they are."""
    kept = frozenset(keep)

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in kept:
            return match.group(0)
        if name not in values:
            raise UnresolvedArgument(name)
        return values[name]

    return _PLACEHOLDER.sub(value_of, text)


def substitute_all(value: Any, values: Mapping[str, str], keep: Iterable[str] = ()) -> Any:
    """Every string inside a JSON-like value with its placeholders filled, as Argo resolves
    the whole metric at once."""
    if isinstance(value, str):
        return substitute(value, values, keep)
    if isinstance(value, list):
        return [substitute_all(v, values, keep) for v in value]
    if isinstance(value, dict):
        return {k: substitute_all(v, values, keep) for k, v in value.items()}
    return value


def placeholders(value: Any) -> set[str]:
    """The argument names a JSON-like value refers to."""
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value))
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values()))
    return set()


def _resolve_count(count: int | str | None, values: dict[str, str]) -> int | None:
    if not isinstance(count, str):
        return count
    text = substitute(count, values).strip()
    if not text.isdigit():
        raise ValueError(f"count {text!r} is not a whole number")
    return int(text)


def resolve_metrics(
    templates: Sequence[AnalysisTemplate], supplied: Iterable[Arg], rules: RunRules | None = None
) -> tuple[MetricSpec, ...]:
    """The metrics of all `templates`, merged as Argo merges templates, with args filled in
    (those valued from the cluster are listed on each metric instead) and the rollout's and
    the templates' dryRun and measurementRetention rules applied.

    Raises UnresolvedArgument for a missing value and ValueError for a metric that is invalid
    once resolved (duplicate names across templates, a count that is not a number, a rule that
    matches no metric).
    """
    values, deferred = merge_arg_sources(templates, supplied)
    resolved: list[MetricSpec] = []
    seen: set[str] = set()
    for template in templates:
        for metric in template.metrics:
            if metric.name in seen:
                raise ValueError(f"metric '{metric.name}' is defined by more than one template")
            seen.add(metric.name)
            if isinstance(metric.count, str) and placeholders(metric.count) & set(deferred):
                raise ValueError(f"metric '{metric.name}': count cannot come from valueFrom")
            texts = (metric.provider, metric.success_condition, metric.failure_condition)
            used = set().union(*(placeholders(t) for t in texts)) & set(deferred)
            resolved.append(
                replace(
                    metric,
                    provider=substitute_all(metric.provider, values, deferred),
                    success_condition=substitute(metric.success_condition, values, deferred),
                    failure_condition=substitute(metric.failure_condition, values, deferred),
                    count=_resolve_count(metric.count, values),
                    value_from=tuple((name, deferred[name]) for name in sorted(used)),
                )
            )
    return apply_rules(tuple(resolved), merge_rules(templates, rules or RunRules()))


def merge_rules(templates: Sequence[AnalysisTemplate], rules: RunRules) -> RunRules:
    """The rollout's rules followed by each template's, as Argo concatenates them."""
    dry_run = list(rules.dry_run)
    retention = list(rules.measurement_retention)
    for template in templates:
        dry_run.extend(template.dry_run)
        retention.extend(template.measurement_retention)
    return RunRules(tuple(dry_run), tuple(retention))


def apply_rules(metrics: tuple[MetricSpec, ...], rules: RunRules) -> tuple[MetricSpec, ...]:
    """Each metric marked dry-run when a `dryRun` regex matches its name, and given the limit
    of the last `measurementRetention` rule matching it (Argo's GetDryRunMetrics and
    GetMeasurementRetentionMetrics: unanchored regexes; a rule matching no metric is an error;
    a limit of 0 keeps the default)."""
    dry: set[str] = set()
    for i, pattern in enumerate(rules.dry_run):
        matched = {m.name for m in metrics if re.search(pattern, m.name)}
        if not matched:
            raise ValueError(f"dryRun[{i}]: {pattern!r} matches no metric name")
        dry |= matched
    limits: dict[str, int] = {}
    for i, (pattern, limit) in enumerate(rules.measurement_retention):
        matched = {m.name for m in metrics if re.search(pattern, m.name)}
        if not matched:
            raise ValueError(f"measurementRetention[{i}]: {pattern!r} matches no metric name")
        limits.update(dict.fromkeys(matched, limit))
    return tuple(
        replace(m, dry_run=m.name in dry,
                measurement_limit=limits.get(m.name, 0) or MEASUREMENT_HISTORY_LIMIT)
        for m in metrics
    )
