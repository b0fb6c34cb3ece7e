"""Experiment steps with in-memory ports: a baseline and a canary beside the tracks, judged by
their analyses, removed when the step ends, the rollout aborts or completes."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, MetricSpec, TemplateArg
from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.argo_rollout import parse_rollout
from bot.rollout.context import RolloutContext
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
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        live = traffic.as_stable(deployment("web:1"))
        self.cluster.put(live)
        new = deployment("web:2")
        context = RolloutContext(
            repo=REPO, number=42, app="web", namespace="shop", deployment=new,
            stable=traffic.stable_at(live, 4), replicas=4,
            template_hash=traffic.template_hash(new))
        strategy = parse_rollout(yaml.safe_load(ROLLOUT), source="rollout.yaml")
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


def test_after_its_duration_and_the_required_analysis_the_step_ends_and_pods_go():
    world = World()
    world.send(m.Start())
    world.measure("canary/errors", "0")
    world.at(10)
    world.measure("canary/errors", "0")  # the required analysis is done (count 2)
    world.measure("baseline/errors", "0")
    assert world.state.step_index == 1  # duration not over yet
    world.at(60)
    assert world.state.step_index == 2 and world.state.phase == "Paused"
    assert "web-exp-baseline" not in world.cluster.objects
    assert ("delete", "web-exp-baseline") in world.cluster.calls
    assert "web-exp-canary" not in world.cluster.objects


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
