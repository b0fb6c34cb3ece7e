"""Gateway API: HTTPRoute backendRef weights and header rules, as the Argo plugin sets them."""

from __future__ import annotations

import copy

import pytest
import yaml

from bot.rollout.routers import (
    HeaderMatch,
    HeaderRoute,
    MirrorMatch,
    MirrorRoute,
    ObjectKey,
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

LABEL = "rollouts.argoproj.io/gatewayapi-canary"
EXPERIMENTS = "coalmine.dev/experiment-backends"


def route_key(name: str, namespace: str = "shop") -> ObjectKey:
    return ObjectKey("gateway.networking.k8s.io/v1", "HTTPRoute", namespace, name)


SINGLE = """
managedRoutes: [{name: canary-header}, {name: beta-header}]
plugins:
  argoproj-labs/gatewayAPI: {httpRoute: web-route}
"""

HTTPROUTE = yaml.safe_load("""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-route
  namespace: shop
  resourceVersion: "77"
  labels: {app: web}
spec:
  parentRefs: [{name: shop-gateway, namespace: gateways}]
  hostnames: [shop.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: X-Shop, value: "1"}]}
    backendRefs:
    - {group: "", kind: Service, name: web-stable, port: 80, weight: 100}
    - {group: "", kind: Service, name: web-canary, port: 80, weight: 0}
  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{type: Exact, name: X-Api, value: v2}]
      method: POST
    backendRefs:
    - {name: web-stable, port: 8080, weight: 100}
    - {name: web-canary, port: 8080}
  - matches:
    - path: {type: PathPrefix, value: /files}
    backendRefs:
    - {name: files, port: 80}
status:
  parents: []
""")


def live_of(*routes: dict) -> dict:
    return {route_key(r["metadata"]["name"], r["metadata"].get("namespace", "shop")): r
            for r in routes}


def backend_weights(obj: dict) -> list[list[tuple[str, int | None]]]:
    return [[(b["name"], b.get("weight")) for b in rule["backendRefs"]]
            for rule in obj["spec"]["rules"]]


@pytest.mark.parametrize(("weight", "stable"), [(0, 100), (20, 80), (100, 0)])
def test_weights_in_every_rule_holding_the_services(weight, stable):
    (obj,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), RouteState(weight))
    assert backend_weights(obj) == [
        [("web-stable", stable), ("web-canary", weight)],
        [("web-stable", stable), ("web-canary", weight)],
        [("files", None)],
    ]
    assert obj["spec"]["parentRefs"] == HTTPROUTE["spec"]["parentRefs"]
    assert "resourceVersion" not in obj["metadata"] and "status" not in obj


def test_in_progress_label_marks_the_route_while_the_canary_has_weight():
    (on,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), RouteState(10))
    assert on["metadata"]["labels"] == {"app": "web", LABEL: "in-progress"}
    (off,) = desired(routing(SINGLE), CTX, live_of(on), RouteState(0))
    assert off["metadata"]["labels"] == {"app": "web"}


def test_in_progress_label_renamed_or_disabled():
    renamed = routing("plugins: {argoproj-labs/gatewayAPI: {httpRoute: web-route, "
                      "inProgressLabelKey: example.com/canary, inProgressLabelValue: 'yes'}}")
    (obj,) = desired(renamed, CTX, live_of(HTTPROUTE), RouteState(10))
    assert obj["metadata"]["labels"] == {"app": "web", "example.com/canary": "yes"}
    disabled = routing("plugins: {argoproj-labs/gatewayAPI: {httpRoute: web-route, "
                       "disableInProgressLabel: true}}")
    (obj,) = desired(disabled, CTX, live_of(HTTPROUTE), RouteState(10))
    assert obj["metadata"]["labels"] == {"app": "web"}


@pytest.mark.parametrize("missing", ["web-canary", "web-stable"])
def test_route_without_a_backend_of_either_service_is_an_error(missing):
    route = copy.deepcopy(HTTPROUTE)
    for rule in route["spec"]["rules"]:
        for backend in rule["backendRefs"]:
            if backend["name"] == missing:
                backend["name"] = "web-old"
    with pytest.raises(RouterError) as caught:
        desired(routing(SINGLE), CTX, live_of(route), RouteState(10))
    track = "canary" if missing == "web-canary" else "stable"
    assert str(caught.value) == (f"HTTPRoute shop/web-route: no rule has a backendRef named "
                                 f"'{missing}' (the {track} Service)")


def test_missing_route_is_an_error():
    with pytest.raises(RouterError, match="HTTPRoute shop/web-route: not found"):
        desired(routing(SINGLE), CTX, {route_key("web-route"): None}, RouteState(10))


