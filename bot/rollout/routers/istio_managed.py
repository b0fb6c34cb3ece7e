"""Istio's managed routes: the http routes setHeaderRoute and setMirrorRoute steps put at the
top of a VirtualService.

As Argo builds them (rollout/trafficrouting/istio/istio.go): a header route sends its header
matches 100% to the canary (the DestinationRule's host when there is one, else the canary
Service; the canary subset; the port of the weighted route's first destination). A mirror route
copies the weighted route's destinations as Argo's typed copy keeps them (host, subset, port
number, a weight other than 0) and mirrors `percentage` (default 100) of the matching requests
to the canary. Managed routes go first, in managedRoutes order.
"""

from __future__ import annotations

from bot.rollout.routers.model import (
    HeaderRoute,
    MirrorRoute,
    Obj,
    ObjectKey,
    RouterError,
    RouteState,
    StringMatch,
    TrafficRouting,
)
from bot.rollout.routers.objects import as_int, mapping, spec_of


def managed_routes(
    key: ObjectKey,
    obj: Obj,
    weighted: list,
    state: RouteState,
    canary_host: str,
    canary_subset: str,
) -> list[Obj]:
    """The state's header and mirror routes for VirtualService `obj`, whose first targeted
    http route holds the `weighted` destinations (already at the state's weights)."""
    active: list[HeaderRoute | MirrorRoute] = [
        r for r in (*state.header_routes, *state.mirror_routes) if r.matches
    ]
    if not active:
        return []
    spec = spec_of(obj)
    if not isinstance(spec.get("http"), list):
        raise RouterError(f"{key.label}: has no http routes to put managed route "
                          f"'{active[0].name}' beside")
    out = []
    for route in active:
        if isinstance(route, HeaderRoute):
            out.append(_header_route(route, weighted, canary_host, canary_subset))
        else:
            if not weighted:
                raise RouterError(f"{key.label}: has no weighted http route for mirror route "
                                  f"'{route.name}' to copy")
            out.append(_mirror_route(route, weighted, canary_host, canary_subset))
    return out


def put_managed(routing: TrafficRouting, obj: Obj, managed: list[Obj]) -> None:
    """Managed routes first, in managedRoutes order, then the other http routes."""
    if not managed:
        return
    order = {name: i for i, name in enumerate(routing.managed_routes)}
    managed = sorted(managed, key=lambda r: order.get(r["name"], len(order)))
    spec = spec_of(obj)
    spec["http"] = managed + spec["http"]


def _port_number(weighted: list) -> int:
    first = mapping(weighted[0]) if weighted else {}
    return as_int(mapping(mapping(first.get("destination")).get("port")).get("number")) or 0


def _canary_destination(host: str, subset: str, port: int) -> Obj:
    dest: Obj = {"host": host}
    if subset:
        dest["subset"] = subset
    if port > 0:
        dest["port"] = {"number": port}
    return dest


def _header_route(route: HeaderRoute, weighted: list, host: str, subset: str) -> Obj:
    return {
        "name": route.name,
        "match": [{"headers": {m.name: _string_match(m.value)}} for m in route.matches],
        "route": [{"destination": _canary_destination(host, subset, _port_number(weighted)),
                   "weight": 100}],
    }


def _mirror_route(route: MirrorRoute, weighted: list, host: str, subset: str) -> Obj:
    matches = []
    for match in route.matches:
        entry: Obj = {}
        if match.method is not None:
            entry["method"] = _string_match(match.method)
        if match.path is not None:
            entry["uri"] = _string_match(match.path)
        if match.headers:
            entry["headers"] = {h.name: _string_match(h.value) for h in match.headers}
        matches.append(entry)
    return {
        "name": route.name,
        "match": matches,
        "route": [_typed_destination(mapping(d)) for d in weighted],
        "mirror": _canary_destination(host, subset, _port_number(weighted)),
        "mirrorPercentage": {"value": 100 if route.percentage is None else route.percentage},
    }


def _typed_destination(dest: Obj) -> Obj:
    """A weighted destination as Argo's typed copy keeps it: host, subset, port number and a
    weight other than 0."""
    inner = mapping(dest.get("destination"))
    port = as_int(mapping(inner.get("port")).get("number")) or 0
    out: Obj = {"destination": _canary_destination(str(inner.get("host") or ""),
                                                   str(inner.get("subset") or ""), port)}
    if not out["destination"]["host"]:
        del out["destination"]["host"]
    weight = as_int(dest.get("weight")) or 0
    if weight:
        out["weight"] = weight
    return out


def _string_match(match: StringMatch) -> Obj:
    return {kind: value for kind, value in
            (("exact", match.exact), ("regex", match.regex), ("prefix", match.prefix))
            if value}
