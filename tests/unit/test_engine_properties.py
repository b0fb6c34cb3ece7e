"""Property tests of the engine's invariants over random strategies and event sequences."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, Arg, MetricSpec, TemplateArg
from bot.rollout import engine
from bot.rollout.engine import advance
from bot.rollout.model import (
    TERMINAL_PHASES,
    Abort,
    AnalysisStep,
    BackgroundAnalysis,
    CanaryStrategy,
    MeasurementTaken,
    NewRevision,
    Pause,
    PauseStep,
    Promote,
    PromoteFull,
    Resume,
    Retry,
    RolloutState,
    ScheduleTick,
    SetWeight,
    SetWeightStep,
    Start,
    TemplateRef,
    Tick,
    WorkloadHealth,
    WorkloadRef,
    new_state,
)

PHASES = ("Successful", "Failed", "Inconclusive", "Error")


def metrics(bounded: bool):
    """Metric specs; `bounded` ones finish on their own (a step analysis whose metric has an
    interval but no count would, as in Argo, run until it fails or someone promotes)."""

    def build(interval, count, failure_limit, inconclusive_limit, initial_delay):
        if interval is None and (count or 0) > 1:
            count = 1
        if bounded and interval is not None and count is None:
            count = 2
        return MetricSpec(
            name="m",
            provider={"prometheus": {"query": "up{job='{{args.job}}'}"}},
            success_condition="result[0] > 0",
            interval=interval,
            count=count,
            failure_limit=failure_limit,
            inconclusive_limit=inconclusive_limit,
            initial_delay=initial_delay,
        )

    return st.builds(
        build,
        interval=st.one_of(st.none(), st.sampled_from([30.0, 60.0, 120.0])),
        count=st.one_of(st.none(), st.integers(1, 3)),
        failure_limit=st.integers(0, 1),
        inconclusive_limit=st.integers(0, 1),
        initial_delay=st.one_of(st.none(), st.just(15.0)),
    )


steps = st.lists(
    st.one_of(
        st.builds(SetWeightStep, st.integers(0, 100)),
        st.builds(PauseStep, st.one_of(st.none(), st.sampled_from([30.0, 300.0, 900.0]))),
        st.builds(
            AnalysisStep,
            st.just((TemplateRef("t"),)),
            st.sampled_from([(Arg("job", "web"),), ()]),  # () leaves an unresolved argument
        ),
    ),
    max_size=5,
)


@st.composite
def rollouts(draw) -> RolloutState:
    chosen = tuple(draw(steps))
    background = None
    if chosen and draw(st.booleans()):
        background = BackgroundAnalysis(
            (TemplateRef("bg"),), (Arg("job", "web"),), draw(st.integers(0, len(chosen) - 1))
        )
    templates = (
        AnalysisTemplate(name="t", metrics=(draw(metrics(True)),), args=(TemplateArg("job"),)),
        AnalysisTemplate(name="bg", metrics=(draw(metrics(False)),), args=(TemplateArg("job"),)),
    )
    strategy = CanaryStrategy(
        workload=WorkloadRef("Deployment", "web"),
        steps=chosen,
        analysis=background,
        progress_deadline_seconds=draw(st.sampled_from([60, 600])),
    )
    return new_state(
        app="web",
        revision="abc1234def",
        stable_revision="0000000",
        pr=1,
        strategy=strategy,
        templates=templates,
    )


def pending(state: RolloutState) -> list[tuple[str, str]]:
    found = []
    for run in (state.step_run, state.background_run):
        if run is not None:
            found += [(run.id, r.name) for r in run.results if r.requested_at is not None]
    return found


KINDS = st.integers(0, 12)
USERS = st.sampled_from(["ann", "ben"])
OFFSETS = st.sampled_from([0, 0, -1])
OK = st.booleans()
MEASURED = st.sampled_from(PHASES)
MAYBE_USER = st.sampled_from([None, "ann"])


def draw_event(data, state: RolloutState):
    """One random event; measurements (for requests the engine made) come up most often.
    Built from a few fixed strategies because building strategies per draw is slow."""
    kind = data.draw(KINDS)
    waiting = pending(state)
    if kind >= 9 and waiting:
        run_id, name = waiting[0]
        return MeasurementTaken(run_id, name, Measurement(data.draw(MEASURED), "1", "", 0.0))
    if kind == 0 or kind >= 9:
        return Tick(state.version + data.draw(OFFSETS))
    if kind == 1:
        weight = state.weight if data.draw(OK) else 7
        return WorkloadHealth(data.draw(OK), "pods", weight)
    user = data.draw(USERS)
    return {
        2: Promote(user),
        3: PromoteFull(user),
        4: Abort(data.draw(MAYBE_USER)),
        5: Retry(user),
        6: Pause(user),
        7: Resume(user),
        8: NewRevision("fedcba9876", 2),
    }[kind]


def describe(state: RolloutState) -> str:
    return (
        f"{state.phase} step={state.step_index} weight={state.weight} "
        f"pause={state.pause_reason} by={state.paused_by} health={state.awaiting_health} "
        f"steps={state.strategy.steps} history={[h.message for h in state.history[-8:]]}"
    )


class Checker:
    """Applies events and asserts the invariants after each one."""

    def __init__(self, state: RolloutState) -> None:
        self.state = state
        self.now = 1000.0
        self.scheduled: dict[int, float] = {}

    def apply(self, event) -> list:
        before = self.state
        if isinstance(event, Tick) and event.version == before.version:
            self.scheduled.pop(before.version, None)  # this tick is the one that was scheduled
        after, actions = advance(before, event, self.now)
        self.check(before, event, after, actions)
        self.state = after
        return actions

    def check(self, before, event, after, actions) -> None:
        # version strictly increases on change, and only then; every changed state round-trips
        # through JSON (the shell saves exactly those)
        if replace(after, version=before.version) != before:
            assert after.version == before.version + 1
            assert RolloutState.from_dict(json.loads(json.dumps(after.to_dict()))) == after
        else:
            assert after.version == before.version

        # abort: weight 0 and it stays 0 until Retry
        set_weights = [a.weight for a in actions if isinstance(a, SetWeight)]
        if after.phase == "Aborted":
            assert after.weight == 0
            if before.phase == "Aborted" and not isinstance(event, Retry):
                assert set_weights == []
        if before.phase == "Aborted" and not isinstance(event, Retry):
            assert after.weight == 0

        # the weight never exceeds the current step's target
        if after.phase in ("Progressing", "Paused"):
            target = engine.target_weight(after)
            assert after.weight <= target
            assert all(w <= target for w in set_weights)

        # never stuck: waiting on people, or a tick is scheduled for the current version
        for action in actions:
            if isinstance(action, ScheduleTick):
                assert action.version == after.version
                assert action.at >= self.now
                self.scheduled[action.version] = action.at
        if after.phase not in TERMINAL_PHASES and after.phase != "Pending":
            wake = engine.next_wakeup(after)
            assert wake is not None or engine.waiting_on_people(after), describe(after)
            if wake is not None:
                assert after.version in self.scheduled
                assert self.scheduled[after.version] <= max(wake, self.now)

    def settle(self) -> None:
        """Let time pass with healthy workloads and good measurements until nothing is due."""
        for _ in range(300):
            state = self.state
            if state.phase in TERMINAL_PHASES or engine.waiting_on_people(state):
                return  # a background analysis may still measure while people decide
            if state.awaiting_health:
                self.apply(WorkloadHealth(True, "ok", state.weight))
                continue
            waiting = pending(state)
            if waiting:
                run_id, name = waiting[0]
                self.apply(
                    MeasurementTaken(run_id, name, Measurement("Successful", "1", "", self.now))
                )
                continue
            wake = engine.next_wakeup(state)
            if wake is None:
                return
            self.now = max(self.now, self.scheduled[state.version])
            self.apply(Tick(state.version))
        raise AssertionError(f"did not settle: {describe(self.state)}")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=rollouts(), data=st.data())
def test_invariants_hold_for_random_event_sequences(initial, data):
    checker = Checker(initial)
    checker.apply(Start(same_as_stable=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(0, 30))):
        checker.now += data.draw(st.sampled_from([0.0, 1.0, 10.0, 30.0, 61.0, 300.0, 700.0]))
        checker.apply(draw_event(data, checker.state))
    checker.settle()
    final = checker.state
    assert final.phase in ("Promoted", "Aborted", "Superseded") or engine.waiting_on_people(final)
