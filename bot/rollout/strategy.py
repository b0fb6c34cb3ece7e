"""Parse canary strategies from `.coalmine.yaml` and from Argo Rollouts manifests.

Both sources describe the same model (`bot.rollout.model.CanaryStrategy`). Argo `Rollout` and
`AnalysisTemplate` manifests are read, never applied: a Rollout becomes the Deployment Coalmine
applies (`rollout_to_deployment`) plus its strategy (`parse_rollout`).

Every problem is a StrategyError naming the file, the key path and the reason, so a person can
fix the YAML without reading code:
    deploy/web/rollout.yaml: spec.strategy.canary.steps[2].pause.duration: '5x' is not a
    duration (use 30, "30s", "5m", "1h")
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from bot.analysis.templates import (
    SUPPORTED_PROVIDERS,
    AnalysisTemplate,
    Arg,
    MetricSpec,
    TemplateArg,
)
from bot.rollout.durations import DurationError, parse_duration
from bot.rollout.model import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    AnalysisStep,
    BackgroundAnalysis,
    CanaryStrategy,
    PauseStep,
    SetWeightStep,
    Step,
    TemplateRef,
    WorkloadRef,
)

ARGO_API_VERSION = "argoproj.io/v1alpha1"
TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")

_STEP_KINDS = ("setWeight", "pause", "analysis")
_UNSUPPORTED_STEPS = {
    "experiment": "experiment steps are not supported by Coalmine",
    "setCanaryScale": (
        "setCanaryScale is not supported: without a traffic router the canary's scale follows "
        "setWeight (Argo also allows setCanaryScale only with trafficRouting)"
    ),
    "setHeaderRoute": "setHeaderRoute needs a traffic router, which Coalmine does not drive yet",
    "setMirrorRoute": "setMirrorRoute needs a traffic router, which Coalmine does not drive yet",
    "plugin": "step plugins are not supported by Coalmine",
}
_CONFIG_CANARY_KEYS = ("workload", "steps", "analysis", "progressDeadlineSeconds")
_METRIC_KEYS = (
    "name",
    "interval",
    "initialDelay",
    "count",
    "successCondition",
    "failureCondition",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "consecutiveSuccessLimit",
    "provider",
)
_PROVIDER_KEYS = {
    "prometheus": ("address", "query", "timeout", "headers", "insecure"),
    "web": (
        "url",
        "method",
        "headers",
        "body",
        "jsonBody",
        "jsonPath",
        "timeoutSeconds",
        "insecure",
    ),
}
_WEB_METHODS = ("GET", "POST", "PUT")
_WHOLE = re.compile(r"-?\d+")


class StrategyError(ValueError):
    """A strategy or template that Coalmine cannot run, located by file and key path."""

    def __init__(self, file: str, key_path: str, reason: str) -> None:
        super().__init__(file, key_path, reason)
        self.file = file
        self.key_path = key_path
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}: {self.key_path}" if self.key_path else self.file
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class _At:
    """A position in a YAML document, for error messages."""

    file: str
    path: str

    def key(self, name: str) -> _At:
        return _At(self.file, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int) -> _At:
        return _At(self.file, f"{self.path}[{i}]")

    def fail(self, reason: str) -> NoReturn:
        raise StrategyError(self.file, self.path, reason)


# ------------------------------------------------------------------------- scalar helpers


def _mapping(value: Any, at: _At, what: str = "a mapping") -> dict[str, Any]:
    if not isinstance(value, dict):
        at.fail(f"must be {what}, got {_shown(value)}")
    return value


def _list(value: Any, at: _At, what: str = "a list") -> list[Any]:
    if not isinstance(value, list):
        at.fail(f"must be {what}, got {_shown(value)}")
    return value


def _text(value: Any, at: _At) -> str:
    if not isinstance(value, str) or not value.strip():
        at.fail(f"must be a non-empty string, got {_shown(value)}")
    return value


def _whole(value: Any, at: _At, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int, or an int written as a string (Argo's IntOrString fields)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        at.fail(f"{_shown(value)} is not a whole number")
    if minimum is not None and number < minimum:
        at.fail(f"{number} must be >= {minimum}")
    if maximum is not None and number > maximum:
        at.fail(f"{number} must be <= {maximum}")
    return number


def _seconds(value: Any, at: _At) -> float:
    try:
        return parse_duration(value)
    except DurationError as error:
        at.fail(str(error))


def _key_names(keys: Iterable[Any]) -> list[str]:
    """Mapping keys as sorted text: YAML keys may be numbers, booleans or null, which neither
    sort among strings nor join into a message."""
    return sorted(map(str, keys))


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _arg_text(value: Any, at: _At) -> str:
    """Argument values are strings in Argo; YAML numbers and booleans are taken as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    at.fail(f"must be a string, got {_shown(value)}")


