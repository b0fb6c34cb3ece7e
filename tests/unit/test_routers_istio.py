"""Istio: VirtualService weights and managed routes, DestinationRule subsets, as Argo sets them."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from bot.rollout.routers import (
    HeaderMatch,
    HeaderRoute,
    MirrorMatch,
    MirrorRoute,
    ObjectKey,
    RouterContext,
    RouterError,
    RouterWeight,
    RouteState,
    StringMatch,
    WeightDestination,
    describe,
    desired,
    keep_live_traffic,
    reads,
)
from tests.unit.routers_data import CTX, routing

SUBSET_CTX = RouterContext(rollout="web", namespace="shop", canary_service="",
                           stable_service="")
API = "networking.istio.io/v1alpha3"


def vs_key(name: str, namespace: str = "shop") -> ObjectKey:
    return ObjectKey(API, "VirtualService", namespace, name)


DR_KEY = ObjectKey(API, "DestinationRule", "shop", "web-destrule")

VSVC = yaml.safe_load("""
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: web-vsvc
  namespace: shop
  resourceVersion: "1234"
  generation: 7
  managedFields: [{manager: kubectl}]
spec:
  gateways: [shop-gateway]
  hosts: [shop.example.com]
  http:
  - name: primary
    match: [{uri: {prefix: /}}]
    route:
    - destination: {host: web-stable, port: {number: 8080}}
      weight: 100
    - destination: {host: web-canary, port: {number: 8080}}
      weight: 0
  - name: secondary
    route:
    - destination: {host: web-stable.shop.svc.cluster.local}
      weight: 100
    - destination: {host: web-canary.shop.svc.cluster.local}
  - name: payments
    route:
    - destination: {host: payments}
