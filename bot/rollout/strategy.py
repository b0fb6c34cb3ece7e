"""The canary strategy of one app of `.coalmine.yaml` (its `canary:` mapping).

The other source of strategies, an Argo `Rollout` among the app's manifests, is read by
bot.rollout.argo_rollout; both give a `bot.rollout.model.CanaryStrategy` and share their step
parsing (bot.rollout.steps). Every problem is a StrategyError (bot.rollout.fields) naming the file,
the key path and the reason. StrategyError is listed in `__all__` because the use cases and the
config reader catch it from here, as the error this module raises.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.rollout import judge_config, options, specs
from bot.rollout.fields import At, StrategyError, as_mapping, as_text
from bot.rollout.model import CanaryStrategy, WorkloadRef
from bot.rollout.steps import parse_deadline

__all__ = ["StrategyError", "parse_blue_green_config", "parse_canary_config"]

_WORKLOAD_KEYS = ("workload", "progressDeadlineSeconds")
_OWN_CANARY_KEYS = ("baseline", "judge")  # `.coalmine.yaml`'s own, beside Argo's canary fields


def parse_canary_config(raw: Any, *, source: str, key: str) -> CanaryStrategy:
    """The `canary:` mapping of one app in `.coalmine.yaml` (`key` is e.g. "apps[0].canary"):
    Argo's canary fields, with `workload: Deployment/<name>` and the progress deadline, and
    Coalmine's `baseline: true` (a baseline Deployment beside the canary, see the model) and
    `judge:` with its `- judge: {}` steps (bot.rollout.judge_config)."""
    at = At(source, key)
    baseline = False
    judge = None
    if isinstance(raw, dict):
        if "baseline" in raw:
            baseline = options.flag(raw["baseline"], at.key("baseline"), False)
        if raw.get("judge") is not None:
            judge = as_mapping(raw["judge"], at.key("judge"),
                               "a mapping with metrics (and thresholds, interval, window...)")
            judge_config.check_default_scope_keys(judge, at.key("judge"))
        raw = {k: v for k, v in raw.items() if k not in _OWN_CANARY_KEYS}
        if "steps" in raw:
            raw["steps"] = judge_config.compile_steps(raw["steps"], at.key("steps"),
                                                      judged=judge is not None)
    strategy = _parse(raw, source=source, key=key, parse=specs.parse_canary,
                      own_keys=_OWN_CANARY_KEYS)
    if baseline and strategy.traffic is not None:
        at.key("baseline").fail("a baseline gets its traffic share from the app's Service, "
                                "which a traffic router bypasses; use an experiment step")
    strategy = dataclasses.replace(strategy, baseline=baseline)
    if judge is None:
        return strategy
    template = judge_config.parse_judge(judge, at.key("judge"), baseline=baseline,
                                        workload=strategy.workload.name)
    return judge_config.with_judge(strategy, template, at.key("judge"))


def parse_blue_green_config(raw: Any, *, source: str, key: str) -> CanaryStrategy:
    """The `blueGreen:` mapping of one app: Argo's blueGreen fields, plus `workload` and the
    progress deadline as in `canary:`."""
    return _parse(raw, source=source, key=key, parse=specs.parse_blue_green)


def _parse(raw: Any, *, source: str, key: str, parse: Any,
           own_keys: tuple[str, ...] = ()) -> CanaryStrategy:
    at = At(source, key)
    raw = as_mapping(raw, at, "a mapping with workload and the strategy's fields")
    workload_text = as_text(raw.get("workload"), at.key("workload"))
    kind, _, name = workload_text.partition("/")
    if kind != "Deployment" or not name:
        at.key("workload").fail(f"{workload_text!r} must look like Deployment/<name>")
    deadline = parse_deadline(raw.get("progressDeadlineSeconds"),
                              at.key("progressDeadlineSeconds"))
    body = {k: v for k, v in raw.items() if k not in _WORKLOAD_KEYS}
    return parse(body, at, workload=WorkloadRef(kind=kind, name=name), deadline=deadline,
                 source=source, extra_keys=_WORKLOAD_KEYS + own_keys)
