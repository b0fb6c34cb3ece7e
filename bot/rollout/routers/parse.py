"""Reading `spec.strategy.canary.trafficRouting` and the setHeaderRoute / setMirrorRoute steps.

Argo accepts these in its CRD and its validation (pkg/apis/rollouts/validation); Coalmine
accepts the same shapes for the routers it drives (NGINX, Istio, SMI and the Gateway API
plugin), refuses every other router and every key it does not know, and enforces Argo's rules:
stableIngress or stableIngresses, virtualService or virtualServices, canaryService and
stableService where Argo requires them (and distinct), maxTrafficWeight only with NGINX or a
plugin, step route names listed in managedRoutes, exactly one of exact/regex/prefix in a value
match. Each refusal is a StrategyError naming the exact key path.
"""

from __future__ import annotations

from typing import Any

from bot.rollout.fields import At, as_list, as_mapping, as_text, as_whole, key_names, shown
from bot.rollout.routers.model import (
    DEFAULT_IN_PROGRESS_LABEL,
    DEFAULT_IN_PROGRESS_VALUE,
    DEFAULT_NGINX_PREFIX,
    GATEWAY_PLUGIN,
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
    Router,
    SmiRouting,
    StringMatch,
    TrafficRouting,
)

SUPPORTED = f'nginx, istio, smi, plugins."{GATEWAY_PLUGIN}" (Gateway API)'
_ROUTERS = ("nginx", "istio", "smi", "plugins")
_UNSUPPORTED = ("alb", "ambassador", "appMesh", "traefik", "apisix")
_ROUTING_KEYS = (*_ROUTERS, "managedRoutes", "maxTrafficWeight")


def parse_traffic_routing(
    raw: Any, at: At, *, canary_service: str | None, stable_service: str | None
) -> TrafficRouting:
    """The `trafficRouting` mapping at `at` (e.g. spec.strategy.canary.trafficRouting)."""
    raw = as_mapping(raw, at, f"a mapping with one router ({SUPPORTED})")
    for name in _UNSUPPORTED:
        if name in raw:
            at.key(name).fail(f"Coalmine does not drive {name} traffic routing "
                              f"(supported: {SUPPORTED})")
    _refuse_unknown(raw, at, _ROUTING_KEYS)
    present = [name for name in _ROUTERS if raw.get(name) is not None]
    if not present:
        at.fail(f"needs a router: one of {SUPPORTED}")
    if len(present) > 1:
        at.fail(f"several routers ({', '.join(present)}): Argo drives each in turn, Coalmine "
                "drives one per Rollout; keep one")
    name = present[0]
    router = _ROUTER_PARSERS[name](raw[name], at.key(name))
    _check_services(router, at, canary_service, stable_service)
    max_weight = None
    if raw.get("maxTrafficWeight") is not None:
        max_at = at.key("maxTrafficWeight")
        if not isinstance(router, NginxRouting | GatewayApiRouting):
            max_at.fail("is supported only with nginx and plugins (Argo's rule)")
        max_weight = as_whole(raw["maxTrafficWeight"], max_at, 1)
        if isinstance(router, GatewayApiRouting) and max_weight != 100:
            max_at.fail(f"{max_weight}: the Gateway API plugin always splits out of 100 (it "
                        "would write wrong or negative weights); remove it")
    managed = _managed_routes(raw.get("managedRoutes"), at.key("managedRoutes"))
    if isinstance(router, IstioRouting):
        weighted = {route for vs in router.virtual_services for route in vs.routes}
        for i, name in enumerate(managed):
            if name in weighted:
                at.key("managedRoutes").index(i).key("name").fail(
                    f"'{name}' is also a weighted route in istio virtualService routes; managed "
                    "routes are made and removed by the rollout, so give it another name")
    return TrafficRouting(router=router, managed_routes=managed, max_traffic_weight=max_weight)


def _check_services(
    router: Router, at: At, canary_service: str | None, stable_service: str | None
) -> None:
    """Argo requires both Services for NGINX, SMI and host-level Istio; the Gateway API
    plugin finds its backendRefs by their names, so it needs them too."""
    canary_at = _sibling(at, "canaryService")
    if canary_service and canary_service == stable_service:
        _sibling(at, "stableService").fail(
            f"'{stable_service}' is also the canaryService; the canary and stable Services "
            "must differ")
    if isinstance(router, IstioRouting) and router.destination_rule is not None:
        return
    why = {
        NginxRouting: "nginx traffic routing",
        SmiRouting: "smi traffic routing",
        IstioRouting: "istio traffic routing without a destinationRule",
        GatewayApiRouting: "the Gateway API plugin (it finds backendRefs by these names)",
    }[type(router)]
    for service, service_at in ((canary_service, canary_at),
                                (stable_service, _sibling(at, "stableService"))):
        if not service:
            service_at.fail(f"is required with {why}")