status: {}
""")

HOST_LEVEL = "istio: {virtualService: {name: web-vsvc, routes: [primary, secondary]}}"
MANAGED = """
managedRoutes: [{name: set-header-1}, {name: mirror-route}, {name: set-header-2}]
istio: {virtualService: {name: web-vsvc, routes: [primary]}}
"""


def weights(obj: dict, route: int) -> list[tuple[str, int | None]]:
    return [(d["destination"].get("host") or d["destination"].get("subset"), d.get("weight"))
            for d in obj["spec"]["http"][route]["route"]]


@pytest.mark.parametrize(("weight", "stable"), [(0, 100), (20, 80), (100, 0)])
def test_host_level_weights_on_every_named_route(weight, stable):
    (obj,) = desired(routing(HOST_LEVEL), CTX, {vs_key("web-vsvc"): VSVC}, RouteState(weight))
    assert weights(obj, 0) == [("web-stable", stable), ("web-canary", weight)]
    assert weights(obj, 1) == [("web-stable.shop.svc.cluster.local", stable),
                               ("web-canary.shop.svc.cluster.local", weight or None)], (
        "a weight equal to the wanted one is not written (Argo patches only differences)")
    assert obj["spec"]["http"][2] == VSVC["spec"]["http"][2], "other routes are left alone"
    assert obj["spec"]["gateways"] == ["shop-gateway"]
    assert "resourceVersion" not in obj["metadata"] and "managedFields" not in obj["metadata"]
    assert "generation" not in obj["metadata"] and "status" not in obj
    assert VSVC["spec"]["http"][0]["route"][1]["weight"] == 0, "the live object is not changed"


def test_other_weighted_destinations_are_deleted_and_unweighted_ones_kept():
    live = copy.deepcopy(VSVC)
    live["spec"]["http"][0]["route"] += [
        {"destination": {"host": "web-old"}, "weight": 10},
        {"destination": {"host": "web-spare"}, "weight": 0},
        {"destination": {"host": ".odd"}, "weight": 5},
    ]
    (obj,) = desired(routing(HOST_LEVEL), CTX, {vs_key("web-vsvc"): live}, RouteState(30))
    assert weights(obj, 0) == [("web-stable", 70), ("web-canary", 30), ("web-spare", 0),
                               (".odd", 5)]


def test_routes_omitted_targets_the_only_route_beside_managed_ones():
    live = yaml.safe_load("""
        apiVersion: networking.istio.io/v1alpha3
        kind: VirtualService
        metadata: {name: web-vsvc, namespace: shop}
        spec:
          hosts: [web]
          http:
          - name: set-header-1
            match: [{headers: {X-Canary: {exact: "1"}}}]
            route: [{destination: {host: web-canary}, weight: 100}]
          - route:
            - {destination: {host: web-stable}, weight: 90}
            - {destination: {host: web-canary}, weight: 10}
    """)
    config = routing("managedRoutes: [{name: set-header-1}]\n"
                     "istio: {virtualService: {name: web-vsvc}}")
    (obj,) = desired(config, CTX, {vs_key("web-vsvc"): live}, RouteState(50))
    assert obj["spec"]["http"] == [{"route": [
        {"destination": {"host": "web-stable"}, "weight": 50},
        {"destination": {"host": "web-canary"}, "weight": 50}]}], (
        "the header route is not in the state, so it is removed")


def test_routes_omitted_with_several_routes_is_an_error():
    config = routing("istio: {virtualService: {name: web-vsvc}}")
    with pytest.raises(RouterError, match="VirtualService shop/web-vsvc: has 3 http routes; name "
                                          "the weighted ones"):
        desired(config, CTX, {vs_key("web-vsvc"): VSVC}, RouteState(10))


@pytest.mark.parametrize(("config", "ctx", "message"), [
    ("istio: {virtualService: {name: web-vsvc, routes: [primary, tertiary]}}", CTX,
     "VirtualService shop/web-vsvc: has no http route named 'tertiary'"),
    ("istio: {virtualService: {name: web-vsvc, routes: [payments]}}", CTX,
     "VirtualService shop/web-vsvc: route 'payments' has no destination for host 'web-canary'"),
    ("istio: {virtualService: {name: web-vsvc, routes: [primary]}}",
     RouterContext("web", "shop", "web-preview", "web-stable"),
     "VirtualService shop/web-vsvc: route 'primary' has no destination for host 'web-preview'"),
])
def test_routes_that_do_not_fit_are_errors(config, ctx, message):
    with pytest.raises(RouterError) as caught:
        desired(routing(config, ctx), ctx, {vs_key("web-vsvc"): VSVC}, RouteState(10))
    assert str(caught.value) == message


def test_missing_virtual_service_is_an_error():
    with pytest.raises(RouterError, match="VirtualService shop/web-vsvc: not found"):
        desired(routing(HOST_LEVEL), CTX, {vs_key("web-vsvc"): None}, RouteState(10))


def test_several_virtual_services_across_namespaces():
    config = routing("""
        istio:
          virtualServices:
          - {name: web-vsvc, routes: [primary]}
          - {name: web-mesh.mesh, routes: [internal]}
    """)
    assert reads(config, CTX) == (vs_key("web-vsvc"), vs_key("web-mesh", "mesh"))
    mesh = yaml.safe_load("""
        apiVersion: networking.istio.io/v1alpha3
        kind: VirtualService
        metadata: {name: web-mesh, namespace: mesh}
        spec:
          hosts: [web.shop.svc.cluster.local]
          http:
          - name: internal
            route:
            - {destination: {host: web-canary.shop.svc.cluster.local}, weight: 0}
            - {destination: {host: web-stable.shop.svc.cluster.local}, weight: 100}
    """)
    live = {vs_key("web-vsvc"): VSVC, vs_key("web-mesh", "mesh"): mesh}
    first, second = desired(config, CTX, live, RouteState(25))
    assert weights(first, 0) == [("web-stable", 75), ("web-canary", 25)]
    assert second["metadata"]["namespace"] == "mesh"
    assert weights(second, 0) == [("web-canary.shop.svc.cluster.local", 25),
                                  ("web-stable.shop.svc.cluster.local", 75)]


# ---------------------------------------------------------------------------- subset level

SUBSET_LEVEL = """
managedRoutes: [{name: set-header-1}]
istio:
  virtualService: {name: web-vsvc, routes: [primary]}
  destinationRule: {name: web-destrule, canarySubsetName: canary, stableSubsetName: stable,
                    additionalSubsetNames: [legacy]}
"""

SUBSET_VSVC = yaml.safe_load("""
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: web-vsvc, namespace: shop}
spec:
  hosts: [web]
  http:
  - name: primary
    route:
    - destination: {host: web, subset: stable, port: {number: 80}}
      weight: 85
    - destination: {host: web, subset: canary, port: {number: 80}}
      weight: 5
    - destination: {host: web, subset: legacy, port: {number: 80}}
      weight: 10