def test_several_routes_in_the_configured_namespace():
    config = routing("""
        plugins:
          argoproj-labs/gatewayAPI:
            namespace: gateways
            httpRoutes: [{name: web-public}, {name: web-internal}]
    """)
    assert reads(config, CTX) == (route_key("web-public", "gateways"),
                                  route_key("web-internal", "gateways"))
    public = copy.deepcopy(HTTPROUTE)
    public["metadata"].update(name="web-public", namespace="gateways")
    internal = {"metadata": {"name": "web-internal", "namespace": "gateways"}, "spec": {"rules": [
        {"backendRefs": [{"name": "web-canary", "port": 80, "weight": 50},
                         {"name": "web-stable", "port": 80, "weight": 50}]}]}}
    first, second = desired(config, CTX, live_of(public, internal), RouteState(5))
    assert backend_weights(first)[0] == [("web-stable", 95), ("web-canary", 5)]
    assert backend_weights(second) == [[("web-canary", 5), ("web-stable", 95)]]
    assert second["metadata"]["namespace"] == "gateways"
    assert second["kind"] == "HTTPRoute" and second["apiVersion"] == (
        "gateway.networking.k8s.io/v1")


CANARY_HEADER = HeaderRoute("canary-header", (
    HeaderMatch("X-Canary", StringMatch(exact="yes")),
    HeaderMatch("X-Device", StringMatch(prefix="mobile")),
    HeaderMatch("User-Agent", StringMatch(regex=".*Firefox.*")),
))
BETA_HEADER = HeaderRoute("beta-header", (HeaderMatch("X-Beta", StringMatch(exact="1")),))
HEADERS = [
    {"name": "X-Canary", "type": "Exact", "value": "yes"},
    {"name": "X-Device", "type": "RegularExpression", "value": "mobile.*"},
    {"name": "User-Agent", "type": "RegularExpression", "value": ".*Firefox.*"},
]


def test_header_route_adds_one_rule_per_source_rule_named_name_and_name_1():
    state = RouteState(10, header_routes=(CANARY_HEADER,))
    (obj,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), state)
    rules = obj["spec"]["rules"]
    assert len(rules) == 5
    assert rules[3] == {
        "name": "canary-header",
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": HEADERS}],
        "filters": [{"type": "RequestHeaderModifier",
                     "requestHeaderModifier": {"add": [{"name": "X-Shop", "value": "1"}]}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary", "port": 80}],
    }
    assert rules[4] == {
        "name": "canary-header-1",
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                     "headers": [{"type": "Exact", "name": "X-Api", "value": "v2"}, *HEADERS],
                     "method": "POST"}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary", "port": 8080}],
    }
    assert backend_weights(obj)[:2] == [[("web-stable", 90), ("web-canary", 10)]] * 2


def test_source_rule_without_matches_gets_only_the_header_matches():
    route = {"metadata": {"name": "web-route", "namespace": "shop"}, "spec": {"rules": [
        {"backendRefs": [{"name": "web-stable", "weight": 100}, {"name": "web-canary"}]}]}}
    state = RouteState(0, header_routes=(BETA_HEADER,))
    (obj,) = desired(routing(SINGLE), CTX, live_of(route), state)
    assert obj["spec"]["rules"][1] == {
        "name": "beta-header",
        "matches": [{"headers": [{"name": "X-Beta", "type": "Exact", "value": "1"}]}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary"}],
    }


def test_header_rules_are_replaced_and_removed_when_not_in_the_state():
    both = RouteState(10, header_routes=(CANARY_HEADER, BETA_HEADER))
    (live,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), both)
    assert [r.get("name") for r in live["spec"]["rules"]] == [
        None, None, None, "canary-header", "canary-header-1", "beta-header", "beta-header-1"]
    new_beta = HeaderRoute("beta-header", (HeaderMatch("X-Beta", StringMatch(exact="2")),))
    (obj,) = desired(routing(SINGLE), CTX, live_of(live), RouteState(30, (new_beta,)))
    assert [r.get("name") for r in obj["spec"]["rules"]] == [
        None, None, None, "beta-header", "beta-header-1"]
    assert obj["spec"]["rules"][3]["matches"][0]["headers"][-1]["value"] == "2"
    assert backend_weights(obj)[:2] == [[("web-stable", 70), ("web-canary", 30)]] * 2, (
        "header rules hold no stable backend and take no weight")
    (cleared,) = desired(routing(SINGLE), CTX, live_of(obj), RouteState(30))
    assert [r.get("name") for r in cleared["spec"]["rules"]] == [None, None, None]


def test_header_rules_only_on_routes_that_use_them():
    config = routing("""
        managedRoutes: [{name: canary-header}]
        plugins:
          argoproj-labs/gatewayAPI: {httpRoutes: [{name: web-route}]}
    """)
    (obj,) = desired(config, CTX, live_of(HTTPROUTE), RouteState(10, (CANARY_HEADER,)))
    assert len(obj["spec"]["rules"]) == 3


def test_legacy_unnamed_header_rule_takes_no_weight_and_stays():
    route = copy.deepcopy(HTTPROUTE)
    legacy = {"matches": [{"headers": [{"name": "X-Old", "value": "1"}]}],
              "backendRefs": [{"name": "web-canary", "port": 80}]}
    route["spec"]["rules"].append(legacy)
    (obj,) = desired(routing(SINGLE), CTX, live_of(route), RouteState(40))
    assert obj["spec"]["rules"][3] == legacy


def test_mirror_routes_are_a_silent_no_op():
    config = routing(SINGLE.replace("{name: beta-header}", "{name: beta-header}, {name: m}"))
    mirror = MirrorRoute("m", (MirrorMatch(path=StringMatch(prefix="/")),))
    assert desired(config, CTX, live_of(HTTPROUTE), RouteState(10, mirror_routes=(mirror,))) == (
        desired(config, CTX, live_of(HTTPROUTE), RouteState(10)))


def test_keep_live_traffic_takes_weight_header_rules_and_label_from_the_live_route():
    state = RouteState(25, header_routes=(BETA_HEADER,))
    (live,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), state)
    git = copy.deepcopy(HTTPROUTE)
    git["spec"]["hostnames"] = ["shop.example.com", "www.example.com"]
    kept = keep_live_traffic(routing(SINGLE), CTX, git, live)
    assert kept["spec"]["hostnames"] == ["shop.example.com", "www.example.com"]
    assert backend_weights(kept)[:2] == [[("web-stable", 75), ("web-canary", 25)]] * 2
    assert [r.get("name") for r in kept["spec"]["rules"]][3:] == ["beta-header", "beta-header-1"]
    assert kept["metadata"]["labels"] == {"app": "web", LABEL: "in-progress"}