# ------------------------------------------------------------------------------- steps


def _template_refs(raw: Any, at: _At) -> tuple[TemplateRef, ...]:
    items = _list(raw, at, "a list of {templateName: ...}")
    if not items:
        at.fail("needs at least one template")
    refs = []
    for i, item in enumerate(items):
        where = at.index(i)
        item = _mapping(item, where, "a mapping with templateName")
        name = _text(item.get("templateName"), where.key("templateName"))
        scope = item.get("clusterScope", False)
        if not isinstance(scope, bool):
            where.key("clusterScope").fail(f"must be true or false, got {_shown(scope)}")
        refs.append(TemplateRef(name=name, cluster_scope=scope))
    return tuple(refs)


def _args(raw: Any, at: _At) -> tuple[Arg, ...]:
    if raw is None:
        return ()
    args = []
    for i, item in enumerate(_list(raw, at, "a list of {name, value}")):
        where = at.index(i)
        item = _mapping(item, where, "a mapping with name and value")
        name = _text(item.get("name"), where.key("name"))
        if "valueFrom" in item:
            where.key("valueFrom").fail(
                "valueFrom is not supported (podTemplateHashValue, fieldRef, secretKeyRef); "
                "give a literal value"
            )
        if item.get("value") is None:
            where.key("value").fail(f"argument '{name}' needs a value")
        args.append(Arg(name=name, value=_arg_text(item["value"], where.key("value"))))
    return tuple(args)


def _reject_dry_run(raw: Mapping[str, Any], at: _At) -> None:
    if raw.get("dryRun"):
        at.key("dryRun").fail("dry-run metrics are not supported yet; remove dryRun")


def _analysis_step(raw: Any, at: _At) -> AnalysisStep:
    raw = _mapping(raw, at, "a mapping with templates and args")
    _reject_dry_run(raw, at)
    if "templates" not in raw:
        at.key("templates").fail("is required: [{templateName: ...}]")
    return AnalysisStep(
        templates=_template_refs(raw["templates"], at.key("templates")),
        args=_args(raw.get("args"), at.key("args")),
    )


def _pause_step(raw: Any, at: _At) -> PauseStep:
    if raw is None:
        return PauseStep()
    raw = _mapping(raw, at, "a mapping like {} or {duration: 5m}")
    unknown = _key_names(set(raw) - {"duration"})
    if unknown:
        at.key(unknown[0]).fail("unknown key (a pause takes only duration)")
    if raw.get("duration") is None:
        return PauseStep()
    return PauseStep(duration=_seconds(raw["duration"], at.key("duration")))


def _step(raw: Any, at: _At) -> Step:
    raw = _mapping(raw, at, "a mapping such as {setWeight: 20}")
    if len(raw) != 1:
        found = ", ".join(sorted(map(str, raw))) or "nothing"
        at.fail(f"a step must have exactly one of {', '.join(_STEP_KINDS)} (found: {found})")
    ((kind, value),) = raw.items()
    if kind in _UNSUPPORTED_STEPS:
        at.key(kind).fail(_UNSUPPORTED_STEPS[kind])
    if kind == "setWeight":
        return SetWeightStep(weight=_whole(value, at.key(kind), 0, 100))
    if kind == "pause":
        return _pause_step(value, at.key(kind))
    if kind == "analysis":
        return _analysis_step(value, at.key(kind))
    at.key(str(kind)).fail(f"unknown step (supported: {', '.join(_STEP_KINDS)})")


