"""Argo's analysis-run semantics: counters, limits, count/interval, error retry, worst phase, and
`{{args.name}}` resolution when a run starts."""

from __future__ import annotations

import pytest

from bot.analysis import run as runs
from bot.analysis.measurement import Measurement
from bot.analysis.templates import (
    AnalysisTemplate,
    Arg,
    MetricSpec,
    TemplateArg,
    UnresolvedArgument,
    resolve_metrics,
)

PROM = {"prometheus": {"query": "up"}}


def spec(name: str = "m", **fields) -> MetricSpec:
    return MetricSpec(name=name, provider=PROM, **fields)


def m(phase: str, value: str | None = "1", message: str = "") -> Measurement:
    return Measurement(phase, value, message)  # type: ignore[arg-type]


def feed(run: runs.AnalysisRun, phases: str, name: str = "m", start: float = 0.0, step=60.0):
    """Record one measurement per letter: S(uccessful) F(ailed) I(nconclusive) E(rror)."""
    names = {"S": "Successful", "F": "Failed", "I": "Inconclusive", "E": "Error"}
    now = start
    for letter in phases:
        run = runs.mark_requested(run, name, now)
        run = runs.record(run, name, m(names[letter]), now)
        now += step
    return run


def single(phases: str, **fields) -> runs.AnalysisRun:
    return feed(runs.start_run("r", [spec(**fields)], 0.0), phases)


# ----------------------------------------------------------------------- counts & limits


def test_neither_count_nor_interval_takes_one_measurement():
    run = single("S")
    assert runs.phase(run) == "Successful"
    assert runs.result(run, "m").count == 1
    assert runs.next_due(run) is None


def test_first_failure_decides_with_default_failure_limit():
    assert runs.phase(single("F")) == "Failed"
    assert runs.result(single("F"), "m").message == "failed (1) > failureLimit (0)"


def test_failure_limit_is_strict():
    fields = {"interval": 60.0, "count": 5, "failure_limit": 2}
    assert runs.phase(single("FF", **fields)) == "Running"
    assert runs.phase(single("FFF", **fields)) == "Failed"
    assert runs.phase(single("FFSSS", **fields)) == "Successful"


def test_failure_limit_minus_one_disables_failures():
    fields = {"interval": 60.0, "count": 6, "failure_limit": -1, "consecutive_success_limit": 2}
    assert runs.phase(single("FFFF", **fields)) == "Running"
    assert runs.phase(single("FFFFSS", **fields)) == "Successful"


def test_first_inconclusive_decides_with_default_limit():
    run = single("I", interval=60.0, count=3)
    assert runs.phase(run) == "Inconclusive"
    assert runs.result(run, "m").message == "inconclusive (1) > inconclusiveLimit (0)"


def test_inconclusive_limit_is_strict():
    fields = {"interval": 60.0, "count": 4, "inconclusive_limit": 1}
    assert runs.phase(single("I", **fields)) == "Running"
    assert runs.phase(single("II", **fields)) == "Inconclusive"


def test_fifth_consecutive_error_decides_with_default_limit():
    assert runs.phase(single("EEEE")) == "Running"
    run = single("EEEEE")
    assert runs.phase(run) == "Error"
    assert runs.result(run, "m").message == "consecutiveErrors (5) > consecutiveErrorLimit (4)"


def test_a_good_measurement_resets_consecutive_errors():
    run = single("EEEESEEEE", interval=60.0, count=5)
    result = runs.result(run, "m")
    assert (result.error, result.consecutive_error, result.count) == (8, 4, 1)
    assert runs.phase(run) == "Running"


def test_errors_do_not_count_toward_count():
    run = single("SESES", interval=60.0, count=3)
    assert runs.result(run, "m").count == 3
    assert runs.phase(run) == "Successful"


def test_interval_only_runs_until_terminated():
    run = single("S" * 30, interval=60.0)
    assert runs.phase(run) == "Running"
    stopped = runs.terminate(run)
    assert runs.phase(stopped) == "Successful"
    assert stopped.terminated


def test_count_reached_without_required_consecutive_successes():
    both = {"interval": 60.0, "count": 3, "failure_limit": 2, "consecutive_success_limit": 2}
    assert runs.phase(single("SFS", **both)) == "Inconclusive"
    only_success = {
        "interval": 60.0,
        "count": 3,
        "failure_limit": -1,
        "consecutive_success_limit": 2,
    }
    assert runs.phase(single("SFS", **only_success)) == "Failed"
    assert runs.phase(single("FSS", **both)) == "Successful"


def test_counters_follow_argo():
    result = runs.result(single("SSFS", interval=1.0, count=10, failure_limit=5), "m")
    assert (result.count, result.successful, result.failed, result.consecutive_success) == (
        4,
        3,
        1,
        1,
    )


def test_only_the_latest_ten_measurements_are_kept():
    run = single("S" * 25, interval=60.0)
    assert len(runs.result(run, "m").measurements) == runs.MEASUREMENT_HISTORY_LIMIT


def test_measurements_after_the_verdict_are_ignored():
    run = single("F")
    assert runs.record(run, "m", m("Successful"), 100.0) == run


# ---------------------------------------------------------------------------- timing


def test_initial_delay_and_interval_drive_due_times():
    run = runs.start_run("r", [spec(interval=60.0, initial_delay=30.0, count=3)], 1000.0)
    assert runs.due_metrics(run, 1029.0) == []
    assert runs.next_due(run) == 1030.0
    assert [s.name for s in runs.due_metrics(run, 1030.0)] == ["m"]
    run = runs.mark_requested(run, "m", 1030.0)
    assert runs.due_metrics(run, 1031.0) == []  # already asked for
    run = runs.record(run, "m", m("Successful"), 1032.0)
    assert runs.next_due(run) == 1092.0


