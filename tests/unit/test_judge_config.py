"""The judge of `.coalmine.yaml` (bot.rollout.judge_config): a `canary.judge` section and its
`- judge: {}` steps become the AnalysisTemplate a hand-written kayenta template would be, and
every mistake names the file, the app's key path and the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.analysis.measure import measure
from bot.analysis.templates import resolve_metrics
from bot.config import ConfigError, parse_repo_config
from bot.egress import DENY_ALL
from bot.judge import kayenta
from bot.rollout.engine import describe_step
from bot.rollout.fields import StrategyError
from bot.rollout.judge_config import JUDGE_TEMPLATE
from bot.rollout.model import AnalysisStep, RolloutState, TemplateRef, new_state
from bot.rollout.plan import split

LATENCY = ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket'
           '{app="web", {{scope}} }[1m])))')


def config(judge: Any = None, steps: Any = None, *, drop: tuple[str, ...] = (),
           **canary: Any) -> dict:
    """One app whose canary has baseline pods, a judge and a judge step; `judge` and `steps`
    replace those, `canary` keys are added (None or `drop` deletes one)."""
    app = {"name": "web", "path": "deploy/web", "namespace": "shop", "canary": {
        "workload": "Deployment/web", "baseline": True,
        "judge": {"thresholds": {"pass": 90, "marginal": 75}, "interval": "2m",
                  "metrics": [{"name": "p99 latency", "query": LATENCY,
                               "direction": "increase"}]} if judge is None else judge,
        "steps": [{"setWeight": 25}, {"judge": {}}, {"setWeight": 50}]
        if steps is None else steps}}
    for key, value in canary.items():
        if value is None:
            app["canary"].pop(key)
        else:
            app["canary"][key] = value
    for key in drop:
        app["canary"].pop(key)
    return {"apps": [app]}


def parsed(data: dict):
    return parse_repo_config(yaml.safe_dump(data), source=".coalmine.yaml").apps[0].canary


def error(data: dict) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_repo_config(yaml.safe_dump(data), source=".coalmine.yaml")
    return str(refused.value)


def judge_with(**changes: Any) -> dict:
    judge = copy.deepcopy(config()["apps"][0]["canary"]["judge"])
    for key, value in changes.items():
        if value is None:
            judge.pop(key)
        else:
            judge[key] = value
    return judge


def test_a_judge_step_runs_the_compiled_kayenta_template():
    strategy = parsed(config())
    step = strategy.steps[1]
    assert step == AnalysisStep(templates=(TemplateRef(JUDGE_TEMPLATE),), label="judge")
    assert describe_step(step) == "judge"
    (template,) = strategy.templates
    assert template.name == JUDGE_TEMPLATE and template.source == ".coalmine.yaml"
    (metric,) = template.metrics
    assert metric.name == "judge" and metric.count == 1 and metric.interval == 120.0
    # The first measurement waits one window: read at once, it would reach back before the
    # step, when the canary may have had no traffic.
    assert metric.initial_delay == 120.0
    config_ = kayenta.parse_kayenta(metric.provider["kayenta"])
    assert config_.thresholds.passing == 90 and config_.window == 120.0
    assert config_.config_name == "web"
    (scope,) = config_.scopes
    assert scope.experiment == kayenta.ScopeDetail(scope='coalmine_dev_track="canary"')
    assert scope.control == kayenta.ScopeDetail(scope='coalmine_dev_track="baseline"')
    (query,) = config_.metrics
    assert kayenta.render_query(query.canary_query, scope.experiment).endswith(
        '{app="web", coalmine_dev_track="canary" }[1m])))')


def test_defaults_and_the_default_scopes_settings():
    judge = {"metrics": [{"name": "errors", "query": "sum(x{ {{scope}} })"}],
             "step": 15, "trackLabel": "label_coalmine_dev_track", "window": "10m"}
    (template,) = parsed(config(judge=judge)).templates
    spec = template.metrics[0].provider["kayenta"]
    assert spec["thresholds"] == {"pass": 95, "marginal": 75}
    assert spec["scopes"][0]["controlScope"] == {
        "scope": 'label_coalmine_dev_track="baseline"', "step": 15}
    assert template.metrics[0].initial_delay == 600.0 and template.metrics[0].interval is None


def test_the_template_resolves_into_a_run_and_survives_the_stored_state():
    strategy = parsed(config())
    (metric,) = resolve_metrics(strategy.templates, ())
    assert metric.provider == strategy.templates[0].metrics[0].provider
    state = new_state(app="web", revision="abc", stable_revision=None, pr=1,
                      strategy=strategy, templates=strategy.templates)
    assert RolloutState.from_dict(state.to_dict()) == state


def test_the_template_does_not_share_the_files_lists():
    data = config()
    strategy = parsed(data)
    data["apps"][0]["canary"]["judge"]["metrics"][0]["name"] = "changed"
    assert kayenta.parse_kayenta(strategy.templates[0].metrics[0].provider["kayenta"]) \
        .metrics[0].settings.name == "p99 latency"


def test_own_scopes_and_queries_work_without_baseline_pods():
    judge = {"lookback": True, "interval": "1m", "count": 3, "scopes": [
        {"name": "default", "controlScope": {"scope": 'track="stable"'},
         "experimentScope": {"scope": 'track="canary"'}}],
        "metrics": [{"name": "latency", "query": "avg(x{ {{scope}} })"},
                    {"name": "errors", "canaryQuery": "a", "baselineQuery": "b"}]}
    (template,) = parsed(config(judge=judge, baseline=False)).templates
    config_ = kayenta.parse_kayenta(template.metrics[0].provider["kayenta"])
    assert config_.lookback and config_.scopes[0].control.scope == 'track="stable"'
    assert template.metrics[0].count == 3


def test_a_background_analysis_may_run_the_judge():
    strategy = parsed(config(steps=[{"setWeight": 50}],
                             analysis={"templates": [{"templateName": JUDGE_TEMPLATE}]}))
    assert strategy.analysis.templates == (TemplateRef(JUDGE_TEMPLATE),)


PREFIX = ".coalmine.yaml: apps[0].canary"


@pytest.mark.parametrize(("data", "key", "reason"), [
    (config(judge=judge_with(treshold=1)), "judge.treshold", "unknown key (allowed: "),
    (config(judge=judge_with(metrics=None)), "judge.metrics", "is required"),
    (config(judge=[]), "judge", "must be a mapping"),
    (config(judge=judge_with(metrics=[{"name": "x", "query": "avg(x)"}])),
     "judge.metrics[0].query", "has no {{scope}} placeholder"),
    (config(judge=judge_with(metrics=[{"name": "x", "query": "x{ {{scope}} }",
                                       "direction": "up"}])),
     "judge.metrics[0].direction", "expected one of increase|decrease|either"),
    (config(judge=judge_with(thresholds={"pass": 70, "marginal": 80})),
     "judge.thresholds.marginal", "80 is above pass 70"),
    (config(judge=judge_with(interval="soon")), "judge.interval", "not a duration"),
    (config(judge=judge_with(interval=None)), "judge.window", "has no start"),
    (config(judge=judge_with(count=3, interval=None, window="5m")), "judge.interval",
     "is required when count > 1"),
    (config(judge=judge_with(lookback="yes")), "judge.lookback", "must be true or false"),
    (config(judge=judge_with(trackLabel="coalmine.dev/track")), "judge.trackLabel",
     "not a Prometheus label name"),
    (config(judge=judge_with(scopes=[{"name": "a", "controlScope": {"scope": "x"},
                                      "experimentScope": {"scope": "y"}}], step=30)),
     "judge.step", "applies to the default scopes only"),
    (config(baseline=None), "judge.scopes", "is required without baseline: true"),
    (config(judge=judge_with(metrics=[{"name": "x", "query": 'x{ {{scope}}, a="{{args.a}}" }'}])),
     "judge", "{{args.a}}: the judge has no arguments"),
    (config(steps=[{"setWeight": 20}]), "judge", "no step runs the judge"),
    (config(steps=[{"judge": {}}], drop=("judge",)), "steps[0].judge",
     "needs canary.judge"),
    (config(steps=[{"judge": {"metrics": []}}]), "steps[0].judge", "takes nothing"),
    (config(steps=[{"judge": {}, "setWeight": 10}]), "steps[0]",
     "a step may have only one of setWeight, pause, analysis, experiment, judge"),
    (config(steps=[{"jugde": {}}]), "steps[0].jugde", "unknown step (supported: setWeight"),
])
def test_mistakes_name_the_file_the_app_the_key_and_the_reason(data, key, reason):
    text = error(data)
    assert text.startswith(f"{PREFIX}.{key}: "), text
    assert reason in text


def test_an_unknown_step_lists_the_judge_among_the_steps():
    assert error(config(steps=[{"jugde": {}}])).endswith(
        "setHeaderRoute, setMirrorRoute, judge)")


def test_a_step_plugin_keeps_its_own_refusal():
    assert "step plugins are not supported" in error(config(steps=[{"plugin": {}}]))


class App:
    name, path, namespace = "web", "deploy/web", "shop"

    def __init__(self, canary) -> None:
        self.canary = canary


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "w:1"}]}}}}


def test_the_plan_holds_the_judge_beside_the_manifests_templates():
    strategy = parsed(config())
    _, plan = split([copy.deepcopy(DEPLOYMENT)], App(strategy), ["deploy/web/web.yaml"])
    assert [t.name for t in plan.templates] == [JUDGE_TEMPLATE]


def test_a_manifest_template_may_not_take_the_judges_name():
    clash = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
             "metadata": {"name": JUDGE_TEMPLATE},
             "spec": {"metrics": [{"name": "m", "provider": {"prometheus": {"query": "up"}}}]}}
    with pytest.raises(StrategyError) as refused:
        split([copy.deepcopy(DEPLOYMENT), clash], App(parsed(config())),
              ["deploy/web/web.yaml", "deploy/web/judge.yaml"])
    assert str(refused.value).startswith(
        "deploy/web/judge.yaml: metadata.name: AnalysisTemplate 'coalmine-judge' is the name "
        "of the judge .coalmine.yaml apps[0].canary.judge defines")


def test_the_readme_example_is_accepted_as_written():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Without an AnalysisTemplate: `judge:`"):]
    start = section.index("```yaml\n") + len("```yaml\n")
    strategy = parsed(yaml.safe_load(section[start:section.index("\n```", start)]))
    assert [describe_step(s) for s in strategy.steps] == [
        "setWeight 20", "judge", "setWeight 50", "judge"]
    (metric,) = strategy.templates[0].metrics
    assert (metric.interval, metric.count, metric.initial_delay) == (300.0, 2, 300.0)
    names = [m.settings.name for m in kayenta.parse_kayenta(metric.provider["kayenta"]).metrics]
    assert names == ["p99 latency", "error rate"]


@pytest.mark.parametrize("address", ["http://10.9.9.9:9090", "http://metadata.internal/"])
def test_the_judges_own_prometheus_address_answers_to_the_egress_policy(address):
    """A repository writer's `judge.prometheus.address` (an internal host, a cloud metadata
    endpoint) is refused by the server's egress policy before any request, as the kayenta
    provider's own is: the judge compiles into that provider, not beside it."""
    strategy = parsed(config(judge_with(prometheus={"address": address})))
    (metric,) = strategy.templates[0].metrics
    result = measure(metric.provider, None, None, prometheus_url="http://127.0.0.1:9",
                     egress=DENY_ALL, now=1_800_000_000.0, run_started_at=None)
    assert result.phase == "Error"
    assert "egress" in result.message and urlsplit(address).hostname in result.message
