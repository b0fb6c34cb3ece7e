"""Reading trafficRouting and the header/mirror route steps: every shape Argo accepts for the
routers Coalmine drives, and every refusal naming its exact key path."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from bot.rollout.fields import At, StrategyError
from bot.rollout.routers import (
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
    SmiRouting,
    StringMatch,
    TrafficRouting,
    parse_header_route,
    parse_mirror_route,
    parse_traffic_routing,
    supports_header_routes,
    supports_mirror_routes,
)
from tests.unit.routers_data import AT

STEP = At("deploy/web/rollout.yaml", "spec.strategy.canary.steps[1].setHeaderRoute")
MIRROR = At("deploy/web/rollout.yaml", "spec.strategy.canary.steps[2].setMirrorRoute")
SERVICES = {"canary_service": "web-canary", "stable_service": "web-stable"}


def parse(text: str, **services: str | None) -> TrafficRouting:
    return parse_traffic_routing(yaml.safe_load(text), AT, **{**SERVICES, **services})


def refusal(text: str, **services: str | None) -> tuple[str, str]:
    with pytest.raises(StrategyError) as caught:
        parse(text, **services)
    return caught.value.key_path, caught.value.reason


# ----------------------------------------------------------------------------- accepted shapes

ACCEPTED = [
    (
        "nginx, one stable Ingress, defaults",
        "nginx: {stableIngress: web-ingress}",
        TrafficRouting(NginxRouting(stable_ingresses=("web-ingress",))),
    ),
    (
        "nginx, several Ingresses, prefix, annotations in YAML order, max weight",
        """
        nginx:
          stableIngresses: [web-public, web-internal]
          annotationPrefix: custom.nginx.io
          additionalIngressAnnotations: {canary-by-header: X-Canary, canary-by-header-value: "yes"}
          canaryIngressAnnotations: {my-org/team: payments}
        maxTrafficWeight: 1000
        """,
        TrafficRouting(
            NginxRouting(
                stable_ingresses=("web-public", "web-internal"),
                annotation_prefix="custom.nginx.io",
                additional_ingress_annotations=(("canary-by-header", "X-Canary"),
                                                ("canary-by-header-value", "yes")),
                canary_ingress_annotations=(("my-org/team", "payments"),),
            ),
            max_traffic_weight=1000,
        ),
    ),
    (
        "istio host-level, one VirtualService with named routes, managed routes",
        """
        managedRoutes: [{name: set-header}, {name: mirror-route}]
        istio:
          virtualService: {name: web-vsvc, routes: [primary, secondary]}
        """,
        TrafficRouting(
            IstioRouting((IstioVirtualService("web-vsvc", routes=("primary", "secondary")),)),
            managed_routes=("set-header", "mirror-route"),
        ),
    ),
    (
        "istio subset-level, several VirtualServices with tls and tcp routes",
        """
        istio:
          virtualServices:
          - name: web-vsvc.shop
            tlsRoutes: [{port: 443, sniHosts: [web.example.com]}]
          - name: web-tcp
            tcpRoutes: [{port: 3306}]
          destinationRule:
            name: web-destrule
            canarySubsetName: canary
            stableSubsetName: stable
            additionalSubsetNames: [legacy]
        """,
        TrafficRouting(
            IstioRouting(
                (
                    IstioVirtualService(
                        "web-vsvc.shop", tls_routes=(IstioTlsRoute(443, ("web.example.com",)),)
                    ),
                    IstioVirtualService("web-tcp", tcp_routes=(IstioTcpRoute(3306),)),
                ),
                IstioDestinationRule("web-destrule", "canary", "stable", ("legacy",)),
            )
        ),
    ),
    (
        "smi with defaults",
        "smi: {}",
        TrafficRouting(SmiRouting()),
    ),
    (
        "smi naming the split and the root Service",
        "smi: {rootService: web, trafficSplitName: web-split}",
        TrafficRouting(SmiRouting(root_service="web", traffic_split_name="web-split")),
    ),
    (
        "gateway API, httpRoute (header routes on) appended after httpRoutes",
        """
        plugins:
          argoproj-labs/gatewayAPI:
            httpRoutes: [{name: web-a, useHeaderRoutes: false}, {name: web-b}]
            httpRoute: web-main
            namespace: gateways
        maxTrafficWeight: 100
        """,
        TrafficRouting(
            GatewayApiRouting(
                (GatewayApiHttpRoute("web-a"), GatewayApiHttpRoute("web-b"),
                 GatewayApiHttpRoute("web-main", use_header_routes=True)),
                namespace="gateways",
            ),
            max_traffic_weight=100,
        ),
    ),
    (
        "gateway API, in-progress label renamed",
        """
        plugins:
          argoproj-labs/gatewayAPI:
            httpRoute: web
            inProgressLabelKey: example.com/canary
            inProgressLabelValue: "on"
        """,
        TrafficRouting(GatewayApiRouting((GatewayApiHttpRoute("web", True),),
                                         in_progress_label="example.com/canary",
                                         in_progress_value="on")),
    ),
    (
        "gateway API, in-progress label off",
        """
        plugins:
          argoproj-labs/gatewayAPI: {httpRoute: web, disableInProgressLabel: true}
        """,
        TrafficRouting(GatewayApiRouting((GatewayApiHttpRoute("web", True),),
                                         in_progress_label=None)),
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_accepted_shapes(text, expected):
    assert parse(text) == expected


def test_istio_subset_level_needs_no_services():
    routing = parse(
        "istio: {virtualService: {name: vs}, destinationRule: "
        "{name: dr, canarySubsetName: c, stableSubsetName: s}}",
        canary_service=None, stable_service=None,
    )
    assert routing.name == "istio"


def test_router_names():
    assert [parse(t).name for t in ("nginx: {stableIngress: i}", ("istio: {virtualService: "
            "{name: v}}"), "smi: {}", "plugins: {argoproj-labs/gatewayAPI: {httpRoute: r}}")] == [
        "nginx", "istio", "smi", "gatewayAPI"]


def test_which_routers_carry_header_and_mirror_routes():
    istio = parse("istio: {virtualService: {name: v}}")
    header_route = parse("plugins: {argoproj-labs/gatewayAPI: {httpRoute: r}}")
    no_header_route = parse("plugins: {argoproj-labs/gatewayAPI: {httpRoutes: [{name: r}]}}")
    nginx = parse("nginx: {stableIngress: i}")
    smi = parse("smi: {}")
    assert [supports_header_routes(r) for r in (istio, header_route, no_header_route, nginx, smi)
            ] == [True, True, False, False, False]
    assert [supports_mirror_routes(r) for r in (istio, header_route, nginx, smi)] == [
        True, False, False, False]


def test_every_value_class_is_frozen_and_listed_for_the_codec():
    for cls in ALL_CLASSES:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
    assert len({cls.__name__ for cls in ALL_CLASSES}) == len(ALL_CLASSES)
    assert {TrafficRouting, IstioRouting, HeaderRoute, MirrorMatch, StringMatch} <= set(ALL_CLASSES)


# ---------------------------------------------------------------------------------- refusals

P = "spec.strategy.canary.trafficRouting"
REFUSED = [
    ("not a mapping", "[nginx]", {}, P, "must be a mapping"),
    ("no router", "managedRoutes: [{name: a}]", {}, P, "needs a router"),
    ("alb", "alb: {ingress: web}", {}, f"{P}.alb", "does not drive alb"),
    ("traefik", "traefik: {weightedTraefikServiceName: w}", {}, f"{P}.traefik", "supported: nginx"),
    ("appMesh", "appMesh: {}", {}, f"{P}.appMesh", "does not drive appMesh"),
    ("ambassador", "ambassador: {mappings: [m]}", {}, f"{P}.ambassador", "does not drive"),
    ("apisix", "apisix: {route: {name: r}}", {}, f"{P}.apisix", "does not drive"),
    ("unknown key", "nginx: {stableIngress: i}\nweights: 3", {}, f"{P}.weights", "unknown key"),
    ("other plugin", "plugins: {acme/router: {}}", {}, f"{P}.plugins.acme/router",
     "drives no traffic router plugin"),
    ("several routers", "nginx: {stableIngress: i}\nistio: {virtualService: {name: v}}", {}, P,
     "several routers (nginx, istio)"),
    ("max weight on istio", "istio: {virtualService: {name: v}}\nmaxTrafficWeight: 1000", {},
     f"{P}.maxTrafficWeight", "only with nginx and plugins"),
    ("max weight zero", "nginx: {stableIngress: i}\nmaxTrafficWeight: 0", {},
     f"{P}.maxTrafficWeight", "must be >= 1"),
    ("max weight on the Gateway API", ("plugins: {argoproj-labs/gatewayAPI: {httpRoute: r}}\n"
     "maxTrafficWeight: 1000"), {}, f"{P}.maxTrafficWeight", "always splits out of 100"),
    ("managed routes not a list", "istio: {virtualService: {name: v}}\nmanagedRoutes: a", {},
     f"{P}.managedRoutes", "must be a list"),
    ("managed route without name", "istio: {virtualService: {name: v}}\nmanagedRoutes: [{}]",
     {}, f"{P}.managedRoutes[0].name", "non-empty string"),
    ("managed route extra key",
     "istio: {virtualService: {name: v}}\nmanagedRoutes: [{name: a, weight: 3}]",
     {}, f"{P}.managedRoutes[0].weight", "unknown key"),
    ("managed route twice",
     "istio: {virtualService: {name: v}}\nmanagedRoutes: [{name: a}, {name: a}]",
     {}, f"{P}.managedRoutes[1].name", "listed twice"),
    ("managed route also weighted",
     ("istio: {virtualServices: [{name: v, routes: [primary, api]}]}\n"
     "managedRoutes: [{name: header}, {name: api}]"),
     {}, f"{P}.managedRoutes[1].name", "also a weighted route"),
    ("nginx both ingress keys", "nginx: {stableIngress: a, stableIngresses: [b]}", {},
     f"{P}.nginx.stableIngresses", "not both"),
    ("nginx no ingress", "nginx: {annotationPrefix: x}", {}, f"{P}.nginx.stableIngress",
     "is required"),
    ("nginx ingress list item", "nginx: {stableIngresses: [a, 3]}", {},
     f"{P}.nginx.stableIngresses[1]", "non-empty string"),
    ("nginx unquoted annotation", "nginx: {stableIngress: a, canaryIngressAnnotations: {x: 1}}",
     {}, f"{P}.nginx.canaryIngressAnnotations.x", "must be a string"),
    ("nginx unknown key", "nginx: {stableIngress: a, ingressClass: b}", {},
     f"{P}.nginx.ingressClass", "unknown key"),
    ("nginx without canaryService", "nginx: {stableIngress: a}", {"canary_service": None},
     "spec.strategy.canary.canaryService", "required with nginx"),
    ("smi without stableService", "smi: {}", {"stable_service": ""},
     "spec.strategy.canary.stableService", "required with smi"),
    ("host-level istio without canaryService", "istio: {virtualService: {name: v}}",
     {"canary_service": None}, "spec.strategy.canary.canaryService", "without a destinationRule"),
    ("gateway API without stableService", "plugins: {argoproj-labs/gatewayAPI: {httpRoute: r}}",
     {"stable_service": None}, "spec.strategy.canary.stableService", "Gateway API plugin"),
    ("same canary and stable", "smi: {}", {"canary_service": "web", "stable_service": "web"},
     "spec.strategy.canary.stableService", "must differ"),
    ("istio both VirtualService keys",
     "istio: {virtualService: {name: a}, virtualServices: [{name: b}]}", {},
     f"{P}.istio.virtualServices", "not both"),
    ("istio no VirtualService", "istio: {destinationRule: {name: d}}", {},
     f"{P}.istio.virtualService", "is required"),
    ("istio empty VirtualService list", "istio: {virtualServices: []}", {},
     f"{P}.istio.virtualServices", "at least one"),
    ("istio VirtualService without name", "istio: {virtualServices: [{routes: [a]}]}", {},
     f"{P}.istio.virtualServices[0].name", "non-empty string"),
    ("istio routes not names", "istio: {virtualService: {name: v, routes: [{name: a}]}}", {},
     f"{P}.istio.virtualService.routes[0]", "non-empty string"),
    ("istio tls port", "istio: {virtualService: {name: v, tlsRoutes: [{port: https}]}}", {},
     f"{P}.istio.virtualService.tlsRoutes[0].port", "not a whole number"),
    ("istio tcp extra key", "istio: {virtualService: {name: v, tcpRoutes: [{port: 1, sni: a}]}}",
     {}, f"{P}.istio.virtualService.tcpRoutes[0].sni", "unknown key"),
    ("istio destinationRule without stable subset",
     "istio: {virtualService: {name: v}, destinationRule: {name: d, canarySubsetName: c}}", {},
     f"{P}.istio.destinationRule.stableSubsetName", "non-empty string"),
    ("istio destinationRule same subsets",
     ("istio: {virtualService: {name: v}, destinationRule: "
     "{name: d, canarySubsetName: c, stableSubsetName: c}}"), {},
     f"{P}.istio.destinationRule.stableSubsetName", "must differ"),
    ("smi unknown key", "smi: {rootService: a, namespace: b}", {}, f"{P}.smi.namespace",
     "unknown key"),
    ("gateway API no route", "plugins: {argoproj-labs/gatewayAPI: {namespace: n}}", {},
     f"{P}.plugins.argoproj-labs/gatewayAPI.httpRoute", "is required"),
    ("gateway API grpc", "plugins: {argoproj-labs/gatewayAPI: {grpcRoute: g}}", {},
     f"{P}.plugins.argoproj-labs/gatewayAPI.grpcRoute", "GRPCRoutes are not driven"),
    ("gateway API selector",
     "plugins: {argoproj-labs/gatewayAPI: {httpRouteSelector: {matchLabels: {a: b}}}}", {},
     f"{P}.plugins.argoproj-labs/gatewayAPI.httpRouteSelector", "label selector"),
    ("gateway API route flag",
     "plugins: {argoproj-labs/gatewayAPI: {httpRoutes: [{name: r, useHeaderRoutes: 'yes'}]}}",
     {}, f"{P}.plugins.argoproj-labs/gatewayAPI.httpRoutes[0].useHeaderRoutes", "true or false"),
    ("gateway API unknown key",
     "plugins: {argoproj-labs/gatewayAPI: {httpRoute: r, gateway: g}}", {},
     f"{P}.plugins.argoproj-labs/gatewayAPI.gateway", "unknown key"),
]


@pytest.mark.parametrize(("text", "services", "path", "reason"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refusals_name_the_key(text, services, path, reason):
    got_path, got_reason = refusal(text, **services)
    assert (got_path, reason in got_reason) == (path, True), got_reason


def test_unsupported_router_refusal_lists_the_supported_ones():
    _, reason = refusal("alb: {ingress: web}")
    assert 'nginx, istio, smi, plugins."argoproj-labs/gatewayAPI"' in reason


# ------------------------------------------------------------------------------------- steps

MANAGED = ("header-route", "mirror-route")


def test_header_route_with_every_value_kind():
    raw = yaml.safe_load("""
        name: header-route
        match:
        - {headerName: X-Canary, headerValue: {exact: "yes"}}
        - {headerName: User-Agent, headerValue: {regex: ".*Android.*"}}
        - {headerName: X-Team, headerValue: {prefix: pay}}
    """)
    assert parse_header_route(raw, STEP, MANAGED) == HeaderRoute("header-route", (
        HeaderMatch("X-Canary", StringMatch(exact="yes")),
        HeaderMatch("User-Agent", StringMatch(regex=".*Android.*")),
        HeaderMatch("X-Team", StringMatch(prefix="pay")),
    ))


@pytest.mark.parametrize("raw", [{"name": "header-route"}, {"name": "header-route", "match": []}])
def test_header_route_without_matches_removes_the_route(raw):
    assert parse_header_route(raw, STEP, MANAGED) == HeaderRoute("header-route", ())


def test_mirror_route_with_method_path_headers_and_percentage():
    raw = yaml.safe_load("""
        name: mirror-route
        percentage: 35
        match:
        - method: {exact: GET}
          path: {prefix: /api}
        - headers: {X-Debug: {exact: "1"}, X-Env: {regex: "stag.*"}}
    """)
    assert parse_mirror_route(raw, MIRROR, MANAGED) == MirrorRoute("mirror-route", (
        MirrorMatch(method=StringMatch(exact="GET"), path=StringMatch(prefix="/api")),
        MirrorMatch(headers=(HeaderMatch("X-Debug", StringMatch(exact="1")),
                             HeaderMatch("X-Env", StringMatch(regex="stag.*")))),
    ), percentage=35)


def test_mirror_route_without_matches_removes_the_route():
    assert parse_mirror_route({"name": "mirror-route"}, MIRROR, MANAGED) == MirrorRoute(
        "mirror-route")


H = "spec.strategy.canary.steps[1].setHeaderRoute"
M = "spec.strategy.canary.steps[2].setMirrorRoute"
STEP_REFUSED = [
    ("header name not managed", parse_header_route, STEP, {"name": "other"}, f"{H}.name",
     "must be listed in trafficRouting.managedRoutes (listed: header-route, mirror-route)"),
    ("header without name", parse_header_route, STEP, {"match": []}, f"{H}.name",
     "non-empty string"),
    ("header unknown key", parse_header_route, STEP, {"name": "header-route", "weight": 1},
     f"{H}.weight", "unknown key"),
    ("header two value kinds", parse_header_route, STEP,
     {"name": "header-route", "match": [{"headerName": "a",
                                         "headerValue": {"exact": "x", "prefix": "y"}}]},
     f"{H}.match[0].headerValue", "exactly one of exact, regex, prefix (found: exact, prefix)"),
    ("header no value", parse_header_route, STEP,
     {"name": "header-route", "match": [{"headerName": "a", "headerValue": {"exact": ""}}]},
     f"{H}.match[0].headerValue", "(found: none)"),
    ("header missing headerValue", parse_header_route, STEP,
     {"name": "header-route", "match": [{"headerName": "a"}]},
     f"{H}.match[0].headerValue", "must be a mapping"),
    ("header missing headerName", parse_header_route, STEP,
     {"name": "header-route", "match": [{"headerValue": {"exact": "1"}}]},
     f"{H}.match[0].headerName", "non-empty string"),
    ("mirror name not managed", parse_mirror_route, MIRROR, {"name": "x"}, f"{M}.name",
     "must be listed in trafficRouting.managedRoutes"),
    ("mirror percentage above 100", parse_mirror_route, MIRROR,
     {"name": "mirror-route", "percentage": 120}, f"{M}.percentage", "must be <= 100"),
    ("mirror bad method", parse_mirror_route, MIRROR,
     {"name": "mirror-route", "match": [{"method": {"exact": "GET", "regex": "P.*"}}]},
     f"{M}.match[0].method", "exactly one"),
    ("mirror bad header", parse_mirror_route, MIRROR,
     {"name": "mirror-route", "match": [{"headers": {"X-A": {"suffix": "a"}}}]},
     f"{M}.match[0].headers.X-A.suffix", "unknown key"),
    ("mirror unknown match key", parse_mirror_route, MIRROR,
     {"name": "mirror-route", "match": [{"uri": {"exact": "/"}}]},
     f"{M}.match[0].uri", "unknown key"),
]


@pytest.mark.parametrize(("parser", "at", "raw", "path", "reason"), [c[1:] for c in STEP_REFUSED],
                         ids=[c[0] for c in STEP_REFUSED])
def test_step_refusals_name_the_key(parser, at, raw, path, reason):
    with pytest.raises(StrategyError) as caught:
        parser(raw, at, MANAGED)
    assert (caught.value.key_path, reason in caught.value.reason) == (path, True), (
        caught.value.reason)


def test_step_route_with_no_managed_routes_says_none_are_listed():
    with pytest.raises(StrategyError) as caught:
        parse_header_route({"name": "a"}, STEP, ())
    assert "(listed: none)" in caught.value.reason


def test_configs_and_states_hold_only_codec_safe_values_and_survive_a_round_trip():
    """The engine's JSON codec stores dataclasses by class name, tuples as lists, plain values
    as they are, and no dicts: a populated config and state come back equal."""
    names = {cls.__name__: cls for cls in ALL_CLASSES}

    def encode(value):
        if dataclasses.is_dataclass(value):
            return {"__type__": type(value).__name__, **{
                f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
        if isinstance(value, tuple):
            return [encode(v) for v in value]
        assert value is None or isinstance(value, str | int | float | bool), value
        return value

    def decode(data):
        if isinstance(data, list):
            return tuple(decode(v) for v in data)
        if isinstance(data, dict):
            fields = {k: decode(v) for k, v in data.items() if k != "__type__"}
            return names[data["__type__"]](**fields)
        return data

    values = [
        parse("nginx: {stableIngress: i, additionalIngressAnnotations: {a: b}}\n"
              "maxTrafficWeight: 200"),
        parse("istio: {virtualServices: [{name: v, routes: [r], tlsRoutes: [{port: 443, "
              "sniHosts: [h]}], tcpRoutes: [{port: 1}]}], destinationRule: {name: d, "
              "canarySubsetName: c, stableSubsetName: s}}\nmanagedRoutes: [{name: m}]"),
        parse("plugins: {argoproj-labs/gatewayAPI: {httpRoute: r}}"),
        parse("smi: {rootService: web}"),
        parse_mirror_route({"name": "mirror-route", "percentage": 5, "match": [
            {"method": {"exact": "GET"}, "headers": {"a": {"regex": "b"}}}]}, MIRROR, MANAGED),
    ]
    for value in values:
        assert decode(encode(value)) == value