def test_an_error_is_retried_after_ten_seconds():
    run = runs.start_run("r", [spec(interval=300.0, count=2)], 0.0)
    run = runs.record(runs.mark_requested(run, "m", 0.0), "m", m("Error", None, "boom"), 5.0)
    assert runs.next_due(run) == 5.0 + runs.ERROR_RETRY_SECONDS
    assert runs.due_metrics(run, 14.0) == []
    assert len(runs.due_metrics(run, 15.0)) == 1


def test_an_unanswered_request_is_asked_again_after_the_timeout():
    run = runs.mark_requested(runs.start_run("r", [spec()], 0.0), "m", 0.0)
    assert runs.next_due(run) == runs.MEASUREMENT_TIMEOUT_SECONDS
    assert len(runs.due_metrics(run, runs.MEASUREMENT_TIMEOUT_SECONDS)) == 1


# ----------------------------------------------------------------------- run phase


def two_metric_run(**b_fields) -> runs.AnalysisRun:
    return runs.start_run("r", [spec("a", interval=60.0, count=3), spec("b", **b_fields)], 0.0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", "Running"),
        ("S", "S", "Running"),  # a still needs two more
        ("SSS", "S", "Successful"),
        ("SSS", "F", "Failed"),
        ("S", "F", "Failed"),  # terminated as soon as one metric fails
        ("I", "S", "Inconclusive"),
        ("I", "F", "Failed"),  # worst wins: Failed > Error > Inconclusive
        ("I", "EEEEE", "Error"),
        ("EEEEE", "F", "Failed"),
    ],
)
def test_run_phase_is_the_worst_metric(a, b, expected):
    # Both metrics are in flight together, so b's result lands even after a decided the run.
    run = feed(feed(two_metric_run(), a, "a"), b, "b")
    assert runs.phase(run) == expected


def test_a_metric_not_in_flight_is_not_measured_after_the_verdict():
    run = feed(two_metric_run(), "F", "b")
    assert runs.phase(run) == "Failed"
    assert runs.record(run, "a", m("Successful"), 5.0) == run
    assert runs.record(runs.terminate(run), "a", m("Successful"), 5.0).results == run.results


def test_a_terminated_run_stops_asking_for_measurements():
    run = feed(two_metric_run(), "I", "a")
    assert runs.phase(run) == "Inconclusive"
    assert runs.due_metrics(run, 10_000.0) == []
    assert runs.next_due(run) is None


def test_terminating_a_metric_that_only_errored_is_not_success():
    run = runs.terminate(single("EE", interval=60.0))
    assert runs.phase(run) == "Inconclusive"
    assert "errors" in runs.result(run, "m").message


def test_terminating_before_any_measurement_is_successful_like_argo():
    assert runs.phase(runs.terminate(runs.start_run("r", [spec(interval=5.0)], 0.0))) == (
        "Successful"
    )


def test_errored_run():
    run = runs.errored_run("r", "unresolved argument 'service'", 0.0)
    assert runs.phase(run) == "Error"
    assert runs.message(run) == "unresolved argument 'service'"
    assert runs.next_due(run) is None


def test_progress_for_status_lines():
    run = feed(two_metric_run(), "SS", "a")
    assert runs.progress(run) == (2, 4)
    assert runs.progress(runs.start_run("r", [spec(interval=60.0)], 0.0)) == (0, None)


# ----------------------------------------------------------------------- templates


def template(*args: TemplateArg, **metric_fields) -> AnalysisTemplate:
    provider = {
        "web": {
            "url": "{{ args.api-url }}?service={{args.service}}",
            "headers": [{"key": "X-Service", "value": "{{args.service}}"}],
            "timeoutSeconds": 5,
        }
    }
    metric = MetricSpec(
        name="ok",
        provider=provider,
        success_condition="result >= {{args.threshold}}",
        **metric_fields,
    )
    return AnalysisTemplate(name="t", metrics=(metric,), args=args)


def test_args_resolve_with_defaults_and_overrides():
    t = template(
        TemplateArg("service"),
        TemplateArg("api-url", "http://default"),
        TemplateArg("threshold", "0.9"),
    )
    (metric,) = resolve_metrics(
        [t], [Arg("service", "web"), Arg("threshold", "0.95"), Arg("unused", "x")]
    )
    web = metric.provider["web"]
    assert web["url"] == "http://default?service=web"
    assert web["headers"] == [{"key": "X-Service", "value": "web"}]
    assert web["timeoutSeconds"] == 5
    assert metric.success_condition == "result >= 0.95"
    assert t.metrics[0].provider["web"]["url"].startswith("{{")  # template left untouched


def test_a_declared_arg_without_value_is_unresolved():
    t = template(TemplateArg("service"), TemplateArg("api-url", "u"), TemplateArg("threshold", "1"))
    with pytest.raises(UnresolvedArgument) as caught:
        resolve_metrics([t], [])
    assert str(caught.value) == "unresolved argument 'service'"


def test_a_placeholder_without_declared_arg_is_unresolved():
    t = template(TemplateArg("api-url", "u"), TemplateArg("threshold", "1"))
    with pytest.raises(UnresolvedArgument, match="unresolved argument 'service'"):
        resolve_metrics([t], [Arg("service", "web")])  # not declared: ignored, as in Argo


def test_count_placeholder_resolves_to_a_number():
    t = template(
        TemplateArg("service", "s"),
        TemplateArg("api-url", "u"),
        TemplateArg("threshold", "1"),
        TemplateArg("n", "4"),
        interval=60.0,
        count="{{args.n}}",
    )
    (metric,) = resolve_metrics([t], [])
    assert metric.count == 4 and metric.effective_count == 4
