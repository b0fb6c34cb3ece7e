"""Argo's dryRun and measurementRetention rules, and arguments valued from the cluster
(`valueFrom`), as the pure analysis core sees them: resolved into each metric when a run starts,
then obeyed by the run semantics."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.analysis import run as runs
from bot.analysis.measurement import Measurement
from bot.analysis.templates import (
    FIELD_REF,
    SECRET_KEY_REF,
    AnalysisTemplate,
    Arg,
    MetricSpec,
    RunRules,
    TemplateArg,
    resolve_metrics,
)
from bot.rollout.fields import At
from bot.rollout.model import MeasurementTaken, RolloutState, SetWeightStep, Start
from bot.rollout.steps import parse_analysis
from tests.unit.test_analysis_run import feed
from tests.unit.test_report_rollout import T0, Rollout, analysis, cells_of, spec

PROM = {"prometheus": {"query": 'sum(x{token="{{args.token}}",app="{{args.app}}"})'}}


def template(*names: str, **fields) -> AnalysisTemplate:
    metrics = tuple(MetricSpec(name=n, provider={"prometheus": {"query": "up"}}) for n in names)
    return AnalysisTemplate(name="t", metrics=metrics, **fields)


# ----------------------------------------------------------------------------- dryRun


def test_dry_run_rules_mark_matching_metrics_by_unanchored_regex():
    metrics = resolve_metrics([template("error-rate", "latency-p99", "saturation")], [],
                              RunRules(dry_run=("latency",)))
    assert {m.name: m.dry_run for m in metrics} == {
        "error-rate": False, "latency-p99": True, "saturation": False}


def test_template_dry_run_rules_add_to_the_rollouts():
    t = template("error-rate", "latency", dry_run=("^err",))
    metrics = resolve_metrics([t], [], RunRules(dry_run=("lat",)))
    assert all(m.dry_run for m in metrics)


def test_a_dry_run_rule_that_matches_nothing_fails_the_run_as_in_argo():
    with pytest.raises(ValueError, match=r"dryRun\[0\]: 'nope' matches no metric name"):
        resolve_metrics([template("error-rate")], [], RunRules(dry_run=("nope",)))


def two_metric_run(dry: str = "b") -> runs.AnalysisRun:
    metrics = resolve_metrics([template("a", "b")], [], RunRules(dry_run=(dry,)))
    return runs.start_run("r", metrics, 0.0)


def test_a_failing_dry_run_metric_neither_stops_nor_decides_the_run():
    run = feed(two_metric_run(), "F", name="b")
    assert runs.result(run, "b").phase == "Failed"
    assert runs.phase(run) == "Running"  # not terminated: a is still measured
    assert [m.name for m in runs.due_metrics(run, 0.0)] == ["a"]
    run = feed(run, "S", name="a")
    assert runs.phase(run) == "Successful"
    assert runs.message(run) == "a: count (1) reached"


def test_the_run_waits_for_its_dry_run_metrics_to_finish():
    run = feed(two_metric_run(), "S", name="a")
    assert runs.phase(run) == "Running"
    assert [m.name for m in runs.due_metrics(run, 0.0)] == ["b"]
    assert runs.phase(feed(run, "E" * 5, name="b")) == "Successful"


def test_a_deciding_failure_still_decides_beside_a_dry_run_metric():
    run = feed(two_metric_run(), "F", name="a")
    assert runs.phase(run) == "Failed"
    assert runs.message(run).startswith("a: failed (1)")


def test_a_run_of_dry_run_metrics_only_is_successful_once_they_finish():
    run = feed(two_metric_run(dry="."), "F", name="a")
    run = feed(run, "I", name="b")
    assert runs.phase(run) == "Successful"
    assert runs.phase(runs.terminate(two_metric_run(dry="."))) == "Successful"


def test_parse_analysis_reads_dry_run_and_retention():
    step = parse_analysis({"templates": [{"templateName": "t"}],
                           "dryRun": [{"metricName": "lat.*"}],
                           "measurementRetention": [{"metricName": "err", "limit": 3}]},
                          At("f", "analysis"))
    assert step.dry_run == ("lat.*",)
    assert step.measurement_retention == (("err", 3),)


# ----------------------------------------------------------------- measurementRetention


def test_retention_keeps_the_latest_limit_measurements_per_metric():
    metrics = resolve_metrics([template("a", "b")], [],
                              RunRules(measurement_retention=(("a", 3),)))
    assert [m.measurement_limit for m in metrics] == [3, 10]
    long = [replace(m, interval=1.0) for m in metrics]
    run = feed(runs.start_run("r", long, 0.0), "SSSSSSSSSSSS", name="a")
    run = feed(run, "SSSSSSSSSSSS", name="b")
    assert len(runs.result(run, "a").measurements) == 3
    assert len(runs.result(run, "b").measurements) == 10
    assert runs.result(run, "a").count == 12  # counters are not trimmed


def test_the_last_matching_retention_rule_wins_and_zero_means_the_default():
    t = template("a", measurement_retention=(("a", 0),))
    (metric,) = resolve_metrics([t], [], RunRules(measurement_retention=(("a", 4),)))
    assert metric.measurement_limit == 10


# ----------------------------------------------------------------------------- valueFrom


def test_args_valued_from_the_cluster_stay_placeholders_listed_on_the_metric():
    t = AnalysisTemplate(
        name="t",
        metrics=(MetricSpec(name="m", provider=PROM, success_condition="result[0] > 0"),),
        args=(TemplateArg("token", value_from=(SECRET_KEY_REF, "creds", "token")),
              TemplateArg("app")),
    )
    (metric,) = resolve_metrics([t], [Arg("app", value_from=(FIELD_REF, "metadata.name"))])
    assert metric.provider["prometheus"]["query"] == PROM["prometheus"]["query"]
    assert metric.value_from == (("app", (FIELD_REF, "metadata.name")),
                                 ("token", (SECRET_KEY_REF, "creds", "token")))


def test_a_literal_rollout_arg_overrides_a_templates_value_from():
    t = AnalysisTemplate(
        name="t", metrics=(MetricSpec(name="m", provider=PROM),),
        args=(TemplateArg("token", value_from=(SECRET_KEY_REF, "creds", "token")),
              TemplateArg("app", "web")),
    )
    (metric,) = resolve_metrics([t], [Arg("token", "literal")])
    assert metric.provider["prometheus"]["query"] == 'sum(x{token="literal",app="web"})'
    assert metric.value_from == ()


def test_count_cannot_come_from_a_secret():
    t = AnalysisTemplate(
        name="t", metrics=(MetricSpec(name="m", provider={"web": {"url": "http://x"}},
                                      interval=1.0, count="{{args.n}}"),),
        args=(TemplateArg("n", value_from=(SECRET_KEY_REF, "s", "k")),),
    )
    with pytest.raises(ValueError, match="count cannot come from valueFrom"):
        resolve_metrics([t], [])


def test_pod_template_hash_value_is_the_tracks_label_value():
    step = parse_analysis(
        {"templates": [{"templateName": "t"}],
         "args": [{"name": "s", "valueFrom": {"podTemplateHashValue": "Stable"}},
                  {"name": "l", "valueFrom": {"podTemplateHashValue": "Latest"}},
                  {"name": "f", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}]},
        At("f", "analysis"))
    assert step.args == (Arg("s", "stable"), Arg("l", "canary"),
                         Arg("f", value_from=(FIELD_REF, "metadata.labels['app']")))


# ------------------------------------------------------------------ engine and PR report


def test_a_failing_dry_run_metric_neither_aborts_the_rollout_and_is_marked_in_the_report():
    step = replace(analysis(), dry_run=("latency",))
    rollout = Rollout([SetWeightStep(50), step, SetWeightStep(100)],
                      spec("success-rate"), spec("latency", success_condition="result[0] < 1"))
    rollout.send(Start()).healthy()
    run_id = rollout.state.step_run.id
    rollout.send(MeasurementTaken(run_id, "latency", Measurement("Failed", "3", "bad", T0)))
    assert rollout.state.phase == "Progressing"
    rollout.send(MeasurementTaken(run_id, "success-rate", Measurement("Successful", "1", "", T0)))
    assert rollout.state.phase != "Aborted"
    assert rollout.state.step_index == 2  # moved past the analysis step
    rows = [cells_of(line) for line in rollout.text().splitlines() if "latency" in line]
    (row,) = [r for r in rows if len(r) == 6]
    assert row[0] == "latency _(dry run: shown, never deciding)_" and "Failed" in row[1]
    (ok,) = [cells_of(line) for line in rollout.text().splitlines()
             if line.startswith("| success\\-rate")]
    assert "(dry run" not in ok[0]


def test_the_abort_evidence_marks_dry_run_metrics_and_never_gives_them_as_the_reason():
    step = replace(analysis(), dry_run=("latency",))
    rollout = Rollout([SetWeightStep(50), step, SetWeightStep(100)],
                      spec("success-rate"), spec("latency", success_condition="result[0] < 1"))
    rollout.send(Start()).healthy()
    run_id = rollout.state.step_run.id
    rollout.send(MeasurementTaken(run_id, "latency", Measurement("Failed", "3", "slow", T0)))
    rollout.send(MeasurementTaken(run_id, "success-rate",
                                  Measurement("Failed", "0.5", "too low", T0)))
    state = rollout.state
    assert state.phase == "Aborted"
    assert "success-rate" in state.aborted_reason and "latency" not in state.aborted_reason
    (dry,) = [line for line in state.evidence if line.startswith("latency")]
    assert dry == "latency (dry run: shown, never deciding): 3 (Failed); last: slow"
    (deciding,) = [line for line in state.evidence if line.startswith("success-rate")]
    assert "dry run" not in deciding and "0.5 (Failed)" in deciding
    body = rollout.text()
    assert "latency (dry run: shown, never deciding): 3 (Failed)" in body.replace("\\", "")


def test_a_job_metric_is_shown_judged_by_its_job():
    job = {"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "t:1"}]}}}}
    rollout = Rollout([SetWeightStep(50), analysis()], MetricSpec(name="smoke",
                                                                  provider={"job": job}))
    rollout.send(Start()).healthy()
    (row,) = [cells_of(line) for line in rollout.text().splitlines() if line.startswith("| smoke")]
    assert row[3] == "the Job completes"


def test_the_new_fields_survive_the_stored_state():
    step = parse_analysis({"templates": [{"templateName": "success-rate"}],
                           "args": [{"name": "app", "valueFrom": {
                               "fieldRef": {"fieldPath": "metadata.name"}}}],
                           "dryRun": [{"metricName": "lat"}],
                           "measurementRetention": [{"metricName": "succ", "limit": 3}]},
                          At("f", "analysis"))
    metric = MetricSpec(name="latency", provider=PROM)
    rollout = Rollout([SetWeightStep(50), step], spec("success-rate"), metric)
    rollout.state = replace(rollout.state, templates=(AnalysisTemplate(
        name="success-rate", metrics=(spec("success-rate"), metric),
        args=(TemplateArg("app"), TemplateArg("token", value_from=(SECRET_KEY_REF, "s", "k"))),
        dry_run=("^lat",), measurement_retention=(("latency", 1),)),))
    rollout.send(Start()).healthy()
    state = rollout.state
    assert RolloutState.from_dict(state.to_dict()) == state
    run = state.step_run
    assert [(m.name, m.dry_run, m.measurement_limit) for m in run.metrics] == [
        ("success-rate", False, 3), ("latency", True, 1)]
    assert runs.metric(run, "latency").value_from == (
        ("app", (FIELD_REF, "metadata.name")), ("token", (SECRET_KEY_REF, "s", "k")))