def test_keep_live_traffic_without_a_live_route_is_at_stable():
    git = copy.deepcopy(HTTPROUTE)
    git["spec"]["rules"][0]["backendRefs"][1]["weight"] = 60
    kept = keep_live_traffic(routing(SINGLE), CTX, git, None)
    assert backend_weights(kept)[:2] == [[("web-stable", 100), ("web-canary", 0)]] * 2
    assert LABEL not in kept["metadata"]["labels"]


def test_keep_live_traffic_ignores_other_objects():
    other = copy.deepcopy(HTTPROUTE)
    other["metadata"]["name"] = "admin-route"
    assert keep_live_traffic(routing(SINGLE), CTX, other, None) is None


def test_describe_reads_the_canary_share_and_the_header_rules():
    (live,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE),
                      RouteState(20, (CANARY_HEADER,)))
    assert describe(routing(SINGLE), CTX, live_of(live)) == [
        RouterWeight("HTTPRoute shop/web-route", "", 20),
        RouterWeight("HTTPRoute shop/web-route", "header rule canary-header", 100),
    ]
    unweighted = {"metadata": {"name": "web-route"}, "spec": {"rules": [
        {"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]}]}}
    assert describe(routing(SINGLE), CTX, {route_key("web-route"): unweighted}) == [
        RouterWeight("HTTPRoute shop/web-route", "", 50)], "the API weighs a backendRef 1"
    assert describe(routing(SINGLE), CTX, {route_key("web-route"): None}) == [
        RouterWeight("HTTPRoute shop/web-route", "not found", None)]


# ------------------------------------------------------------------ experiment destinations

EXTRA = (WeightDestination("web-exp-baseline", 10, port=8080),
         WeightDestination("web-candidate", 5, port=8080))


def experiment_backend(name: str, weight: int) -> dict:
    return {"group": "", "kind": "Service", "name": name, "namespace": "shop", "port": 8080,
            "weight": weight}


def test_experiment_services_share_every_rule_that_splits_canary_and_stable():
    (obj,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), RouteState(20, extra=EXTRA))
    assert backend_weights(obj) == [
        [("web-stable", 65), ("web-canary", 20), ("web-exp-baseline", 10), ("web-candidate", 5)],
        [("web-stable", 65), ("web-canary", 20), ("web-exp-baseline", 10), ("web-candidate", 5)],
        [("files", None)],
    ], "the stable gives up the templates' shares; the canary keeps its own; 100 in all"
    assert obj["spec"]["rules"][0]["backendRefs"][2:] == [
        experiment_backend("web-exp-baseline", 10), experiment_backend("web-candidate", 5)]
    assert obj["metadata"]["annotations"] == {EXPERIMENTS: "web-exp-baseline,web-candidate"}
    (again,) = desired(routing(SINGLE), CTX, live_of(obj), RouteState(20, extra=EXTRA))
    assert again == obj, "a rewrite during the step changes nothing"


def test_experiment_services_go_when_the_step_ends_and_the_canary_keeps_its_weight():
    (during,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), RouteState(20, extra=EXTRA))
    (after,) = desired(routing(SINGLE), CTX, live_of(during), RouteState(20))
    assert backend_weights(after)[:2] == [[("web-stable", 80), ("web-canary", 20)]] * 2
    assert after["metadata"].get("annotations") in (None, {})
    (at_stable,) = desired(routing(SINGLE), CTX, live_of(during), RouteState(0))
    assert backend_weights(at_stable)[:2] == [[("web-stable", 100), ("web-canary", 0)]] * 2


def test_backends_coalmine_did_not_add_are_never_removed():
    route = copy.deepcopy(HTTPROUTE)
    route["spec"]["rules"][0]["backendRefs"].append({"name": "web-shadow", "port": 80,
                                                     "weight": 0})
    (during,) = desired(routing(SINGLE), CTX, live_of(route), RouteState(20, extra=EXTRA[:1]))
    assert [name for name, _ in backend_weights(during)[0]] == [
        "web-stable", "web-canary", "web-shadow", "web-exp-baseline"]
    (after,) = desired(routing(SINGLE), CTX, live_of(during), RouteState(20))
    assert backend_weights(after)[0] == [("web-stable", 80), ("web-canary", 20),
                                         ("web-shadow", 0)]


def test_an_experiment_needs_a_rule_holding_both_services():
    route = {"metadata": {"name": "web-route", "namespace": "shop"}, "spec": {"rules": [
        {"backendRefs": [{"name": "web-stable", "port": 80}]},
        {"backendRefs": [{"name": "web-canary", "port": 80}, {"name": "files", "port": 80}]}]}}
    with pytest.raises(RouterError) as caught:
        desired(routing(SINGLE), CTX, live_of(route), RouteState(20, extra=EXTRA))
    assert str(caught.value) == (
        "HTTPRoute shop/web-route: no rule has backendRefs to both 'web-canary' and "
        "'web-stable' to share with the experiment's Services")


def test_an_experiment_service_without_a_port_is_an_error():
    with pytest.raises(RouterError) as caught:
        desired(routing(SINGLE), CTX, live_of(HTTPROUTE),
                RouteState(20, extra=(WeightDestination("web-exp-baseline", 10),)))
    assert str(caught.value) == ("HTTPRoute shop/web-route: experiment Service "
                                 "'web-exp-baseline' has no TCP port for a backendRef to name")


def test_experiment_backends_name_the_rollouts_namespace_from_a_route_elsewhere():
    config = routing("plugins: {argoproj-labs/gatewayAPI: {httpRoute: web-route, "
                     "namespace: gateways}}")
    route = copy.deepcopy(HTTPROUTE)
    route["metadata"]["namespace"] = "gateways"
    (obj,) = desired(config, CTX, live_of(route), RouteState(0, extra=EXTRA[:1]))
    assert obj["metadata"]["namespace"] == "gateways"
    assert obj["spec"]["rules"][0]["backendRefs"][2] == experiment_backend("web-exp-baseline", 10)
    assert backend_weights(obj)[0][:2] == [("web-stable", 90), ("web-canary", 0)]


def test_describe_shows_each_experiment_services_share():
    (live,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), RouteState(20, extra=EXTRA))
    assert describe(routing(SINGLE), CTX, live_of(live)) == [
        RouterWeight("HTTPRoute shop/web-route", "", 20),
        RouterWeight("HTTPRoute shop/web-route", "experiment Service web-exp-baseline", 10),
        RouterWeight("HTTPRoute shop/web-route", "experiment Service web-candidate", 5),
    ]


def test_keep_live_traffic_keeps_a_running_experiments_backends():
    (live,) = desired(routing(SINGLE), CTX, live_of(HTTPROUTE), RouteState(20, extra=EXTRA))
    git = copy.deepcopy(HTTPROUTE)
    git["spec"]["hostnames"] = ["www.example.com"]
    kept = keep_live_traffic(routing(SINGLE), CTX, git, live)
    assert kept["spec"]["hostnames"] == ["www.example.com"]
    assert kept["spec"]["rules"] == live["spec"]["rules"]
    assert kept["metadata"]["annotations"] == {EXPERIMENTS: "web-exp-baseline,web-candidate"}
