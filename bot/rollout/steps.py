"""Canary steps and background analysis, read the same way from both strategy sources.

A `.coalmine.yaml` canary (bot.rollout.strategy) and an Argo Rollout's `spec.strategy.canary`
(bot.rollout.argo_rollout) share their `steps`, `analysis` and progress deadline; this module
reads those parts once, so that both sources accept and refuse exactly the same steps.
"""

from __future__ import annotations

from typing import Any

from bot.analysis.templates import Arg
from bot.rollout.fields import (
    At,
    as_arg_text,
    as_list,
    as_mapping,
    as_seconds,
    as_text,
    as_whole,
    key_names,
    reject_dry_run,
    shown,
)
from bot.rollout.model import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    AnalysisStep,
    BackgroundAnalysis,
    PauseStep,
    SetWeightStep,
    Step,
    TemplateRef,
)

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


def parse_steps(raw: Any, at: At) -> tuple[Step, ...]:
    """The `steps` list; none at all is an empty tuple."""
    if raw is None:
        return ()
    return tuple(_step(item, at.index(i)) for i, item in enumerate(as_list(raw, at)))


def parse_background(raw: Any, at: At, step_count: int) -> BackgroundAnalysis | None:
    """The background `analysis` mapping, whose startingStep must name one of the steps."""
    if raw is None:
        return None
    raw = as_mapping(raw, at, "a mapping with templates, args and startingStep")
    reject_dry_run(raw, at)
    if "templates" not in raw:
        at.key("templates").fail("is required: [{templateName: ...}]")
    starting = 0
    if raw.get("startingStep") is not None:
        starting = as_whole(raw["startingStep"], at.key("startingStep"), 0)
        if step_count and starting >= step_count:
            at.key("startingStep").fail(
                f"{starting} is past the last step (steps are numbered 0..{step_count - 1})"
            )
    return BackgroundAnalysis(
        templates=_template_refs(raw["templates"], at.key("templates")),
        args=_args(raw.get("args"), at.key("args")),
        starting_step=starting,
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


def _args(raw: Any, at: At) -> tuple[Arg, ...]:
    if raw is None:
        return ()
    args = []
    for i, item in enumerate(as_list(raw, at, "a list of {name, value}")):
        where = at.index(i)
        item = as_mapping(item, where, "a mapping with name and value")
        name = as_text(item.get("name"), where.key("name"))
        if "valueFrom" in item:
            where.key("valueFrom").fail(
                "valueFrom is not supported (podTemplateHashValue, fieldRef, secretKeyRef); "
                "give a literal value"
            )
        if item.get("value") is None:
            where.key("value").fail(f"argument '{name}' needs a value")
        args.append(Arg(name=name, value=as_arg_text(item["value"], where.key("value"))))
    return tuple(args)


def _analysis_step(raw: Any, at: At) -> AnalysisStep:
    raw = as_mapping(raw, at, "a mapping with templates and args")
    reject_dry_run(raw, at)
    if "templates" not in raw:
        at.key("templates").fail("is required: [{templateName: ...}]")
    return AnalysisStep(
        templates=_template_refs(raw["templates"], at.key("templates")),
        args=_args(raw.get("args"), at.key("args")),
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


def _step(raw: Any, at: At) -> Step:
    raw = as_mapping(raw, at, "a mapping such as {setWeight: 20}")
    if len(raw) != 1:
        found = ", ".join(sorted(map(str, raw))) or "nothing"
        at.fail(f"a step must have exactly one of {', '.join(_STEP_KINDS)} (found: {found})")
    ((kind, value),) = raw.items()
    if kind in _UNSUPPORTED_STEPS:
        at.key(kind).fail(_UNSUPPORTED_STEPS[kind])
    if kind == "setWeight":
        return SetWeightStep(weight=as_whole(value, at.key(kind), 0, 100))
    if kind == "pause":
        return _pause_step(value, at.key(kind))
    if kind == "analysis":
        return _analysis_step(value, at.key(kind))
    at.key(str(kind)).fail(f"unknown step (supported: {', '.join(_STEP_KINDS)})")