def _sibling(at: At, name: str) -> At:
    parent, _, _ = at.path.rpartition(".")
    return At(at.file, f"{parent}.{name}" if parent else name)


def _managed_routes(raw: Any, at: At) -> tuple[str, ...]:
    if raw is None:
        return ()
    names: list[str] = []
    for i, item in enumerate(as_list(raw, at, "a list of {name: ...}")):
        item_at = at.index(i)
        item = as_mapping(item, item_at, "a mapping with name")
        _refuse_unknown(item, item_at, ("name",))
        name = as_text(item.get("name"), item_at.key("name"))
        if name in names:
            item_at.key("name").fail(f"'{name}' is listed twice")
        names.append(name)
    return tuple(names)


# ----------------------------------------------------------------------------------- routers


def _nginx(raw: Any, at: At) -> NginxRouting:
    raw = as_mapping(raw, at, "a mapping with stableIngress or stableIngresses")
    _refuse_unknown(raw, at, ("annotationPrefix", "stableIngress", "stableIngresses",
                              "additionalIngressAnnotations", "canaryIngressAnnotations"))
    single, plural = raw.get("stableIngress"), raw.get("stableIngresses")
    if single is not None and plural is not None:
        at.key("stableIngresses").fail("give stableIngress or stableIngresses, not both")
    if single is None and plural is None:
        at.key("stableIngress").fail("is required (or stableIngresses)")
    if single is not None:
        ingresses = (as_text(single, at.key("stableIngress")),)
    else:
        ingresses = _texts(plural, at.key("stableIngresses"))
    prefix = DEFAULT_NGINX_PREFIX
    if raw.get("annotationPrefix") is not None:
        prefix = as_text(raw["annotationPrefix"], at.key("annotationPrefix"))
    return NginxRouting(
        stable_ingresses=ingresses,
        annotation_prefix=prefix,
        additional_ingress_annotations=_annotations(
            raw.get("additionalIngressAnnotations"), at.key("additionalIngressAnnotations")),
        canary_ingress_annotations=_annotations(
            raw.get("canaryIngressAnnotations"), at.key("canaryIngressAnnotations")),
    )


def _annotations(raw: Any, at: At) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    out = []
    for name, value in as_mapping(raw, at).items():
        if not isinstance(value, str):
            at.key(str(name)).fail(f"must be a string (quote it), got {shown(value)}")
        out.append((str(name), value))
    return tuple(out)


def _istio(raw: Any, at: At) -> IstioRouting:
    raw = as_mapping(raw, at, "a mapping with virtualService(s)")
    _refuse_unknown(raw, at, ("virtualService", "virtualServices", "destinationRule"))
    single, plural = raw.get("virtualService"), raw.get("virtualServices")
    if single is not None and plural is not None:
        at.key("virtualServices").fail("give virtualService or virtualServices, not both")
    if single is None and plural is None:
        at.key("virtualService").fail("is required (or virtualServices)")
    if single is not None:
        services: tuple[IstioVirtualService, ...] = (
            _virtual_service(single, at.key("virtualService")),)
    else:
        plural_at = at.key("virtualServices")
        services = tuple(_virtual_service(item, plural_at.index(i))
                         for i, item in enumerate(as_list(plural, plural_at)))
        if not services:
            plural_at.fail("must list at least one VirtualService")
    rule = None
    if raw.get("destinationRule") is not None:
        rule = _destination_rule(raw["destinationRule"], at.key("destinationRule"))
    return IstioRouting(virtual_services=services, destination_rule=rule)


def _virtual_service(raw: Any, at: At) -> IstioVirtualService:
    raw = as_mapping(raw, at, "a mapping with name and routes")
    _refuse_unknown(raw, at, ("name", "routes", "tlsRoutes", "tcpRoutes"))
    tls_at, tcp_at = at.key("tlsRoutes"), at.key("tcpRoutes")
    tls = []
    for i, item in enumerate(as_list(raw.get("tlsRoutes") or [], tls_at)):
        item_at = tls_at.index(i)
        item = as_mapping(item, item_at, "a mapping with port and sniHosts")
        _refuse_unknown(item, item_at, ("port", "sniHosts"))
        tls.append(IstioTlsRoute(port=_port(item.get("port"), item_at.key("port")),
                                 sni_hosts=_texts(item.get("sniHosts") or [],
                                                  item_at.key("sniHosts"))))
    tcp = []
    for i, item in enumerate(as_list(raw.get("tcpRoutes") or [], tcp_at)):
        item_at = tcp_at.index(i)
        item = as_mapping(item, item_at, "a mapping with port")
        _refuse_unknown(item, item_at, ("port",))
        tcp.append(IstioTcpRoute(port=_port(item.get("port"), item_at.key("port"))))
    return IstioVirtualService(
        name=as_text(raw.get("name"), at.key("name")),
        routes=_texts(raw.get("routes") or [], at.key("routes")),
        tls_routes=tuple(tls),
        tcp_routes=tuple(tcp),
    )


