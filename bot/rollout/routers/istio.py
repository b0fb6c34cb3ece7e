"""Istio: weights in VirtualService routes, track labels in DestinationRule subsets.

Driven as Argo's Istio reconciler does (rollout/trafficrouting/istio/istio.go):
- The targeted routes are the http routes named in `routes` (or the VirtualService's only
  non-managed http route when `routes` is omitted), the tls routes matching each `tlsRoutes`
  port and SNI hosts, the tcp routes matching each `tcpRoutes` port; with no tls/tcp config,
  the only tls/tcp route. Each must hold a canary and a stable destination: by Service host
  (up to the host's first dot) or, with a DestinationRule, by subset.
- In a targeted route the canary gets the weight, the stable 100 minus it and minus the
  additional subsets' weights; additional subsets keep theirs; any other destination with a
  weight is deleted.
- Managed routes: a header route sends its header matches 100% to the canary; a mirror route
  copies the first targeted route and mirrors a percentage of it to the canary. Managed routes
  sit at the top in managedRoutes order; one not in the state is removed.
- Subset-level: the DestinationRule's canary and stable subsets select the
  `coalmine.dev/track` label (Coalmine's equivalent of Argo's pod-template hash); Argo drops
  every other subset from the list it writes back, and so does Coalmine.
- A running experiment's weighted templates (`RouteState.extra`): in each targeted route a
  destination whose host is the template's Service gets its weight (appended, sorted by
  Service, when missing) and the stable gives up as much (never below 0); with a
  DestinationRule, a subset named after the Service selects the template's pods. Once the
  experiment is over they are weighted destinations like any other, so deleted.
Objects are written whole, DestinationRule first (Argo's UpdateHash runs before SetWeight).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

from bot.rollout.routers.istio_managed import managed_routes, put_managed
from bot.rollout.routers.model import (
    TRACK_LABEL,
    IstioRouting,
    IstioVirtualService,
    Obj,
    ObjectKey,
    RouterContext,
    RouterError,
    RouterWeight,
    RouteState,
    TrafficRouting,
    WeightDestination,
)
from bot.rollout.routers.objects import (
    apply_copy,
    as_int,
    is_object,
    items,
    mapping,
    spec_of,
)


def vs_key(config: IstioRouting, vs: IstioVirtualService, ctx: RouterContext) -> ObjectKey:
    """Argo reads `name.namespace` (an optional `.cluster.local` dropped) as a namespaced name."""
    name, _, namespace = vs.name.removesuffix(".cluster.local").rpartition(".")
    if not name:
        name, namespace = namespace, ctx.namespace
    return ObjectKey(config.api_version, "VirtualService", namespace, name)


def dr_key(config: IstioRouting, ctx: RouterContext) -> ObjectKey | None:
    if config.destination_rule is None:
        return None
    return ObjectKey(config.api_version, "DestinationRule", ctx.namespace,
                     config.destination_rule.name)


def reads(config: IstioRouting, ctx: RouterContext) -> tuple[ObjectKey, ...]:
    keys = [vs_key(config, vs, ctx) for vs in config.virtual_services]
    dr = dr_key(config, ctx)
    return tuple(keys + ([dr] if dr else []))


@dataclass(frozen=True)
class _Target:
    section: str  # "http" | "tls" | "tcp"
    index: int
    label: str  # "route primary", "tls[0]"

    @property
    def quoted(self) -> str:
        """For errors: "route 'primary'", "tls[0]"."""
        name = self.label.removeprefix("route ")
        return f"route '{name}'" if name != self.label else self.label


@dataclass(frozen=True)
class _Services:
    canary: str
    stable: str
    canary_subset: str
    stable_subset: str
    additional_subsets: tuple[str, ...]


def _services(config: IstioRouting, ctx: RouterContext) -> _Services:
    dr = config.destination_rule
    return _Services(
        canary=ctx.canary_service,
        stable=ctx.stable_service,
        canary_subset=dr.canary_subset if dr else "",
        stable_subset=dr.stable_subset if dr else "",
        additional_subsets=dr.additional_subsets if dr else (),
    )


# ---------------------------------------------------------------------------------- desired


def desired(
    routing: TrafficRouting,
    config: IstioRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
    state: RouteState,
) -> list[Obj]:
    out = []
    canary_host = ctx.canary_service
    key = dr_key(config, ctx)
    if key is not None:
        dr_live = live.get(key)
        if dr_live is None:
            raise RouterError(f"{key.label}: not found")
        out.append(_destination_rule(config, key, apply_copy(dr_live, key), state.extra))
        canary_host = str(mapping(dr_live.get("spec")).get("host") or "") or canary_host
    for vs in config.virtual_services:
        key = vs_key(config, vs, ctx)
        vs_live = live.get(key)
        if vs_live is None:
            raise RouterError(f"{key.label}: not found")
        obj = apply_copy(vs_live, key)
        targets = _weighted(routing, config, vs, ctx, key, obj, state.weight, state.extra)
        canary_subset = config.destination_rule.canary_subset if config.destination_rule else ""
        managed = managed_routes(key, obj, _first_weighted(obj, targets), state, canary_host,
                                 canary_subset)
        put_managed(routing, obj, managed)
        out.append(obj)
    return out


def _weighted(
    routing: TrafficRouting,
    config: IstioRouting,
    vs: IstioVirtualService,
    ctx: RouterContext,
    key: ObjectKey,
    obj: Obj,
    weight: int,
    extra: tuple[WeightDestination, ...] = (),
) -> list[_Target]:
    """Drop managed http routes from `obj`, set the targeted routes' weights, return them."""
    spec = spec_of(obj)
    if not any(isinstance(spec.get(s), list) for s in ("http", "tls", "tcp")):
        raise RouterError(f"{key.label}: has no http, tls or tcp routes")
    _drop_managed(routing, spec)
    targets = _targets(vs, key, spec)
    services = _services(config, ctx)
    for target in targets:
        route = mapping(spec[target.section][target.index])
        _check_destinations(key, target, route, services)
        _set_weights(route, weight, services, extra)
    return targets


