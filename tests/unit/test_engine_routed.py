"""The engine's rules for routed canaries: pod counts, managed routes, scale-down delays, and the
canary fields read from Argo's YAML (setCanaryScale, combined steps, metadata, surge)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from bot.policy import check
from bot.policy_parse import parse_policy
from bot.rollout import engine, routers, traffic
from bot.rollout import model as m
from bot.rollout.argo_rollout import parse_rollout
from bot.rollout.fields import StrategyError
from bot.rollout.plan import split

ROUTING = routers.TrafficRouting(router=None, managed_routes=("header", "mirror"))


def state_at(steps: tuple, index: int, weight: int, **strategy_fields) -> m.RolloutState:
    strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"), steps=steps,
                                **strategy_fields)
    state = m.new_state(app="web", revision="b" * 40, stable_revision=None, pr=1,
                        strategy=strategy)
    return dataclasses.replace(state, phase="Progressing", step_index=index, weight=weight)


@pytest.mark.parametrize(("steps", "index", "weight", "fields", "expected"), [
    # Without a router the weight is the pod share, stable never below 1.
    ((m.SetWeightStep(30),), 0, 30, {}, (7, 3)),
    # A router: canary ceil(w × n / 100), stable stays full.
    ((m.SetWeightStep(30),), 0, 30, {"traffic": ROUTING}, (10, 3)),
    ((m.SetWeightStep(5),), 0, 5, {"traffic": ROUTING}, (10, 1)),
    # setCanaryScale replicas / weight, then matchTrafficWeight back to the weight.
    ((m.SetCanaryScaleStep(replicas=2), m.SetWeightStep(50)), 1, 50, {"traffic": ROUTING},
     (10, 2)),
    ((m.SetCanaryScaleStep(weight=80), m.SetWeightStep(10)), 1, 10, {"traffic": ROUTING},
     (10, 8)),
    ((m.SetCanaryScaleStep(replicas=2), m.SetCanaryScaleStep(match_traffic_weight=True),
      m.SetWeightStep(40)), 2, 40, {"traffic": ROUTING}, (10, 4)),
    # dynamicStableScale: stable gives up what the canary takes.
    ((m.SetWeightStep(30),), 0, 30, {"traffic": ROUTING, "dynamic_stable_scale": True}, (7, 3)),
    # minPodsPerReplicaSet floors a non-zero count.
    ((m.SetWeightStep(5),), 0, 5, {"traffic": ROUTING, "min_pods_per_replica_set": 2},
     (10, 2)),
    ((m.SetWeightStep(0),), 0, 0, {"traffic": ROUTING, "min_pods_per_replica_set": 2},
     (10, 0)),
])
def test_replica_split(steps, index, weight, fields, expected):
    assert engine.replica_split(state_at(steps, index, weight, **fields), 10) == expected


def test_set_canary_scale_no_longer_applies_once_completing():
    state = state_at((m.SetCanaryScaleStep(replicas=2), m.SetWeightStep(50)), 1, 50,
                     traffic=ROUTING)
    assert engine.canary_scale(state) == m.SetCanaryScaleStep(replicas=2)
    assert engine.canary_scale(dataclasses.replace(state, phase="Completing")) is None


def header(name: str, value: str | None) -> m.SetHeaderRouteStep:
    matches = () if value is None else (
        routers.HeaderMatch("x-canary", routers.StringMatch(exact=value)),)
    return m.SetHeaderRouteStep(routers.HeaderRoute(name, matches))


def test_managed_routes_accumulate_replace_and_are_removed():
    steps = (header("header", "a"), m.SetWeightStep(10), header("header", "b"),
             m.SetMirrorRouteStep(routers.MirrorRoute("mirror", (routers.MirrorMatch(),), 50)),
             header("header", None), m.PauseStep(None))
    route = engine.route_state(state_at(steps, 3, 10, traffic=ROUTING))
    assert route.weight == 10
    assert [r.matches[0].value.exact for r in route.header_routes] == ["b"]
    assert [r.percentage for r in route.mirror_routes] == [50]
    route = engine.route_state(state_at(steps, 5, 10, traffic=ROUTING))
    assert route.header_routes == () and len(route.mirror_routes) == 1
    # Finished, aborted or completing: back to stable with no managed route.
    done = dataclasses.replace(state_at(steps, 5, 10, traffic=ROUTING), phase="Aborted")
    assert engine.route_state(done) == routers.RouteState(weight=0)


@pytest.mark.parametrize(("phase", "aborted", "fields", "expected"), [
    ("Promoted", None, {}, 0),  # a replica-split canary goes at once
    ("Promoted", None, {"traffic": ROUTING}, 30),  # Argo's default with a router
    ("Promoted", None, {"traffic": ROUTING, "scale_down_delay_seconds": 5}, 5),
    ("Aborted", "x", {}, 0),  # its pods share the stable's Service: they must go now
    ("Aborted", "x", {"traffic": ROUTING}, 30),
    ("Aborted", "x", {"traffic": ROUTING, "abort_scale_down_delay_seconds": 0}, None),
])
def test_scale_down_delay(phase, aborted, fields, expected):
    state = dataclasses.replace(state_at((m.SetWeightStep(10),), 0, 10, **fields), phase=phase,
                                aborted_reason=aborted)
    assert engine.scale_down_delay(state) == expected


def test_a_routed_promotion_waits_out_the_scale_down_delay():
    state = state_at((m.SetWeightStep(10),), 1, 100, traffic=ROUTING)
    state = dataclasses.replace(state, phase="Completing", awaiting_health=True,
                                health_requested_at=0.0)
    state, actions = engine.advance(state, m.WorkloadHealth(True, "", 100), 100.0)
    assert state.phase == "Promoted" and state.scale_down_at == 130.0
    assert m.ScheduleTick(at=130.0, version=state.version) in actions
    assert not [a for a in actions if isinstance(a, m.RemoveCanary)]
    state, actions = engine.advance(state, m.Tick(state.version), 130.0)
    assert m.RemoveCanary() in actions and state.scale_down_at is None


ROLLOUT = """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: x}]}}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      maxSurge: "50"
      maxUnavailable: 1
      canaryMetadata: {labels: {role: canary}}
      stableMetadata: {annotations: {role: stable}}
      trafficRouting:
        managedRoutes: [{name: header}]
        nginx: {stableIngress: web}
      analysis:
        templates: [{templateName: t}]
        startingStep: 2
      steps:
        - setWeight: 10
        - {setCanaryScale: {replicas: 3}, setWeight: 20}
        - pause: {}
