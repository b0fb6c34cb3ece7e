"""NGINX Ingress: a canary Ingress beside each stable one, weighted by annotations.

As Argo's NGINX reconciler does (rollout/trafficrouting/nginx/nginx.go): for every stable
Ingress, the canary Ingress `<rollout>-<stable>-canary` copies the stable one's TLS, class and
`kubernetes.io/ingress.class` annotation, and only the rules whose paths route to the stable
Service, with those backends changed to the canary Service. Its annotations are, in order of
precedence, additionalIngressAnnotations (prefixed), canaryIngressAnnotations (verbatim), then
`<prefix>/canary`, `<prefix>/canary-weight` and, with maxTrafficWeight,
`<prefix>/canary-weight-total`; annotations other writers put on it are kept. Header and mirror
routes are no-ops on NGINX, as in Argo. The stable Ingress is only read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from bot.rollout.routers.model import (
    INGRESS_API,
    NginxRouting,
    Obj,
    ObjectKey,
    RouterContext,
    RouterError,
    RouterWeight,
    RouteState,
    TrafficRouting,
)
from bot.rollout.routers.objects import (
    apply_copy,
    as_int,
    is_object,
    items,
    mapping,
    refuse_controlled,
)

_MAX_NAME = 253
_CANARY_SUFFIX = "-canary"
_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


def canary_ingress_name(rollout: str, stable_ingress: str) -> str:
    """`<rollout>-<stable>-canary`, the prefix trimmed so that the name stays <= 253."""
    prefix = f"{rollout}-{stable_ingress}"[: _MAX_NAME - len(_CANARY_SUFFIX)]
    return prefix + _CANARY_SUFFIX


def _keys(config: NginxRouting, ctx: RouterContext) -> list[tuple[ObjectKey, ObjectKey]]:
    return [
        (
            ObjectKey(INGRESS_API, "Ingress", ctx.namespace, stable),
            ObjectKey(INGRESS_API, "Ingress", ctx.namespace,
                      canary_ingress_name(ctx.rollout, stable)),
        )
        for stable in config.stable_ingresses
    ]


def reads(config: NginxRouting, ctx: RouterContext) -> tuple[ObjectKey, ...]:
    return tuple(key for pair in _keys(config, ctx) for key in pair)


def desired(
    routing: TrafficRouting,
    config: NginxRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
    state: RouteState,
) -> list[Obj]:
    out = []
    for stable_key, canary_key in _keys(config, ctx):
        stable = live.get(stable_key)
        if stable is None:
            raise RouterError(f"{stable_key.label}: not found (the stable Ingress to copy)")
        current = live.get(canary_key)
        refuse_controlled(canary_key, current)
        out.append(_canary_ingress(routing, config, ctx, stable_key, canary_key, stable,
                                   current, state.weight))
    return out


def _canary_ingress(
    routing: TrafficRouting,
    config: NginxRouting,
    ctx: RouterContext,
    stable_key: ObjectKey,
    canary_key: ObjectKey,
    stable: Obj,
    current: Obj | None,
    weight: int,
) -> Obj:
    stable_spec = mapping(stable.get("spec"))
    spec: Obj = {}
    if stable_spec.get("ingressClassName") is not None:
        spec["ingressClassName"] = stable_spec["ingressClassName"]
    spec["rules"] = _canary_rules(stable_spec, ctx)
    if not spec["rules"]:
        raise RouterError(
            f"{stable_key.label}: no rule routes to service '{ctx.stable_service}' (the canary "
            "Ingress copies only those rules)"
        )
    if stable_spec.get("tls") is not None:
        spec["tls"] = copy.deepcopy(stable_spec["tls"])

    annotations = _weight_annotations(routing, config, stable, weight)
    meta: Obj = {"name": canary_key.name, "namespace": canary_key.namespace}
    if current is not None:
        current_meta = mapping(current.get("metadata"))
        for name, value in mapping(current_meta.get("annotations")).items():
            annotations.setdefault(name, value)  # other writers' annotations are kept
        if current_meta.get("labels"):
            meta["labels"] = copy.deepcopy(current_meta["labels"])
    meta["annotations"] = annotations
    return {"apiVersion": INGRESS_API, "kind": "Ingress", "metadata": meta, "spec": spec}


def _canary_rules(stable_spec: Obj, ctx: RouterContext) -> list[Obj]:
    rules = []
    for rule in items(stable_spec.get("rules")):
        rule = copy.deepcopy(mapping(rule))
        routed = False
        for path in items(mapping(rule.get("http")).get("paths")):
            service = mapping(mapping(mapping(path).get("backend")).get("service"))
            if service.get("name") == ctx.stable_service:
                service["name"] = ctx.canary_service
                routed = True
        if routed:
            rules.append(rule)
    return rules


def _weight_annotations(
    routing: TrafficRouting, config: NginxRouting, stable: Obj, weight: int
) -> dict[str, str]:
    prefix = config.annotation_prefix
    annotations: dict[str, str] = {}
    stable_annotations = mapping(mapping(stable.get("metadata")).get("annotations"))
    if _CLASS_ANNOTATION in stable_annotations:
        annotations[_CLASS_ANNOTATION] = stable_annotations[_CLASS_ANNOTATION]
    for name, value in config.additional_ingress_annotations:
        annotations[name if name.startswith(prefix) else f"{prefix}/{name}"] = value
    for name, value in config.canary_ingress_annotations:
        annotations[name] = value
    annotations.update(_weights(routing, config, weight))
    return annotations


def keep_live_traffic(
    routing: TrafficRouting,
    config: NginxRouting,
    ctx: RouterContext,
    git_obj: Obj,
    live_obj: Obj | None,
) -> Obj | None:
    """Only the canary Ingresses are the router's; Git normally holds none of them."""
    for _stable_key, canary_key in _keys(config, ctx):
        if is_object(git_obj, canary_key, ctx.namespace):
            out = apply_copy(git_obj)
            annotations = out["metadata"].setdefault("annotations", {})
            kept = mapping(mapping((live_obj or {}).get("metadata")).get("annotations"))
            for name, value in _weights(routing, config, 0).items():
                annotations[name] = kept.get(name, value) if live_obj is not None else value
            return out
    return None


def _weights(routing: TrafficRouting, config: NginxRouting, weight: int) -> dict[str, str]:
    prefix = config.annotation_prefix
    weights = {f"{prefix}/canary": "true", f"{prefix}/canary-weight": str(weight)}
    if routing.max_traffic_weight is not None:
        weights[f"{prefix}/canary-weight-total"] = str(routing.max_traffic_weight)
    return weights


def describe(
    routing: TrafficRouting,
    config: NginxRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
) -> list[RouterWeight]:
    out = []
    for stable_key, canary_key in _keys(config, ctx):
        detail = f"copy of Ingress {stable_key.name}"
        if routing.max_traffic_weight is not None:
            detail += f", weight out of {routing.max_traffic_weight}"
        canary = live.get(canary_key)
        weight = None
        if canary is not None:
            annotations = mapping(mapping(canary.get("metadata")).get("annotations"))
            weight = as_int(annotations.get(f"{config.annotation_prefix}/canary-weight"))
        out.append(RouterWeight(canary_key.label, detail, weight))
    return out
