"""Argo's kayenta provider in an AnalysisTemplate: what Coalmine accepts, and every refusal
naming the file, the template and the key (bot.judge.kayenta via bot.rollout.argo_templates)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from bot.judge import kayenta
from bot.judge.model import Direction, Thresholds, Verdict
from bot.rollout.argo_templates import parse_analysis_template
from bot.rollout.fields import StrategyError

SOURCE = "deploy/web/judge.yaml"
KEY = "spec.metrics[0].provider.kayenta"


def template(**changes) -> dict:
    """An AnalysisTemplate with one kayenta metric; `changes` replace keys of the kayenta
    mapping (None deletes one) or, with a `metric_` prefix, of the metric."""
    doc = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "judge"},
        "spec": {"metrics": [{"name": "judge", "interval": "5m", "count": 3, "provider": {
            "kayenta": {
                "application": "web", "canaryConfigName": "web-latency",
                "threshold": {"pass": 90, "marginal": 75},
                "scopes": [{"name": "default",
                            "controlScope": {"scope": 'track="baseline"', "step": 60},
                            "experimentScope": {"scope": 'track="canary"', "step": 60}}],
                "metrics": [{"name": "p99 latency", "direction": "increase",
                             "query": "histogram_quantile(0.99, sum by (le) (rate("
                                      "latency_bucket{ {{scope}} }[{{step}}])))"}],
            }}}]},
    }
    doc = copy.deepcopy(doc)
    metric = doc["spec"]["metrics"][0]
    for key, value in changes.items():
        target, key = (metric, key[len("metric_"):]) if key.startswith("metric_") else (
            metric["provider"]["kayenta"], key)
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return doc


def refusal(doc: dict) -> str:
    with pytest.raises(StrategyError) as refused:
        parse_analysis_template(doc, source=SOURCE)
    return str(refused.value)


def provider(doc: dict) -> dict:
    return parse_analysis_template(doc, source=SOURCE).metrics[0].provider["kayenta"]


def test_argo_shape_with_metrics_is_accepted_and_reads_one_interval_back():
    spec = provider(template())
    assert spec["window"] == 300.0  # the metric's interval, as Argo's provider without lookback
    config = kayenta.parse_kayenta(spec)
    assert config.thresholds == Thresholds(passing=90, marginal=75)
    (metric,) = config.metrics
    assert metric.settings.name == "p99 latency"
    assert metric.settings.direction is Direction.INCREASE
    assert metric.scope == "default" and config.config_name == "web-latency"


def test_the_docs_spelling_thresholds_and_an_explicit_window_work():
    spec = provider(template(threshold=None, thresholds={"pass": 95, "marginal": 50},
                             window="10m", metric_interval=None, metric_count=None))
    assert spec["window"] == 600.0
    assert kayenta.parse_kayenta(spec).thresholds == Thresholds(passing=95, marginal=50)


def test_scopes_with_their_own_start_and_end_need_no_window():
    scope = {"name": "default",
             "controlScope": {"scope": "a", "step": 60, "start": "{{args.start}}",
                              "end": "{{args.end}}"},
             "experimentScope": {"scope": "b", "step": 60, "start": "{{args.start}}",
                                 "end": "{{args.end}}"}}
    spec = provider(template(scopes=[scope], metric_interval=None, metric_count=None))
    assert "window" not in spec


def test_lookback_needs_no_window_and_reads_from_the_run_start():
    """Argo's provider sends the AnalysisRun's start as the scopes' start when lookback is
    set (metricproviders/kayenta getStartTime), so every measurement reads since then."""
    spec = provider(template(lookback=True, metric_interval=None, metric_count=None))
    config = kayenta.parse_kayenta(spec)
    assert config.lookback and config.window is None
    detail = config.scopes[0].control
    assert kayenta.time_range(detail, config.window, now=1000.0, since=400.0) == (400.0, 1000.0)
    # Without lookback the same scope reads one window back.
    assert kayenta.time_range(detail, 300.0, now=1000.0) == (700.0, 1000.0)


def test_lookback_at_the_run_start_asks_for_an_initial_delay():
    detail = kayenta.ScopeDetail(scope="a")
    with pytest.raises(kayenta.KayentaError) as refused:
        kayenta.time_range(detail, None, now=1000.0, since=1000.0)
    assert refused.value.key == "lookback" and "initialDelay" in refused.value.reason


def test_scopes_start_wins_over_lookback():
    detail = kayenta.ScopeDetail(scope="a", start="2024-05-01T12:00:00Z",
                                 end="2024-05-01T12:10:00Z")
    start, end = kayenta.time_range(detail, None, now=0.0, since=5.0)
    assert end - start == 600.0


@pytest.mark.parametrize(("changes", "key", "reason"), [
    ({"address": "https://kayenta.example.com"}, f"{KEY}.address",
     "Coalmine does not call an external Kayenta"),
    ({"metrics": None}, f"{KEY}.metrics", "is required: without a Kayenta server"),
    ({"lookback": "yes"}, f"{KEY}.lookback", "must be true or false"),
    ({"thresholds": {"pass": 90, "marginal": 75}}, f"{KEY}.thresholds", "not both"),
    ({"threshold": {"pass": 70, "marginal": 75}}, f"{KEY}.threshold.marginal",
     "75 is above pass 70"),
    ({"threshold": {"pass": 101, "marginal": 75}}, f"{KEY}.threshold.pass",
     "from 0 to 100"),
    ({"threshold": None}, f"{KEY}.thresholds", "must be a mapping with pass and marginal"),
    ({"scopes": []}, f"{KEY}.scopes", "must be a non-empty list"),
    ({"canaryConfig": "x"}, f"{KEY}.canaryConfig", "unknown key"),
    ({"metric_interval": None, "metric_count": None}, f"{KEY}.window",
     "scope 'default' has no start"),
    ({"window": "soon"}, f"{KEY}.window", "not a duration"),
    ({"metric_successCondition": "result > 1"}, "spec.metrics[0].successCondition",
     "decided by its score"),
])
def test_refusals_name_the_file_the_template_and_the_key(changes, key, reason):
    text = refusal(template(**changes))
    assert text.startswith(f"{SOURCE}: AnalysisTemplate judge: {key}: "), text
    assert reason in text


def metric_refusal(entry: dict, **changes) -> str:
    return refusal(template(metrics=[{"name": "latency", **entry}], **changes))


@pytest.mark.parametrize(("entry", "key", "reason"), [
    ({"query": "avg(latency)"}, "metrics[0].query", "has no {{scope}} placeholder"),
    ({"query": "avg(x{ {{scope}} })", "canaryQuery": "a"}, "metrics[0].query",
     "give query, or canaryQuery and baselineQuery"),
    ({"canaryQuery": "a"}, "metrics[0].baselineQuery", "must be a non-empty string"),
    ({}, "metrics[0].query", "is required"),
    ({"query": "x{ {{scope}} }", "allowedIncrese": 1.2}, "metrics[0].allowedIncrese",
     "unknown key"),
    ({"query": "x{ {{scope}} }", "canary": [1, 2]}, "metrics[0].canary", "unknown key"),
    ({"query": "x{ {{scope}} }", "direction": "up"}, "metrics[0].direction",
     "expected one of increase|decrease|either"),
    ({"query": "x{ {{scope}} }", "allowedIncrease": 0.5}, "metrics[0].allowedIncrease",
     "is outside [1, inf]"),
    ({"query": "x{ {{scope}} }", "minSamples": 0}, "metrics[0].minSamples",
     "an integer of at least 1"),
    ({"query": "x{ {{scope}} }", "scope": "eu"}, "metrics[0].scope", "'eu' is not a scope"),
])
def test_metric_refusals_name_their_key(entry, key, reason):
    text = metric_refusal(entry)
    assert text.startswith(f"{SOURCE}: AnalysisTemplate judge: {KEY}.{key}: "), text
    assert reason in text


def test_one_side_with_a_start_and_the_other_without_is_refused_as_argo_does():
    scope = {"name": "default",
             "controlScope": {"scope": "a", "start": "2024-05-01T12:00:00Z"},
             "experimentScope": {"scope": "b"}}
    text = refusal(template(scopes=[scope]))
    assert f"{KEY}.scopes[0].experimentScope.start: controlScope.start and " \
           "experimentScope.start must both be set" in text


def test_several_scopes_need_each_metric_to_name_one_unless_one_is_default():
    scopes = [{"name": n, "controlScope": {"scope": "a"}, "experimentScope": {"scope": "b"}}
              for n in ("eu", "us")]
    text = metric_refusal({"query": "x{ {{scope}} }"}, scopes=scopes)
    assert f"{KEY}.metrics[0].scope: needed with several scopes (eu, us)" in text
    scopes[1]["name"] = "default"
    spec = provider(template(scopes=scopes, metrics=[{"name": "l", "query": "x{ {{scope}} }"}]))
    assert kayenta.parse_kayenta(spec).metrics[0].scope == "default"


# ----------------------------------------------------------------------- measuring helpers


def test_queries_get_the_scope_region_and_step_of_their_side():
    detail = kayenta.ScopeDetail(scope='track="canary"', region="eu", step=30)
    assert kayenta.render_query('x{ {{scope}}, r="{{ region }}" }[{{step}}]', detail) == \
        'x{ track="canary", r="eu" }[30s]'


def test_the_time_range_is_the_scopes_own_or_one_window_back():
    now = 1_700_000_000.0
    assert kayenta.time_range(kayenta.ScopeDetail("s"), 600.0, now) == (now - 600, now)
    fixed = kayenta.ScopeDetail("s", start="2024-05-01T12:00:00Z", end="2024-05-01T12:10:00+00:00")
    assert kayenta.time_range(fixed, None, now) == (1714564800.0, 1714565400.0)
    for bad, reason in (("2024-05-01T12:00:00", "has no time zone"),
                        ("yesterday", "is not an RFC 3339 time")):
        with pytest.raises(kayenta.KayentaError, match=reason):
            kayenta.time_range(kayenta.ScopeDetail("s", start=bad, end=bad), None, now)
    with pytest.raises(kayenta.KayentaError, match="more than 2000 samples"):
        kayenta.time_range(kayenta.ScopeDetail("s", step=1), 3 * 3600.0, now)


@pytest.mark.parametrize(("verdict", "phase"), [
    (Verdict.PASS, "Successful"), (Verdict.MARGINAL, "Inconclusive"),
    (Verdict.FAIL, "Failed"), (Verdict.NODATA, "Inconclusive"),
])
def test_verdicts_map_to_argos_phases(verdict, phase):
    assert kayenta.phase_of(verdict) == phase


def test_the_readme_example_is_accepted_as_written():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Judge in a rollout"):]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start:section.index("\n```", start)]
    spec = provider(yaml.safe_load(example))
    assert spec["window"] == 600.0
    names = [m.settings.name for m in kayenta.parse_kayenta(spec).metrics]
    assert names == ["p99 latency", "error rate"]
