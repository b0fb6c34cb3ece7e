"""A kayenta measurement's judgement: the score mapped to Argo's phases, the record kept on the
measurement (through the rollout state's JSON), and how the PR comment explains it."""

from __future__ import annotations

import re

import pytest

from bot.analysis.measurement import Measurement
from bot.analysis.run import AnalysisRun, MetricResult
from bot.judge.kayenta import judgement_of, message_of, phase_of
from bot.judge.model import Case, Direction, JudgedMetric, Judgement, MetricSpec, Thresholds
from bot.judge.score import judge_cases
from bot.report import judgement as report
from bot.report import rollout
from bot.rollout.model import MeasurementTaken, SetWeightStep, Start
from tests.unit.test_report_rollout import (
    HOSTILE,
    Rollout,
    analysis,
    cells_of,
    mermaid_blocks,
    spec,
)

THRESHOLDS = Thresholds(passing=90, marginal=75)
BASE = [200.0 + (i * 7) % 11 for i in range(12)]  # ~205 ms, spread 0-10
SLOW = [v * 1.3 for v in BASE]


def metric(name: str, canary, baseline=BASE, **fields) -> MetricSpec:
    return MetricSpec(name=name, canary=tuple(canary), baseline=tuple(baseline),
                      direction=Direction.INCREASE, **fields)


def judged(*metrics: MetricSpec):
    (result,) = judge_cases([Case("web", THRESHOLDS, metrics)])
    return result, judgement_of(result, metrics, THRESHOLDS)


@pytest.mark.parametrize(("canaries", "score", "phase"), [
    ((BASE, BASE, BASE, BASE), 100, "Successful"),  # at or above pass 90
    ((SLOW, BASE, BASE, BASE), 75, "Inconclusive"),  # marginal: at or above 75
    ((SLOW, SLOW, BASE, BASE), 50, "Failed"),  # below marginal
    ((BASE[:3], BASE[:3], BASE, BASE), 0, "Inconclusive"),  # no data on half: never a pass
])
def test_the_score_against_the_thresholds_gives_argos_phase(canaries, score, phase):
    result, _ = judged(*(metric(f"m{i}", c) for i, c in enumerate(canaries)))
    assert (result.score, phase_of(result.verdict)) == (score, phase)


def test_a_critical_metric_fails_whatever_the_score():
    result, record = judged(metric("latency", SLOW, critical=True),
                            *(metric(f"m{i}", BASE) for i in range(9)))
    assert phase_of(result.verdict) == "Failed" and result.score == 0
    assert record.metrics[0].critical and record.metrics[0].classification == "high"


def test_the_record_and_message_explain_each_metric_failures_first():
    _, record = judged(metric("errors", BASE), metric("p99 latency", SLOW))
    assert [m.classification for m in record.metrics] == ["pass", "high"]
    slow = record.metrics[1]
    assert slow.canary_mean == pytest.approx(1.3 * slow.baseline_mean)
    assert (slow.canary_count, slow.baseline_count, slow.direction) == (12, 12, "increase")
    assert slow.p_value < 0.001 and slow.effect_size == pytest.approx(1.3)
    message = message_of(record)
    assert message.startswith("score 50 against pass 90, marginal 75; not passing: "
                              "p99 latency (high); p99 latency 30 % higher on canary "
                              "(mean ratio 1.30), p < 0.001, allowed +10 %; errors ")


def test_the_judgement_survives_the_rollout_states_json():
    _, record = judged(metric("p99 latency", SLOW))
    r = started()
    r.send(MeasurementTaken(r.state.step_run.id, "judge",
                            Measurement("Failed", "0", message_of(record), r.now, record)))
    state = type(r.state).from_dict(r.state.to_dict())
    (kept,) = state.finished_runs[-1].results[0].measurements
    assert kept.judgement == record


# ------------------------------------------------------------------------------ the comment


def started(**fields) -> Rollout:
    judge = spec("judge", success_condition="", **fields)
    r = Rollout([SetWeightStep(20), analysis()], judge).send(Start()).healthy()
    return r.wait(1)


