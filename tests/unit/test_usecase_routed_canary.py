"""A canary through a traffic router, with in-memory ports: what reaches the router objects.

The strategy is parsed from an Argo Rollout, as users write it, and run by the real engine and
shell against a FakeCluster holding the router's objects; the tests read the objects back.
"""

from __future__ import annotations

import dataclasses

import yaml

from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.argo_rollout import parse_rollout
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord
from tests.fakes.cluster import FakeCluster, FakeRecordStore
from tests.fakes.rollout_world import REPO, RolloutDriver

T0 = 1_800_000_000.0
CANARY = "web" + traffic.CANARY_SUFFIX

ROLLOUT = """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: x}]}}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting:
        managedRoutes: [{name: beta}]
        istio:
          virtualService: {name: web-vs, routes: [primary]}
      steps:
        - setWeight: 20
        - setHeaderRoute:
            name: beta
            match: [{headerName: x-beta, headerValue: {exact: "1"}}]
        - setCanaryScale: {replicas: 5}
        - pause: {}
        - setWeight: 60
        - pause: {}
"""

VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: web-vs, namespace: shop}
spec:
  hosts: [web]
  http:
    - name: primary
      route:
        - destination: {host: web-stable}
          weight: 100
        - destination: {host: web-canary}
          weight: 0
"""


def deployment(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


class World(RolloutDriver):
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        live = deployment("web:1")
        self.cluster.put(live)
        self.cluster.others[("VirtualService", "web-vs")] = yaml.safe_load(VIRTUAL_SERVICE)
        services = {name: service(name) for name in ("web-canary", "web-stable")}
        for name, obj in services.items():
            self.cluster.others[("Service", name)] = traffic.pin_service(obj, "stable")
        new = deployment("web:2")
        context = RolloutContext(
            repo=REPO, number=42, app="web", namespace="shop", deployment=new,
            stable=traffic.stable_at(live, 10), replicas=10,
            template_hash=traffic.template_hash(new), services=services)
        strategy = parse_rollout(yaml.safe_load(ROLLOUT), source="deploy/web/rollout.yaml")
        state = m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40, pr=42,
                            strategy=strategy)
        self.store = FakeRecordStore()
        self.record = RolloutRecord(state, context)
        self.now = T0

    def weights(self) -> dict[str, int]:
        vs = self.cluster.others[("VirtualService", "web-vs")]
        primary = next(r for r in vs["spec"]["http"] if r["name"] == "primary")
        return {d["destination"]["host"]: d.get("weight", 0) for d in primary["route"]}

    def routes(self) -> list[str]:
        vs = self.cluster.others[("VirtualService", "web-vs")]
        return [r["name"] for r in vs["spec"]["http"]]


def test_each_step_reaches_the_virtual_service_and_the_pods():
    world = World()
    world.send(m.Start())
    # setWeight 20, header route, setCanaryScale, then the indefinite pause.
    assert world.state.phase == "Paused" and world.state.step_index == 3
    assert world.weights() == {"web-stable": 80, "web-canary": 20}
    assert world.routes() == ["beta", "primary"]  # the managed route on top, as Argo puts it
    assert world.cluster.replicas(CANARY) == 5  # setCanaryScale, not 20% of 10
    assert world.cluster.replicas("web") == 10  # the stable stays full behind a router
    assert (world.cluster.selects("web-canary"), world.cluster.selects("web-stable")) == (
        "canary", "stable")
    carried = world.record.context.traffic
    assert {"object": "VirtualService shop/web-vs", "canary_weight": 20} in [
        {k: row[k] for k in ("object", "canary_weight")} for row in carried]

    world.send(m.Promote("alice"))  # to setWeight 60: canary back to following the weight
    assert world.weights() == {"web-stable": 40, "web-canary": 60}
    assert world.cluster.replicas(CANARY) == 5  # setCanaryScale replicas stays in force


def test_promotion_returns_the_traffic_to_stable_and_removes_managed_routes():
    world = World()
    world.send(m.Start())
    world.send(m.PromoteFull("alice"))
    assert world.state.phase == "Promoted"
    assert world.cluster.image("web") == "web:2"
    assert world.weights() == {"web-stable": 100, "web-canary": 0}
    assert world.routes() == ["primary"]
    assert world.cluster.selects("web-canary") == "stable"
    # The canary's pods wait out Argo's 30 s default with a router.
    assert CANARY in world.cluster.objects and world.state.scale_down_at == T0 + 30
    world.now += 30
    world.send(m.Tick(None))
    assert CANARY not in world.cluster.objects


def test_abort_sends_everything_back_to_stable_at_once():
    world = World()
    world.send(m.Start())
    shell = world.send(m.Abort(user="bob"))
    assert world.state.phase == "Aborted" and shell.revert
    assert world.weights() == {"web-stable": 100, "web-canary": 0}
    assert world.routes() == ["primary"]
    assert world.cluster.selects("web-canary") == "stable"
    assert world.cluster.image("web") == "web:1" and world.cluster.replicas("web") == 10
    assert engine.next_wakeup(world.state) == T0 + 30  # abortScaleDownDelaySeconds


def test_traffic_moves_only_once_the_canary_is_ready():
    world = World()
    world.cluster.unready.add(CANARY)
    world.send(m.Start())
    assert world.weights() == {"web-stable": 100, "web-canary": 0}
    assert world.state.awaiting_health
    world.cluster.unready.clear()
    world.cluster.put(world.cluster.objects[CANARY])
    world.now += 5
    world.send(m.Tick(None))
    assert world.weights() == {"web-stable": 80, "web-canary": 20}


def test_a_new_rollout_first_takes_the_traffic_off_the_old_canary():
    world = World()
    world.send(m.Start())
    assert world.weights()["web-canary"] == 20
    # A newer merge starts its own rollout (handlers.rollout.start makes a fresh record).
    newer = deployment("web:3")
    context = dataclasses.replace(world.record.context, deployment=newer,
                                  template_hash=traffic.template_hash(newer))
    state = m.new_state(app="web", revision="c" * 40, stable_revision="a" * 40, pr=43,
                        strategy=world.state.strategy)
    world.record = RolloutRecord(state, context)
    world.cluster.unready.add(CANARY)  # web:3's pods take a while
    world.send(m.Start())
    assert world.cluster.image(CANARY) == "web:3"
    assert world.weights() == {"web-stable": 100, "web-canary": 0}  # not 20 % on unready web:3
