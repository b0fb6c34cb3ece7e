"""Traffic routers for Argo's canary `trafficRouting`: NGINX, Istio, Gateway API and SMI.

Istio, SMI and the Gateway API plugin also give a running experiment's weighted templates
their own destinations (`RouteState.extra`, `supports_experiment_weights`), as Argo does; NGINX
cannot, and the steps parser refuses such a Rollout.

Pure: `parse_traffic_routing` reads the Rollout's config, `reads` names the live objects to
fetch, `desired` computes the whole objects to apply for a wanted `RouteState`,
`keep_live_traffic` protects the router-owned parts of Git's objects on later merges, and
`describe` tells the PR what each object holds. The shell does every read and write.
"""

from bot.rollout.routers.model import (
    ALL_CLASSES,
    GatewayApiHttpRoute,
    GatewayApiRouting,
    HeaderMatch,
    HeaderRoute,
    IstioDestinationRule,
    IstioRouting,
    IstioTcpRoute,
    IstioTlsRoute,
    IstioVirtualService,
    MirrorMatch,
    MirrorRoute,
    NginxRouting,
    Obj,
    ObjectKey,
    RouterContext,
    RouterError,
    RouterWeight,
    RouteState,
    SmiRouting,
    StringMatch,
    TrafficRouting,
    WeightDestination,
)
from bot.rollout.routers.parse import (
    parse_header_route,
    parse_mirror_route,
    parse_traffic_routing,
)
from bot.rollout.routers.routing import (
    describe,
    desired,
    keep_live_traffic,
    reads,
    supports_experiment_weights,
    supports_header_routes,
    supports_mirror_routes,
)

__all__ = [
    "ALL_CLASSES",
    "GatewayApiHttpRoute",
    "GatewayApiRouting",
    "HeaderMatch",
    "HeaderRoute",
    "IstioDestinationRule",
    "IstioRouting",
    "IstioTcpRoute",
    "IstioTlsRoute",
    "IstioVirtualService",
    "MirrorMatch",
    "MirrorRoute",
    "NginxRouting",
    "Obj",
    "ObjectKey",
    "RouteState",
    "RouterContext",
    "RouterError",
    "RouterWeight",
    "SmiRouting",
    "StringMatch",
    "TrafficRouting",
    "WeightDestination",
    "describe",
    "desired",
    "keep_live_traffic",
    "parse_header_route",
    "parse_mirror_route",
    "parse_traffic_routing",
    "reads",
    "supports_experiment_weights",
    "supports_header_routes",
    "supports_mirror_routes",
]