def _drop_managed(routing: TrafficRouting, spec: Obj) -> None:
    """Take the managed header/mirror routes out of `spec`'s http routes (in place): they are
    Coalmine's own, rewritten on top, and never a weighted target."""
    if isinstance(spec.get("http"), list):
        spec["http"] = [r for r in spec["http"]
                        if mapping(r).get("name") not in routing.managed_routes]


def _first_weighted(obj: Obj, targets: list[_Target]) -> list:
    """The destinations of the first targeted http route, which managed routes copy."""
    primary = next((t for t in targets if t.section == "http"), None)
    return items(mapping(obj["spec"]["http"][primary.index]).get("route")) if primary else []


def _targets(vs: IstioVirtualService, key: ObjectKey, spec: Obj) -> list[_Target]:
    targets: list[_Target] = []
    if isinstance(spec.get("http"), list):
        http = spec["http"]
        if not vs.routes:
            if len(http) > 1:
                raise RouterError(
                    f"{key.label}: has {len(http)} http routes; name the weighted ones in "
                    "virtualService.routes (it may be omitted only for a single route)"
                )
            targets += [_Target("http", 0, _route_label(http[0], 0))] if http else []
        for name in vs.routes:
            index = next((i for i, r in enumerate(http) if mapping(r).get("name") == name), None)
            if index is None:
                raise RouterError(f"{key.label}: has no http route named '{name}'")
            targets.append(_Target("http", index, f"route {name}"))
    if isinstance(spec.get("tls"), list):
        wanted = [(r.port, frozenset(r.sni_hosts), f"port {r.port} sniHosts {list(r.sni_hosts)}")
                  for r in vs.tls_routes]
        targets += _l4_targets(key, "tls", spec["tls"], wanted)
    if isinstance(spec.get("tcp"), list):
        wanted = [(r.port, frozenset(), f"port {r.port}") for r in vs.tcp_routes]
        targets += _l4_targets(key, "tcp", spec["tcp"], wanted)
    return targets


def _l4_targets(
    key: ObjectKey, section: str, routes: list, wanted: list[tuple[int, frozenset, str]]
) -> list[_Target]:
    """tls/tcp routes: with none configured, the only one; else those whose matches share one
    port and carry exactly the SNI hosts given (Argo's searchTlsRoute / searchTcpRoute)."""
    if not wanted:
        if len(routes) > 1:
            raise RouterError(
                f"{key.label}: has {len(routes)} {section} routes; name the weighted ones in "
                f"virtualService.{section}Routes"
            )
        return [_Target(section, 0, f"{section}[0]")] if routes else []
    found = []
    for port, hosts, words in wanted:
        hits = [i for i, route in enumerate(routes) if _l4_match(route) == (port, hosts)]
        if not hits:
            raise RouterError(f"{key.label}: has no {section} route matching {words}")
        found += [_Target(section, i, f"{section}[{i}]") for i in hits]
    return found


