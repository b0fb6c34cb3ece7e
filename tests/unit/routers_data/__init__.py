"""What every router test shares: the Rollout's context and a reader of trafficRouting YAML."""

from __future__ import annotations

import yaml

from bot.rollout.fields import At
from bot.rollout.routers import RouterContext, TrafficRouting, parse_traffic_routing

CTX = RouterContext(rollout="web", namespace="shop", canary_service="web-canary",
                    stable_service="web-stable")
AT = At("deploy/web/rollout.yaml", "spec.strategy.canary.trafficRouting")


def routing(text: str, ctx: RouterContext = CTX) -> TrafficRouting:
    """The TrafficRouting of a trafficRouting mapping written in YAML."""
    return parse_traffic_routing(yaml.safe_load(text), AT,
                                 canary_service=ctx.canary_service or None,
                                 stable_service=ctx.stable_service or None)