def record_with(*metrics: JudgedMetric, score=50.0, verdict="fail") -> Judgement:
    return Judgement(score=score, verdict=verdict, passing=90, marginal=75,
                     explanation="score 50 against pass 90, marginal 75", metrics=metrics)


LATENCY = JudgedMetric(
    name="p99 latency", classification="high", critical=True, direction="increase",
    explanation="p99 latency 23 % higher on canary (mean ratio 1.23), p = 0.003, allowed +10 %",
    canary_mean=261.3, baseline_mean=212.7, canary_count=10, baseline_count=10,
    p_value=0.003, effect_size=1.23)
ERRORS = JudgedMetric(
    name="error rate", classification="pass", explanation="error rate about the same",
    canary_mean=0.004, baseline_mean=0.004, canary_count=10, baseline_count=10, p_value=0.8,
    effect_size=1.0, allowed_increase=1.5)


def run_with(*measurements: Measurement) -> AnalysisRun:
    return AnalysisRun(id="a1b2c3d-a1-1-step2", metrics=(), started_at=0.0, purpose="step 2",
                       results=(MetricResult(name="judge", phase="Failed",
                                             measurements=measurements),))


def test_the_comment_shows_the_score_each_metric_in_words_and_a_chart():
    lines = report.render_judgements([run_with(
        Measurement("Failed", "50", "…", 1.0, record_with(LATENCY, ERRORS)))])
    text = "\n".join(lines)
    assert "**Judge** `judge` (step 2 analysis): canary against baseline, score **50** — " \
           "pass at 90, marginal at 75 → ❌ fail, measurement **❌ Failed**" in text
    rows = [cells_of(line) for line in lines if line.startswith(("| p99", "| error"))]
    assert rows[0][:5] == ["p99 latency (critical)", "❌ higher", "261\\.3 (10)",
                           "212\\.7 (10)", "0\\.003"]
    assert rows[0][5].replace("\\", "") == LATENCY.explanation
    assert rows[1][1] == "✅ pass"
    (chart,) = mermaid_blocks(text)
    assert chart[2] == '    x-axis "metric" ["p99 latency", "error rate"]'
    assert chart[4:] == ["    bar [122.849, 100]", "    line [110, 150]"]


def test_only_the_latest_judgement_of_a_metric_and_no_chart_without_means():
    older = Measurement("Successful", "100", "", 1.0, record_with(ERRORS, score=100))
    empty = JudgedMetric(name="latency", classification="nodata", explanation="no data")
    newer = Measurement("Inconclusive", "0", "", 2.0,
                        record_with(empty, score=0, verdict="nodata"))
    text = "\n".join(report.render_judgements([run_with(older, newer)]))
    assert text.count("**Judge**") == 1 and "⚠️ no data" in text and "score **0**" in text
    assert "| — (0) | — (0) | — |" in text and "```mermaid" not in text
    assert report.render_judgements([run_with(Measurement("Successful", "[1]"))]) == []


def test_the_rollout_section_shows_judgements_under_the_analysis_within_its_budget():
    many = tuple(JudgedMetric(name=f"m{i}-{HOSTILE * 5}", classification="high",
                              explanation=HOSTILE * 20, canary_mean=2.0, baseline_mean=1.0,
                              canary_count=10, baseline_count=10, p_value=1e-9)
                 for i in range(20))
    r = started(interval=10.0, count=5)
    for _ in range(4):
        taken = Measurement("Successful", "0", HOSTILE * 20, r.now, record_with(*many, score=0))
        r.send(MeasurementTaken(r.state.step_run.id, "judge", taken)).wait(10)
    assert len(r.state.step_run.results[0].measurements) == 4
    text = r.text()
    assert text.index("**Analysis**") < text.index("**Judge**") < text.index("**History**")
    assert "12 more metrics" in text
    for line in text.splitlines():
        outside_code = re.sub(r"(`+).*?\1", "", line)
        if not line.startswith(("<details>", "</details>")):
            assert not re.search(r"(?<!\\)[<@]", outside_code), line
    judge_part = text[text.index("**Judge**"):text.index("**History**")]
    assert len(judge_part.encode()) < 8_000 < rollout.MAX_SECTION_BYTES