def _steps(raw: Any, at: _At) -> tuple[Step, ...]:
    if raw is None:
        return ()
    return tuple(_step(item, at.index(i)) for i, item in enumerate(_list(raw, at)))


def _background(raw: Any, at: _At, step_count: int) -> BackgroundAnalysis | None:
    if raw is None:
        return None
    raw = _mapping(raw, at, "a mapping with templates, args and startingStep")
    _reject_dry_run(raw, at)
    if "templates" not in raw:
        at.key("templates").fail("is required: [{templateName: ...}]")
    starting = 0
    if raw.get("startingStep") is not None:
        starting = _whole(raw["startingStep"], at.key("startingStep"), 0)
        if step_count and starting >= step_count:
            at.key("startingStep").fail(
                f"{starting} is past the last step (steps are numbered 0..{step_count - 1})"
            )
    return BackgroundAnalysis(
        templates=_template_refs(raw["templates"], at.key("templates")),
        args=_args(raw.get("args"), at.key("args")),
        starting_step=starting,
    )


def _deadline(raw: Any, at: _At) -> int:
    if raw is None:
        return DEFAULT_PROGRESS_DEADLINE_SECONDS
    return _whole(raw, at, 1)


# ---------------------------------------------------------------------- .coalmine.yaml


def parse_canary_config(raw: Any, *, source: str, key: str) -> CanaryStrategy:
    """The `canary:` mapping of one app in `.coalmine.yaml` (`key` is e.g. "apps[0].canary")."""
    at = _At(source, key)
    raw = _mapping(raw, at, "a mapping with workload and steps")
    unknown = _key_names(set(raw) - set(_CONFIG_CANARY_KEYS))
    if unknown:
        at.key(unknown[0]).fail(f"unknown key (allowed: {', '.join(_CONFIG_CANARY_KEYS)})")
    workload_text = _text(raw.get("workload"), at.key("workload"))
    kind, _, name = workload_text.partition("/")
    if kind != "Deployment" or not name:
        at.key("workload").fail(f"{workload_text!r} must look like Deployment/<name>")
    steps = _steps(raw.get("steps"), at.key("steps"))
    return CanaryStrategy(
        workload=WorkloadRef(kind=kind, name=name),
        steps=steps,
        analysis=_background(raw.get("analysis"), at.key("analysis"), len(steps)),
        progress_deadline_seconds=_deadline(
            raw.get("progressDeadlineSeconds"), at.key("progressDeadlineSeconds")
        ),
        source=source,
        source_key=key,
    )


# ------------------------------------------------------------------------- Argo Rollout


def _kind(doc: Any) -> str | None:
    return doc.get("kind") if isinstance(doc, dict) else None


def is_rollout(doc: Any) -> bool:
    return _kind(doc) == "Rollout" and str(doc.get("apiVersion", "")).startswith("argoproj.io/")


def is_analysis_template(doc: Any) -> bool:
    return _kind(doc) in TEMPLATE_KINDS and str(doc.get("apiVersion", "")).startswith(
        "argoproj.io/"
    )


def _name(doc: Mapping[str, Any], source: str) -> str:
    meta = _mapping(doc.get("metadata"), _At(source, "metadata"))
    return _text(meta.get("name"), _At(source, "metadata.name"))