""")

DESTRULE = yaml.safe_load("""
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: web-destrule, namespace: shop, uid: abc, resourceVersion: "5"}
spec:
  host: web.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - name: canary
    labels: {app: web}
  - name: stable
    labels: {app: web, coalmine.dev/track: canary}
    trafficPolicy: {connectionPool: {tcp: {maxConnections: 100}}}
  - name: legacy
    labels: {app: web-legacy}
""")


def subset_live(vsvc=SUBSET_VSVC, destrule=DESTRULE) -> dict:
    return {vs_key("web-vsvc"): vsvc, DR_KEY: destrule}


def test_reads_the_virtual_service_then_the_destination_rule():
    assert reads(routing(SUBSET_LEVEL, SUBSET_CTX), SUBSET_CTX) == (vs_key("web-vsvc"), DR_KEY)


@pytest.mark.parametrize(("weight", "stable"), [(0, 90), (20, 70), (100, 0)])
def test_subset_level_weights_leave_the_additional_subset_its_share(weight, stable):
    dr, vs = desired(routing(SUBSET_LEVEL, SUBSET_CTX), SUBSET_CTX, subset_live(),
                     RouteState(weight))
    assert dr["kind"] == "DestinationRule", "the subsets are written before the weights"
    assert weights(vs, 0) == [("web", stable), ("web", weight), ("web", 10)]
    assert [d["destination"]["subset"] for d in vs["spec"]["http"][0]["route"]] == [
        "stable", "canary", "legacy"]


def test_destination_rule_subsets_select_the_tracks_and_others_are_dropped():
    dr, _ = desired(routing(SUBSET_LEVEL, SUBSET_CTX), SUBSET_CTX, subset_live(), RouteState(5))
    assert dr == {
        "apiVersion": API,
        "kind": "DestinationRule",
        "metadata": {"name": "web-destrule", "namespace": "shop"},
        "spec": {
            "host": "web.shop.svc.cluster.local",
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
            "subsets": [
                {"name": "canary", "labels": {"app": "web", "coalmine.dev/track": "canary"}},
                {"name": "stable", "labels": {"app": "web", "coalmine.dev/track": "stable"},
                 "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}}}},
            ],
        },
    }


@pytest.mark.parametrize(("live", "message"), [
    (subset_live(destrule=None), "DestinationRule shop/web-destrule: not found"),
    (subset_live(destrule={"metadata": {"name": "web-destrule"}, "spec": {
        "host": "web", "subsets": [{"name": "canary"}]}}),
     "DestinationRule shop/web-destrule: has no subset named 'stable'"),
])
def test_destination_rule_that_does_not_fit_is_an_error(live, message):
    with pytest.raises(RouterError) as caught:
        desired(routing(SUBSET_LEVEL, SUBSET_CTX), SUBSET_CTX, live, RouteState(5))
    assert str(caught.value) == message


def test_subset_level_route_without_the_canary_subset_is_an_error():
    vsvc = copy.deepcopy(SUBSET_VSVC)
    del vsvc["spec"]["http"][0]["route"][1]
    with pytest.raises(RouterError, match="route 'primary' has no destination for subset "
                                          "'canary'"):
        desired(routing(SUBSET_LEVEL, SUBSET_CTX), SUBSET_CTX, subset_live(vsvc), RouteState(5))


def test_subset_level_header_route_goes_to_the_destination_rule_host_and_canary_subset():
    state = RouteState(5, header_routes=(
        HeaderRoute("set-header-1", (HeaderMatch("X-Canary", StringMatch(exact="yes")),)),))
    _, vs = desired(routing(SUBSET_LEVEL, SUBSET_CTX), SUBSET_CTX, subset_live(), state)
    assert vs["spec"]["http"][0] == {
        "name": "set-header-1",
        "match": [{"headers": {"X-Canary": {"exact": "yes"}}}],
        "route": [{"destination": {"host": "web.shop.svc.cluster.local", "subset": "canary",
                                   "port": {"number": 80}}, "weight": 100}],
    }


# -------------------------------------------------------------------------- tls and tcp routes

L4_VSVC = yaml.safe_load("""
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: web-vsvc, namespace: shop}
spec:
  hosts: [web.example.com]
  tls:
  - match: [{port: 443, sniHosts: [web.example.com]}]
    route:
    - {destination: {host: web-stable}, weight: 100}
    - {destination: {host: web-canary}, weight: 0}
  - match: [{port: 443, sniHosts: [api.example.com]}]
    route: [{destination: {host: api}, weight: 100}]
  tcp:
  - match: [{port: 3306}]
    route:
    - {destination: {host: web-stable}, weight: 100}
    - {destination: {host: web-canary}}
