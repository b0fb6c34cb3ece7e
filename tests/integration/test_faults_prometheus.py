"""Prometheus down: each measurement is an Error that says the metrics source is unreachable, and
the engine aborts only after consecutiveErrorLimit is exceeded, blaming the source, not the
release. Measurements are taken for real against a loopback port with nothing listening."""

from __future__ import annotations

import pytest

from bot.analysis.measure import measure
from bot.analysis.measurement import Measurement
from bot.analysis.run import ERROR_RETRY_SECONDS
from bot.analysis.templates import AnalysisTemplate, MetricSpec
from bot.egress import parse_egress
from bot.rollout.engine import advance
from bot.rollout.model import (
    AnalysisStep,
    CanaryStrategy,
    Measure,
    MeasurementTaken,
    OpenRevertPR,
    RolloutState,
    SetWeightStep,
    Start,
    TemplateRef,
    Tick,
    WorkloadRef,
    new_state,
)
from tests.harness.processes import free_port

# The canned servers and the test Prometheus listen on loopback, which needs an entry.
LOOPBACK = parse_egress({"allow": ["127.0.0.1"]}, "test", {})

T0 = 1_700_000_000.0
UNREACHABLE = "metrics source unreachable"


@pytest.fixture
def dead_prometheus() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _state() -> RolloutState:
    spec = MetricSpec(  # consecutiveErrorLimit left at Argo's default of 4
        name="success-rate",
        provider={"prometheus": {"query": "vector(1)"}},  # always 1 once Prometheus answers
        success_condition="result[0] >= 0.95",
    )
    strategy = CanaryStrategy(
        workload=WorkloadRef("Deployment", "web"),
        steps=(AnalysisStep(templates=(TemplateRef("success-rate"),)), SetWeightStep(50)),
    )
    return new_state(
        app="web",
        revision="c0ffee1",
        stable_revision="0ld5ha",
        pr=7,
        strategy=strategy,
        templates=(AnalysisTemplate("success-rate", (spec,)),),
    )


class _Shell:
    """Runs the engine's Measure actions the way the rollout shell does, with a real provider."""

    def __init__(self, prometheus_url: str | None) -> None:
        self.prometheus_url = prometheus_url
        self.now = T0
        self.state, self.actions = advance(_state(), Start(), self.now)

    def measure_due(self, prometheus_url: str | None = None) -> list[Measurement]:
        """Take every requested measurement, feed it back, and move the clock to the retry."""
        taken = []
        for action in [a for a in self.actions if isinstance(a, Measure)]:
            result = measure(
                action.provider,
                action.success_condition,
                action.failure_condition,
                prometheus_url=prometheus_url or self.prometheus_url, egress=LOOPBACK,
                now=self.now,
            )
            taken.append(result)
            self.state, self.actions = advance(
                self.state, MeasurementTaken(action.run_id, action.metric, result), self.now
            )
        if self.state.phase != "Aborted":
            self.now += ERROR_RETRY_SECONDS
            self.state, self.actions = advance(self.state, Tick(self.state.version), self.now)
        return taken


def test_unreachable_prometheus_is_an_error_measurement_naming_the_source(dead_prometheus):
    result = measure(
        {"prometheus": {"query": "up"}}, "result[0] == 1", None,
        prometheus_url=dead_prometheus, egress=LOOPBACK, now=T0,
    )
    assert result.phase == "Error" and result.value is None
    assert result.message.startswith(UNREACHABLE) and dead_prometheus in result.message
    assert result.at == T0


def test_five_unreachable_measurements_abort_blaming_the_source(dead_prometheus):
    shell = _Shell(dead_prometheus)
    for attempt in range(1, 6):
        (result,) = shell.measure_due()
        assert result.phase == "Error" and UNREACHABLE in result.message
        expected = "Aborted" if attempt == 5 else "Progressing"
        assert shell.state.phase == expected, (attempt, shell.state.aborted_reason)

    reason = shell.state.aborted_reason
    assert "consecutiveErrors (5) > consecutiveErrorLimit (4)" in reason
    assert UNREACHABLE in reason and dead_prometheus in reason, reason
    assert any(UNREACHABLE in line for line in shell.state.evidence), shell.state.evidence
    revert = [a for a in shell.actions if isinstance(a, OpenRevertPR)]
    assert len(revert) == 1 and any(UNREACHABLE in line for line in revert[0].evidence)


def test_fewer_errors_than_the_limit_then_success_continues(dead_prometheus, prometheus):
    shell = _Shell(dead_prometheus)
    for _ in range(4):
        (result,) = shell.measure_due()
        assert result.phase == "Error"
    assert shell.state.phase == "Progressing" and shell.state.step_index == 0

    prometheus_up = shell.measure_due(prometheus_url=prometheus.url)

    assert [m.phase for m in prometheus_up] == ["Successful"], prometheus_up
    assert shell.state.phase == "Progressing" and shell.state.aborted_reason is None
    assert shell.state.step_index == 1
