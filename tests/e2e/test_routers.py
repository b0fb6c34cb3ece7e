"""Canaries through each traffic router, end to end: the user's Argo Rollout and router objects
as they would keep them in Git, real bot processes and the fake API server serving the routers'
CRDs. At every step the router objects hold the step's weight; /promote, /abort, completion, a
superseding merge and a worker killed mid-step all leave them where Argo would.

The router does not depend on the forge, so each router runs on GitHub; Istio runs on GitLab too.
Every scenario runs for every router.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e import world as w
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

CONFIG = """apps:
  - name: web
    path: deploy/web
    namespace: shop
    healthTimeoutSeconds: 20
"""

SERVICES = "".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
""" for name in ("web-canary", "web-stable"))

MANUAL = """        - setWeight: 25
        - pause: {}
        - setWeight: 50
        - pause: {}
"""
TIMED = """        - setWeight: 25
        - pause: {duration: 3}
        - setWeight: 50
        - pause: {duration: 1}
"""

ROUTERS = {
    "nginx": ("""        nginx:
          stableIngress: web-ingress
""", """---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web-ingress, annotations: {kubernetes.io/ingress.class: nginx}}
spec:
  rules:
    - host: web.example
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {service: {name: web-stable, port: {number: 80}}}
"""),
    "istio": ("""        istio:
          virtualService: {name: web-vs, routes: [primary]}
""", """---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web-vs}
spec:
  hosts: [web.example]
  http:
    - name: primary
      route:
        - destination: {host: web-stable}
          weight: 100
        - destination: {host: web-canary}
          weight: 0
"""),
    "gatewayAPI": ("""        plugins:
          argoproj-labs/gatewayAPI: {httpRoute: web-route, namespace: shop}
""", """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route}
spec:
  parentRefs: [{name: shop-gateway}]
  rules:
    - backendRefs:
        - {name: web-stable, port: 80, weight: 100}
        - {name: web-canary, port: 80, weight: 0}
"""),
    "smi": ("""        smi: {trafficSplitName: web-split}
""", ""),
}


def rollout(image: str, router: str, steps: str) -> str:
    return f"""apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: web}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "{image}", ports: [{{containerPort: 8080}}]}}]
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 0
      trafficRouting:
{ROUTERS[router][0]}      steps:
{steps}"""


