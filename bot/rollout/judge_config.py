"""The `judge:` section of a `.coalmine.yaml` canary, and its `- judge: {}` step.

People who roll out with `.coalmine.yaml` should not have to write an AnalysisTemplate to
judge the canary against its baseline. The section holds what the template's kayenta metric
would (thresholds, scopes, queries and the judge's settings, bot.judge.kayenta), plus the
metric's timing (interval, count, initialDelay); it is compiled here into an AnalysisTemplate
named JUDGE_TEMPLATE with one kayenta metric and no address, and a `- judge: {}` step into an
analysis step naming it. So the run is the very one a hand-written template gives: the same
engine, measurement, PR judgement table, chart and abort evidence, nothing duplicated.

Without `scopes`, the canary is the pods labelled `coalmine.dev/track: canary` and the baseline
those labelled `baseline` (the Deployment `baseline: true` adds), selected on the Prometheus
label that carries the pod label (`trackLabel`, by default `coalmine_dev_track`, the name a
Kubernetes service discovery `labelmap` gives it). Every problem is a StrategyError naming the
file and the key path under `apps[i].canary.judge` (or the step), with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from bot.analysis.templates import AnalysisTemplate, MetricSpec, placeholders
from bot.judge import kayenta
from bot.rollout import steps as step_kinds
from bot.rollout.fields import At, as_mapping, as_seconds, as_text, as_whole, key_names, shown
from bot.rollout.model import AnalysisStep, CanaryStrategy, TemplateRef

JUDGE_TEMPLATE = "coalmine-judge"  # the compiled template; an app's manifests may not reuse it
JUDGE_METRIC = "judge"  # its one metric, as the PR's analysis table names it
JUDGE_STEP = "judge"  # the step kind, and the label of the analysis step it becomes
JUDGE_KEYS = ("thresholds", "interval", "count", "initialDelay", "window", "lookback",
              "step", "trackLabel", "scopes", "metrics", "prometheus", "groupWeights")
# Kayenta's usual pass/marginal (and those of the README's `coalmine judge` example).
DEFAULT_THRESHOLDS = {"pass": 95, "marginal": 75}
DEFAULT_TRACK_LABEL = "coalmine_dev_track"
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT_SCOPE_KEYS = ("step", "trackLabel")


def parse_judge(raw: Any, at: At, *, baseline: bool, workload: str) -> AnalysisTemplate:
    """The `judge:` mapping compiled into the template a `- judge: {}` step runs. `baseline`
    says whether the strategy runs baseline pods (the default scopes select them)."""
    raw = as_mapping(raw, at, "a mapping with metrics (and thresholds, interval, window...)")
    unknown = key_names(set(raw) - set(JUDGE_KEYS))
    if unknown:
        at.key(unknown[0]).fail(f"unknown key (allowed: {', '.join(JUDGE_KEYS)})")
    if raw.get("metrics") is None:
        at.key("metrics").fail("is required: the series to judge, e.g. [{name: p99 latency, "
                               "query: '... {{scope}} ...', direction: increase}]")
    interval = _duration(raw, "interval", at)
    count = 1 if raw.get("count") is None else as_whole(raw["count"], at.key("count"), 1)
    if count > 1 and interval is None:
        at.key("interval").fail(f"is required when count > 1 (count is {count}): the time "
                                "between measurements")
    spec: dict[str, Any] = {
        "canaryConfigName": workload,
        "thresholds": raw.get("thresholds", DEFAULT_THRESHOLDS),
        "scopes": raw["scopes"] if "scopes" in raw else _default_scopes(raw, at, baseline),
        "metrics": raw["metrics"],
    }
    for key in ("lookback", "prometheus", "groupWeights"):
        if key in raw:
            spec[key] = raw[key]
    spec = copy.deepcopy(spec)  # the template keeps its own, not the parsed file's lists
    window = _duration(raw, "window", at)
    if window is not None:
        spec["window"] = window
    spec = kayenta.with_window(spec, interval)
    try:
        kayenta.parse_kayenta(spec)
    except kayenta.KayentaError as error:
        (at.key(error.key) if error.key else at).fail(error.reason)
    used = sorted(placeholders(spec))
    if used:
        at.fail(f"{{{{args.{used[0]}}}}}: the judge has no arguments; write the value itself "
                "(an AnalysisTemplate takes arguments, the judge section does not)")
    delay = _duration(raw, "initialDelay", at)
    if delay is None:
        # A window read back at once would start before the step did, when the canary may
        # have had no traffic yet (with lookback, there would be nothing to read): the first
        # measurement waits until one window (by default the interval) has passed.
        delay = spec.get("window")
    metric = MetricSpec(name=JUDGE_METRIC, provider={"kayenta": spec}, interval=interval,
                        initial_delay=delay, count=count)
    return AnalysisTemplate(name=JUDGE_TEMPLATE, metrics=(metric,), source=at.file)


def _duration(raw: Mapping[str, Any], key: str, at: At) -> float | None:
    return None if raw.get(key) is None else as_seconds(raw[key], at.key(key))


def _default_scopes(raw: Mapping[str, Any], at: At, baseline: bool) -> list[dict[str, Any]]:
    """One scope, canary pods against baseline pods by their track label."""
    metrics = raw["metrics"] if isinstance(raw["metrics"], list) else []
    if not baseline and any(isinstance(m, Mapping) and "query" in m for m in metrics):
        at.key("scopes").fail(
            "is required without baseline: true: the default scopes compare the pods labelled "
            "coalmine.dev/track=canary with those labelled baseline, which run only with "
            "canary.baseline: true (or give each metric canaryQuery and baselineQuery)")
    step = 60 if raw.get("step") is None else as_whole(raw["step"], at.key("step"), 1)
    label = DEFAULT_TRACK_LABEL
    if raw.get("trackLabel") is not None:
        label = as_text(raw["trackLabel"], at.key("trackLabel"))
        if not _LABEL_NAME.fullmatch(label):
            at.key("trackLabel").fail(f"{label!r} is not a Prometheus label name "
                                      "([A-Za-z_][A-Za-z0-9_]*)")
    return [{"name": "default",
             "controlScope": {"scope": f'{label}="baseline"', "step": step},
             "experimentScope": {"scope": f'{label}="canary"', "step": step}}]


def check_default_scope_keys(raw: Mapping[str, Any], at: At) -> None:
    """`step` and `trackLabel` shape the default scopes; beside `scopes` they would be
    silently unused, so they are refused there."""
    if "scopes" not in raw:
        return
    for key in _DEFAULT_SCOPE_KEYS:
        if key in raw:
            at.key(key).fail("applies to the default scopes only; with scopes, give each "
                             "scope's controlScope and experimentScope their scope and step")


def compile_steps(raw: Any, at: At, *, judged: bool) -> Any:
    """`steps` with each `- judge: {}` made the analysis step that runs JUDGE_TEMPLATE (other
    keys of the step, a modifier such as setCanaryScale, stay beside it); anything else is
    left for bot.rollout.steps to read. `judged`: the strategy has a `judge:` section."""
    if not isinstance(raw, list):
        return raw
    compiled = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            compiled.append(item)
            continue
        where = at.index(i)
        allowed = (*step_kinds.STEP_KINDS, JUDGE_STEP)
        for kind in key_names(item):
            if kind not in allowed and kind not in step_kinds.UNSUPPORTED_STEPS:
                where.key(kind).fail(f"unknown step (supported: {', '.join(allowed)})")
        if JUDGE_STEP not in item:
            compiled.append(item)
            continue
        _check_judge_step(item, where, judged)
        rest = {k: v for k, v in item.items() if k != JUDGE_STEP}
        compiled.append({**rest, "analysis": {"templates": [{"templateName": JUDGE_TEMPLATE}]}})
    return compiled


def _check_judge_step(item: Mapping[str, Any], at: At, judged: bool) -> None:
    where = at.key(JUDGE_STEP)
    value = item[JUDGE_STEP]
    if value is not None and value != {}:
        where.fail(f"takes nothing ({{}}), got {shown(value)}: the judge is configured "
                   "under canary.judge")
    others = [k for k in step_kinds.MAIN_KINDS if k in item]
    if others:
        at.fail(f"a step may have only one of {', '.join((*step_kinds.MAIN_KINDS, JUDGE_STEP))}"
                f" (found: {', '.join((*others, JUDGE_STEP))}); split it into several steps")
    if not judged:
        where.fail("needs canary.judge: the thresholds and queries to judge with "
                   "(README: Judge in a rollout)")


def with_judge(strategy: CanaryStrategy, template: AnalysisTemplate, at: At) -> CanaryStrategy:
    """The strategy carrying the compiled template, its judge steps labelled `judge`. A
    judge no step and no background analysis runs is refused: it would never judge."""
    ref = TemplateRef(JUDGE_TEMPLATE)
    labelled = tuple(
        dataclasses.replace(step, label=JUDGE_STEP)
        if isinstance(step, AnalysisStep) and step.templates == (ref,) and not step.label
        else step
        for step in strategy.steps)
    used = any(isinstance(s, AnalysisStep) and ref in s.templates for s in labelled) or (
        strategy.analysis is not None and ref in strategy.analysis.templates)
    if not used:
        at.fail("no step runs the judge: add `- judge: {}` to steps (or name template "
                f"{JUDGE_TEMPLATE} in the background analysis)")
    return dataclasses.replace(strategy, steps=labelled,
                               templates=(*strategy.templates, template))