def _l4_match(route: object) -> tuple[int, frozenset] | None:
    matches = [mapping(m) for m in items(mapping(route).get("match"))]
    ports = {as_int(m.get("port")) or 0 for m in matches}
    if len(ports) > 1:
        return None
    hosts = frozenset(h for m in matches for h in items(m.get("sniHosts")))
    return (ports.pop() if ports else 0), hosts


def _route_label(route: object, index: int) -> str:
    name = mapping(route).get("name")
    return f"route {name}" if name else f"http[{index}]"


def _host(destination: Obj) -> str:
    """The Service name of a destination host: up to its first dot, as Argo compares it."""
    host = str(mapping(destination.get("destination")).get("host") or "")
    return "" if host.startswith(".") else host.partition(".")[0]


def _subset(destination: Obj) -> str:
    return str(mapping(destination.get("destination")).get("subset") or "")


def _check_destinations(key: ObjectKey, target: _Target, route: Obj, s: _Services) -> None:
    dests = [mapping(d) for d in items(route.get("route"))]
    if s.canary_subset:
        wanted = (("subset", s.canary_subset, _subset), ("subset", s.stable_subset, _subset))
    else:
        wanted = (("host", s.canary, _host), ("host", s.stable, _host))
    for what, value, read in wanted:
        if not value or not any(read(d) == value for d in dests):
            raise RouterError(f"{key.label}: {target.quoted} has no destination for "
                              f"{what} '{value}'")


def _is_canary(dest: Obj, s: _Services) -> bool:
    return _is_track(dest, s.canary, s.canary_subset)


def _is_stable(dest: Obj, s: _Services) -> bool:
    return _is_track(dest, s.stable, s.stable_subset)


def _is_track(dest: Obj, service: str, subset: str) -> bool:
    """By Service host, or by subset; a destination without a host is nobody's (Argo)."""
    host = _host(dest)
    return host != "" and (host == service or (subset != "" and _subset(dest) == subset))


def _set_weights(route: Obj, weight: int, s: _Services,
                 extra: tuple[WeightDestination, ...] = ()) -> None:
    dests = [mapping(d) for d in items(route.get("route"))]
    experiment = {d.service: d.weight for d in extra}
    stable = 100 - weight - sum(experiment.values())
    for dest in dests:
        if _subset(dest) and _subset(dest) in s.additional_subsets:
            stable -= as_int(dest.get("weight")) or 0
    stable = max(stable, 0)
    kept = []
    for dest in dests:
        current = as_int(dest.get("weight")) or 0
        if not _host(dest):
            kept.append(dest)  # Argo leaves a destination without a host alone
        elif _is_canary(dest, s):
            kept.append(_with_weight(dest, current, weight))
        elif _is_stable(dest, s):
            kept.append(_with_weight(dest, current, stable))
        elif _host(dest) in experiment:
            kept.append(_with_weight(dest, current, experiment.pop(_host(dest))))
        elif (_subset(dest) and _subset(dest) in s.additional_subsets) or current == 0:
            kept.append(dest)  # additional subsets keep their weight; Argo deletes only weights
        # any other weighted destination is deleted
    kept += [{"destination": {"host": service}, "weight": experiment[service]}
             for service in sorted(experiment)]
    route["route"] = kept


def _with_weight(dest: Obj, current: int, weight: int) -> Obj:
    if current != weight:
        dest["weight"] = weight
    return dest


# --------------------------------------------------------------------------- DestinationRule


def _destination_rule(config: IstioRouting, key: ObjectKey, obj: Obj,
                      extra: tuple[WeightDestination, ...] = ()) -> Obj:
    """`obj` (a copy) with the canary and stable subsets selecting their tracks, and one
    subset per experiment destination (named after its Service) selecting its pods."""
    dr = config.destination_rule
    assert dr is not None
    tracks = {dr.canary_subset: "canary", dr.stable_subset: "stable"}
    experiment = {d.service: dict(d.subset_labels) for d in extra}
    subsets = []
    for subset in items(spec_of(obj).get("subsets")):
        subset = mapping(subset)
        labels = subset.get("labels") if isinstance(subset.get("labels"), dict) else {}
        track = tracks.pop(subset.get("name"), None)
        if track is not None:
            subset["labels"] = {**labels, TRACK_LABEL: track}
        elif subset.get("name") in experiment:
            subset["labels"] = {**labels, **experiment.pop(subset["name"])}
        else:
            continue  # Argo drops every subset but the canary, stable and experiment ones
        subsets.append(subset)
    if tracks:
        raise RouterError(f"{key.label}: has no subset named '{next(iter(tracks))}'")
    obj["spec"]["subsets"] = subsets + [{"name": name, "labels": labels}
                                        for name, labels in experiment.items()]
    return obj


