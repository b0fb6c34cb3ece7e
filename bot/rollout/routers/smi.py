"""SMI: one TrafficSplit, created when missing, splitting the root Service's traffic.

As Argo's SMI reconciler does (rollout/trafficrouting/smi/smi.go): the TrafficSplit is named
trafficSplitName (default: the Rollout's name); its spec is replaced by the root Service
(default: the stable Service) and two backends, the canary Service with the weight and then the
stable Service with 100 minus it. A running experiment's weighted templates are backends between
the two (their Services, in step order) and the stable's weight is reduced by theirs; Argo does
not clamp it, Coalmine's steps parser refuses weights that add up past 100. Argo writes v1alpha1 weights as quantities (the string "20"),
v1alpha2/v1alpha3 weights as integers; the version is a controller flag in Argo, so a Rollout
cannot name it and Coalmine uses v1alpha1 unless its own configuration says otherwise. A
TrafficSplit that another controller owns is refused, as Argo refuses one its Rollout does not
own. Header and mirror routes are no-ops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.rollout.routers.model import (
    Obj,
    ObjectKey,
    RouterContext,
    RouterWeight,
    RouteState,
    SmiRouting,
    TrafficRouting,
    WeightDestination,
)
from bot.rollout.routers.objects import (
    apply_copy,
    is_object,
    items,
    mapping,
    refuse_controlled,
)

_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m?)")


def split_key(config: SmiRouting, ctx: RouterContext) -> ObjectKey:
    return ObjectKey(config.api_version, "TrafficSplit", ctx.namespace,
                     config.traffic_split_name or ctx.rollout)


def reads(config: SmiRouting, ctx: RouterContext) -> tuple[ObjectKey, ...]:
    return (split_key(config, ctx),)


def desired(
    routing: TrafficRouting,
    config: SmiRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
    state: RouteState,
) -> list[Obj]:
    key = split_key(config, ctx)
    current = live.get(key)
    refuse_controlled(key, current)
    return [_with_split(config, ctx, key, current, state.weight, state.extra)]


def _with_split(
    config: SmiRouting, ctx: RouterContext, key: ObjectKey, base: Obj | None, weight: int,
    extra: tuple[WeightDestination, ...] = (),
) -> Obj:
    obj = apply_copy(base or {}, key)
    stable = 100 - weight - sum(dest.weight for dest in extra)
    obj["spec"] = {
        "service": config.root_service or ctx.stable_service,
        "backends": [
            {"service": ctx.canary_service, "weight": _weight(config, weight)},
            *({"service": dest.service, "weight": _weight(config, dest.weight)}
              for dest in extra),
            {"service": ctx.stable_service, "weight": _weight(config, stable)},
        ],
    }
    return obj


def _weight(config: SmiRouting, value: int) -> str | int:
    return str(value) if config.api_version.endswith("/v1alpha1") else value


def _share(value: object) -> float | None:
    """A backend weight: an int, or a quantity string ("20", "500m")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        return None
    number = float(match.group(1))
    return number / 1000 if match.group(2) else number


def _live_weight(ctx: RouterContext, live: Obj) -> int | None:
    """The canary backend's share of all backends' weights, in percent."""
    return _percent(_shares(live), ctx.canary_service)


def _shares(live: Obj) -> list[tuple[object, float | None]]:
    """(Service, weight) of each backend of a live TrafficSplit."""
    backends = [mapping(b) for b in items(mapping(live.get("spec")).get("backends"))]
    return [(b.get("service"), _share(b.get("weight"))) for b in backends]


def _percent(shares: list[tuple[object, float | None]], service: object) -> int | None:
    """`service`'s share of all backends' weights, in percent (None when unreadable)."""
    mine = next((share for name, share in shares if name == service), None)
    if mine is None or any(share is None for _, share in shares):
        return None
    total = sum(share or 0 for _, share in shares)
    return 0 if total <= 0 else round(100 * mine / total)


def keep_live_traffic(
    routing: TrafficRouting,
    config: SmiRouting,
    ctx: RouterContext,
    git_obj: Obj,
    live_obj: Obj | None,
) -> Obj | None:
    key = split_key(config, ctx)
    if not is_object(git_obj, key, ctx.namespace):
        return None
    weight = (_live_weight(ctx, live_obj) or 0) if live_obj is not None else 0
    return _with_split(config, ctx, key, git_obj, weight)


def describe(
    routing: TrafficRouting,
    config: SmiRouting,
    ctx: RouterContext,
    live: Mapping[ObjectKey, Obj | None],
) -> list[RouterWeight]:
    key = split_key(config, ctx)
    current = live.get(key)
    if current is None:
        return [RouterWeight(key.label, "not created yet", None)]
    root = mapping(current.get("spec")).get("service")
    shares = _shares(current)
    rows = [RouterWeight(key.label, f"splits Service {root}", _percent(shares, ctx.canary_service))]
    for name, _share_of in shares:
        if name not in (ctx.canary_service, ctx.stable_service):
            rows.append(RouterWeight(key.label, f"experiment backend Service {name}",
                                     _percent(shares, name)))
    return rows
