"""Blue-green with in-memory ports: what each step does to the Deployments and the Services.

The strategy is parsed from Argo's own field names (bot.rollout.specs), so these tests also pin
how a blueGreen mapping compiles into the steps the engine runs. The clock is fixed and moved
by hand; the fake cluster makes a written Deployment ready at once unless told otherwise.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, MetricSpec
from bot.report.rollout import render_rollout
from bot.rollout import engine, specs, traffic
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.fields import At
from bot.rollout.store import RolloutRecord
from handlers.rollout_shell import Shell
from tests.fakes.cluster import FakeCluster, FakeRecordStore
from tests.fakes.rollout_world import REPO, RolloutDriver

T0 = 1_800_000_000.0
CANARY = "web" + traffic.CANARY_SUFFIX
SMOKE = AnalysisTemplate(name="smoke", metrics=(MetricSpec(
    name="ok", provider={"prometheus": {"address": "http://p", "query": "up"}},
    success_condition="result[0] == 1"),))


def deployment(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


def blue_green(**fields: Any) -> m.CanaryStrategy:
    raw = {"activeService": "web-active", "previewService": "web-preview", **fields}
    return specs.parse_blue_green(raw, At("rollout.yaml", "spec.strategy.blueGreen"),
                                  workload=m.WorkloadRef("Deployment", "web"), deadline=300,
                                  source="rollout.yaml")


class World(RolloutDriver):
    """Blue `web:1` live with 4 pods behind both Services; Git asks for green `web:2`."""

    def __init__(self, strategy: m.CanaryStrategy) -> None:
        live = deployment("web:1")
        self.cluster = FakeCluster()
        self.cluster.put(live)
        for name in ("web-active", "web-preview"):
            self.cluster.others[("Service", name)] = traffic.pin_service(service(name), "stable")
        self.store = FakeRecordStore()
        new = deployment("web:2")
        context = RolloutContext(
            repo=REPO, number=42, app="web", namespace="shop", deployment=new,
            stable=traffic.stable_at(live, 4), replicas=4,
            template_hash=traffic.template_hash(new),
            services={"web-active": service("web-active"), "web-preview": service("web-preview")})
        state = m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40, pr=42,
                            strategy=strategy, templates=(SMOKE,))
        self.record = RolloutRecord(state, context)
        self.now = T0

    def measure(self, value: str, phase: str = "Successful") -> Shell:
        run_ = self.state.step_run
        assert run_ is not None, "no analysis is running"
        return self.send(m.MeasurementTaken(run_.id, "ok", Measurement(phase, value)))

    def tick(self, seconds: float) -> Shell:
        self.now += seconds
        return self.send(m.Tick(None))

    def tracks(self) -> tuple[str | None, str | None]:
        return self.cluster.selects("web-active"), self.cluster.selects("web-preview")


ANALYSIS = {"templates": [{"templateName": "smoke"}]}


def test_the_fields_compile_to_argos_update_sequence():
    strategy = blue_green(previewReplicaCount=1, autoPromotionEnabled=False,
                          prePromotionAnalysis=ANALYSIS, postPromotionAnalysis=ANALYSIS)
    assert [engine.describe_step(s) for s in strategy.steps] == [
        "preview with 1 pod(s)", "pre-promotion analysis", "waiting for /promote to switch",
        "preview scaled to full size", "active Service web-active switched to the new version",
        "post-promotion analysis"]
    assert strategy.routed and strategy.kind == "blueGreen"
    auto = blue_green(autoPromotionSeconds=30)
    assert [engine.describe_step(s) for s in auto.steps] == [
        "preview at full size", "auto-promotion in 30s",
        "active Service web-active switched to the new version"]


def test_the_preview_comes_up_without_production_traffic_and_promote_switches():
    world = World(blue_green(previewReplicaCount=1, autoPromotionEnabled=False))
    world.send(m.Start())
    assert world.cluster.replicas(CANARY) == 1 and world.cluster.image(CANARY) == "web:2"
    assert world.cluster.replicas("web") == 4 and world.cluster.image("web") == "web:1"
    assert world.tracks() == ("stable", "canary")
    assert world.state.phase == "Paused"
    assert engine.status(world.state) == ("pending",
                                          "paused · step 2/4 · preview · waiting for /promote")

    world.send(m.Promote("alice"))
    # Preview scaled to full size, then the active Service switched; no post analysis, so
    # the stable Deployment takes the new version and the active Service comes back to it.
    assert world.state.phase == "Promoted"
    assert world.cluster.image("web") == "web:2" and world.cluster.replicas("web") == 4
    assert world.tracks() == ("stable", "stable")
    active_writes = [c for c in world.cluster.calls if c[1] == "Service/web-active"]
    assert len(active_writes) >= 2  # switched to the green pods, then back to stable
    # The replaced pods wait out scaleDownDelaySeconds (Argo's default 30 s) before going.
    assert world.cluster.replicas(CANARY) == 4
    assert engine.next_wakeup(world.state) == world.now + 30
    world.tick(29)
    assert CANARY in world.cluster.objects
    world.tick(1)
    assert CANARY not in world.cluster.objects and world.state.scale_down_at is None


def test_auto_promotion_switches_after_its_seconds():
    world = World(blue_green(autoPromotionSeconds=60, scaleDownDelaySeconds=0,
                             postPromotionAnalysis=ANALYSIS))
    world.send(m.Start())
    assert world.tracks() == ("stable", "canary") and world.state.phase == "Paused"
    world.tick(59)
    assert world.tracks() == ("stable", "canary")
    world.tick(1)
    assert world.tracks() == ("canary", "canary")  # green serves production
    assert world.state.step_run is not None  # the post-promotion analysis judges it
    world.measure("1")
    assert world.state.phase == "Promoted" and world.tracks() == ("stable", "stable")
    assert CANARY not in world.cluster.objects  # scaleDownDelaySeconds: 0


def test_a_failed_post_promotion_analysis_switches_back_and_opens_the_revert():
    world = World(blue_green(postPromotionAnalysis=ANALYSIS))
    world.send(m.Start())
    assert world.tracks() == ("canary", "canary")
    shell = world.measure("0", "Failed")
    assert world.state.phase == "Aborted"
    assert world.tracks() == ("stable", "stable")  # active back on blue, never touched
    assert world.cluster.image("web") == "web:1" and world.cluster.replicas("web") == 4
    assert shell.revert
    # abortScaleDownDelaySeconds (default 30 s): the green pods stay a while, without traffic.
    assert world.cluster.replicas(CANARY) == 4
    world.tick(30)
    assert CANARY not in world.cluster.objects


def test_a_failed_pre_promotion_analysis_never_switches():
    world = World(blue_green(prePromotionAnalysis=ANALYSIS, abortScaleDownDelaySeconds=0))
    world.send(m.Start())
    world.measure("0", "Failed")
    assert world.state.phase == "Aborted"
    active = [o["spec"]["selector"][traffic.TRACK_LABEL] for o in world.cluster.written
              if o["metadata"]["name"] == "web-active"]
    assert active and set(active) == {"stable"}  # written, never pointed at green
    assert world.tracks() == ("stable", "stable")
    # abortScaleDownDelaySeconds: 0 means never: the preview stays for inspection.
    assert world.cluster.replicas(CANARY) == 4 and engine.next_wakeup(world.state) is None


def test_abort_returns_to_the_active_version():
    world = World(blue_green(autoPromotionEnabled=False))
    world.send(m.Start())
    world.send(m.Abort(user="bob"))
    assert world.state.phase == "Aborted" and world.tracks() == ("stable", "stable")


@pytest.mark.parametrize(("fields", "message"), [
    ({"activeService": None}, "activeService: is required"),
    ({"previewService": "web-active"}, "previewService: must differ from activeService"),
    ({"previewReplicaCount": 0}, "previewReplicaCount: 0 must be >= 1"),
    ({"autoPromotionEnabled": "no"}, "autoPromotionEnabled: must be true or false"),
    ({"scaleDownDelaySeconds": "30s"}, "scaleDownDelaySeconds: '30s' is not a whole number"),
    ({"steps": []}, "steps: unknown key"),
])
def test_blue_green_errors_name_the_key(fields, message):
    with pytest.raises(ValueError) as caught:
        blue_green(**fields)
    assert f"rollout.yaml: spec.strategy.blueGreen.{message}" in str(caught.value)


def test_the_pr_shows_which_services_carry_the_traffic():
    world = World(blue_green(autoPromotionEnabled=False))
    world.send(m.Start())
    carried = world.record.context.traffic
    assert carried == [
        {"object": "Service shop/web-active", "detail": "selects the stable pods",
         "canary_weight": 0},
        {"object": "Service shop/web-preview", "detail": "selects the canary pods",
         "canary_weight": 100},
    ]
    text = "\n".join(render_rollout(world.state, traffic=carried))
    assert "**Blue-green rollout** of `bbbbbbb`" in text and "**preview**" in text
    assert "**Traffic** is switched by the Services' selectors, as last written:" in text
    assert "| `Service shop/web-active` | selects the stable pods | 0% |" in text
