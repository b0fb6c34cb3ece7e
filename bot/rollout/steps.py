"""Canary steps and background analysis, read the same way from both strategy sources.

A `.coalmine.yaml` canary (bot.rollout.strategy) and an Argo Rollout's `spec.strategy.canary`
(bot.rollout.argo_rollout) share their `steps`, `analysis` and progress deadline; this module
reads those parts once, so that both sources accept and refuse exactly the same steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.analysis.templates import FIELD_REF, Arg
from bot.rollout import routers
from bot.rollout.fields import (
    At,
    as_arg_text,
    as_list,
    as_mapping,
    as_seconds,
    as_text,
    as_whole,
    key_names,
    parse_dry_run,
    parse_retention,
    shown,
)
from bot.rollout.model import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    AnalysisStep,
    BackgroundAnalysis,
    ExperimentAnalysis,
    ExperimentStep,
    ExperimentTemplate,
    PauseStep,
    SetCanaryScaleStep,
    SetHeaderRouteStep,
    SetMirrorRouteStep,
    SetWeightStep,
    Step,
    TemplateRef,
    is_service_name,
)
from bot.rollout.routers import TrafficRouting

# An Argo step holds one main action, optionally with modifiers Argo allows beside it (its
# validation refuses only two of setWeight/pause/experiment/analysis together).
_MAIN_KINDS = ("setWeight", "pause", "analysis", "experiment")
_MODIFIER_KINDS = ("setCanaryScale", "setHeaderRoute", "setMirrorRoute")
_STEP_KINDS = _MAIN_KINDS + _MODIFIER_KINDS
_UNSUPPORTED_STEPS = {
    "plugin": "step plugins are not supported by Coalmine",
}
# Read by bot.rollout.judge_config, which adds `.coalmine.yaml`'s own `judge` step to them.
MAIN_KINDS, STEP_KINDS, UNSUPPORTED_STEPS = _MAIN_KINDS, _STEP_KINDS, _UNSUPPORTED_STEPS
_EXPERIMENT_KEYS = ("templates", "analyses", "duration", "dryRun", "analysisRunMetadata",
                    "scaleDownDelaySeconds")
# Each template is a Deployment, a Service and a router destination in the cluster: a PR may
# not make thousands of them (nor cost a worker the quadratic duplicate-name checks).
MAX_EXPERIMENT_TEMPLATES = 10
_EXPERIMENT_TEMPLATE_KEYS = ("name", "specRef", "replicas", "metadata", "selector", "weight",
                             "service")
_EXPERIMENT_ANALYSIS_KEYS = ("name", "templateName", "clusterScope", "args",
                             "requiredForCompletion")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


# The routers Argo's validation lets each managed-route step use (of those Coalmine drives).
_ROUTE_STEPS_ON: dict[str, tuple[type, ...]] = {
    "setHeaderRoute": (routers.IstioRouting, routers.GatewayApiRouting),
    "setMirrorRoute": (routers.IstioRouting, routers.GatewayApiRouting),
}
_ROUTER_LABELS = {routers.IstioRouting: "istio", routers.GatewayApiRouting: "Gateway API plugin"}


@dataclass(frozen=True)
class ParsedSteps:
    """The steps Coalmine runs, and for each step of the YAML the index of its first one: a
    YAML step that combines modifiers with a main action (`setCanaryScale` with `setWeight`)
    runs as consecutive steps, modifiers first, so `startingStep` must be translated."""

    steps: tuple[Step, ...]
    first_of: tuple[int, ...]


def parse_steps(raw: Any, at: At, traffic: TrafficRouting | None = None,
                *, routed: bool | None = None) -> ParsedSteps:
    """The `steps` list; none at all is empty. `traffic` is the strategy's router (header and
    mirror routes need one, with the route among its managedRoutes); `routed` says whether
    setCanaryScale is allowed (a router, or blue-green), by default whether `traffic` is set."""
    if raw is None:
        return ParsedSteps((), ())
    allowed = traffic is not None if routed is None else routed
    steps: list[Step] = []
    first_of: list[int] = []
    for i, item in enumerate(as_list(raw, at)):
        first_of.append(len(steps))
        steps.extend(_step(item, at.index(i), traffic, allowed))
        _check_experiment_share(steps, at.index(i))
    return ParsedSteps(tuple(steps), tuple(first_of))


def _check_experiment_share(steps: list[Step], at: At) -> None:
    """During an experiment the canary keeps the last setWeight's share and the stable gives
    up the templates' weights; more than 100 in all would leave the stable a negative weight
    (Argo writes it to SMI and clamps it for Istio), so it is refused here."""
    step = steps[-1]
    if not isinstance(step, ExperimentStep):
        return
    shared = sum(t.weight or 0 for t in step.templates)
    canary = next((s.weight for s in reversed(steps) if isinstance(s, SetWeightStep)), 0)
    if shared and canary + shared > 100:
        at.key("experiment.templates").fail(
            f"the templates' weights ({shared}) and the canary's setWeight ({canary}) add up "
            "to more than 100; the stable would be left a negative share")


def parse_background(raw: Any, at: At, parsed: ParsedSteps) -> BackgroundAnalysis | None:
    """The background `analysis` mapping, whose startingStep must name one of the steps (it
    counts the YAML's steps; the result counts the steps Coalmine runs)."""
    if raw is None:
        return None
    raw = as_mapping(raw, at, "a mapping with templates, args and startingStep")
    if "templates" not in raw:
        at.key("templates").fail("is required: [{templateName: ...}]")
    starting = 0
    step_count = len(parsed.first_of)
    if raw.get("startingStep") is not None:
        starting = as_whole(raw["startingStep"], at.key("startingStep"), 0)
        if step_count and starting >= step_count:
            at.key("startingStep").fail(
                f"{starting} is past the last step (steps are numbered 0..{step_count - 1})"
            )
        if step_count:
            starting = parsed.first_of[starting]
    return BackgroundAnalysis(
        templates=_template_refs(raw["templates"], at.key("templates")),
        args=_args(raw.get("args"), at.key("args")),
        starting_step=starting,
        dry_run=parse_dry_run(raw, at),
        measurement_retention=parse_retention(raw, at),
    )


def parse_deadline(raw: Any, at: At) -> int:
    """`progressDeadlineSeconds`, Argo's default when it is not given."""
    if raw is None:
        return DEFAULT_PROGRESS_DEADLINE_SECONDS
    return as_whole(raw, at, 1)


def _template_refs(raw: Any, at: At) -> tuple[TemplateRef, ...]:
    items = as_list(raw, at, "a list of {templateName: ...}")
    if not items:
        at.fail("needs at least one template")
    refs = []
    for i, item in enumerate(items):
        where = at.index(i)
        item = as_mapping(item, where, "a mapping with templateName")
        name = as_text(item.get("templateName"), where.key("templateName"))
        scope = item.get("clusterScope", False)
        if not isinstance(scope, bool):
            where.key("clusterScope").fail(f"must be true or false, got {shown(scope)}")
        refs.append(TemplateRef(name=name, cluster_scope=scope))
    return tuple(refs)


# Argo's podTemplateHashValue names a ReplicaSet's pod-template hash, a label on its pods.
# Coalmine's pods carry no such hash (its fingerprint of a template is an annotation on the
# Deployment); what tells the versions' pods apart is their `coalmine.dev/track` label, so the
# argument's value is the track: what a query can select on (e.g. kube_pod_labels'
# label_coalmine_dev_track). Latest is the new version, which runs as the canary (or preview).
POD_TEMPLATE_HASH_TRACKS = {"Stable": "stable", "Latest": "canary"}


def _args(raw: Any, at: At) -> tuple[Arg, ...]:
    if raw is None:
        return ()
    args = []
    for i, item in enumerate(as_list(raw, at, "a list of {name, value}")):
        where = at.index(i)
        item = as_mapping(item, where, "a mapping with name and value")
        name = as_text(item.get("name"), where.key("name"))
        if item.get("valueFrom") is not None:
            if item.get("value") is not None:
                where.fail(f"argument '{name}' has both value and valueFrom; give one")
            args.append(_arg_value_from(name, item["valueFrom"], where.key("valueFrom")))
            continue
        if item.get("value") is None:
            where.key("value").fail(f"argument '{name}' needs a value")
        args.append(Arg(name=name, value=as_arg_text(item["value"], where.key("value"))))
    return tuple(args)


def _arg_value_from(name: str, raw: Any, at: At) -> Arg:
    """A rollout argument's `valueFrom` (Argo's ArgumentValueFrom): `podTemplateHashValue`
    becomes the track's label value; `fieldRef` is read from the workload when measured."""
    raw = as_mapping(raw, at, "a mapping with podTemplateHashValue or fieldRef")
    if "secretKeyRef" in raw:
        at.key("secretKeyRef").fail(
            "a Rollout's args cannot read secrets (Argo has no secretKeyRef here); declare the "
            "argument with valueFrom.secretKeyRef in the AnalysisTemplate's args")
    unknown = key_names(set(raw) - {"podTemplateHashValue", "fieldRef"})
    if unknown:
        at.key(unknown[0]).fail("unknown key (allowed: podTemplateHashValue, fieldRef)")
    if len(raw) != 1:
        at.fail("needs exactly one of podTemplateHashValue, fieldRef")
    if "podTemplateHashValue" in raw:
        which = raw["podTemplateHashValue"]
        if which not in POD_TEMPLATE_HASH_TRACKS:
            at.key("podTemplateHashValue").fail(f"{shown(which)} must be Stable or Latest")
        return Arg(name=name, value=POD_TEMPLATE_HASH_TRACKS[which])
    return Arg(name=name, value_from=(FIELD_REF, field_path(raw["fieldRef"], at.key("fieldRef"))))


def field_path(raw: Any, at: At) -> str:
    """`fieldRef.fieldPath`: `metadata.name|namespace|uid|labels|annotations`, one label or
    annotation (`metadata.labels['app']`), or a path into the workload's spec. The Rollout's
    `status` does not exist for Coalmine, which never applies the Rollout."""
    raw = as_mapping(raw, at, "a mapping with fieldPath")
    path = as_text(raw.get("fieldPath"), at.key("fieldPath")).strip()
    where = at.key("fieldPath")
    if path.startswith("metadata"):
        if not _METADATA_PATH.fullmatch(path):
            where.fail(f"{path!r}: supported metadata paths are metadata.name, "
                       "metadata.namespace, metadata.uid, metadata.labels, "
                       "metadata.annotations, metadata.labels['key'], "
                       "metadata.annotations['key']")
    elif not path.startswith("spec."):
        where.fail(f"{path!r}: only metadata.* and spec.* paths can be read (the Rollout's "
                   "status is not kept: Coalmine never applies the Rollout)")
    return path


_METADATA_PATH = re.compile(
    r"metadata\.(name|namespace|uid|labels|annotations)"
    r"|metadata\.(labels|annotations)\['[^']+'\]")


def parse_analysis(raw: Any, at: At, label: str = "") -> AnalysisStep:
    """An analysis step's mapping (also blue-green's pre/postPromotionAnalysis)."""
    raw = as_mapping(raw, at, "a mapping with templates and args")
    if "templates" not in raw:
        at.key("templates").fail("is required: [{templateName: ...}]")
    return AnalysisStep(
        templates=_template_refs(raw["templates"], at.key("templates")),
        args=_args(raw.get("args"), at.key("args")),
        label=label,
        dry_run=parse_dry_run(raw, at),
        measurement_retention=parse_retention(raw, at),
    )


def _pause_step(raw: Any, at: At) -> PauseStep:
    if raw is None:
        return PauseStep()
    raw = as_mapping(raw, at, "a mapping like {} or {duration: 5m}")
    unknown = key_names(set(raw) - {"duration"})
    if unknown:
        at.key(unknown[0]).fail("unknown key (a pause takes only duration)")
    if raw.get("duration") is None:
        return PauseStep()
    return PauseStep(duration=as_seconds(raw["duration"], at.key("duration")))


def _canary_scale(raw: Any, at: At) -> SetCanaryScaleStep:
    raw = as_mapping(raw, at, "a mapping with one of replicas, weight, matchTrafficWeight")
    unknown = key_names(set(raw) - {"replicas", "weight", "matchTrafficWeight"})
    if unknown:
        at.key(unknown[0]).fail("unknown key (allowed: replicas, weight, matchTrafficWeight)")
    given = [k for k in ("replicas", "weight", "matchTrafficWeight") if raw.get(k) is not None]
    if len(given) != 1:
        at.fail("needs exactly one of replicas, weight, matchTrafficWeight "
                f"(found: {', '.join(given) or 'none'})")
    (kind,) = given
    if kind == "replicas":
        return SetCanaryScaleStep(replicas=as_whole(raw[kind], at.key(kind), 0))
    if kind == "weight":
        return SetCanaryScaleStep(weight=as_whole(raw[kind], at.key(kind), 0, 100))
    if raw[kind] is not True:
        at.key(kind).fail(f"must be true (or leave it out), got {shown(raw[kind])}")
    return SetCanaryScaleStep(match_traffic_weight=True)


def _modifier(kind: str, value: Any, at: At, traffic: TrafficRouting | None,
              routed: bool) -> Step:
    if kind == "setCanaryScale":
        if not routed:
            at.fail("setCanaryScale needs spec.strategy.canary.trafficRouting (without a router "
                    "the canary's pods are its traffic share; Argo refuses it too)")
        return _canary_scale(value, at)
    if traffic is None:
        at.fail(f"{kind} needs spec.strategy.canary.trafficRouting with the route listed in "
                "trafficRouting.managedRoutes")
    allowed = _ROUTE_STEPS_ON[kind]
    if not isinstance(traffic.router, allowed):
        at.fail(f"{kind} is not possible with the {traffic.name} router (Argo allows it on "
                f"{', '.join(_ROUTER_LABELS[r] for r in allowed)})")
    if kind == "setHeaderRoute":
        return SetHeaderRouteStep(routers.parse_header_route(value, at, traffic.managed_routes))
    return SetMirrorRouteStep(routers.parse_mirror_route(value, at, traffic.managed_routes))


def _step(raw: Any, at: At, traffic: TrafficRouting | None, routed: bool) -> list[Step]:
    raw = as_mapping(raw, at, "a mapping such as {setWeight: 20}")
    for kind in key_names(raw):
        if kind in _UNSUPPORTED_STEPS:
            at.key(kind).fail(_UNSUPPORTED_STEPS[kind])
        if kind not in _STEP_KINDS:
            at.key(kind).fail(f"unknown step (supported: {', '.join(_STEP_KINDS)})")
    mains = [k for k in _MAIN_KINDS if k in raw]
    if len(mains) > 1:
        at.fail(f"a step may have only one of {', '.join(_MAIN_KINDS)} "
                f"(found: {', '.join(mains)}); split it into several steps")
    if not raw:
        at.fail(f"a step needs one of {', '.join(_STEP_KINDS)} (found: nothing)")
    steps = [_modifier(k, raw[k], at.key(k), traffic, routed)
             for k in _MODIFIER_KINDS if k in raw]
    if mains:
        kind = mains[0]
        value = raw[kind]
        if kind == "setWeight":
            steps.append(SetWeightStep(weight=as_whole(value, at.key(kind), 0, 100)))
        elif kind == "pause":
            steps.append(_pause_step(value, at.key(kind)))
        elif kind == "experiment":
            steps.append(_experiment(value, at.key(kind), traffic))
        else:
            steps.append(parse_analysis(value, at.key(kind)))
    return steps


def _experiment(raw: Any, at: At, traffic: TrafficRouting | None) -> ExperimentStep:
    """Argo's experiment step. A template's traffic `weight` needs a router that can give its
    Service a destination of its own (Argo's validation: a router, and one of SMI, ALB,
    Istio or a plugin)."""
    raw = as_mapping(raw, at, "a mapping with templates, analyses and duration")
    _reject_experiment_rules(raw, at)
    for key in key_names(raw):
        if key not in _EXPERIMENT_KEYS:
            at.key(key).fail(f"unknown key (allowed: {', '.join(_EXPERIMENT_KEYS)})")
    items = as_list(raw.get("templates"), at.key("templates"), "a list of templates")
    if not items:
        at.key("templates").fail("needs at least one template")
    if len(items) > MAX_EXPERIMENT_TEMPLATES:
        at.key("templates").fail(
            f"has {len(items)} templates; at most {MAX_EXPERIMENT_TEMPLATES} (each is a "
            "Deployment, and with weight or service a Service and a router destination)")
    templates: list[ExperimentTemplate] = []
    for i, item in enumerate(items):
        templates.append(_experiment_template(item, at.key("templates").index(i), traffic))
        if [t.name for t in templates].count(templates[-1].name) > 1:
            at.key("templates").index(i).key("name").fail(
                f"duplicate template name '{templates[-1].name}'")
    analyses: list[ExperimentAnalysis] = []
    for i, item in enumerate(as_list(raw.get("analyses") or [], at.key("analyses"))):
        analyses.append(_experiment_analysis(item, at.key("analyses").index(i)))
        if [a.name for a in analyses].count(analyses[-1].name) > 1:
            at.key("analyses").index(i).key("name").fail(
                f"duplicate analysis name '{analyses[-1].name}'")
    duration = None
    if raw.get("duration") is not None:
        duration = as_seconds(raw["duration"], at.key("duration"))
    services = [t.service for t in templates if t.service]
    for i, t in enumerate(templates):
        if t.service and services.count(t.service) > 1:
            at.key("templates").index(i).key("service.name").fail(
                f"Service '{t.service}' is named by more than one template")
    return ExperimentStep(templates=tuple(templates), analyses=tuple(analyses),
                          duration=duration, dry_run=parse_dry_run(raw, at))


def _reject_experiment_rules(raw: dict[str, Any], at: At) -> None:
    """Argo's RolloutExperimentStep has dryRun but no measurementRetention (its Experiment
    has one, which a Rollout cannot set): Argo would drop the key unread."""
    if raw.get("measurementRetention"):
        at.key("measurementRetention").fail(
            "Argo's experiment step has no measurementRetention (only dryRun); put the rule "
            "in the AnalysisTemplate's spec instead")


def _experiment_template(raw: Any, at: At, traffic: TrafficRouting | None
                         ) -> ExperimentTemplate:
    raw = as_mapping(raw, at, "a mapping with name and specRef")
    for key in key_names(raw):
        if key not in _EXPERIMENT_TEMPLATE_KEYS:
            at.key(key).fail(f"unknown key (allowed: {', '.join(_EXPERIMENT_TEMPLATE_KEYS)})")
    name = as_text(raw.get("name"), at.key("name"))
    if not _DNS_LABEL.fullmatch(name) or len(name) > 40:
        at.key("name").fail(f"{name!r} must be a DNS label of at most 40 characters "
                            "(it names the experiment's Deployment)")
    spec_ref = raw.get("specRef")
    if spec_ref not in ("stable", "canary"):
        at.key("specRef").fail(f"must be stable or canary, got {shown(spec_ref)}")
    replicas = 1 if raw.get("replicas") is None else as_whole(raw["replicas"],
                                                              at.key("replicas"), 0)
    labels: tuple[tuple[str, str], ...] = ()
    metadata = raw.get("metadata")
    if metadata is not None:
        metadata = as_mapping(metadata, at.key("metadata"), "a mapping with labels")
        raw_labels = as_mapping(metadata.get("labels") or {}, at.key("metadata.labels"))
        labels = tuple(sorted((str(k), as_arg_text(v, at.key(f"metadata.labels.{k}")))
                              for k, v in raw_labels.items()))
    weight = None
    if raw.get("weight") is not None:
        weight = as_whole(raw["weight"], at.key("weight"), 0, 100)
        if traffic is None:
            at.key("weight").fail("an experiment template's weight needs "
                                  "spec.strategy.canary.trafficRouting (Argo refuses it too)")
        if not routers.supports_experiment_weights(traffic):
            at.key("weight").fail(f"an experiment template's weight is not possible with the "
                                  f"{traffic.name} router (Argo allows it only with SMI, ALB, "
                                  "Istio and plugins)")
    return ExperimentTemplate(name=name, spec_ref=spec_ref, replicas=replicas, labels=labels,
                              weight=weight, service=_template_service(raw, at))


def _template_service(raw: dict[str, Any], at: At) -> str | None:
    """`service: {name}` (name optional): None when absent, "" for the default name."""
    if "service" not in raw:
        return None
    value = raw["service"]
    if value is None:
        return ""
    value = as_mapping(value, at.key("service"), "a mapping with an optional name")
    unknown = key_names(set(value) - {"name"})
    if unknown:
        at.key("service").key(unknown[0]).fail("unknown key (a service takes only name)")
    if value.get("name") in (None, ""):
        return ""
    name = as_text(value["name"], at.key("service.name"))
    if not is_service_name(name):
        at.key("service.name").fail(f"{name!r} must be a DNS-1035 label of at most 63 "
                                    "characters (a Service name)")
    return name


def _experiment_analysis(raw: Any, at: At) -> ExperimentAnalysis:
    raw = as_mapping(raw, at, "a mapping with name and templateName")
    for key in key_names(raw):
        if key not in _EXPERIMENT_ANALYSIS_KEYS:
            at.key(key).fail(f"unknown key (allowed: {', '.join(_EXPERIMENT_ANALYSIS_KEYS)})")
    name = as_text(raw.get("name"), at.key("name"))
    template = as_text(raw.get("templateName"), at.key("templateName"))
    scope = raw.get("clusterScope", False)
    if not isinstance(scope, bool):
        at.key("clusterScope").fail(f"must be true or false, got {shown(scope)}")
    required = raw.get("requiredForCompletion", False)
    if not isinstance(required, bool):
        at.key("requiredForCompletion").fail(f"must be true or false, got {shown(required)}")
    return ExperimentAnalysis(name=name, template=TemplateRef(template, scope),
                              args=_args(raw.get("args"), at.key("args")),
                              required_for_completion=required)
