"""Argo `AnalysisTemplate` and `ClusterAnalysisTemplate` manifests: read, never applied.

Templates come from the app's manifests; each becomes a `bot.analysis.templates.AnalysisTemplate`
whose metrics Coalmine measures itself. A template Argo would reject (its ValidateMetric rules)
is rejected here too, and a strategy naming a template that is not there fails at load time
(`check_template_refs`), not in the middle of a rollout. Problems are StrategyErrors naming the
file and key path.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from bot.analysis.templates import (
    SECRET_KEY_REF,
    SUPPORTED_PROVIDERS,
    AnalysisTemplate,
    MetricSpec,
    TemplateArg,
)
from bot.judge import kayenta
from bot.rollout.fields import (
    At,
    as_arg_text,
    as_list,
    as_mapping,
    as_seconds,
    as_text,
    as_whole,
    is_argo,
    key_names,
    manifest_name,
    parse_dry_run,
    parse_retention,
)
from bot.rollout.model import AnalysisStep, CanaryStrategy, ExperimentStep, TemplateRef

TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")

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


def is_analysis_template(doc: Any) -> bool:
    return is_argo(doc, TEMPLATE_KINDS)


def parse_analysis_template(doc: Any, *, source: str) -> AnalysisTemplate:
    """An Argo `AnalysisTemplate` or `ClusterAnalysisTemplate` manifest."""
    root = At(source, "")
    doc = as_mapping(doc, root, "an AnalysisTemplate manifest")
    kind = doc.get("kind")
    if kind not in TEMPLATE_KINDS:
        root.key("kind").fail(f"{kind!r} is not one of {', '.join(TEMPLATE_KINDS)}")
    name = manifest_name(doc, source)
    root = At(f"{source}: {kind} {name}", "")  # errors name the file and the template
    spec = as_mapping(doc.get("spec"), root.key("spec"))
    if spec.get("templates"):
        root.key("spec.templates").fail(
            "templates that include other templates are not "
            "supported yet; list the metrics directly"
        )
    args = []
    for i, item in enumerate(as_list(spec.get("args") or [], root.key("spec.args"))):
        where = root.key("spec.args").index(i)
        item = as_mapping(item, where, "a mapping with name and optional value")
        arg_name = as_text(item.get("name"), where.key("name"))
        if item.get("valueFrom") is not None:
            args.append(_arg_value_from(arg_name, item, where))
            continue
        value = item.get("value")
        args.append(
            TemplateArg(arg_name, None if value is None else as_arg_text(value, where.key("value")))
        )
    metrics_at = root.key("spec.metrics")
    raw_metrics = as_list(spec.get("metrics"), metrics_at, "a list of metrics")
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
        dry_run=parse_dry_run(spec, root.key("spec")),
        measurement_retention=parse_retention(spec, root.key("spec")),
    )


def _arg_value_from(name: str, item: Mapping[str, Any], at: At) -> TemplateArg:
    """A template argument's `valueFrom`: Argo resolves only `secretKeyRef` here (a template
    `fieldRef` is never filled in by Argo either), from a Secret in the rollout's namespace,
    read as the repository's account at each measurement and never shown."""
    if item.get("value") is not None:
        at.fail(f"argument '{name}' has both value and valueFrom; give one")
    where = at.key("valueFrom")
    raw = as_mapping(item["valueFrom"], where, "a mapping with secretKeyRef")
    if "fieldRef" in raw:
        where.key("fieldRef").fail(
            "Argo resolves fieldRef only in a Rollout's args; pass the value from there")
    unknown = key_names(set(raw) - {SECRET_KEY_REF})
    if unknown or SECRET_KEY_REF not in raw:
        where.fail("needs secretKeyRef: {name, key}")
    ref_at = where.key(SECRET_KEY_REF)
    ref = as_mapping(raw[SECRET_KEY_REF], ref_at, "a mapping with name and key")
    secret = as_text(ref.get("name"), ref_at.key("name"))
    key = as_text(ref.get("key"), ref_at.key("key"))
    return TemplateArg(name, value_from=(SECRET_KEY_REF, secret, key))


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
            At(source, "metadata.name").fail(
                f"{doc['kind']} '{template.name}' is also defined in {clash.source}"
            )
        templates.append(template)
    return tuple(templates)