def parse_rollout(doc: Any, *, source: str) -> CanaryStrategy:
    """The canary strategy of an Argo `Rollout`; its workload is the Deployment that
    `rollout_to_deployment` makes of it (same name)."""
    root = _At(source, "")
    doc = _mapping(doc, root, "a Rollout manifest")
    name = _name(doc, source)
    spec = _mapping(doc.get("spec"), root.key("spec"))
    if spec.get("template") is None and spec.get("workloadRef") is None:
        root.key("spec.template").fail("is required (or spec.workloadRef to a Deployment)")
    strategy_at = root.key("spec.strategy")
    strategy = _mapping(spec.get("strategy"), strategy_at, "a mapping with canary")
    if "canary" not in strategy:
        other = ", ".join(_key_names(strategy)) or "nothing"
        strategy_at.fail(f"only the canary strategy is supported (found: {other})")
    canary_at = strategy_at.key("canary")
    canary = _mapping(strategy["canary"] or {}, canary_at)
    steps = _steps(canary.get("steps"), canary_at.key("steps"))
    ignored = tuple(_key_names(set(canary) - {"steps", "analysis"}))
    return CanaryStrategy(
        workload=WorkloadRef(kind="Deployment", name=name),
        steps=steps,
        analysis=_background(canary.get("analysis"), canary_at.key("analysis"), len(steps)),
        progress_deadline_seconds=_deadline(
            spec.get("progressDeadlineSeconds"), root.key("spec.progressDeadlineSeconds")
        ),
        traffic_routing_ignored="trafficRouting" in canary,
        ignored_fields=ignored,
        source=source,
        source_key=canary_at.path,
    )