def canary_weight(kube, router: str) -> int | None:
    """The canary's share the router object holds now (None while it does not exist)."""
    if router == "nginx":
        obj = kube.get_object("networking.k8s.io/v1", "Ingress", "shop",
                              "web-web-ingress-canary")
        value = obj and obj["metadata"]["annotations"].get(
            "nginx.ingress.kubernetes.io/canary-weight")
        return int(value) if value is not None else None
    if router == "istio":
        obj = kube.get_object("networking.istio.io/v1beta1", "VirtualService", "shop", "web-vs")
        routes = obj["spec"]["http"] if obj else []
        return next((d.get("weight", 0) for r in routes if r.get("name") == "primary"
                     for d in r["route"] if d["destination"]["host"] == "web-canary"), None)
    if router == "gatewayAPI":
        obj = kube.get_object("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "web-route")
        refs = obj["spec"]["rules"][0]["backendRefs"] if obj else []
        return next((r.get("weight") for r in refs if r["name"] == "web-canary"), None)
    obj = kube.get_object("split.smi-spec.io/v1alpha1", "TrafficSplit", "shop", "web-split")
    backends = obj["spec"]["backends"] if obj else []
    return next((int(b["weight"]) for b in backends if b["service"] == "web-canary"), None)


class Setup:
    def __init__(self, world: w.World, kube, router: str, steps: str) -> None:
        self.world, self.kube, self.router, self.steps = world, kube, router, steps
        w.set_up(world, {
            ".coalmine.yaml": CONFIG,
            "deploy/web/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  "
                                         "name: shop\n",
            "deploy/web/rollout.yaml": rollout("registry.example/web:1.0", router, steps),
            "deploy/web/network.yaml": SERVICES + ROUTERS[router][1],
            "deploy/web/deployment.yaml": None,  # the world's plain Deployment: the Rollout's now
        })
        w.allow(world, "alice", "write")

    def release(self, image: str, title: str) -> tuple[int, str]:
        number, sha, resp = w.merge(self.world, {
            "deploy/web/rollout.yaml": rollout(image, self.router, self.steps)}, title)
        assert resp.status_code == 202
        return number, sha

    def weight_becomes(self, weight: int, timeout: float = 60) -> None:
        wait_until(lambda: canary_weight(self.kube, self.router) == weight, timeout, 0.05,
                   message=f"{self.router}: canary weight never {weight} "
                           f"(now {canary_weight(self.kube, self.router)})")

    def selects(self, service: str) -> str | None:
        obj = self.kube.get_object("v1", "Service", "shop", service)
        return obj["spec"]["selector"].get("coalmine.dev/track")


@pytest.fixture
def setup(request, github_world, router_crds) -> Callable[..., Setup]:
    def make(router: str, steps: str = MANUAL) -> Setup:
        return Setup(github_world, router_crds, router, steps)
    return make


@pytest.mark.parametrize("router", list(ROUTERS))
def test_steps_promote_and_completion(setup, router):
    s = setup(router)
    number, sha = s.release("registry.example/web:2.0", "Web 2.0")
    s.weight_becomes(25)
    assert (s.selects("web-canary"), s.selects("web-stable")) == ("canary", "stable")
    assert w.replicas(s.kube, "web-canary") == 1 and w.replicas(s.kube, "web") == 4
    body = w.wait_comment(s.world, number, "**Paused**")["body"].replace("\\", "")
    assert f"routed by `{router}`" in body
    w.command(s.world, number, "/promote", "alice")
    s.weight_becomes(50)
    assert w.replicas(s.kube, "web-canary") == 2
    w.command(s.world, number, "/promote", "alice")
    status = w.final_status(s.world, sha, timeout=90)
    assert status["description"] == "promoted"
    s.weight_becomes(0)  # everything back on stable, which now runs the new version
    assert w.image_of(s.kube, "web") == "registry.example/web:2.0"
    assert s.selects("web-canary") == "stable"
    wait_until(lambda: w.replicas(s.kube, "web-canary") is None, 30, 0.1)


@pytest.mark.parametrize("router", list(ROUTERS))
def test_abort_puts_the_weight_back_on_stable(setup, router):
    s = setup(router)
    number, sha = s.release("registry.example/web:bad", "Web bad")
    s.weight_becomes(25)
    w.command(s.world, number, "/abort", "alice")
    status = w.final_status(s.world, sha, timeout=90)
    assert status["state"] == "failure"
    assert canary_weight(s.kube, router) == 0
    assert w.image_of(s.kube, "web") == "registry.example/web:1.0"
    assert s.selects("web-canary") == "stable"


@pytest.mark.parametrize("router", list(ROUTERS))
def test_a_superseding_merge_restarts_at_the_first_weight(setup, router):
    s = setup(router)
    number, _sha = s.release("registry.example/web:2.0", "Web 2.0")
    s.weight_becomes(25)
    w.command(s.world, number, "/promote", "alice")
    s.weight_becomes(50)
    s.release("registry.example/web:3.0", "Web 3.0")
    s.weight_becomes(25)
    wait_until(lambda: w.image_of(s.kube, "web-canary") == "registry.example/web:3.0", 30, 0.05)


@pytest.mark.parametrize("router", list(ROUTERS))
def test_a_worker_killed_mid_step_finishes_the_rollout(setup, router):
    s = setup(router, TIMED)
    _number, sha = s.release("registry.example/web:4.0", "Web 4.0")
    s.weight_becomes(25)
    for proc in list(s.world.bot.workers):
        s.world.bot.kill_worker(proc)
    s.world.bot.start_worker()
    status = w.final_status(s.world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert canary_weight(s.kube, router) == 0


def test_istio_on_gitlab(gitlab_world, router_crds):
    s = Setup(gitlab_world, router_crds, "istio", MANUAL)
    number, sha = s.release("registry.example/web:2.0", "Web 2.0")
    s.weight_becomes(25)
    w.command(s.world, number, "/promote", "alice")
    s.weight_becomes(50)
    w.command(s.world, number, "/abort", "alice")
    status = w.final_status(s.world, sha, timeout=90)
    assert status["state"] == "failure" and canary_weight(s.kube, "istio") == 0


EXPERIMENT = """        - setWeight: 25
        - experiment:
            duration: 1h
            templates:
              - {name: baseline, specRef: stable, weight: 10}
        - pause: {}
"""


def weight_of(kube, router: str, service: str) -> int | None:
    """The weight the router gives `service` beside an experiment (None: no such destination);
    only the routers that carry experiments (canary_weight covers NGINX)."""
    if router == "istio":
        obj = kube.get_object("networking.istio.io/v1beta1", "VirtualService", "shop", "web-vs")
        routes = obj["spec"]["http"] if obj else []
        return next((d.get("weight", 0) for r in routes if r.get("name") == "primary"
                     for d in r["route"] if d["destination"]["host"] == service), None)
    if router == "gatewayAPI":
        obj = kube.get_object("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "web-route")
        refs = obj["spec"]["rules"][0]["backendRefs"] if obj else []
        return next((r.get("weight") for r in refs if r["name"] == service), None)
    obj = kube.get_object("split.smi-spec.io/v1alpha1", "TrafficSplit", "shop", "web-split")
    backends = obj["spec"]["backends"] if obj else []
    return next((int(b["weight"]) for b in backends if b["service"] == service), None)


@pytest.mark.parametrize("router", ["istio", "smi", "gatewayAPI"])
def test_an_experiment_template_gets_its_service_and_weight_for_the_step(setup, router):
    s = setup(router, EXPERIMENT)
    number, sha = s.release("registry.example/web:2.0", "Web 2.0")
    wait_until(lambda: weight_of(s.kube, router, "web-exp-baseline") == 10, 60, 0.05,
               message=f"{router}: the experiment never got its 10 %")
    assert canary_weight(s.kube, router) == 25
    assert weight_of(s.kube, router, "web-stable") == 65, "the weights add up to 100"
    if router == "gatewayAPI":  # as the API server stored it (its CRD schema prunes strays)
        route = s.kube.get_object("gateway.networking.k8s.io/v1", "HTTPRoute", "shop",
                                  "web-route")
        ref = route["spec"]["rules"][0]["backendRefs"][-1]
        assert (ref["name"], ref["namespace"], ref["port"]) == ("web-exp-baseline", "shop", 8080)
        assert route["metadata"]["annotations"]["coalmine.dev/experiment-backends"] == \
            "web-exp-baseline"
    service = s.kube.get_object("v1", "Service", "shop", "web-exp-baseline")
    assert service["spec"]["selector"]["coalmine.dev/experiment"] == "baseline"
    assert service["spec"]["ports"] == [{"protocol": "TCP", "port": 8080, "targetPort": 8080}]
    w.wait_comment(s.world, number, "`experiment baseline (10%) for 1h`")
    # Its row in the PR comment's traffic table (names escaped for Markdown there).
    w.wait_comment(s.world, number, "Service web\\-exp\\-baseline | 10%")
    w.command(s.world, number, "/promote", "alice")  # past the experiment, to the pause
    # One job takes the weight off, then deletes the Service, then the pods: wait for all.
    wait_until(lambda: weight_of(s.kube, router, "web-exp-baseline") is None
               and s.kube.get_object("v1", "Service", "shop", "web-exp-baseline") is None
               and s.kube.get_object("apps/v1", "Deployment", "shop", "web-exp-baseline")
               is None,
               60, 0.05, message=f"{router}: the experiment's weight, Service or pods stayed")
    assert (canary_weight(s.kube, router), weight_of(s.kube, router, "web-stable")) == (25, 75)
    if router == "gatewayAPI":
        route = s.kube.get_object("gateway.networking.k8s.io/v1", "HTTPRoute", "shop",
                                  "web-route")
        assert "coalmine.dev/experiment-backends" not in (
            route["metadata"].get("annotations") or {})
    w.command(s.world, number, "/promote", "alice")
    status = w.final_status(s.world, sha, timeout=90)
    assert status["description"] == "promoted"