""")


def test_tls_routes_by_port_and_sni_hosts_and_the_only_tcp_route():
    config = routing("istio: {virtualService: {name: web-vsvc, "
                     "tlsRoutes: [{port: 443, sniHosts: [web.example.com]}]}}")
    (obj,) = desired(config, CTX, {vs_key("web-vsvc"): L4_VSVC}, RouteState(40))
    assert [(d["destination"]["host"], d["weight"]) for d in obj["spec"]["tls"][0]["route"]] == [
        ("web-stable", 60), ("web-canary", 40)]
    assert obj["spec"]["tls"][1] == L4_VSVC["spec"]["tls"][1]
    assert [(d["destination"]["host"], d["weight"]) for d in obj["spec"]["tcp"][0]["route"]] == [
        ("web-stable", 60), ("web-canary", 40)], "no tcpRoutes given: Argo weighs the only one"
    assert "http" not in obj["spec"]


@pytest.mark.parametrize(("config", "message"), [
    ("istio: {virtualService: {name: web-vsvc}}",
     ("VirtualService shop/web-vsvc: has 2 tls routes; name the weighted ones in "
     "virtualService.tlsRoutes")),
    (("istio: {virtualService: {name: web-vsvc, tlsRoutes: [{port: 8443, sniHosts: "
     "[web.example.com]}]}}"),
     ("VirtualService shop/web-vsvc: has no tls route matching port 8443 sniHosts "
     "['web.example.com']")),
    (("istio: {virtualService: {name: web-vsvc, tlsRoutes: [{port: 443, sniHosts: "
     "[web.example.com]}], tcpRoutes: [{port: 5432}]}}"),
     "VirtualService shop/web-vsvc: has no tcp route matching port 5432"),
    (("istio: {virtualService: {name: web-vsvc, tlsRoutes: [{port: 443, sniHosts: "
     "[api.example.com]}]}}"),
     "VirtualService shop/web-vsvc: tls[1] has no destination for host 'web-canary'"),
])
def test_tls_and_tcp_routes_that_do_not_fit(config, message):
    with pytest.raises(RouterError) as caught:
        desired(routing(config), CTX, {vs_key("web-vsvc"): L4_VSVC}, RouteState(40))
    assert str(caught.value) == message


def test_virtual_service_without_routes_is_an_error():
    empty = {"metadata": {"name": "web-vsvc"}, "spec": {"hosts": ["web"]}}
    with pytest.raises(RouterError, match="has no http, tls or tcp routes"):
        desired(routing(HOST_LEVEL), CTX, {vs_key("web-vsvc"): empty}, RouteState(1))


# ------------------------------------------------------------------------------ managed routes

HEADER_1 = HeaderRoute("set-header-1", (HeaderMatch("X-Canary", StringMatch(exact="yes")),
                                        HeaderMatch("User-Agent", StringMatch(regex=".*Mobile.*"))))
HEADER_2 = HeaderRoute("set-header-2", (HeaderMatch("X-Team", StringMatch(prefix="pay")),))
MIRROR = MirrorRoute("mirror-route", (MirrorMatch(method=StringMatch(exact="GET"),
                                                  path=StringMatch(prefix="/api"),
                                                  headers=(HeaderMatch("X-Debug",
                                                                       StringMatch(exact="1")),)),),
                     percentage=25)


def test_managed_routes_go_to_the_top_in_managed_routes_order():
    state = RouteState(20, header_routes=(HEADER_2, HEADER_1), mirror_routes=(MIRROR,))
    (obj,) = desired(routing(MANAGED), CTX, {vs_key("web-vsvc"): VSVC}, state)
    assert [r["name"] for r in obj["spec"]["http"]] == [
        "set-header-1", "mirror-route", "set-header-2", "primary", "secondary", "payments"]
    header, mirror, header_2 = obj["spec"]["http"][:3]
    assert header == {
        "name": "set-header-1",
        "match": [{"headers": {"X-Canary": {"exact": "yes"}}},
                  {"headers": {"User-Agent": {"regex": ".*Mobile.*"}}}],
        "route": [{"destination": {"host": "web-canary", "port": {"number": 8080}},
                   "weight": 100}],
    }
    assert header_2["match"] == [{"headers": {"X-Team": {"prefix": "pay"}}}]
    assert mirror == {
        "name": "mirror-route",
        "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/api"},
                   "headers": {"X-Debug": {"exact": "1"}}}],
        "route": [{"destination": {"host": "web-stable", "port": {"number": 8080}},
                   "weight": 80},
                  {"destination": {"host": "web-canary", "port": {"number": 8080}},
                   "weight": 20}],
        "mirror": {"host": "web-canary", "port": {"number": 8080}},
        "mirrorPercentage": {"value": 25},
    }


def test_mirror_route_copy_omits_a_zero_weight_and_mirrors_all_by_default():
    state = RouteState(0, mirror_routes=(MirrorRoute("mirror-route", (MirrorMatch(
        path=StringMatch(exact="/checkout")),)),))
    (obj,) = desired(routing(MANAGED), CTX, {vs_key("web-vsvc"): VSVC}, state)
    mirror = obj["spec"]["http"][0]
    assert mirror["route"] == [
        {"destination": {"host": "web-stable", "port": {"number": 8080}}, "weight": 100},
        {"destination": {"host": "web-canary", "port": {"number": 8080}}}]
    assert mirror["mirrorPercentage"] == {"value": 100}
    assert mirror["match"] == [{"uri": {"exact": "/checkout"}}]


def test_managed_route_is_replaced_and_the_ones_not_in_the_state_removed():
    live = copy.deepcopy(VSVC)
    live["spec"]["http"][:0] = [
        {"name": "set-header-2", "match": [{"headers": {"X-Old": {"exact": "1"}}}],
         "route": [{"destination": {"host": "web-canary"}, "weight": 100}]},
        {"name": "set-header-1", "match": [{"headers": {"X-Old": {"exact": "1"}}}],
         "route": [{"destination": {"host": "web-canary"}, "weight": 100}]},
    ]
    state = RouteState(20, header_routes=(HEADER_1,))
    (obj,) = desired(routing(MANAGED), CTX, {vs_key("web-vsvc"): live}, state)
    assert [r["name"] for r in obj["spec"]["http"]] == [
        "set-header-1", "primary", "secondary", "payments"]
    assert obj["spec"]["http"][0]["match"][0] == {"headers": {"X-Canary": {"exact": "yes"}}}


def test_route_with_no_matches_in_the_state_is_removed():
    live = copy.deepcopy(VSVC)
    live["spec"]["http"].insert(0, {"name": "set-header-1", "route": [
        {"destination": {"host": "web-canary"}, "weight": 100}]})
    state = RouteState(20, header_routes=(HeaderRoute("set-header-1"),))
    (obj,) = desired(routing(MANAGED), CTX, {vs_key("web-vsvc"): live}, state)
    assert [r["name"] for r in obj["spec"]["http"]] == ["primary", "secondary", "payments"]


def test_state_route_outside_managed_routes_is_a_programming_error():
    state = RouteState(20, header_routes=(HeaderRoute("unlisted", HEADER_1.matches),))
    with pytest.raises(ValueError, match="not in managedRoutes"):
        desired(routing(MANAGED), CTX, {vs_key("web-vsvc"): VSVC}, state)


def test_header_route_on_a_virtual_service_without_http_routes_is_an_error():
    config = routing("managedRoutes: [{name: set-header-1}]\n"
                     "istio: {virtualService: {name: web-vsvc, tlsRoutes: "
                     "[{port: 443, sniHosts: [web.example.com]}]}}")
    with pytest.raises(RouterError, match="has no http routes to put managed route "
                                          "'set-header-1' beside"):
        desired(config, CTX, {vs_key("web-vsvc"): L4_VSVC},
                RouteState(1, header_routes=(HEADER_1,)))


# -------------------------------------------------------------------------- keep and describe


def test_keep_live_traffic_takes_weights_and_managed_routes_from_the_live_object():
    config = routing(MANAGED)
    live = desired(config, CTX, {vs_key("web-vsvc"): VSVC},
                   RouteState(30, header_routes=(HEADER_1,)))[0]
    git = copy.deepcopy(VSVC)
    git["spec"]["hosts"] = ["shop.example.com", "www.example.com"]
    kept = keep_live_traffic(config, CTX, git, live)
    assert kept["spec"]["hosts"] == ["shop.example.com", "www.example.com"], "Git's change"
    assert [r["name"] for r in kept["spec"]["http"]] == [
        "set-header-1", "primary", "secondary", "payments"]
    assert weights(kept, 1) == [("web-stable", 70), ("web-canary", 30)]
    assert weights(kept, 2) == [("web-stable.shop.svc.cluster.local", 100),
                                ("web-canary.shop.svc.cluster.local", None)], (
        "only the configured routes are the router's")
    assert "resourceVersion" not in kept["metadata"]


def test_keep_live_traffic_without_a_live_object_is_at_stable():
    git = copy.deepcopy(VSVC)
    git["spec"]["http"][0]["route"][1]["weight"] = 50
    git["spec"]["http"][0]["route"][0]["weight"] = 50
    kept = keep_live_traffic(routing(HOST_LEVEL), CTX, git, None)
    assert weights(kept, 0) == [("web-stable", 100), ("web-canary", 0)]


def test_keep_live_traffic_on_a_live_object_that_predates_routing_is_at_stable():
    old = copy.deepcopy(VSVC)
    old["spec"]["http"][0]["route"] = [{"destination": {"host": "web-stable"}}]
    kept = keep_live_traffic(routing(HOST_LEVEL), CTX, VSVC, old)
    assert weights(kept, 0) == [("web-stable", 100), ("web-canary", 0)]


def test_keep_live_traffic_labels_the_destination_rule_subsets_and_ignores_other_objects():
    config = routing(SUBSET_LEVEL, SUBSET_CTX)
    git = {**DESTRULE, "apiVersion": "networking.istio.io/v1"}
    kept = keep_live_traffic(config, SUBSET_CTX, git, None)
    assert [s["labels"]["coalmine.dev/track"] for s in kept["spec"]["subsets"]] == [
        "canary", "stable"]
    assert kept["apiVersion"] == "networking.istio.io/v1", "Git's version is kept"
    assert "uid" not in kept["metadata"]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-vsvc"}}
    assert keep_live_traffic(config, SUBSET_CTX, service, None) is None
    elsewhere = copy.deepcopy(VSVC)
    elsewhere["metadata"]["namespace"] = "other"
    assert keep_live_traffic(config, SUBSET_CTX, elsewhere, None) is None


def test_keep_live_traffic_matches_git_objects_of_another_api_version():
    git = copy.deepcopy(VSVC)
    git["apiVersion"] = "networking.istio.io/v1"
    del git["metadata"]["namespace"]
    kept = keep_live_traffic(routing(HOST_LEVEL), CTX, git, None)
    assert kept is not None and kept["apiVersion"] == "networking.istio.io/v1"


def test_describe_lists_each_route_weight_and_the_managed_routes():
    config = routing(MANAGED.replace("routes: [primary]", "routes: [primary, secondary]"))
    live = desired(config, CTX, {vs_key("web-vsvc"): VSVC},
                   RouteState(30, header_routes=(HEADER_1,), mirror_routes=(MIRROR,)))[0]
    assert describe(config, CTX, {vs_key("web-vsvc"): live}) == [
        RouterWeight("VirtualService shop/web-vsvc", "route primary", 30),
        RouterWeight("VirtualService shop/web-vsvc", "route secondary", 30),
        RouterWeight("VirtualService shop/web-vsvc", "header route set-header-1", 100),
        RouterWeight("VirtualService shop/web-vsvc",
                     "mirror route mirror-route (share of its requests copied to the canary)",
                     25),
    ]


def test_describe_of_missing_or_unfit_objects_has_no_weight():
    config = routing(HOST_LEVEL)
    assert describe(config, CTX, {vs_key("web-vsvc"): None}) == [
        RouterWeight("VirtualService shop/web-vsvc", "not found", None)]
    unfit = copy.deepcopy(VSVC)
    unfit["spec"]["http"][1]["name"] = "renamed"
    assert describe(config, CTX, {vs_key("web-vsvc"): unfit}) == [
        RouterWeight("VirtualService shop/web-vsvc", "has no http route named 'secondary'",
                     None)]


def test_describe_subset_level_reads_the_canary_subset_and_ignores_hostless_destinations():
    config = routing(SUBSET_LEVEL, SUBSET_CTX)
    _, live = desired(config, SUBSET_CTX, subset_live(), RouteState(20))
    live["spec"]["http"][0]["route"].insert(0, {"destination": {"subset": "canary"}})
    assert describe(config, SUBSET_CTX, subset_live(live)) == [
        RouterWeight("VirtualService shop/web-vsvc", "route primary", 20)]


# ------------------------------------------------------------------------ experiment weights

BASELINE = WeightDestination("web-exp-baseline", 10, (("coalmine.dev/experiment", "baseline"),
                                                      ("coalmine.dev/track", "experiment")))
CANDIDATE = WeightDestination("web-candidate", 5, (("coalmine.dev/experiment", "candidate"),
                                                   ("coalmine.dev/track", "experiment")))


def test_host_level_experiment_services_are_appended_sorted_and_stable_gives_up_their_share():
    (obj,) = desired(routing(HOST_LEVEL), CTX, {vs_key("web-vsvc"): VSVC},
                     RouteState(20, extra=(BASELINE, CANDIDATE)))
    assert weights(obj, 0) == [("web-stable", 65), ("web-canary", 20),
                               ("web-candidate", 5), ("web-exp-baseline", 10)]
    assert obj["spec"]["http"][0]["route"][2] == {"destination": {"host": "web-candidate"},
                                                  "weight": 5}, "a bare host, as Argo adds it"
    assert weights(obj, 1)[2:] == [("web-candidate", 5), ("web-exp-baseline", 10)]
    assert obj["spec"]["http"][2] == VSVC["spec"]["http"][2], "other routes are left alone"


def test_experiment_destinations_keep_their_place_and_go_when_the_experiment_ends():
    config = routing(HOST_LEVEL)
    (during,) = desired(config, CTX, {vs_key("web-vsvc"): VSVC},
                        RouteState(20, extra=(BASELINE,)))
    during["spec"]["http"][0]["route"][2]["destination"]["port"] = {"number": 8080}
    (again,) = desired(config, CTX, {vs_key("web-vsvc"): during},
                       RouteState(30, extra=(dataclasses.replace(BASELINE, weight=15),)))
    assert again["spec"]["http"][0]["route"][2] == {
        "destination": {"host": "web-exp-baseline", "port": {"number": 8080}}, "weight": 15}
    (after,) = desired(config, CTX, {vs_key("web-vsvc"): again}, RouteState(30))
    assert weights(after, 0) == [("web-stable", 70), ("web-canary", 30)]


def test_experiment_share_is_read_by_describe():
    config = routing(HOST_LEVEL)
    (live,) = desired(config, CTX, {vs_key("web-vsvc"): VSVC},
                      RouteState(20, extra=(BASELINE,)))
    assert describe(config, CTX, {vs_key("web-vsvc"): live}) == [
        RouterWeight("VirtualService shop/web-vsvc", "route primary", 20),
        RouterWeight("VirtualService shop/web-vsvc", "route secondary", 20),
        RouterWeight("VirtualService shop/web-vsvc",
                     "route primary: experiment Service web-exp-baseline", 10),
        RouterWeight("VirtualService shop/web-vsvc",
                     "route secondary: experiment Service web-exp-baseline", 10),
    ]


def test_subset_level_experiment_gets_a_host_destination_and_a_subset_of_its_own():
    config = routing(SUBSET_LEVEL, SUBSET_CTX)
    dr, vs = desired(config, SUBSET_CTX, subset_live(), RouteState(20, extra=(BASELINE,)))
    assert weights(vs, 0) == [("web", 60), ("web", 20), ("web", 10), ("web-exp-baseline", 10)], (
        "the stable gives up both the additional subset's and the experiment's share")
    assert dr["spec"]["subsets"][2] == {
        "name": "web-exp-baseline",
        "labels": {"coalmine.dev/experiment": "baseline", "coalmine.dev/track": "experiment"}}
    live = copy.deepcopy(DESTRULE)
    live["spec"]["subsets"].append({"name": "web-exp-baseline", "labels": {"app": "web"}})
    dr, _ = desired(config, SUBSET_CTX, subset_live(destrule=live),
                    RouteState(20, extra=(BASELINE,)))
    assert dr["spec"]["subsets"][2]["labels"] == {
        "app": "web", "coalmine.dev/experiment": "baseline", "coalmine.dev/track": "experiment"}
    dr, _ = desired(config, SUBSET_CTX, subset_live(destrule=dr), RouteState(20))
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["canary", "stable"], (
        "the experiment's subset goes with it")


def test_experiment_weights_past_100_are_a_programming_error():
    with pytest.raises(ValueError, match="do not fit the istio router"):
        desired(routing(HOST_LEVEL), CTX, {vs_key("web-vsvc"): VSVC},
                RouteState(95, extra=(BASELINE,)))