def _port(raw: Any, at: At) -> int:
    return 0 if raw is None else as_whole(raw, at, 0, 65535)


def _destination_rule(raw: Any, at: At) -> IstioDestinationRule:
    raw = as_mapping(raw, at, "a mapping with name, canarySubsetName and stableSubsetName")
    _refuse_unknown(raw, at, ("name", "canarySubsetName", "stableSubsetName",
                              "additionalSubsetNames"))
    canary = as_text(raw.get("canarySubsetName"), at.key("canarySubsetName"))
    stable = as_text(raw.get("stableSubsetName"), at.key("stableSubsetName"))
    if canary == stable:
        at.key("stableSubsetName").fail(f"'{stable}' is also the canarySubsetName; they must "
                                        "differ")
    return IstioDestinationRule(
        name=as_text(raw.get("name"), at.key("name")),
        canary_subset=canary,
        stable_subset=stable,
        additional_subsets=_texts(raw.get("additionalSubsetNames") or [],
                                  at.key("additionalSubsetNames")),
    )


def _smi(raw: Any, at: At) -> SmiRouting:
    raw = as_mapping(raw or {}, at)
    _refuse_unknown(raw, at, ("rootService", "trafficSplitName"))
    return SmiRouting(
        root_service=_optional_text(raw, "rootService", at),
        traffic_split_name=_optional_text(raw, "trafficSplitName", at),
    )


def _plugins(raw: Any, at: At) -> GatewayApiRouting:
    raw = as_mapping(raw, at, f'a mapping with "{GATEWAY_PLUGIN}"')
    for name in key_names(raw):
        if name != GATEWAY_PLUGIN:
            at.key(name).fail(f"Coalmine drives no traffic router plugin but "
                              f'"{GATEWAY_PLUGIN}" (supported: {SUPPORTED})')
    if GATEWAY_PLUGIN not in raw:
        at.fail(f'needs "{GATEWAY_PLUGIN}"')
    return _gateway_api(raw[GATEWAY_PLUGIN], at.key(GATEWAY_PLUGIN))


_GATEWAY_REFUSED = {
    "grpcRoute": "GRPCRoutes are not driven by Coalmine yet; use HTTPRoutes",
    "grpcRoutes": "GRPCRoutes are not driven by Coalmine yet; use HTTPRoutes",
    "tcpRoute": "TCPRoutes are not driven by Coalmine yet; use HTTPRoutes",
    "tcpRoutes": "TCPRoutes are not driven by Coalmine yet; use HTTPRoutes",
    "tlsRoute": "TLSRoutes are not driven by Coalmine yet; use HTTPRoutes",
    "tlsRoutes": "TLSRoutes are not driven by Coalmine yet; use HTTPRoutes",
    **{f"{kind}RouteSelector": "routes chosen by label selector are not supported; name them "
       "in httpRoute or httpRoutes" for kind in ("http", "grpc", "tcp", "tls")},
}
_GATEWAY_KEYS = ("httpRoute", "httpRoutes", "namespace", "disableInProgressLabel",
                 "inProgressLabelKey", "inProgressLabelValue")


def _gateway_api(raw: Any, at: At) -> GatewayApiRouting:
    raw = as_mapping(raw, at, "a mapping with httpRoute or httpRoutes")
    for name, reason in _GATEWAY_REFUSED.items():
        if name in raw:
            at.key(name).fail(reason)
    _refuse_unknown(raw, at, _GATEWAY_KEYS)
    routes: list[GatewayApiHttpRoute] = []
    plural_at = at.key("httpRoutes")
    for i, item in enumerate(as_list(raw.get("httpRoutes") or [], plural_at)):
        item_at = plural_at.index(i)
        item = as_mapping(item, item_at, "a mapping with name")
        _refuse_unknown(item, item_at, ("name", "useHeaderRoutes"))
        routes.append(GatewayApiHttpRoute(
            name=as_text(item.get("name"), item_at.key("name")),
            use_header_routes=_flag(item.get("useHeaderRoutes"), item_at.key("useHeaderRoutes")),
        ))
    single = _optional_text(raw, "httpRoute", at)
    if single is not None:  # the plugin appends it, with header routes on
        routes.append(GatewayApiHttpRoute(name=single, use_header_routes=True))
    if not routes:
        at.key("httpRoute").fail("is required (or httpRoutes)")
    disabled = _flag(raw.get("disableInProgressLabel"), at.key("disableInProgressLabel"))
    return GatewayApiRouting(
        http_routes=tuple(routes),
        namespace=_optional_text(raw, "namespace", at),
        in_progress_label=None if disabled else (
            _optional_text(raw, "inProgressLabelKey", at) or DEFAULT_IN_PROGRESS_LABEL),
        in_progress_value=(_optional_text(raw, "inProgressLabelValue", at)
                           or DEFAULT_IN_PROGRESS_VALUE),
    )


