"""Experiment steps with in-memory ports: a baseline and a canary beside the tracks, judged by
their analyses, removed when the step ends, the rollout aborts or completes."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, MetricSpec, TemplateArg
from bot.cluster.apply import labelled
from bot.cluster.model import Owner
from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.argo_rollout import parse_rollout
from bot.rollout.context import RolloutContext
from bot.rollout.steps import MAX_EXPERIMENT_TEMPLATES
from bot.rollout.store import RolloutRecord
from bot.rollout.strategy import StrategyError, parse_canary_config
from handlers.rollout_shell import Shell
from tests.fakes.cluster import FakeCluster, FakeRecordStore
from tests.fakes.rollout_world import REPO, RolloutDriver

T0 = 1_800_000_000.0
COMPARE = AnalysisTemplate(
    name="compare", args=(TemplateArg("template"),),
    metrics=(MetricSpec(name="errors", provider={"prometheus": {
        "address": "http://p", "query": 'errors{experiment="{{args.template}}"}'}},
        success_condition="result[0] < 1", count=2, interval=10),))

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
      steps:
        - setWeight: 25
        - experiment:
            duration: 60
            templates:
              - {name: baseline, specRef: stable, replicas: 2}
              - {name: canary, specRef: canary, replicas: 2, metadata: {labels: {role: exp}}}
            analyses:
              - name: baseline
                templateName: compare
                args: [{name: template, value: baseline}]
              - name: canary
                templateName: compare
                args: [{name: template, value: canary}]
                requiredForCompletion: true
        - pause: {}
"""


def deployment(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


class World(RolloutDriver):
    def __init__(self, rollout: str = ROLLOUT) -> None:
        self.cluster = FakeCluster()
        live = traffic.as_stable(deployment("web:1"))
        self.cluster.put(live)
        new = deployment("web:2")
        context = RolloutContext(
            repo=REPO, number=42, app="web", namespace="shop", deployment=new,
            stable=traffic.stable_at(live, 4), replicas=4,
            template_hash=traffic.template_hash(new))
        strategy = parse_rollout(yaml.safe_load(rollout), source="rollout.yaml")
        state = m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40, pr=42,
                            strategy=strategy, templates=(COMPARE,))
        self.store = FakeRecordStore()
        self.record = RolloutRecord(state, context)
        self.now = T0

    def measure(self, metric: str, value: str, phase: str = "Successful") -> Shell:
        run_ = self.state.step_run
        assert run_ is not None
        return self.send(m.MeasurementTaken(run_.id, metric, Measurement(phase, value)))

    def at(self, seconds: float) -> Shell:
        self.now = T0 + seconds
        return self.send(m.Tick(None))