def check_template_refs(strategy: CanaryStrategy, templates: Iterable[AnalysisTemplate],
                        document: str | None = None) -> None:
    """Fail at load time when a step, the background analysis or an experiment names a
    missing template. `document` labels the strategy's document (`file: Rollout web`); the file
    by default."""
    known = {(t.name, t.cluster_scope) for t in templates}
    at = At(document or strategy.source, strategy.source_key)
    uses: list[tuple[At, TemplateRef]] = []  # (the templateName key, what it names)
    for i, step in enumerate(strategy.steps):
        if isinstance(step, AnalysisStep):
            if strategy.blue_green is not None:  # compiled steps: name the YAML's own key
                key = "prePromotionAnalysis" if step.label.startswith("pre") else \
                    "postPromotionAnalysis"
                where = at.key(f"{key}.templates")
            else:
                where = at.key("steps").index(i).key("analysis.templates")
            uses += [(where.index(j).key("templateName"), ref)
                     for j, ref in enumerate(step.templates)]
        elif isinstance(step, ExperimentStep):
            where = at.key("steps").index(i).key("experiment.analyses")
            uses += [(where.index(j).key("templateName"), analysis.template)
                     for j, analysis in enumerate(step.analyses)]
    if strategy.analysis is not None:
        where = at.key("analysis.templates")
        uses += [(where.index(j).key("templateName"), ref)
                 for j, ref in enumerate(strategy.analysis.templates)]
    for where, ref in uses:
        if (ref.name, ref.cluster_scope) not in known:
            kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
            where.fail(f"{kind} '{ref.name}' not found among the app's manifests")


# ------------------------------------------------------------------------------ metrics


def _count(raw: Any, at: At) -> int | str | None:
    if raw is None:
        return None
    if isinstance(raw, str) and "{{" in raw:
        return raw  # resolved when the run starts
    return as_whole(raw, at, 0)


def _limit(raw: Mapping[str, Any], key: str, at: At, default: int, minimum: int) -> int:
    if raw.get(key) is None:
        return default
    return as_whole(raw[key], at.key(key), minimum)


def _headers(raw: Any, at: At) -> None:
    for i, item in enumerate(as_list(raw, at, "a list of {key, value}")):
        where = at.index(i)
        item = as_mapping(item, where, "a mapping with key and value")
        as_text(item.get("key"), where.key("key"))
        if "value" not in item or isinstance(item["value"], dict | list):
            where.key("value").fail("must be a string")


def _provider(raw: Any, at: At) -> dict[str, Any]:
    raw = as_mapping(raw, at, "a mapping with one provider (prometheus or web)")
    if len(raw) != 1:
        found = ", ".join(sorted(map(str, raw))) or "nothing"
        at.fail(f"must name exactly one provider (found: {found})")
    ((kind, spec),) = raw.items()
    where = at.key(str(kind))
    if kind == "kayenta":  # read whole by _with_kayenta, which knows the metric's interval
        return {kind: copy.deepcopy(as_mapping(spec, where))}
    if kind not in SUPPORTED_PROVIDERS:
        where.fail(
            f"provider '{kind}' is not supported (supported: {', '.join(SUPPORTED_PROVIDERS)})"
        )
    spec = as_mapping(spec, where)
    if kind == "job":
        return {kind: _job_provider(spec, where)}
    unknown = key_names(set(spec) - set(_PROVIDER_KEYS[kind]))
    if unknown:
        where.key(unknown[0]).fail(
            f"not supported for {kind} (supported: {', '.join(_PROVIDER_KEYS[kind])})"
        )
    if spec.get("headers") is not None:
        _headers(spec["headers"], where.key("headers"))
    if spec.get("insecure") is not None and not isinstance(spec["insecure"], bool):
        where.key("insecure").fail("must be true or false")
    if kind == "prometheus":
        as_text(spec.get("query"), where.key("query"))
        if spec.get("address") is not None:
            as_text(spec["address"], where.key("address"))
        if spec.get("timeout") is not None:
            as_whole(spec["timeout"], where.key("timeout"), 0)
    else:
        as_text(spec.get("url"), where.key("url"))
        method = spec.get("method")
        if method is not None and str(method).upper() not in _WEB_METHODS:
            where.key("method").fail(f"{method!r} must be one of {', '.join(_WEB_METHODS)}")
        for key in ("body", "jsonPath"):
            if spec.get(key) is not None and not isinstance(spec[key], str):
                where.key(key).fail("must be a string")
        if spec.get("timeoutSeconds") is not None:
            as_whole(spec["timeoutSeconds"], where.key("timeoutSeconds"), 0)
    return {kind: copy.deepcopy(spec)}


