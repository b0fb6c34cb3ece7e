"""The typed traffic-routing config and the values the routers exchange with the shell.

An Argo Rollout's `spec.strategy.canary.trafficRouting` becomes a `TrafficRouting` holding one
router config; steps become `HeaderRoute`s and `MirrorRoute`s; the engine says what the router
objects must carry now as a `RouteState`. Everything here is a frozen dataclass of plain values
(no dicts), so the engine's state can hold it and the JSON codec can store it: `ALL_CLASSES`
lists them for that codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

TRACK_LABEL = "coalmine.dev/track"  # the pod label of both tracks (bot.rollout.traffic's too)
INGRESS_API = "networking.k8s.io/v1"
ISTIO_API = "networking.istio.io/v1alpha3"  # Argo's default (--istio-api-version)
GATEWAY_API = "gateway.networking.k8s.io/v1"
SMI_API = "split.smi-spec.io/v1alpha1"  # Argo's default (--traffic-split-api-version)
GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"
DEFAULT_NGINX_PREFIX = "nginx.ingress.kubernetes.io"
DEFAULT_IN_PROGRESS_LABEL = "rollouts.argoproj.io/gatewayapi-canary"
DEFAULT_IN_PROGRESS_VALUE = "in-progress"


class RouterError(ValueError):
    """Live router objects that do not fit the config; the message names object and reason."""


@dataclass(frozen=True)
class ObjectKey:
    """A live object a router reads, writes or deletes."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class RouterContext:
    rollout: str  # the Rollout's name (canary Ingress names, SMI default name)
    namespace: str
    canary_service: str  # may be "" (Istio subset-level needs none)
    stable_service: str


@dataclass(frozen=True)
class StringMatch:
    """Argo's value match: exactly one of exact / regex / prefix."""

    exact: str | None = None
    regex: str | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: StringMatch


@dataclass(frozen=True)
class HeaderRoute:
    """A setHeaderRoute step; `matches == ()` removes the route."""

    name: str
    matches: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class MirrorMatch:
    """Argo's RouteMatch: method and path matches, and header matches."""

    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class MirrorRoute:
    """A setMirrorRoute step; `matches == ()` removes the route."""

    name: str
    matches: tuple[MirrorMatch, ...] = ()
    percentage: int | None = None


@dataclass(frozen=True)
class WeightDestination:
    """An extra destination beside canary and stable: an experiment template's Service with
    its traffic share (Argo's WeightDestination). `subset_labels` are the pod labels that tell
    its pods apart, which an Istio DestinationRule subset named after the Service selects (the
    place of Argo's pod-template hash). `port` is the Service port a Gateway API backendRef
    must name (the API requires one for a Service); the shell fills it from the Service it
    made, since the engine never sees the pods' ports."""

    service: str
    weight: int
    subset_labels: tuple[tuple[str, str], ...] = ()
    port: int | None = None


@dataclass(frozen=True)
class RouteState:
    """What the router objects must say now."""

    weight: int  # canary weight, 0..max_traffic_weight (100 unless set; only NGINX uses it)
    header_routes: tuple[HeaderRoute, ...] = ()  # active managed header routes, in step order
    mirror_routes: tuple[MirrorRoute, ...] = ()
    # A running experiment's weighted templates: the stable gets 100 - weight - their sum.
    extra: tuple[WeightDestination, ...] = ()


@dataclass(frozen=True)
class NginxRouting:
    stable_ingresses: tuple[str, ...]  # stableIngress or stableIngresses, one canary each
    annotation_prefix: str = DEFAULT_NGINX_PREFIX
    additional_ingress_annotations: tuple[tuple[str, str], ...] = ()  # in YAML order
    canary_ingress_annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class IstioTlsRoute:
    port: int = 0
    sni_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class IstioTcpRoute:
    port: int = 0


@dataclass(frozen=True)
class IstioVirtualService:
    name: str  # "name" or "name.namespace" as Argo allows
    routes: tuple[str, ...] = ()  # http route names; () = the VirtualService's only route
    tls_routes: tuple[IstioTlsRoute, ...] = ()
    tcp_routes: tuple[IstioTcpRoute, ...] = ()


@dataclass(frozen=True)
class IstioDestinationRule:
    name: str
    canary_subset: str
    stable_subset: str
    additional_subsets: tuple[str, ...] = ()


@dataclass(frozen=True)
class IstioRouting:
    virtual_services: tuple[IstioVirtualService, ...]
    destination_rule: IstioDestinationRule | None = None
    api_version: str = ISTIO_API


@dataclass(frozen=True)
class GatewayApiHttpRoute:
    name: str
    use_header_routes: bool = False


@dataclass(frozen=True)
class GatewayApiRouting:
    http_routes: tuple[GatewayApiHttpRoute, ...]
    namespace: str | None = None  # None: the Rollout's
    in_progress_label: str | None = DEFAULT_IN_PROGRESS_LABEL  # None: disableInProgressLabel
    in_progress_value: str = DEFAULT_IN_PROGRESS_VALUE


@dataclass(frozen=True)
class SmiRouting:
    root_service: str | None = None  # None: the stable Service
    traffic_split_name: str | None = None  # None: the Rollout's name
    api_version: str = SMI_API  # a controller flag in Argo, not a Rollout field


Router = NginxRouting | IstioRouting | GatewayApiRouting | SmiRouting

_ROUTER_NAMES: dict[type, str] = {
    NginxRouting: "nginx",
    IstioRouting: "istio",
    GatewayApiRouting: "gatewayAPI",
    SmiRouting: "smi",
}


@dataclass(frozen=True)
class TrafficRouting:
    router: Router
    managed_routes: tuple[str, ...] = ()
    max_traffic_weight: int | None = None  # Argo's maxTrafficWeight (NGINX writes it)

    @property
    def name(self) -> str:
        return _ROUTER_NAMES[type(self.router)]


@dataclass(frozen=True)
class RouterWeight:
    """What one router object holds now, for the PR comment (an experiment's destination is
    a row of its own whose `canary_weight` is that destination's share)."""

    object: str  # "VirtualService shop/web-vs", "Ingress shop/web-web-ingress-canary"
    detail: str  # "route primary", "" ...
    canary_weight: int | None  # None when the live object is missing or unreadable


ALL_CLASSES: tuple[type, ...] = (
    ObjectKey,
    RouterContext,
    StringMatch,
    HeaderMatch,
    HeaderRoute,
    MirrorMatch,
    MirrorRoute,
    WeightDestination,
    RouteState,
    NginxRouting,
    IstioTlsRoute,
    IstioTcpRoute,
    IstioVirtualService,
    IstioDestinationRule,
    IstioRouting,
    GatewayApiHttpRoute,
    GatewayApiRouting,
    SmiRouting,
    TrafficRouting,
    RouterWeight,
)
