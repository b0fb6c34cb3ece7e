"""What the merge of a PR will do to an app: a plain apply, or a rollout with its steps.

The decision is the merge's own (`bot.rollout.traffic.needs_canary`: a rollout only when a
stable track runs and the pod template changes), read here against the live workload. Steps
are described one by one with `bot.rollout.engine.describe_step`, reading nothing else of a
strategy, so new strategies and step kinds show up without changes here. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from bot.analysis.templates import AnalysisTemplate
from bot.rollout.engine import describe_step
from bot.rollout.plan import CanaryPlan
from bot.rollout.traffic import needs_canary

Obj = dict[str, Any]


def merge_plan(plan: CanaryPlan | None, live: Obj | None) -> tuple[str, ...]:
    """Lines saying what the merge will do; `live` is the workload as the cluster runs it."""
    if plan is None:
        return (("plain apply: every object is applied at once (the app has no rollout "
                "strategy)"),)
    workload = f"Deployment {plan.namespace}/{plan.name}"
    if not needs_canary(plan.deployment, live):
        if live is None:
            why = f"{workload} does not run yet, so its first deploy is a plain apply"
        else:
            why = (f"{workload}'s pod template is unchanged (or it has no stable track yet), "
                   "so no rollout starts")
        return (f"plain apply: {why}",)
    steps = plan.strategy.steps
    lines = [f"rollout of {workload} in {len(steps)} step(s), each judged before the next:"]
    lines += [f"{i}. {describe_step(step)}" for i, step in enumerate(steps, start=1)]
    lines += [_template_line(t) for t in plan.templates if _used(t, steps)]
    return tuple(lines)


def _used(template: AnalysisTemplate, steps: tuple[Any, ...]) -> bool:
    """Whether a step names the template (templates only defined in the path are not shown)."""
    return any(ref.name == template.name for step in steps
               for ref in getattr(step, "templates", ()) or ())


def _template_line(template: AnalysisTemplate) -> str:
    metrics = ", ".join(_metric_words(m) for m in template.metrics)
    return f"analysis {template.name}: {metrics}"


def _metric_words(metric: Any) -> str:
    words = [metric.name]
    if metric.success_condition:
        words.append(f"succeeds when {metric.success_condition}")
    if metric.failure_condition:
        words.append(f"fails when {metric.failure_condition}")
    return " ".join(words)