def rollout_to_deployment(
    doc: Any, *, source: str, deployments: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The Deployment Coalmine applies for an Argo `Rollout`: same name, labels, replicas,
    selector and pod template; the strategy stays with Coalmine.

    With `spec.workloadRef`, the pod template comes from the referenced Deployment, looked up by
    name in `deployments` (the app's other manifests).
    """
    root = _At(source, "")
    doc = _mapping(doc, root, "a Rollout manifest")
    name = _name(doc, source)
    meta = doc["metadata"]
    spec = _mapping(doc.get("spec"), root.key("spec"))
    template = spec.get("template")
    selector = spec.get("selector")
    if template is None:
        ref_at = root.key("spec.workloadRef")
        ref = _mapping(
            spec.get("workloadRef"), ref_at, "a mapping with kind and name (or give spec.template)"
        )
        if ref.get("kind") != "Deployment":
            ref_at.key("kind").fail(f"{ref.get('kind')!r}: only a Deployment can be referenced")
        ref_name = _text(ref.get("name"), ref_at.key("name"))
        target = (deployments or {}).get(ref_name)
        if target is None:
            ref_at.key("name").fail(f"Deployment '{ref_name}' not found among the app's manifests")
        target_spec = target.get("spec") or {}
        template = target_spec.get("template")
        selector = selector or target_spec.get("selector")
        if template is None:
            ref_at.key("name").fail(f"Deployment '{ref_name}' has no spec.template")
    _mapping(template, root.key("spec.template"))
    _mapping(selector, root.key("spec.selector"), "a label selector (matchLabels)")
    replicas = (
        1
        if spec.get("replicas") is None
        else _whole(spec["replicas"], root.key("spec.replicas"), 0)
    )
    metadata: dict[str, Any] = {"name": name}
    for field in ("namespace", "labels", "annotations"):
        if meta.get(field):
            metadata[field] = copy.deepcopy(meta[field])
    deployment_spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": copy.deepcopy(selector),
        "template": copy.deepcopy(template),
    }
    for field in ("minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds"):
        if spec.get(field) is not None:
            deployment_spec[field] = spec[field]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": deployment_spec,
    }


# --------------------------------------------------------------------- AnalysisTemplate


def _count(raw: Any, at: _At) -> int | str | None:
    if raw is None:
        return None
    if isinstance(raw, str) and "{{" in raw:
        return raw  # resolved when the run starts
    return _whole(raw, at, 0)


def _limit(raw: Mapping[str, Any], key: str, at: _At, default: int, minimum: int) -> int:
    if raw.get(key) is None:
        return default
    return _whole(raw[key], at.key(key), minimum)


def _headers(raw: Any, at: _At) -> None:
    for i, item in enumerate(_list(raw, at, "a list of {key, value}")):
        where = at.index(i)
        item = _mapping(item, where, "a mapping with key and value")
        _text(item.get("key"), where.key("key"))
        if "value" not in item or isinstance(item["value"], dict | list):
            where.key("value").fail("must be a string")


def _provider(raw: Any, at: _At) -> dict[str, Any]:
    raw = _mapping(raw, at, "a mapping with one provider (prometheus or web)")
    if len(raw) != 1:
        found = ", ".join(sorted(map(str, raw))) or "nothing"
        at.fail(f"must name exactly one provider (found: {found})")
    ((kind, spec),) = raw.items()
    where = at.key(str(kind))
    if kind not in SUPPORTED_PROVIDERS:
        where.fail(
            f"provider '{kind}' is not supported (supported: {', '.join(SUPPORTED_PROVIDERS)})"
        )
    spec = _mapping(spec, where)
    unknown = _key_names(set(spec) - set(_PROVIDER_KEYS[kind]))
    if unknown:
        where.key(unknown[0]).fail(
            f"not supported for {kind} (supported: {', '.join(_PROVIDER_KEYS[kind])})"
        )
    if spec.get("headers") is not None:
        _headers(spec["headers"], where.key("headers"))
    if spec.get("insecure") is not None and not isinstance(spec["insecure"], bool):
        where.key("insecure").fail("must be true or false")
    if kind == "prometheus":
        _text(spec.get("query"), where.key("query"))
        if spec.get("address") is not None:
            _text(spec["address"], where.key("address"))
        if spec.get("timeout") is not None:
            _whole(spec["timeout"], where.key("timeout"), 0)
    else:
        _text(spec.get("url"), where.key("url"))
        method = spec.get("method")
        if method is not None and str(method).upper() not in _WEB_METHODS:
            where.key("method").fail(f"{method!r} must be one of {', '.join(_WEB_METHODS)}")
        for key in ("body", "jsonPath"):
            if spec.get(key) is not None and not isinstance(spec[key], str):
                where.key(key).fail("must be a string")
        if spec.get("timeoutSeconds") is not None:
            _whole(spec["timeoutSeconds"], where.key("timeoutSeconds"), 0)
    return {kind: copy.deepcopy(spec)}


def _metric(raw: Any, at: _At) -> MetricSpec:
    raw = _mapping(raw, at, "a mapping with name and provider")
    unknown = _key_names(set(raw) - set(_METRIC_KEYS))
    if unknown:
        at.key(unknown[0]).fail(f"unknown metric key (allowed: {', '.join(_METRIC_KEYS)})")
    name = _text(raw.get("name"), at.key("name"))
    if raw.get("provider") is None:
        at.key("provider").fail("is required (prometheus or web)")
    conditions = {}
    for key in ("successCondition", "failureCondition"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            at.key(key).fail("must be a string expression such as result[0] >= 0.95")
        conditions[key] = value or ""
    metric = MetricSpec(
        name=name,
        provider=_provider(raw["provider"], at.key("provider")),
        success_condition=conditions["successCondition"],
        failure_condition=conditions["failureCondition"],
        interval=None
        if raw.get("interval") is None
        else _seconds(raw["interval"], at.key("interval")),
        initial_delay=None
        if raw.get("initialDelay") is None
        else _seconds(raw["initialDelay"], at.key("initialDelay")),
        count=_count(raw.get("count"), at.key("count")),
        failure_limit=_limit(raw, "failureLimit", at, 0, -1),
        inconclusive_limit=_limit(raw, "inconclusiveLimit", at, 0, 0),
        consecutive_error_limit=_limit(raw, "consecutiveErrorLimit", at, 4, 0),
        consecutive_success_limit=_limit(raw, "consecutiveSuccessLimit", at, 0, 0),
    )
    _check_limits(metric, at)
    return metric


def _check_limits(metric: MetricSpec, at: _At) -> None:
    """Argo's ValidateMetric rules, so a template that Argo rejects is rejected here too."""
    if metric.failure_limit == -1 and metric.consecutive_success_limit == 0:
        at.key("failureLimit").fail(
            "failureLimit -1 needs a consecutiveSuccessLimit > 0 (both cannot be disabled)"
        )
    count = metric.count if isinstance(metric.count, int) else 0
    if count > 1 and metric.interval is None:
        at.key("interval").fail(f"is required when count > 1 (count is {count})")
    if count > 0:
        needed = max(metric.failure_limit, 0) + metric.consecutive_success_limit
        if count < needed:
            at.key("count").fail(
                f"{count} must be >= failureLimit + consecutiveSuccessLimit ({needed})"
            )
        if count < metric.inconclusive_limit:
            at.key("count").fail(f"{count} must be >= inconclusiveLimit")


def parse_analysis_template(doc: Any, *, source: str) -> AnalysisTemplate:
    """An Argo `AnalysisTemplate` or `ClusterAnalysisTemplate` manifest."""
    root = _At(source, "")
    doc = _mapping(doc, root, "an AnalysisTemplate manifest")
    kind = doc.get("kind")
    if kind not in TEMPLATE_KINDS:
        root.key("kind").fail(f"{kind!r} is not one of {', '.join(TEMPLATE_KINDS)}")
    name = _name(doc, source)
    spec = _mapping(doc.get("spec"), root.key("spec"))
    if spec.get("templates"):
        root.key("spec.templates").fail(
            "templates that include other templates are not "
            "supported yet; list the metrics directly"
        )
    _reject_dry_run(spec, root.key("spec"))
    args = []
    for i, item in enumerate(_list(spec.get("args") or [], root.key("spec.args"))):
        where = root.key("spec.args").index(i)
        item = _mapping(item, where, "a mapping with name and optional value")
        arg_name = _text(item.get("name"), where.key("name"))
        if "valueFrom" in item:
            where.key("valueFrom").fail(
                "valueFrom (secretKeyRef, fieldRef) is not supported; give a value, or pass "
                "one from the rollout's args"
            )
        value = item.get("value")
        args.append(
            TemplateArg(arg_name, None if value is None else _arg_text(value, where.key("value")))
        )
    metrics_at = root.key("spec.metrics")
    raw_metrics = _list(spec.get("metrics"), metrics_at, "a list of metrics")
    if not raw_metrics:
        metrics_at.fail("needs at least one metric")
    metrics = []
    for i, raw in enumerate(raw_metrics):
        metric = _metric(raw, metrics_at.index(i))
        if any(m.name == metric.name for m in metrics):
            metrics_at.index(i).key("name").fail(f"duplicate metric name '{metric.name}'")
        metrics.append(metric)
    return AnalysisTemplate(
        name=name,
        metrics=tuple(metrics),
        args=tuple(args),
        cluster_scope=kind == "ClusterAnalysisTemplate",
        source=source,
    )


def parse_analysis_templates(docs: Iterable[tuple[str, Any]]) -> tuple[AnalysisTemplate, ...]:
    """Every (Cluster)AnalysisTemplate among `(file, document)` pairs; other kinds skipped."""
    templates: list[AnalysisTemplate] = []
    for source, doc in docs:
        if not is_analysis_template(doc):
            continue
        template = parse_analysis_template(doc, source=source)
        clash = next(
            (
                t
                for t in templates
                if t.name == template.name and t.cluster_scope == template.cluster_scope
            ),
            None,
        )
        if clash is not None:
            _At(source, "metadata.name").fail(
                f"{doc['kind']} '{template.name}' is also defined in {clash.source}"
            )
        templates.append(template)
    return tuple(templates)


def check_template_refs(strategy: CanaryStrategy, templates: Iterable[AnalysisTemplate]) -> None:
    """Fail at load time when a step or the background analysis names a missing template."""
    known = {(t.name, t.cluster_scope) for t in templates}
    at = _At(strategy.source, strategy.source_key)
    uses: list[tuple[_At, tuple[TemplateRef, ...]]] = []
    for i, step in enumerate(strategy.steps):
        if isinstance(step, AnalysisStep):
            uses.append((at.key("steps").index(i).key("analysis.templates"), step.templates))
    if strategy.analysis is not None:
        uses.append((at.key("analysis.templates"), strategy.analysis.templates))
    for where, refs in uses:
        for j, ref in enumerate(refs):
            if (ref.name, ref.cluster_scope) not in known:
                kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
                where.index(j).key("templateName").fail(
                    f"{kind} '{ref.name}' not found among the app's manifests"
                )
