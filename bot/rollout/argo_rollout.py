"""Argo `Rollout` manifests: read, never applied.

A Rollout becomes the Deployment Coalmine applies (`rollout_to_deployment`) plus its canary
strategy (`parse_rollout`), the same model a `.coalmine.yaml` canary gives
(`bot.rollout.model.CanaryStrategy`). Problems are StrategyErrors naming file and key path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from bot.rollout import specs
from bot.rollout.fields import (
    At,
    as_mapping,
    as_text,
    as_whole,
    is_argo,
    key_names,
    manifest_name,
)
from bot.rollout.model import CanaryStrategy, WorkloadRef
from bot.rollout.steps import parse_deadline

ARGO_API_VERSION = "argoproj.io/v1alpha1"


def is_rollout(doc: Any) -> bool:
    return is_argo(doc, ("Rollout",))


def parse_rollout(doc: Any, *, source: str) -> CanaryStrategy:
    """The strategy of an Argo `Rollout` (canary or blue-green); its workload is the Deployment
    that `rollout_to_deployment` makes of it (same name). Errors name the file, the Rollout and
    the key: `deploy/web/rollout.yaml: Rollout web: spec.strategy.canary.steps[3]...`."""
    root = At(source, "")
    doc = as_mapping(doc, root, "a Rollout manifest")
    name = manifest_name(doc, source)
    at = At(f"{source}: Rollout {name}", "")
    spec = as_mapping(doc.get("spec"), at.key("spec"))
    if spec.get("template") is None and spec.get("workloadRef") is None:
        at.key("spec.template").fail("is required (or spec.workloadRef to a Deployment)")
    strategy_at = at.key("spec.strategy")
    strategy = as_mapping(spec.get("strategy"), strategy_at, "a mapping with canary or blueGreen")
    kinds = [k for k in ("canary", "blueGreen") if k in strategy]
    if len(kinds) != 1:
        found = ", ".join(key_names(strategy)) or "nothing"
        strategy_at.fail(f"needs exactly one of canary, blueGreen (found: {found})")
    unknown = key_names(set(strategy) - {"canary", "blueGreen"})
    if unknown:
        strategy_at.key(unknown[0]).fail("unknown strategy (Coalmine runs canary and blueGreen)")
    deadline = parse_deadline(spec.get("progressDeadlineSeconds"),
                              at.key("spec.progressDeadlineSeconds"))
    workload = WorkloadRef(kind="Deployment", name=name)
    kind = kinds[0]
    body = as_mapping(strategy[kind] or {}, strategy_at.key(kind))
    parse = specs.parse_canary if kind == "canary" else specs.parse_blue_green
    return parse(body, strategy_at.key(kind), workload=workload, deadline=deadline,
                 source=source)


def rollout_to_deployment(
    doc: Any, *, source: str, deployments: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The Deployment Coalmine applies for an Argo `Rollout`: same name, labels, replicas,
    selector and pod template; the strategy stays with Coalmine.

    With `spec.workloadRef`, the pod template comes from the referenced Deployment, looked up by
    name in `deployments` (the app's other manifests).
    """
    doc = as_mapping(doc, At(source, ""), "a Rollout manifest")
    name = manifest_name(doc, source)
    root = At(f"{source}: Rollout {name}", "")
    meta = doc["metadata"]
    spec = as_mapping(doc.get("spec"), root.key("spec"))
    template = spec.get("template")
    selector = spec.get("selector")
    if template is None:
        ref_at = root.key("spec.workloadRef")
        ref = as_mapping(
            spec.get("workloadRef"), ref_at, "a mapping with kind and name (or give spec.template)"
        )
        if ref.get("kind") != "Deployment":
            ref_at.key("kind").fail(f"{ref.get('kind')!r}: only a Deployment can be referenced")
        ref_name = as_text(ref.get("name"), ref_at.key("name"))
        target = (deployments or {}).get(ref_name)
        if target is None:
            ref_at.key("name").fail(f"Deployment '{ref_name}' not found among the app's manifests")
        target_spec = target.get("spec") or {}
        template = target_spec.get("template")
        selector = selector or target_spec.get("selector")
        if template is None:
            ref_at.key("name").fail(f"Deployment '{ref_name}' has no spec.template")
    as_mapping(template, root.key("spec.template"))
    as_mapping(selector, root.key("spec.selector"), "a label selector (matchLabels)")
    replicas = (
        1
        if spec.get("replicas") is None
        else as_whole(spec["replicas"], root.key("spec.replicas"), 0)
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
