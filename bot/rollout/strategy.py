"""The canary strategy of one app of `.coalmine.yaml` (its `canary:` mapping).

The other source of strategies, an Argo `Rollout` among the app's manifests, is read by
bot.rollout.argo_rollout; both give a `bot.rollout.model.CanaryStrategy` and share their step
parsing (bot.rollout.steps). Every problem is a StrategyError (bot.rollout.fields) naming the file,
the key path and the reason. StrategyError is listed in `__all__` because the use cases and the
config reader catch it from here, as the error this module raises.
"""

from __future__ import annotations

from typing import Any

from bot.rollout.fields import At, StrategyError, as_mapping, as_text, key_names
from bot.rollout.model import CanaryStrategy, WorkloadRef
from bot.rollout.steps import parse_background, parse_deadline, parse_steps

__all__ = ["StrategyError", "parse_canary_config"]

_CONFIG_CANARY_KEYS = ("workload", "steps", "analysis", "progressDeadlineSeconds")


def parse_canary_config(raw: Any, *, source: str, key: str) -> CanaryStrategy:
    """The `canary:` mapping of one app in `.coalmine.yaml` (`key` is e.g. "apps[0].canary")."""
    at = At(source, key)
    raw = as_mapping(raw, at, "a mapping with workload and steps")
    unknown = key_names(set(raw) - set(_CONFIG_CANARY_KEYS))
    if unknown:
        at.key(unknown[0]).fail(f"unknown key (allowed: {', '.join(_CONFIG_CANARY_KEYS)})")
    workload_text = as_text(raw.get("workload"), at.key("workload"))
    kind, _, name = workload_text.partition("/")
    if kind != "Deployment" or not name:
        at.key("workload").fail(f"{workload_text!r} must look like Deployment/<name>")
    steps = parse_steps(raw.get("steps"), at.key("steps"))
    return CanaryStrategy(
        workload=WorkloadRef(kind=kind, name=name),
        steps=steps,
        analysis=parse_background(raw.get("analysis"), at.key("analysis"), len(steps)),
        progress_deadline_seconds=parse_deadline(
            raw.get("progressDeadlineSeconds"), at.key("progressDeadlineSeconds")
        ),
        source=source,
        source_key=key,
    )