def test_the_experiment_runs_beside_the_canary_and_its_analyses_judge_it():
    world = World()
    shell = world.send(m.Start())
    baseline = world.cluster.objects["web-exp-baseline"]
    exp_canary = world.cluster.objects["web-exp-canary"]
    track = world.cluster.objects["web-canary"]  # the canary track itself, at 25 %, untouched
    assert track["spec"]["selector"]["matchLabels"][traffic.TRACK_LABEL] == "canary"
    assert track["spec"]["replicas"] == 1
    assert exp_canary["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"
    assert exp_canary["spec"]["template"]["metadata"]["labels"]["role"] == "exp"
    assert baseline["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"
    assert baseline["spec"]["replicas"] == 2
    labels = baseline["spec"]["template"]["metadata"]["labels"]
    assert labels[traffic.TRACK_LABEL] == "experiment"
    assert labels[traffic.EXPERIMENT_LABEL] == "baseline"
    assert baseline["spec"]["selector"]["matchLabels"][traffic.EXPERIMENT_LABEL] == "baseline"
    # The analyses started once the pods were ready, one run with both, by analysis name.
    run_ = world.state.step_run
    assert run_ is not None and [r.name for r in run_.results] == [
        "baseline/errors", "canary/errors"]
    assert {a.metric for a in shell.measures} == {"baseline/errors", "canary/errors"}
    assert 'experiment="canary"' in next(a for a in shell.measures
                                     if a.metric == "canary/errors").provider[
        "prometheus"]["query"]


def test_the_required_analysis_succeeding_ends_the_step_before_its_duration():
    """Argo terminates an experiment once every analysis required for completion succeeded,
    whatever is left of its duration (and of the analyses not required)."""
    world = World()
    world.send(m.Start())
    world.measure("canary/errors", "0")
    world.at(10)
    world.measure("baseline/errors", "0")
    assert world.state.step_index == 1  # the required one has one measurement of two
    world.measure("canary/errors", "0")  # the required analysis is done (count 2)
    assert world.state.step_index == 2 and world.state.phase == "Paused"
    assert "web-exp-baseline" not in world.cluster.objects
    assert ("delete", "web-exp-baseline") in world.cluster.calls
    assert "web-exp-canary" not in world.cluster.objects


def test_analyses_not_required_that_finish_early_leave_the_pods_their_duration():
    world = World(ROLLOUT.replace("requiredForCompletion: true", "requiredForCompletion: false"))
    world.send(m.Start())
    for metric in ("baseline/errors", "canary/errors"):
        world.measure(metric, "0")
    world.at(10)
    for metric in ("baseline/errors", "canary/errors"):
        world.measure(metric, "0")  # both analyses Successful, 50 s before the duration ends
    assert world.state.step_index == 1 and "web-exp-canary" in world.cluster.objects
    world.at(59)
    assert world.state.step_index == 1
    world.at(60)
    assert world.state.step_index == 2 and "web-exp-canary" not in world.cluster.objects


def test_a_failed_experiment_analysis_aborts_and_removes_its_pods():
    world = World()
    world.send(m.Start())
    shell = world.measure("baseline/errors", "5", "Failed")
    assert world.state.phase == "Aborted" and shell.revert
    assert "web-exp-baseline" not in world.cluster.objects
    assert world.cluster.image("web") == "web:1"


def test_an_unready_experiment_is_waited_for_before_its_analyses_start():
    world = World()
    world.cluster.unready.add("web-exp-baseline")
    world.send(m.Start())
    assert world.state.step_index == 1 and world.state.step_run is None
    assert world.state.awaiting_health and "experiment web-exp-baseline" in \
        world.state.health_message
    world.cluster.unready.clear()
    world.cluster.put(world.cluster.objects["web-exp-baseline"])
    world.at(5)
    assert world.state.step_run is not None
    assert engine.describe_step(world.state.strategy.steps[1]) == \
        "experiment baseline, canary for 1m"


# ------------------------------------------------------------------ `.coalmine.yaml` baseline

def baseline_world() -> World:
    world = World()
    strategy = parse_canary_config(
        {"workload": "Deployment/web", "baseline": True,
         "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]},
        source=".coalmine.yaml", key="apps[0].canary")
    world.record = RolloutRecord(dataclasses.replace(world.state, strategy=strategy),
                                 world.record.context)
    return world


def test_a_baseline_runs_the_stable_template_sized_like_the_canary():
    world = baseline_world()
    world.send(m.Start())
    baseline = world.cluster.objects["web-baseline"]
    assert baseline["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"
    assert baseline["spec"]["selector"]["matchLabels"][traffic.TRACK_LABEL] == "baseline"
    assert world.cluster.replicas("web-baseline") == world.cluster.replicas("web-canary") == 1
    world.send(m.Promote("alice"))
    assert world.cluster.replicas("web-baseline") == world.cluster.replicas("web-canary") == 2
    world.send(m.Promote("alice"))
    assert world.state.phase == "Promoted"
    assert "web-baseline" not in world.cluster.objects


def test_a_baseline_goes_with_the_canary_at_an_abort():
    world = baseline_world()
    world.send(m.Start())
    world.send(m.Abort(user="bob"))
    assert "web-baseline" not in world.cluster.objects and "web-canary" not in \
        world.cluster.objects


def test_a_baseline_is_refused_under_a_router():
    with pytest.raises(StrategyError) as caught:
        parse_canary_config(
            {"workload": "Deployment/web", "baseline": True, "canaryService": "c",
             "stableService": "s", "trafficRouting": {"smi": {}}, "steps": []},
            source=".coalmine.yaml", key="apps[0].canary")
    assert str(caught.value).startswith(".coalmine.yaml: apps[0].canary.baseline: a baseline")


# ------------------------------------------------------- weighted templates behind a router

ROUTED = """
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
      trafficRouting:
        istio: {virtualService: {name: web-vs, routes: [primary]}}
      steps:
        - setWeight: 20
        - experiment:
            duration: 60
            dryRun: [{metricName: errors}]
            templates:
              - {name: baseline, specRef: stable, weight: 10}
              - {name: candidate, specRef: canary, weight: 5, service: {name: web-candidate}}
              - {name: quiet, specRef: canary}
            analyses:
              - {name: compare, templateName: compare, args: [{name: template, value: baseline}]}
        - pause: {}
"""

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: web-vs, namespace: shop}
spec:
  http:
    - name: primary
      route:
        - {destination: {host: web-stable}, weight: 100}
        - {destination: {host: web-canary}, weight: 0}
"""


def ported(image: str, name: str = "web") -> dict:
    obj = deployment(image)
    obj["metadata"]["name"] = name
    obj["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8080}, {"containerPort": 9090, "protocol": "UDP"}]
    return obj


def app_service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


class RoutedWorld(World):
    def __init__(self, rollout: str = ROUTED, image: str = "web:2", workload: str = "web"
                 ) -> None:
        super().__init__()
        rollout = rollout.replace("metadata: {name: web}", f"metadata: {{name: {workload}}}")
        live = traffic.as_stable(ported("web:1", workload))
        self.cluster = FakeCluster()
        self.cluster.put(live)
        self.cluster.others[("VirtualService", "web-vs")] = yaml.safe_load(VIRTUAL_SERVICE)
        services = {name: app_service(name) for name in ("web-canary", "web-stable")}
        for name, obj in services.items():
            self.cluster.others[("Service", name)] = traffic.pin_service(obj, "stable")
        new = ported(image, workload)
        context = RolloutContext(
            repo=REPO, number=42, app="web", namespace="shop", deployment=new,
            stable=traffic.stable_at(live, 4), replicas=4,
            template_hash=traffic.template_hash(new), services=services)
        strategy = parse_rollout(yaml.safe_load(rollout), source="rollout.yaml")
        state = m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40, pr=42,
                            strategy=strategy, templates=(COMPARE,))
        self.record = RolloutRecord(state, context)

    def weights(self) -> dict[str, int]:
        vs = self.cluster.others[("VirtualService", "web-vs")]
        return {d["destination"]["host"]: d["weight"] for d in vs["spec"]["http"][0]["route"]}

    def service(self, name: str) -> dict | None:
        return self.cluster.others.get(("Service", name))


def test_weighted_templates_get_a_service_and_their_share_once_their_pods_are_ready():
    world = RoutedWorld()
    world.cluster.unready.add("web-exp-baseline")
    world.send(m.Start())
    assert world.service("web-exp-baseline") is not None, "the Services come with the pods"
    assert world.weights() == {"web-stable": 80, "web-canary": 20}, (
        "no share for the experiment before its pods are ready")
    world.cluster.unready.clear()
    world.cluster.put(world.cluster.objects["web-exp-baseline"])
    shell = world.at(5)
    assert world.weights() == {"web-stable": 65, "web-canary": 20, "web-candidate": 5,
                               "web-exp-baseline": 10}
    assert shell.comment, "the PR comment shows the experiment's share when it goes on"
    service = world.service("web-exp-baseline")
    assert service["spec"]["selector"] == \
        world.cluster.objects["web-exp-baseline"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"][traffic.EXPERIMENT_LABEL] == "baseline"
    assert service["spec"]["ports"] == [
        {"protocol": "TCP", "port": 8080, "targetPort": 8080, "name": "http"},
        {"protocol": "UDP", "port": 9090, "targetPort": 9090}]
    assert world.service("web-candidate")["spec"]["selector"][traffic.EXPERIMENT_LABEL] == \
        "candidate"
    assert world.service("web-exp-quiet") is None, "no weight and no service: no Service"
    rows = [(r["detail"], r["canary_weight"]) for r in world.record.context.traffic]
    assert ("route primary: experiment Service web-exp-baseline", 10) in rows
    assert engine.describe_step(world.state.strategy.steps[1]) == \
        "experiment baseline (10%), candidate (5%), quiet for 1m"


def test_when_the_step_ends_the_weights_return_before_the_services_go():
    world = RoutedWorld()
    world.send(m.Start())
    world.at(70)  # the duration is over and no analysis is required for completion
    assert world.state.step_index == 2 and world.state.phase == "Paused"
    assert world.weights() == {"web-stable": 80, "web-canary": 20}
    assert world.service("web-exp-baseline") is None and world.service("web-candidate") is None
    calls = world.cluster.calls
    last_router_write = max(i for i, c in enumerate(calls) if c[:2] == ("apply",
                                                                         "VirtualService/web-vs"))
    assert last_router_write < calls.index(("delete", "Service/web-exp-baseline"))
    assert "web-exp-baseline" not in world.cluster.objects


def test_an_abort_during_the_experiment_takes_its_weights_and_services_away():
    world = RoutedWorld()
    world.send(m.Start())
    world.send(m.Abort(user="bob"))
    assert world.state.phase == "Aborted"
    assert world.weights() == {"web-stable": 100, "web-canary": 0}
    assert world.service("web-exp-baseline") is None and world.service("web-candidate") is None


def test_a_new_revision_during_the_experiment_takes_its_weights_and_services_away():
    world = RoutedWorld()
    world.send(m.Start())
    world.send(m.NewRevision("c" * 40, 43))
    assert world.state.phase == "Superseded"
    assert world.weights() == {"web-stable": 80, "web-canary": 20}
    assert world.service("web-exp-baseline") is None


def test_a_dry_run_metric_of_the_experiment_never_decides():
    world = RoutedWorld()
    world.send(m.Start())
    run_ = world.state.step_run
    assert run_ is not None and [(s.name, s.dry_run) for s in run_.metrics] == [("errors", True)]
    world.measure("errors", "7", "Failed")  # failureLimit 0: the metric has failed
    assert world.state.phase != "Aborted" and world.state.step_index == 1, (
        "a failed dry-run metric neither aborts nor ends the step: its pods keep their duration")
    world.at(60)
    assert world.state.phase == "Paused" and world.state.step_index == 2


def test_a_service_name_taken_by_another_service_is_refused_and_left_alone():
    rollout = ROUTED.replace("service: {name: web-candidate}", "service: {name: web-stable}")
    world = RoutedWorld(rollout)
    before = world.service("web-stable")
    world.send(m.Start())
    assert world.state.phase == "Aborted"
    assert "Service web-stable already exists and is not this template's" in \
        world.state.aborted_reason
    assert world.service("web-stable")["spec"] == before["spec"], (
        "the app's own Service is not changed")
    assert ("delete", "Service/web-stable") not in world.cluster.calls, (
        "nor deleted when the experiment stops")
    assert not [obj for obj in world.cluster.written if obj["metadata"]["name"] == "web-stable"
                and traffic.EXPERIMENT_LABEL in obj["spec"]["selector"]], "never overwritten"


def test_a_weighted_template_whose_pods_declare_no_port_is_refused():
    world = RoutedWorld()
    world.record.context.stable["spec"]["template"]["spec"]["containers"][0].pop("ports")
    world.send(m.Start())
    assert world.state.phase == "Aborted"
    assert "'baseline': its pods declare no container port" in world.state.aborted_reason


def test_a_weight_on_the_nginx_router_is_refused_as_argo_refuses_it():
    rollout = ROUTED.replace("istio: {virtualService: {name: web-vs, routes: [primary]}}",
                             "nginx: {stableIngress: web}")
    with pytest.raises(StrategyError) as caught:
        parse_rollout(yaml.safe_load(rollout), source="rollout.yaml")
    assert str(caught.value) == (
        "rollout.yaml: Rollout web: spec.strategy.canary.steps[1].experiment.templates[0]."
        "weight: an experiment template's weight is not possible with the nginx router (Argo "
        "allows it only with SMI, ALB, Istio and plugins)")


def test_weights_that_leave_the_stable_a_negative_share_are_refused():
    rollout = ROUTED.replace("setWeight: 20", "setWeight: 90")
    with pytest.raises(StrategyError) as caught:
        parse_rollout(yaml.safe_load(rollout), source="rollout.yaml")
    assert str(caught.value) == (
        "rollout.yaml: Rollout web: spec.strategy.canary.steps[1].experiment.templates: the "
        "templates' weights (15) and the canary's setWeight (90) add up to more than 100; the "
        "stable would be left a negative share")


# ------------------------------------------------------- the same through the Gateway API plugin

HTTPROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route, namespace: shop}
spec:
  rules:
    - backendRefs:
        - {name: web-stable, port: 80, weight: 100}
        - {name: web-canary, port: 80, weight: 0}
        - {name: web-shadow, port: 80, weight: 0}
"""


class GatewayWorld(RoutedWorld):
    """RoutedWorld behind an HTTPRoute holding a backend someone else manages (web-shadow)."""

    def __init__(self) -> None:
        super().__init__(ROUTED.replace(
            "istio: {virtualService: {name: web-vs, routes: [primary]}}",
            "plugins: {argoproj-labs/gatewayAPI: {httpRoute: web-route}}"))
        self.cluster.others[("HTTPRoute", "web-route")] = yaml.safe_load(HTTPROUTE)

    def backends(self) -> list[dict]:
        return self.cluster.others[("HTTPRoute", "web-route")]["spec"]["rules"][0][
            "backendRefs"]

    def weights(self) -> dict[str, int]:
        return {b["name"]: b["weight"] for b in self.backends()}


def test_through_the_gateway_api_the_templates_get_backend_refs_on_their_http_port():
    world = GatewayWorld()
    world.send(m.Start())
    assert world.weights() == {"web-stable": 65, "web-canary": 20, "web-shadow": 0,
                               "web-exp-baseline": 10, "web-candidate": 5}
    assert world.backends()[3] == {"group": "", "kind": "Service", "name": "web-exp-baseline",
                                   "namespace": "shop", "port": 8080, "weight": 10}, (
        "the Service's port named http (its pods also declare UDP 9090)")
    rows = [(r["detail"], r["canary_weight"]) for r in world.record.context.traffic]
    assert ("experiment Service web-candidate", 5) in rows


def test_through_the_gateway_api_the_backend_refs_go_before_the_services():
    world = GatewayWorld()
    world.send(m.Start())
    world.at(70)
    assert world.state.step_index == 2 and world.state.phase == "Paused"
    assert world.weights() == {"web-stable": 80, "web-canary": 20, "web-shadow": 0}, (
        "the canary keeps its weight; the backend Coalmine did not add stays")
    calls = world.cluster.calls
    last_router_write = max(i for i, c in enumerate(calls)
                            if c[:2] == ("apply", "HTTPRoute/web-route"))
    assert last_router_write < calls.index(("delete", "Service/web-exp-baseline"))


def test_through_the_gateway_api_an_abort_takes_the_backend_refs_away():
    world = GatewayWorld()
    world.send(m.Start())
    world.send(m.Abort(user="bob"))
    assert world.state.phase == "Aborted"
    assert world.weights() == {"web-stable": 100, "web-canary": 0, "web-shadow": 0}
    assert world.service("web-exp-baseline") is None and world.service("web-candidate") is None


@pytest.mark.parametrize(("ports", "chosen"), [
    ([{"port": 9090, "protocol": "UDP"}, {"port": 7070}, {"name": "http", "port": 8080}], 8080),
    ([{"port": 9090, "protocol": "UDP"}, {"port": 7070, "name": "metrics"}], 7070),
    ([{"port": 9090, "protocol": "UDP"}], None),
])
def test_the_backend_port_is_the_http_one_else_the_first_tcp_one(ports, chosen):
    assert traffic.experiment_backend_port({"spec": {"ports": ports}}) == chosen


def test_another_owners_experiment_service_is_neither_taken_over_nor_deleted():
    """Attack: a repository serving another app in the same namespace names its template's
    `service.name` after that app's experiment Service and copies its labels and selector
    (all readable in the victim's Git). Labels alone said "this template's", so the stop that
    followed the cluster's refusal to overwrite it deleted the victim's Service."""
    world = RoutedWorld()
    template = world.state.strategy.steps[1].templates[1]
    assert template.service == "web-candidate"
    victim = Owner("github", 99, "acme/payments", "payments")
    desired = traffic.experiment_service(
        traffic.experiment_of(world.record.context.deployment, template, "c" * 40),
        template, "web")
    theirs = labelled(desired, victim, "c" * 40)
    world.cluster.others[("Service", "web-candidate")] = theirs
    world.send(m.Start())
    assert world.state.phase == "Aborted"
    assert "Service web-candidate already exists and is not this template's" in \
        world.state.aborted_reason
    world.send(m.Abort(user="bob"))
    assert world.service("web-candidate") == theirs, "the other app's Service is untouched"
    assert ("delete", "Service/web-candidate") not in world.cluster.calls
    assert world.service("web-exp-baseline") is None, "this rollout's own Service still goes"


def test_a_default_service_name_that_is_no_dns_label_is_refused_before_anything_routes():
    """Attack: a workload name long enough that `<workload>-exp-<template>` passes 63
    characters. The Service cannot exist under that name: the cluster's 422 was taken for a
    passing refusal, and the rollout kept the experiment's pods until its deadline with no
    reason naming the key. Now the step fails at once, saying what to set."""
    workload = "w" * 55
    world = RoutedWorld(workload=workload)
    world.send(m.Start())
    assert world.state.phase == "Aborted"
    assert (f"experiment template 'baseline': Service {workload}-exp-baseline is not a "
            "DNS-1035 label of at most 63 characters; set the template's service.name"
            ) in world.state.aborted_reason
    assert not [obj for obj in world.cluster.written if obj["kind"] == "Service"
                and len(obj["metadata"]["name"]) > 63], "never written"


def test_an_experiment_of_more_templates_than_the_limit_is_refused():
    """Attack: a PR whose experiment step lists thousands of templates, each a Deployment, a
    Service and a router destination (and a quadratic duplicate check in the parser)."""
    many = "\n".join(f"              - {{name: t{i}, specRef: canary, weight: 0}}"
                     for i in range(MAX_EXPERIMENT_TEMPLATES + 1))
    rollout = ROUTED.replace(
        "              - {name: baseline, specRef: stable, weight: 10}\n", many + "\n")
    with pytest.raises(StrategyError) as caught:
        parse_rollout(yaml.safe_load(rollout), source="rollout.yaml")
    assert str(caught.value) == (
        "rollout.yaml: Rollout web: spec.strategy.canary.steps[1].experiment.templates: has "
        f"{MAX_EXPERIMENT_TEMPLATES + 3} templates; at most {MAX_EXPERIMENT_TEMPLATES} (each is "
        "a Deployment, and with weight or service a Service and a router destination)")
