"""Experiment steps and baseline pods end to end: the experiment's Deployments come up beside the
canary, its analyses (against a real Prometheus) decide the step, and the pods are removed
afterwards; a failing experiment aborts with the revert PR. A `.coalmine.yaml` baseline follows
the canary's size and goes with it."""

from __future__ import annotations

import pytest

from tests.e2e import world as w
from tests.e2e.test_canary import ANALYSIS_TEMPLATE, canary_config, traffic
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e


def experiment_steps(track: str) -> str:
    return f"""        - setWeight: 34
        - experiment:
            duration: 2
            templates:
              - {{name: baseline, specRef: stable}}
              - {{name: canary, specRef: canary}}
            analyses:
              - name: canary
                templateName: success-rate
                args: [{{name: track, value: {track}}}]
                requiredForCompletion: true
"""


@pytest.fixture(params=["github", "gitlab"])
def world(request, prometheus) -> w.World:
    world = request.getfixturevalue(f"{request.param}_world")
    world.bot.env["PROMETHEUS_URL"] = prometheus.url
    return world


def exists(kube, name: str) -> bool:
    return kube.get_object("apps/v1", "Deployment", "shop", name) is not None


def test_an_experiment_judges_its_pods_then_removes_them(world, fake_kube, prometheus):
    track = traffic(prometheus, "exp-good", 0.0)
    w.set_up(world, {".coalmine.yaml": canary_config(experiment_steps(track)),
                     "deploy/web/analysis.yaml": ANALYSIS_TEMPLATE})
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")
    # The experiment's Deployments are applied one after the other: wait for both.
    wait_until(lambda: exists(fake_kube, "web-exp-baseline")
               and exists(fake_kube, "web-exp-canary"), 60, 0.05)
    assert w.image_of(fake_kube, "web-exp-baseline") == "registry.example/web:1.0"
    assert w.image_of(fake_kube, "web-exp-canary") == "registry.example/web:2.0"
    status = w.final_status(world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert not exists(fake_kube, "web-exp-baseline") and not exists(fake_kube, "web-exp-canary")
    body = w.wait_comment(world, number, "experiment baseline, canary")["body"]
    assert "success-rate" in body.replace("\\", "")  # one analysis: its metric's own name


def test_a_failing_experiment_aborts(world, fake_kube, prometheus):
    track = traffic(prometheus, "exp-bad", 0.5)
    w.set_up(world, {".coalmine.yaml": canary_config(experiment_steps(track)),
                     "deploy/web/analysis.yaml": ANALYSIS_TEMPLATE})
    _number, sha = w.release(world, "registry.example/web:bad", "Web bad")
    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "failure" and "aborted" in status["description"]
    assert not exists(fake_kube, "web-exp-baseline") and not exists(fake_kube, "web-exp-canary")
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    wait_until(lambda: f"coalmine/revert-{sha[:7]}" in world.remote.branches(), 60, 0.1)


def test_a_baseline_follows_the_canary(world, fake_kube):
    config = canary_config("        - setWeight: 34\n        - pause: {}\n").replace(
        "      workload: Deployment/web\n", "      workload: Deployment/web\n      baseline: true\n")
    w.set_up(world, {".coalmine.yaml": config})
    number, sha = w.release(world, "registry.example/web:3.0", "Web 3.0")
    w.wait_comment(world, number, "**Paused**")
    assert w.replicas(fake_kube, "web-baseline") == w.replicas(fake_kube, "web-canary") == 1
    assert w.image_of(fake_kube, "web-baseline") == "registry.example/web:1.0"
    w.allow(world, "alice", "write")
    w.command(world, number, "/promote", "alice")
    status = w.final_status(world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert not exists(fake_kube, "web-baseline")