_ROUTER_PARSERS = {"nginx": _nginx, "istio": _istio, "smi": _smi, "plugins": _plugins}


# ------------------------------------------------------------------------------------- steps


def parse_header_route(raw: Any, at: At, managed_routes: tuple[str, ...]) -> HeaderRoute:
    """The value of a setHeaderRoute step; no `match` (or an empty one) removes the route."""
    raw = as_mapping(raw, at, "a mapping with name and match")
    _refuse_unknown(raw, at, ("name", "match"))
    name = _route_name(raw, at, managed_routes)
    match_at = at.key("match")
    matches = []
    for i, item in enumerate(as_list(raw.get("match") or [], match_at)):
        item_at = match_at.index(i)
        item = as_mapping(item, item_at, "a mapping with headerName and headerValue")
        _refuse_unknown(item, item_at, ("headerName", "headerValue"))
        matches.append(HeaderMatch(
            name=as_text(item.get("headerName"), item_at.key("headerName")),
            value=_string_match(item.get("headerValue"), item_at.key("headerValue")),
        ))
    return HeaderRoute(name=name, matches=tuple(matches))


def parse_mirror_route(raw: Any, at: At, managed_routes: tuple[str, ...]) -> MirrorRoute:
    """The value of a setMirrorRoute step; no `match` (or an empty one) removes the route."""
    raw = as_mapping(raw, at, "a mapping with name, match and percentage")
    _refuse_unknown(raw, at, ("name", "match", "percentage"))
    name = _route_name(raw, at, managed_routes)
    match_at = at.key("match")
    matches = []
    for i, item in enumerate(as_list(raw.get("match") or [], match_at)):
        item_at = match_at.index(i)
        item = as_mapping(item, item_at, "a mapping with method, path and headers")
        _refuse_unknown(item, item_at, ("method", "path", "headers"))
        headers_at = item_at.key("headers")
        headers = tuple(
            HeaderMatch(name=str(header), value=_string_match(value, headers_at.key(str(header))))
            for header, value in as_mapping(item.get("headers") or {}, headers_at).items()
        )
        matches.append(MirrorMatch(
            method=_optional_match(item, "method", item_at),
            path=_optional_match(item, "path", item_at),
            headers=headers,
        ))
    percentage = None
    if raw.get("percentage") is not None:
        percentage = as_whole(raw["percentage"], at.key("percentage"), 0, 100)
    return MirrorRoute(name=name, matches=tuple(matches), percentage=percentage)


def _route_name(raw: dict[str, Any], at: At, managed_routes: tuple[str, ...]) -> str:
    name = as_text(raw.get("name"), at.key("name"))
    if name not in managed_routes:
        listed = ", ".join(managed_routes) or "none"
        at.key("name").fail(f"'{name}' must be listed in trafficRouting.managedRoutes "
                            f"(listed: {listed})")
    return name


def _optional_match(raw: dict[str, Any], key: str, at: At) -> StringMatch | None:
    return None if raw.get(key) is None else _string_match(raw[key], at.key(key))


def _string_match(raw: Any, at: At) -> StringMatch:
    raw = as_mapping(raw, at, "a mapping with one of exact, regex, prefix")
    _refuse_unknown(raw, at, ("exact", "regex", "prefix"))
    given = {kind: as_text(raw[kind], at.key(kind)) for kind in ("exact", "regex", "prefix")
             if raw.get(kind) not in (None, "")}
    if len(given) != 1:
        at.fail(f"needs exactly one of exact, regex, prefix (found: "
                f"{', '.join(given) or 'none'})")
    return StringMatch(**given)


# ----------------------------------------------------------------------------------- helpers


def _refuse_unknown(raw: dict[str, Any], at: At, allowed: tuple[str, ...]) -> None:
    unknown = [name for name in key_names(raw) if name not in allowed]
    if unknown:
        at.key(unknown[0]).fail(f"unknown key (allowed: {', '.join(allowed)})")


def _texts(raw: Any, at: At) -> tuple[str, ...]:
    return tuple(as_text(item, at.index(i)) for i, item in enumerate(as_list(raw, at)))


def _optional_text(raw: dict[str, Any], key: str, at: At) -> str | None:
    return None if raw.get(key) is None else as_text(raw[key], at.key(key))


def _flag(raw: Any, at: At) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        at.fail(f"must be true or false, got {shown(raw)}")
    return raw
