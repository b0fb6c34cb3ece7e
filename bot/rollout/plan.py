"""From an app's rendered manifests to what gets applied now and what rolls out as a canary.

Argo `Rollout`, `AnalysisTemplate` and `ClusterAnalysisTemplate` documents are read, never
applied; a Rollout becomes the Deployment that Coalmine manages. The canary workload itself is
held back from the plain apply when its pod template changed: the rollout moves it in steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bot.analysis.templates import AnalysisTemplate
from bot.rollout import argo_rollout, argo_templates
from bot.rollout.fields import StrategyError
from bot.rollout.model import CanaryStrategy

Obj = dict[str, Any]


@dataclass(frozen=True)
class CanaryPlan:
    strategy: CanaryStrategy
    templates: tuple[AnalysisTemplate, ...]
    deployment: Obj  # the workload as Git describes it, namespace filled in

    @property
    def name(self) -> str:
        return self.deployment["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.deployment["metadata"]["namespace"]


class AppSpec(Protocol):
    """What planning reads of an app of `.coalmine.yaml` (bot.config.AppConfig has it)."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def canary(self) -> CanaryStrategy | None: ...


def split(objects: list[Obj], app: AppSpec) -> tuple[list[Obj], CanaryPlan | None]:
    """(objects to apply as they are, the canary plan or None); raises StrategyError."""
    source = f"{app.path}/"
    rollouts = [o for o in objects if argo_rollout.is_rollout(o)]
    template_docs = [o for o in objects if argo_templates.is_analysis_template(o)]
    rest = [o for o in objects if not argo_rollout.is_rollout(o)
            and not argo_templates.is_analysis_template(o)]
    templates = argo_templates.parse_analysis_templates((source, d) for d in template_docs)
    if len(rollouts) > 1:
        names = ", ".join(r["metadata"]["name"] for r in rollouts)
        raise StrategyError(source, "kind: Rollout",
                            f"one Rollout per app is supported (found {names})")
    if rollouts:
        doc = rollouts[0]
        strategy = argo_rollout.parse_rollout(doc, source=source)
        deployments = {o["metadata"]["name"]: o for o in rest if o.get("kind") == "Deployment"}
        workload = argo_rollout.rollout_to_deployment(doc, source=source, deployments=deployments)
        ref = (doc.get("spec") or {}).get("workloadRef") or {}
        rest = [o for o in rest if not (o.get("kind") == "Deployment"
                                        and o["metadata"]["name"] == ref.get("name"))]
    elif app.canary is not None:
        strategy = app.canary
        name = strategy.workload.name
        found = [o for o in rest if o.get("kind") == "Deployment" and o["metadata"]["name"] == name]
        if not found:
            raise StrategyError(
                ".coalmine.yaml", f"apps[{app.name}].canary.workload",
                f"Deployment '{name}' is not among the manifests under {app.path}")
        workload = found[0]
        rest = [o for o in rest if o is not workload]
    else:
        return rest, None
    argo_templates.check_template_refs(strategy, templates)
    workload = {**workload, "metadata": {**workload["metadata"]}}
    workload["metadata"].setdefault("namespace", app.namespace)
    return rest, CanaryPlan(strategy, templates, workload)
