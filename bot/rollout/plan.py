"""From an app's rendered manifests to what gets applied now and what rolls out as a canary.

Argo `Rollout`, `AnalysisTemplate` and `ClusterAnalysisTemplate` documents are read, never
applied; a Rollout becomes the Deployment that Coalmine manages. The canary workload itself is
held back from the plain apply when its pod template changed: the rollout moves it in steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.analysis.templates import AnalysisTemplate
from bot.rollout import argo_rollout, argo_templates, traffic
from bot.rollout.fields import StrategyError
from bot.rollout.model import CanaryStrategy

Obj = dict[str, Any]


@dataclass(frozen=True)
class CanaryPlan:
    strategy: CanaryStrategy
    templates: tuple[AnalysisTemplate, ...]
    deployment: Obj  # the workload as Git describes it, namespace filled in
    # The Services the strategy names (canary/stable, active/preview) as Git has them,
    # namespace filled in: the rollout pins their selectors to a track.
    services: dict[str, Obj] = field(default_factory=dict)

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


def split(objects: list[Obj], app: AppSpec,
          sources: list[str] | None = None) -> tuple[list[Obj], CanaryPlan | None]:
    """(objects to apply as they are, the canary plan or None); raises StrategyError.

    `sources` names the file of each object (bot.manifests.render_sourced), so that an error
    in a Rollout or a template names its file; without it, the app's folder."""
    folder = f"{app.path}/"
    source_of = {id(o): f for o, f in zip(objects, sources or [], strict=False)}
    rollouts = [o for o in objects if argo_rollout.is_rollout(o)]
    template_docs = [o for o in objects if argo_templates.is_analysis_template(o)]
    rest = [o for o in objects if not argo_rollout.is_rollout(o)
            and not argo_templates.is_analysis_template(o)]
    templates = argo_templates.parse_analysis_templates(
        (source_of.get(id(d), folder), d) for d in template_docs)
    if len(rollouts) > 1:
        names = ", ".join(r["metadata"]["name"] for r in rollouts)
        raise StrategyError(source_of.get(id(rollouts[1]), folder), "kind: Rollout",
                            f"one Rollout per app is supported (found {names})")
    if rollouts:
        doc = rollouts[0]
        source = source_of.get(id(doc), folder)
        strategy = argo_rollout.parse_rollout(doc, source=source)
        deployments = {o["metadata"]["name"]: o for o in rest if o.get("kind") == "Deployment"}
        workload = argo_rollout.rollout_to_deployment(doc, source=source, deployments=deployments)
        ref = (doc.get("spec") or {}).get("workloadRef") or {}
        rest = [o for o in rest if not (o.get("kind") == "Deployment"
                                        and o["metadata"]["name"] == ref.get("name"))]
        clash = next((o for o in rest if o.get("kind") == "Deployment"
                      and o["metadata"]["name"] == workload["metadata"]["name"]), None)
        if clash is not None:
            raise StrategyError(
                source, f"Rollout {workload['metadata']['name']}",
                f"Coalmine runs the Rollout as Deployment '{workload['metadata']['name']}', "
                f"which {source_of.get(id(clash), folder)} also declares; remove one of them "
                "(or point spec.workloadRef at it)")
        where = (f"{source}: Rollout {workload['metadata']['name']}", strategy.source_key)
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
        where = (".coalmine.yaml", strategy.source_key)
        templates = _with_own_templates(templates, strategy, where)
    else:
        return rest, None
    argo_templates.check_template_refs(strategy, templates, where[0])
    workload = {**workload, "metadata": {**workload["metadata"]}}
    workload["metadata"].setdefault("namespace", app.namespace)
    workload = traffic.with_rolling_update(workload, strategy.max_surge, strategy.max_unavailable)
    services = _strategy_services(strategy, rest, app, where)
    return rest, CanaryPlan(strategy, templates, workload, services)


def _with_own_templates(templates: tuple[AnalysisTemplate, ...], strategy: CanaryStrategy,
                        where: tuple[str, str]) -> tuple[AnalysisTemplate, ...]:
    """The manifests' templates and those the strategy defines (its compiled `judge:`), whose
    names the manifests may not take: a step would not know which one it names."""
    for own in strategy.templates:
        clash = next((t for t in templates if t.name == own.name and not t.cluster_scope), None)
        if clash is not None:
            raise StrategyError(clash.source, "metadata.name", (
                f"AnalysisTemplate '{own.name}' is the name of the judge {where[0]} "
                f"{where[1]}.judge defines; rename this template"))
    return (*templates, *strategy.templates)


def _strategy_services(strategy: CanaryStrategy, objects: list[Obj], app: AppSpec,
                       where: tuple[str, str]) -> dict[str, Obj]:
    """The Services the strategy names, which must be among the app's manifests: the rollout
    pins their selectors to a track, which it can only do to a Service it applies."""
    named = {o["metadata"]["name"]: o for o in objects
             if o.get("kind") == "Service" and o.get("apiVersion") == "v1"}
    found: dict[str, Obj] = {}
    for key, name in traffic.named_services(strategy):
        service = named.get(name)
        if service is None:
            raise StrategyError(where[0], f"{where[1]}.{key}",
                                f"Service '{name}' is not among the app's manifests under "
                                f"{app.path} (the rollout points its selector at a track)")
        if not isinstance((service.get("spec") or {}).get("selector"), dict):
            raise StrategyError(where[0], f"{where[1]}.{key}",
                                f"Service '{name}' has no spec.selector to pin to a track")
        obj = {**service, "metadata": {**service["metadata"]}}
        obj["metadata"].setdefault("namespace", app.namespace)
        found[name] = obj
    return found
