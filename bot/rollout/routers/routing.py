"""One entry point per operation, whatever the router: reads, desired, keep, describe.

The engine and the shell never ask which router a Rollout uses; they call these, and each
router module (nginx, istio, gatewayapi, smi) answers for its own config type.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.rollout.routers import gatewayapi, istio, nginx, smi
from bot.rollout.routers.model import (
    GatewayApiRouting,
    IstioRouting,
    NginxRouting,
    Obj,
    ObjectKey,
    RouterContext,
    RouterWeight,
    RouteState,
    SmiRouting,
    TrafficRouting,
)

_MODULES = {
    NginxRouting: nginx,
    IstioRouting: istio,
    GatewayApiRouting: gatewayapi,
    SmiRouting: smi,
}


def reads(routing: TrafficRouting, ctx: RouterContext) -> tuple[ObjectKey, ...]:
    """The live objects `desired` and `describe` need; missing ones map to None in `live`."""
    return _MODULES[type(routing.router)].reads(routing.router, ctx)


def desired(
    routing: TrafficRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
    state: RouteState,
) -> list[Obj]:
    """The whole objects to apply so that the router carries `state` (RouterError when the live
    objects do not fit the config)."""
    top = routing.max_traffic_weight or 100
    if not 0 <= state.weight <= top:
        raise ValueError(f"weight {state.weight} is outside 0..{top}")
    shared = state.weight + sum(d.weight for d in state.extra)
    if state.extra and (not supports_experiment_weights(routing) or shared > top):
        raise ValueError(f"experiment destinations {[d.service for d in state.extra]} do not "
                         f"fit the {routing.name} router at canary weight {state.weight}")
    strays = [r.name for r in (*state.header_routes, *state.mirror_routes)
              if r.name not in routing.managed_routes]
    if strays:
        raise ValueError(f"routes {strays} are not in managedRoutes")
    return _MODULES[type(routing.router)].desired(routing, routing.router, ctx, live, state)


def keep_live_traffic(
    routing: TrafficRouting, ctx: RouterContext, git_obj: Obj, live_obj: Obj | None
) -> Obj | None:
    """Git's object as Coalmine applies it on a later merge without undoing the rollout: the
    router-owned parts taken from the live object (or at stable 100 when there is none); None
    when the router does not manage `git_obj`."""
    return _MODULES[type(routing.router)].keep_live_traffic(
        routing, routing.router, ctx, git_obj, live_obj)


def describe(
    routing: TrafficRouting, ctx: RouterContext, live: Mapping[ObjectKey, Obj | None]
) -> list[RouterWeight]:
    """The canary weight each router object holds now, for the PR comment."""
    return _MODULES[type(routing.router)].describe(routing, routing.router, ctx, live)


def supports_header_routes(routing: TrafficRouting) -> bool:
    """Whether setHeaderRoute steps change anything (Argo lets them pass as no-ops elsewhere)."""
    router = routing.router
    if isinstance(router, GatewayApiRouting):
        return any(route.use_header_routes for route in router.http_routes)
    return isinstance(router, IstioRouting)


def supports_mirror_routes(routing: TrafficRouting) -> bool:
    return isinstance(routing.router, IstioRouting)


def supports_experiment_weights(routing: TrafficRouting) -> bool:
    """Whether an experiment template's `weight` can get its own destination: Argo gives the
    extra destinations to Istio, SMI, ALB and plugins (its validation refuses NGINX), and all of
    Coalmine's routers but NGINX write them (Istio, SMI, the Gateway API plugin's HTTPRoutes)."""
    return isinstance(routing.router, IstioRouting | SmiRouting | GatewayApiRouting)