# ------------------------------------------------------------------------- keep and describe


def keep_live_traffic(
    routing: TrafficRouting,
    config: IstioRouting,
    ctx: RouterContext,
    git_obj: Obj,
    live_obj: Obj | None,
) -> Obj | None:
    key = dr_key(config, ctx)
    if key is not None and is_object(git_obj, key, ctx.namespace):
        return _destination_rule(config, key, apply_copy(git_obj))
    for vs in config.virtual_services:
        key = vs_key(config, vs, ctx)
        if not is_object(git_obj, key, ctx.namespace):
            continue
        weight, managed = 0, []
        if live_obj is not None:
            weight = _live_weight(routing, config, vs, ctx, key, live_obj)
            managed = [copy.deepcopy(r) for r in items(spec_of(live_obj).get("http"))
                       if mapping(r).get("name") in routing.managed_routes]
        obj = apply_copy(git_obj)
        _weighted(routing, config, vs, ctx, key, obj, weight)
        put_managed(routing, obj, managed)
        return obj
    return None


def _live_weight(
    routing: TrafficRouting,
    config: IstioRouting,
    vs: IstioVirtualService,
    ctx: RouterContext,
    key: ObjectKey,
    live: Obj,
) -> int:
    """The canary weight a live VirtualService holds; 0 when it holds none (a VirtualService
    from before trafficRouting was configured, say)."""
    try:
        weights = _live_weights(routing, config, vs, ctx, key, live)
    except RouterError:
        return 0
    return next((w for _, w in weights if w is not None), 0)


def _live_weights(
    routing: TrafficRouting,
    config: IstioRouting,
    vs: IstioVirtualService,
    ctx: RouterContext,
    key: ObjectKey,
    live: Obj,
) -> list[tuple[str, int | None]]:
    """(route label, canary weight) of each targeted route of a live VirtualService."""
    obj = copy.deepcopy(live)
    spec = spec_of(obj)
    _drop_managed(routing, spec)
    services = _services(config, ctx)
    out = []
    for target in _targets(vs, key, spec):
        dests = [mapping(d) for d in items(mapping(spec[target.section][target.index])
                                           .get("route"))]
        canary = next((d for d in dests if _is_canary(d, services)), None)
        out.append((target.label, None if canary is None else as_int(canary.get("weight")) or 0))
    return out


def _experiment_weights(
    routing: TrafficRouting,
    config: IstioRouting,
    vs: IstioVirtualService,
    ctx: RouterContext,
    key: ObjectKey,
    live: Obj,
) -> list[RouterWeight]:
    """A row per weighted destination of a targeted route that is neither canary, stable nor
    an additional subset: an experiment's Service while its step runs."""
    spec = spec_of(copy.deepcopy(live))
    _drop_managed(routing, spec)
    services = _services(config, ctx)
    out = []
    for target in _targets(vs, key, spec):
        for dest in items(mapping(spec[target.section][target.index]).get("route")):
            dest = mapping(dest)
            weight = as_int(dest.get("weight")) or 0
            if (not _host(dest) or weight == 0 or _is_canary(dest, services)
                    or _is_stable(dest, services) or _subset(dest) in services.additional_subsets):
                continue
            out.append(RouterWeight(key.label, f"{target.label}: experiment Service "
                                    f"{_host(dest)}", weight))
    return out


def describe(
    routing: TrafficRouting,
    config: IstioRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
) -> list[RouterWeight]:
    out = []
    for vs in config.virtual_services:
        key = vs_key(config, vs, ctx)
        obj = live.get(key)
        if obj is None:
            out.append(RouterWeight(key.label, "not found", None))
            continue
        try:
            weights = _live_weights(routing, config, vs, ctx, key, obj)
        except RouterError as error:
            out.append(RouterWeight(key.label, str(error).removeprefix(f"{key.label}: "), None))
            continue
        out += [RouterWeight(key.label, label, weight) for label, weight in weights]
        out += _experiment_weights(routing, config, vs, ctx, key, obj)
        for route in items(spec_of(copy.deepcopy(obj)).get("http")):
            route = mapping(route)
            if route.get("name") not in routing.managed_routes:
                continue
            if "mirror" in route:
                share = as_int(mapping(route.get("mirrorPercentage")).get("value"))
                out.append(RouterWeight(key.label, f"mirror route {route['name']} (share of "
                                        "its requests copied to the canary)", share))
            else:
                out.append(RouterWeight(key.label, f"header route {route['name']}", 100))
    return out