_JOB_METADATA_KEYS = ("labels", "annotations")


def _job_provider(spec: Mapping[str, Any], at: At) -> dict[str, Any]:
    """Argo's `job: {metadata?, spec}`: a Job spec whose pod template must say what to run.
    Its name and namespace are Coalmine's to choose (`<run>.<metric>.<n>` in the rollout's
    namespace, as Argo names them), so the metadata may carry only labels and annotations."""
    unknown = key_names(set(spec) - {"metadata", "spec"})
    if unknown:
        at.key(unknown[0]).fail("not supported for job (supported: metadata, spec)")
    if spec.get("metadata") is not None:
        meta = as_mapping(spec["metadata"], at.key("metadata"))
        extra = key_names(set(meta) - set(_JOB_METADATA_KEYS))
        if extra:
            at.key("metadata").key(extra[0]).fail(
                "a metric's Job takes only labels and annotations (Coalmine names it)")
        for key in _JOB_METADATA_KEYS:
            if meta.get(key) is not None:
                as_mapping(meta[key], at.key("metadata").key(key))
    job_spec = as_mapping(spec.get("spec"), at.key("spec"), "a Job spec with a template")
    template = as_mapping(job_spec.get("template"), at.key("spec.template"), "a pod template")
    pod_spec = as_mapping(template.get("spec"), at.key("spec.template.spec"), "a pod spec")
    containers = as_list(pod_spec.get("containers"), at.key("spec.template.spec.containers"))
    if not containers:
        at.key("spec.template.spec.containers").fail("needs at least one container")
    return copy.deepcopy(dict(spec))


def _metric(raw: Any, at: At) -> MetricSpec:
    raw = as_mapping(raw, at, "a mapping with name and provider")
    unknown = key_names(set(raw) - set(_METRIC_KEYS))
    if unknown:
        at.key(unknown[0]).fail(f"unknown metric key (allowed: {', '.join(_METRIC_KEYS)})")
    name = as_text(raw.get("name"), at.key("name"))
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
        else as_seconds(raw["interval"], at.key("interval")),
        initial_delay=None
        if raw.get("initialDelay") is None
        else as_seconds(raw["initialDelay"], at.key("initialDelay")),
        count=_count(raw.get("count"), at.key("count")),
        failure_limit=_limit(raw, "failureLimit", at, 0, -1),
        inconclusive_limit=_limit(raw, "inconclusiveLimit", at, 0, 0),
        consecutive_error_limit=_limit(raw, "consecutiveErrorLimit", at, 4, 0),
        consecutive_success_limit=_limit(raw, "consecutiveSuccessLimit", at, 0, 0),
    )
    _check_limits(metric, at)
    return _with_kayenta(metric, at)


def _with_kayenta(metric: MetricSpec, at: At) -> MetricSpec:
    """A kayenta provider, judged in-process (bot.judge.kayenta): its `window` in seconds,
    by default the metric's interval, and the whole mapping checked. Its score against the
    thresholds decides, so conditions would be ignored: they are refused instead."""
    spec = metric.provider.get("kayenta")
    if spec is None:
        return metric
    for key, text in (("successCondition", metric.success_condition),
                      ("failureCondition", metric.failure_condition)):
        if text:
            at.key(key).fail("a kayenta metric is decided by its score against threshold "
                             "pass/marginal; remove the condition")
    where = at.key("provider.kayenta")
    if spec.get("window") is not None:
        spec = {**spec, "window": as_seconds(spec["window"], where.key("window"))}
    spec = kayenta.with_window(spec, metric.interval)
    try:
        kayenta.parse_kayenta(spec)
    except kayenta.KayentaError as error:
        (where.key(error.key) if error.key else where).fail(error.reason)
    return replace(metric, provider={"kayenta": spec})


def _check_limits(metric: MetricSpec, at: At) -> None:
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
