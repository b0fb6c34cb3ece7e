"""Gateway API: backendRef weights in HTTPRoutes, and header rules for setHeaderRoute.

Driven as the Argo plugin `argoproj-labs/gatewayAPI` does (rollouts-plugin-trafficrouter-
gatewayapi, pkg/plugin/httproute.go):
- In every rule but the plugin's header rules (named after a managed route, or legacy: a single
  backendRef to the canary), backendRefs named canaryService get the weight and those named
  stableService 100 minus it. A route with no backendRef of either name is an error.
- On an HTTPRoute with useHeaderRoutes (`httpRoute:` has it, `httpRoutes[]` ask for it), each
  active header route adds one rule per rule that holds both Services, named `<name>`,
  `<name>-1`, ...: the source rule's matches with the header matches added (or only those),
  its filters, and a single canary backendRef on the source's port. They follow the other
  rules; rules named after managed routes not in the state are removed.
- The label `rollouts.argoproj.io/gatewayapi-canary: in-progress` (configurable, or off) marks
  an HTTPRoute while the canary weight is above 0.
- A running experiment's weighted templates (`RouteState.extra`): every weighted rule holding
  backendRefs to both Services gets one backendRef per template Service (after the rule's own,
  in step order, in the Rollout's namespace, on the Service's port) with the template's weight,
  and its stable gets 100 - canary - their sum, so each such rule still adds up to 100. The
  annotation `coalmine.dev/experiment-backends` lists the Services Coalmine added (the plugin
  keeps that list in the Rollout's status): once the experiment is over only backendRefs named
  there are removed, never backends someone else manages, and the canary keeps its weight.
  Three departures from the plugin, which adds the Services to the first rule naming either
  Service only, leaves the stable at 100 - their sum (so with a canary weight the weights add
  up to more than 100 and every share shrinks), and resets the canary to 0 on removal.
Mirror routes are a no-op, as in the plugin.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from bot.rollout.routers.model import (
    GATEWAY_API,
    GatewayApiHttpRoute,
    GatewayApiRouting,
    HeaderMatch,
    HeaderRoute,
    Obj,
    ObjectKey,
    RouterContext,
    RouterError,
    RouterWeight,
    RouteState,
    TrafficRouting,
    WeightDestination,
)
from bot.rollout.routers.objects import apply_copy, as_int, is_object, items, mapping, spec_of

_INDEX = re.compile(r"[+-]?\d+")
EXPERIMENT_ANNOTATION = "coalmine.dev/experiment-backends"  # Service names, comma-separated


def route_key(config: GatewayApiRouting, route: GatewayApiHttpRoute,
              ctx: RouterContext) -> ObjectKey:
    return ObjectKey(GATEWAY_API, "HTTPRoute", config.namespace or ctx.namespace, route.name)


def reads(config: GatewayApiRouting, ctx: RouterContext) -> tuple[ObjectKey, ...]:
    return tuple(route_key(config, route, ctx) for route in config.http_routes)


def desired(
    routing: TrafficRouting,
    config: GatewayApiRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
    state: RouteState,
) -> list[Obj]:
    out = []
    for route in config.http_routes:
        key = route_key(config, route, ctx)
        current = live.get(key)
        if current is None:
            raise RouterError(f"{key.label}: not found")
        obj = apply_copy(current, key)
        _set_weights(routing, ctx, key, obj, state.weight, state.extra)
        if route.use_header_routes:
            rules = [r for r in _rules(obj) if not _named_managed(r, routing.managed_routes)]
            for header_route in state.header_routes:
                if header_route.matches:
                    rules += _header_rules(ctx, key, rules, header_route)
            spec_of(obj)["rules"] = rules
        _mark_in_progress(config, obj, state.weight > 0)
        out.append(obj)
    return out


def _rules(obj: Obj) -> list[Obj]:
    return [mapping(r) for r in items(mapping(obj.get("spec")).get("rules"))]


def _backends(rule: Obj) -> list[Obj]:
    return [mapping(b) for b in items(rule.get("backendRefs"))]


def _named_managed(rule: Obj, managed_routes: tuple[str, ...]) -> bool:
    """A header rule the plugin named: `<managed route>` or `<managed route>-<n>`."""
    name = rule.get("name")
    if not isinstance(name, str):
        return False
    return any(name == base or (name.startswith(base + "-")
                                and _INDEX.fullmatch(name[len(base) + 1:]))
               for base in managed_routes)


def _is_header_rule(rule: Obj, routing: TrafficRouting, ctx: RouterContext) -> bool:
    """Rules SetWeight leaves alone: named header rules, and (as the plugin's fallback for
    rules older plugin versions left unnamed) any rule whose only backendRef is the canary."""
    backends = _backends(rule)
    legacy = len(backends) == 1 and backends[0].get("name") == ctx.canary_service
    return _named_managed(rule, routing.managed_routes) or legacy


def _set_weights(
    routing: TrafficRouting,
    ctx: RouterContext,
    key: ObjectKey,
    obj: Obj,
    weight: int,
    extra: tuple[WeightDestination, ...] = (),
) -> None:
    """Weights in every rule but the header rules; the experiment's backendRefs (`extra`) in
    the rules that split between both Services, and those Coalmine added before taken out."""
    ours = _experiment_names(obj) | {d.service for d in extra}
    found, split = set(), False
    for rule in _rules(obj):
        if _is_header_rule(rule, routing, ctx):
            continue
        own = [b for b in _backends(rule) if b.get("name") not in ours]
        names = {b.get("name") for b in own}
        splits = bool(extra) and {ctx.canary_service, ctx.stable_service} <= names
        # Never below 0: `routing.desired` refuses shares past 100, a live route may hold any.
        stable = max(0, 100 - weight - (sum(d.weight for d in extra) if splits else 0))
        for backend in own:
            if backend.get("name") == ctx.canary_service:
                backend["weight"] = weight
                found.add("canary")
            elif backend.get("name") == ctx.stable_service:
                backend["weight"] = stable
                found.add("stable")
        if splits:
            rule["backendRefs"] = own + [_experiment_backend(ctx, key, d) for d in extra]
            split = True
        elif len(own) < len(_backends(rule)):
            rule["backendRefs"] = own
    for track, service in (("canary", ctx.canary_service), ("stable", ctx.stable_service)):
        if track not in found:
            raise RouterError(f"{key.label}: no rule has a backendRef named '{service}' "
                              f"(the {track} Service)")
    if extra and not split:
        raise RouterError(f"{key.label}: no rule has backendRefs to both '{ctx.canary_service}' "
                          f"and '{ctx.stable_service}' to share with the experiment's Services")
    _mark_experiments(obj, [d.service for d in extra])


def _experiment_backend(ctx: RouterContext, key: ObjectKey, dest: WeightDestination) -> Obj:
    """A backendRef to an experiment template's Service, which lives in the Rollout's
    namespace (the HTTPRoute may not)."""
    if dest.port is None:
        raise RouterError(f"{key.label}: experiment Service '{dest.service}' has no TCP port "
                          "for a backendRef to name")
    return {"group": "", "kind": "Service", "name": dest.service, "namespace": ctx.namespace,
            "port": dest.port, "weight": dest.weight}


def _experiment_names(obj: Obj) -> set[str]:
    """The Services a previous write added as experiment backendRefs (the annotation)."""
    value = mapping(mapping(obj.get("metadata")).get("annotations")).get(EXPERIMENT_ANNOTATION)
    return {n.strip() for n in value.split(",") if n.strip()} if isinstance(value, str) else set()


def _mark_experiments(obj: Obj, services: list[str]) -> None:
    meta = obj.setdefault("metadata", {})
    notes = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    if services:
        notes[EXPERIMENT_ANNOTATION] = ",".join(services)
    else:
        notes.pop(EXPERIMENT_ANNOTATION, None)
    if notes or "annotations" in meta:
        meta["annotations"] = notes


def _header_rules(
    ctx: RouterContext, key: ObjectKey, rules: list[Obj], route: HeaderRoute
) -> list[Obj]:
    headers = [_header_match(m) for m in route.matches]
    sources = [
        r for r in rules
        if {ctx.canary_service, ctx.stable_service} <= {b.get("name") for b in _backends(r)}
    ]
    if not sources:
        raise RouterError(f"{key.label}: no rule has backendRefs to both '{ctx.canary_service}' "
                          f"and '{ctx.stable_service}' to copy for header route '{route.name}'")
    out = []
    for index, source in enumerate(sources):
        canary = next(b for b in _backends(source) if b.get("name") == ctx.canary_service)
        backend: Obj = {"group": "", "kind": "Service", "name": ctx.canary_service}
        if canary.get("port") is not None:
            backend["port"] = canary["port"]
        rule: Obj = {
            "name": route.name if index == 0 else f"{route.name}-{index}",
            "matches": _header_matches(source, headers),
        }
        if items(source.get("filters")):
            rule["filters"] = copy.deepcopy(source["filters"])
        rule["backendRefs"] = [backend]
        out.append(rule)
    return out


def _header_matches(source: Obj, headers: list[Obj]) -> list[Obj]:
    matches = [mapping(m) for m in items(source.get("matches"))]
    if not matches:
        return [{"headers": copy.deepcopy(headers)}]
    out = []
    for match in matches:
        merged: Obj = {}
        if match.get("path") is not None:
            merged["path"] = copy.deepcopy(match["path"])
        merged["headers"] = copy.deepcopy(items(match.get("headers")) + headers)
        for field in ("queryParams", "method"):
            if match.get(field):
                merged[field] = copy.deepcopy(match[field])
        out.append(merged)
    return out


def _header_match(match: HeaderMatch) -> Obj:
    """Exact stays exact; prefix becomes the regular expression `<prefix>.*` (unescaped, as the
    plugin writes it); regex is a regular expression."""
    value = match.value
    if value.exact:
        return {"name": match.name, "type": "Exact", "value": value.exact}
    if value.prefix:
        return {"name": match.name, "type": "RegularExpression", "value": value.prefix + ".*"}
    return {"name": match.name, "type": "RegularExpression", "value": value.regex or ""}


def _mark_in_progress(config: GatewayApiRouting, obj: Obj, in_progress: bool) -> None:
    if config.in_progress_label is None:
        return
    meta = obj.setdefault("metadata", {})
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    if in_progress:
        labels[config.in_progress_label] = config.in_progress_value
    else:
        labels.pop(config.in_progress_label, None)
    if labels or "labels" in meta:
        meta["labels"] = labels


# ------------------------------------------------------------------------- keep and describe


def _split_rule(ctx: RouterContext, routing: TrafficRouting, live: Obj) -> Obj | None:
    """The first weighted rule holding the canary Service: the one the PR comment reads."""
    return next((rule for rule in _rules(live) if not _is_header_rule(rule, routing, ctx)
                 and any(b.get("name") == ctx.canary_service for b in _backends(rule))), None)


def _share(rule: Obj, service: str) -> int | None:
    """`service`'s share (percent) of the rule's backendRef weights; a backendRef without a
    weight weighs 1, as the API defaults it. None when a weight is unreadable."""
    weights = [(b.get("name"), 1 if b.get("weight") is None else as_int(b.get("weight")))
               for b in _backends(rule)]
    mine = [w for name, w in weights if name == service]
    if not mine or any(w is None for _, w in weights):
        return None
    total = sum(w or 0 for _, w in weights)
    return 0 if total <= 0 else round(100 * (mine[0] or 0) / total)


def _live_weight(ctx: RouterContext, routing: TrafficRouting, live: Obj) -> int | None:
    rule = _split_rule(ctx, routing, live)
    return None if rule is None else _share(rule, ctx.canary_service)


def _live_experiments(ctx: RouterContext, routing: TrafficRouting, live: Obj
                      ) -> tuple[WeightDestination, ...]:
    """The experiment backendRefs a running step gave the live route, as destinations."""
    rule = _split_rule(ctx, routing, live)
    names = _experiment_names(live)
    if rule is None or not names:
        return ()
    return tuple(WeightDestination(str(b["name"]), as_int(b.get("weight")) or 0,
                                   port=as_int(b.get("port")))
                 for b in _backends(rule) if b.get("name") in names)


def keep_live_traffic(
    routing: TrafficRouting,
    config: GatewayApiRouting,
    ctx: RouterContext,
    git_obj: Obj,
    live_obj: Obj | None,
) -> Obj | None:
    for route in config.http_routes:
        key = route_key(config, route, ctx)
        if not is_object(git_obj, key, ctx.namespace):
            continue
        obj = apply_copy(git_obj)
        weight = (_live_weight(ctx, routing, live_obj) or 0) if live_obj is not None else 0
        extra = _live_experiments(ctx, routing, live_obj) if live_obj is not None else ()
        _set_weights(routing, ctx, key, obj, weight, extra)
        if live_obj is not None:
            managed = [copy.deepcopy(r) for r in _rules(live_obj)
                       if _named_managed(r, routing.managed_routes)]
            rules = [r for r in _rules(obj) if not _named_managed(r, routing.managed_routes)]
            if managed:
                spec_of(obj)["rules"] = rules + managed
        live_labels = mapping(mapping((live_obj or {}).get("metadata")).get("labels"))
        _mark_in_progress(config, obj, config.in_progress_label in live_labels)
        return obj
    return None


def describe(
    routing: TrafficRouting,
    config: GatewayApiRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
) -> list[RouterWeight]:
    out = []
    for route in config.http_routes:
        key = route_key(config, route, ctx)
        obj = live.get(key)
        if obj is None:
            out.append(RouterWeight(key.label, "not found", None))
            continue
        weight = _live_weight(ctx, routing, obj)
        detail = "" if weight is not None else f"no backendRef named '{ctx.canary_service}'"
        out.append(RouterWeight(key.label, detail, weight))
        rule = _split_rule(ctx, routing, obj)
        out += [RouterWeight(key.label, f"experiment Service {d.service}",
                             _share(rule, d.service) if rule else None)
                for d in _live_experiments(ctx, routing, obj)]
        names = [r.get("name") for r in _rules(obj)]
        out += [RouterWeight(key.label, f"header rule {name}", 100)
                for name in routing.managed_routes if name in names]
    return out