"""


def test_a_combined_step_runs_as_consecutive_steps_and_starting_step_follows():
    strategy = parse_rollout(yaml.safe_load(ROLLOUT), source="rollout.yaml")
    assert strategy.steps == (m.SetWeightStep(10), m.SetCanaryScaleStep(replicas=3),
                              m.SetWeightStep(20), m.PauseStep(None))
    assert strategy.analysis is not None and strategy.analysis.starting_step == 3
    assert (strategy.canary_service, strategy.stable_service) == ("web-canary", "web-stable")
    assert (strategy.max_surge, strategy.max_unavailable) == ("50%", 1)
    assert strategy.canary_metadata == m.PodMetadata(labels=(("role", "canary"),))
    deployment = {"metadata": {"name": "web"}, "spec": {"template": {"metadata": {
        "labels": {"app": "web"}}}}}
    canary = traffic.canary_of(deployment, 3, "b" * 40, strategy.canary_metadata)
    assert canary["spec"]["template"]["metadata"]["labels"]["role"] == "canary"
    stable = traffic.as_stable(deployment, strategy.stable_metadata)
    assert stable["spec"]["template"]["metadata"]["annotations"] == {"role": "stable"}
    surged = traffic.with_rolling_update(deployment, "50%", 1)
    assert surged["spec"]["strategy"] == {"type": "RollingUpdate",
                                          "rollingUpdate": {"maxSurge": "50%",
                                                            "maxUnavailable": 1}}


@pytest.mark.parametrize(("change", "message"), [
    ("{setWeight: 10, pause: {}}", ("steps[0]: a step may have only one of setWeight, pause, "
                                   "analysis, experiment (found: setWeight, pause)")),
    ("{setCanaryScale: {replicas: 1, weight: 5}}", ("steps[0].setCanaryScale: needs exactly one "
                                                   "of replicas, weight, matchTrafficWeight")),
    ("{setCanaryScale: {matchTrafficWeight: false}}",
     "steps[0].setCanaryScale.matchTrafficWeight: must be true"),
    ("{}", "steps[0]: a step needs one of"),
])
def test_step_errors_name_file_rollout_and_key(change, message):
    doc = yaml.safe_load(ROLLOUT)
    doc["spec"]["strategy"]["canary"]["steps"] = [yaml.safe_load(change)]
    doc["spec"]["strategy"]["canary"].pop("analysis")
    with pytest.raises(StrategyError) as caught:
        parse_rollout(doc, source="deploy/web/rollout.yaml")
    assert str(caught.value).startswith(
        "deploy/web/rollout.yaml: Rollout web: spec.strategy.canary." + message)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("pingPong", {"pingService": "a"}, "pingPong: ping-pong Services"),
    ("maxSurge", "a lot", "maxSurge: 'a lot' is neither a whole number nor a percentage"),
    ("dynamicStableScale", "yes", "dynamicStableScale: must be true or false"),
    ("canaryMetadata", {"labels": {"a": 1}}, "canaryMetadata.labels.a: must be a string"),
])
def test_canary_field_errors_name_the_key(field, value, message):
    doc = yaml.safe_load(ROLLOUT)
    doc["spec"]["strategy"]["canary"][field] = value
    with pytest.raises(StrategyError) as caught:
        parse_rollout(doc, source="r.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("r.yaml: Rollout web: spec.strategy.canary.")


@pytest.mark.parametrize(("routing", "step", "message"), [
    ({"nginx": {"stableIngress": "web"}, "managedRoutes": [{"name": "h"}]},
     {"setHeaderRoute": {"name": "h", "match": [{"headerName": "x", "headerValue": {
         "exact": "1"}}]}},
     ("steps[0].setHeaderRoute: setHeaderRoute is not possible with the nginx router (Argo "
     "allows it on istio, Gateway API plugin)")),
    ({"smi": {}, "managedRoutes": [{"name": "m"}]},
     {"setMirrorRoute": {"name": "m", "match": [{"method": {"exact": "GET"}}]}},
     "steps[0].setMirrorRoute: setMirrorRoute is not possible with the smi router"),
    ({"nginx": {"stableIngress": "web"}, "maxTrafficWeight": 1000}, {"setWeight": 10},
     "trafficRouting.maxTrafficWeight: only 100 is supported"),
])
def test_route_steps_need_a_router_that_has_them(routing, step, message):
    doc = yaml.safe_load(ROLLOUT)
    canary = doc["spec"]["strategy"]["canary"]
    canary["trafficRouting"] = routing
    canary["steps"] = [step]
    canary.pop("analysis")
    with pytest.raises(StrategyError) as caught:
        parse_rollout(doc, source="r.yaml")
    assert str(caught.value).startswith("r.yaml: Rollout web: spec.strategy.canary." + message)


def test_a_rollout_and_a_deployment_of_the_same_name_are_refused():
    class App:
        name, path, namespace, canary = "web", "deploy/web", "shop", None

    rollout = yaml.safe_load(ROLLOUT)
    del rollout["spec"]["strategy"]["canary"]["trafficRouting"]
    del rollout["spec"]["strategy"]["canary"]["steps"][1]
    rollout["spec"]["strategy"]["canary"].pop("analysis")
    for name in ("canaryService", "stableService"):
        rollout["spec"]["strategy"]["canary"].pop(name)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {}}
    with pytest.raises(StrategyError) as caught:
        split([rollout, deployment], App(), ["deploy/web/rollout.yaml", "deploy/web/old.yaml"])
    assert str(caught.value) == (
        "deploy/web/rollout.yaml: Rollout web: Coalmine runs the Rollout as Deployment 'web', "
        "which deploy/web/old.yaml also declares; remove one of them (or point "
        "spec.workloadRef at it)")


def test_the_routers_objects_answer_to_the_repositorys_policy():
    """A Gateway API plugin config may name another namespace's HTTPRoute: the rollout would
    write it as the repository, so the policy judges it like the app's own manifests."""
    doc = yaml.safe_load(ROLLOUT)
    canary = doc["spec"]["strategy"]["canary"]
    canary["trafficRouting"] = {"plugins": {"argoproj-labs/gatewayAPI": {
        "httpRoute": "shared-route", "namespace": "kube-system"}}}
    canary["steps"] = [{"setWeight": 10}]
    canary.pop("analysis")
    strategy = parse_rollout(doc, source="r.yaml")
    stand_ins = traffic.router_objects(strategy, "web", "shop")
    assert [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
            for o in stand_ins] == [("HTTPRoute", "kube-system", "shared-route")]
    only_shop = parse_policy({"namespaces": ["shop"]}, "server.yaml", "acme/gitops")
    refused = check(only_shop, stand_ins, cluster="default", default_namespace="shop",
                    cluster_scoped=lambda _api, _kind: False)
    assert [v.object for v in refused] == ["HTTPRoute kube-system/shared-route"]
