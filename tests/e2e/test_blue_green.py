"""Blue-green rollouts end to end, on GitHub and on GitLab: the preview comes up behind the
preview Service, production traffic switches only on promotion (by /promote or after
autoPromotionSeconds), and a failed pre- or post-promotion analysis aborts with a revert PR
exactly as a failed canary does. Real bot processes, Redis, git and Prometheus; the fake API
server holds the Services, whose selectors say where traffic goes."""

from __future__ import annotations

import pytest

from tests.e2e import world as w
from tests.e2e.test_canary import ANALYSIS_TEMPLATE, traffic
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e


def bg_service(name: str) -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def config(strategy: str) -> str:
    return f"""apps:
  - name: web
    path: deploy/web
    namespace: shop
    healthTimeoutSeconds: 20
    blueGreen:
      workload: Deployment/web
      progressDeadlineSeconds: 30
      activeService: web-active
      previewService: web-preview
{strategy}"""


def analysis(track: str) -> str:
    return f"""        templates: [{{templateName: success-rate}}]
        args: [{{name: track, value: {track}}}]
"""


@pytest.fixture(params=["github", "gitlab"])
def world(request, prometheus) -> w.World:
    world = request.getfixturevalue(f"{request.param}_world")
    world.bot.env["PROMETHEUS_URL"] = prometheus.url
    return world


def set_up(world: w.World, strategy: str) -> None:
    w.set_up(world, {
        ".coalmine.yaml": config(strategy),
        "deploy/web/analysis.yaml": ANALYSIS_TEMPLATE,
        "deploy/web/services.yaml": bg_service("web-active") + "---\n" + bg_service(
            "web-preview"),
    })


def selects(kube, service: str) -> str | None:
    obj = kube.get_object("v1", "Service", "shop", service)
    return (obj["spec"]["selector"] or {}).get("coalmine.dev/track") if obj else None


def test_preview_first_then_promote_switches(world, fake_kube):
    set_up(world, "      previewReplicaCount: 1\n      autoPromotionEnabled: false\n")
    assert (selects(fake_kube, "web-active"), selects(fake_kube, "web-preview")) == (
        "stable", "stable")  # no rollout: both Services on the running version
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")
    w.wait_comment(world, number, "**Paused**")
    assert w.replicas(fake_kube, "web-canary") == 1
    assert w.image_of(fake_kube, "web-canary") == "registry.example/web:2.0"
    assert (selects(fake_kube, "web-active"), selects(fake_kube, "web-preview")) == (
        "stable", "canary")
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    body = w.wait_comment(world, number, "Blue-green rollout")["body"]
    assert "Service shop/web-preview" in body.replace("\\", "")

    w.allow(world, "alice", "write")
    w.command(world, number, "/promote", "alice")
    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "success" and status["description"] == "promoted"
    assert w.image_of(fake_kube, "web") == "registry.example/web:2.0"
    assert (selects(fake_kube, "web-active"), selects(fake_kube, "web-preview")) == (
        "stable", "stable")


def test_auto_promotion_after_its_seconds(world, fake_kube):
    set_up(world, "      autoPromotionSeconds: 2\n      scaleDownDelaySeconds: 0\n")
    number, sha = w.release(world, "registry.example/web:3.0", "Web 3.0")
    wait_until(lambda: selects(fake_kube, "web-preview") == "canary", 30, 0.05)
    status = w.final_status(world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert w.image_of(fake_kube, "web") == "registry.example/web:3.0"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None
    body = w.wait_comment(world, number, "switched to the new version")["body"]
    assert "auto-promotion in 2s" in body


@pytest.mark.parametrize("stage", ["prePromotionAnalysis", "postPromotionAnalysis"])
def test_a_failed_promotion_analysis_aborts_and_reverts(world, fake_kube, prometheus, stage):
    track = traffic(prometheus, f"bg-{stage[:4]}", 0.5)
    set_up(world, f"      abortScaleDownDelaySeconds: 1\n      {stage}:\n{analysis(track)}")
    number, sha = w.release(world, "registry.example/web:bad", "Web bad")
    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "failure" and "aborted" in status["description"], status
    assert (selects(fake_kube, "web-active"), selects(fake_kube, "web-preview")) == (
        "stable", "stable")
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    wait_until(lambda: fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary")
               is None, 30, 0.1)  # after abortScaleDownDelaySeconds
    branch = f"coalmine/revert-{sha[:7]}"
    wait_until(lambda: branch in world.remote.branches(), 60, 0.1)
    body = w.wait_comment(world, number, "Revert PR opened")["body"]
    assert "promotion analysis" in body
