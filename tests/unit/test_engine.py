"""The canary engine, step by step: each step kind, the commands, deadlines and supersede."""

from __future__ import annotations

import json

import pytest

from bot.analysis.measurement import Measurement
from bot.analysis.templates import AnalysisTemplate, Arg, MetricSpec, TemplateArg
from bot.rollout import engine
from bot.rollout.engine import advance, split_replicas, status
from bot.rollout.model import (
    Abort,
    AnalysisStep,
    BackgroundAnalysis,
    CanaryStrategy,
    CommandRejected,
    Complete,
    Measure,
    MeasurementTaken,
    NewRevision,
    OpenRevertPR,
    Pause,
    PauseStep,
    PostStatus,
    Promote,
    PromoteFull,
    RemoveCanary,
    RestoreStable,
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

T0 = 1_700_000_000.0


def metric(name: str = "success-rate", **fields) -> MetricSpec:
    provider = {"prometheus": {"query": 'rate(ok{service="{{args.service}}"}[1m])'}}
    return MetricSpec(name=name, provider=provider, success_condition="result[0] >= 0.95", **fields)


def template(name: str = "success-rate", *metrics: MetricSpec) -> AnalysisTemplate:
    return AnalysisTemplate(
        name=name, metrics=metrics or (metric(),), args=(TemplateArg("service"),)
    )


def analysis(name: str = "success-rate", service: str | None = "web") -> AnalysisStep:
    args = (Arg("service", service),) if service else ()
    return AnalysisStep(templates=(TemplateRef(name),), args=args)


def stopped(sim: Sim, run_id: str) -> bool:
    """The run was ended and archived for the report (a late measurement is dropped by id)."""
    return any(run.id == run_id and run.terminated for run in sim.state.finished_runs)


class Sim:
    """Drives the engine like the shell does: keeps state, time and the last actions."""

    def __init__(self, steps, templates=None, background=None, deadline=600):
        strategy = CanaryStrategy(
            workload=WorkloadRef("Deployment", "web"),
            steps=tuple(steps),
            analysis=background,
            progress_deadline_seconds=deadline,
        )
        templates = (template(),) if templates is None else templates
        self.state = new_state(
            app="web",
            revision="a1b2c3d4e5",
            stable_revision="0f0f0f0",
            pr=42,
            strategy=strategy,
            templates=tuple(templates),
        )
        self.now = T0
        self.actions: list = []

    def send(self, event) -> list:
        self.state, self.actions = advance(self.state, event, self.now)
        return self.actions

    def wait(self, seconds: float) -> list:
        self.now += seconds
        return self.send(Tick(self.state.version))

    def healthy(self) -> list:
        return self.send(WorkloadHealth(ok=True, weight=self.state.weight))

    def of(self, kind) -> list:
        return [a for a in self.actions if isinstance(a, kind)]

    def pending_measures(self) -> list[tuple[str, str]]:
        pending = []
        for run in (self.state.step_run, self.state.background_run):
            if run is not None:
                pending += [(run.id, r.name) for r in run.results if r.requested_at is not None]
        return pending

    def answer(self, phase: str, value: str = "0.99", message: str = "") -> list:
        """Answer every outstanding measurement with `phase`."""
        actions = []
        for run_id, name in self.pending_measures():
            actions += self.send(
                MeasurementTaken(run_id, name, Measurement(phase, value, message, self.now))
            )  # type: ignore[arg-type]
        self.actions = actions
        return actions

    @property
    def tick(self) -> ScheduleTick | None:
        ticks = self.of(ScheduleTick)
        return ticks[-1] if ticks else None


# ---------------------------------------------------------------------- split_replicas


@pytest.mark.parametrize(
    ("weight", "replicas", "expected"),
    [
        (0, 10, (10, 0)),
        (10, 10, (9, 1)),
        (41, 10, (6, 4)),  # Argo's docs: 41% of 10 is 4 canary pods
        (45, 10, (5, 5)),  # half rounds up
        (1, 10, (9, 1)),  # at least one canary pod
        (50, 1, (1, 1)),  # stable never drops to 0: surge one pod
        (100, 4, (1, 4)),
        (20, 3, (2, 1)),
        (50, 0, (0, 0)),
    ],
)
def test_split_replicas(weight, replicas, expected):
    assert split_replicas(weight, replicas) == expected


# ----------------------------------------------------------------------------- steps


def test_set_weight_waits_for_health_then_moves_on():
    sim = Sim([SetWeightStep(20), SetWeightStep(50)])
    sim.send(Start())
    assert sim.of(SetWeight) == [SetWeight(20)]
    assert sim.state.phase == "Progressing" and sim.state.awaiting_health
    assert sim.of(PostStatus) == [PostStatus("pending", "step 1/2 · canary 20%", "a1b2c3d4e5")]
    assert sim.tick == ScheduleTick(T0 + engine.HEALTH_RECHECK_SECONDS, sim.state.version)

    sim.send(WorkloadHealth(ok=True, weight=10))  # about an older weight: ignored
    assert sim.actions == [] and sim.state.step_index == 0
    sim.healthy()
    assert sim.state.step_index == 1 and sim.of(SetWeight) == [SetWeight(50)]


def test_unhealthy_workload_keeps_waiting_and_set_weight_is_re_sent():
    sim = Sim([SetWeightStep(20), SetWeightStep(50)])
    sim.send(Start())
    sim.send(WorkloadHealth(ok=False, message="0/1 canary pods ready", weight=20))
    assert sim.state.step_index == 0 and sim.state.health_message == "0/1 canary pods ready"
    sim.wait(engine.HEALTH_RECHECK_SECONDS)
    assert sim.of(SetWeight) == [SetWeight(20)]


def test_progress_deadline_aborts_a_stuck_set_weight():
    sim = Sim([SetWeightStep(20)], deadline=300)
    sim.send(Start())
    sim.send(WorkloadHealth(ok=False, message="ImagePullBackOff", weight=20))
    for _ in range(4):
        sim.wait(60)
        assert sim.state.phase == "Progressing"
    sim.wait(60)
    assert sim.state.phase == "Aborted"
    assert sim.state.aborted_reason == (
        "progress deadline exceeded (300 s) waiting for canary at 20% to be healthy: "
        "ImagePullBackOff"
    )
    assert sim.of(SetWeight) == [] and sim.of(RestoreStable) == [RestoreStable()]
    assert sim.of(OpenRevertPR)[0].reason == sim.state.aborted_reason


def test_pause_with_duration_counts_from_when_the_pause_began():
    sim = Sim([SetWeightStep(10), PauseStep(120), SetWeightStep(30)])
    sim.send(Start())
    sim.now += 50
    sim.healthy()
    assert sim.state.phase == "Paused" and sim.tick.at == sim.now + 120
    sim.wait(119)
    assert sim.state.step_index == 1
    sim.wait(1)
    assert sim.state.step_index == 2 and sim.of(SetWeight) == [SetWeight(30)]


def test_indefinite_pause_waits_for_promote_without_ticks():
    sim = Sim([SetWeightStep(10), PauseStep(None), SetWeightStep(30)])
    sim.send(Start())
    sim.healthy()
    assert sim.state.phase == "Paused" and sim.tick is None
    assert status(sim.state)[1] == "paused · step 2/3 · canary 10% · waiting for /promote"
    assert engine.waiting_on_people(sim.state)
    sim.wait(10_000)
    assert sim.state.step_index == 1
    sim.send(Promote("alice"))
    assert sim.state.step_index == 2 and sim.of(SetWeight) == [SetWeight(30)]
    assert sim.state.history[-2].actor == "alice"


def test_analysis_step_success_moves_on():
    sim = Sim([SetWeightStep(10), analysis(), SetWeightStep(50)])
    sim.send(Start())
    sim.healthy()
    (measure,) = sim.of(Measure)
    assert sim.state.step_run.purpose == "step 2"
    assert measure.provider == {"prometheus": {"query": 'rate(ok{service="web"}[1m])'}}
    assert measure.success_condition == "result[0] >= 0.95"
    sim.answer("Successful")
    assert sim.state.step_index == 2 and sim.of(SetWeight) == [SetWeight(50)]
    assert sim.state.metric_points[-1].value == "0.99"


def test_analysis_step_failure_aborts_with_evidence():
    sim = Sim([SetWeightStep(10), analysis(), SetWeightStep(50)])
    sim.send(Start())
    sim.healthy()
    sim.answer("Failed", "0.91", "result[0] >= 0.95 is false")
    state = sim.state
    assert state.phase == "Aborted" and state.weight == 0
    assert state.aborted_reason == (
        "step 2 analysis failed: success-rate: failed (1) > failureLimit (0): "
        "result[0] >= 0.95 is false"
    )
    assert any("0.91 (Failed)" in line for line in state.evidence)
    assert sim.of(SetWeight) == [] and sim.of(RestoreStable) == [RestoreStable()]
    assert sim.of(OpenRevertPR) == [OpenRevertPR(state.aborted_reason, state.evidence)]
    assert sim.of(PostStatus)[0].state == "failure"
    assert sim.tick is None


def test_analysis_step_error_after_five_errors_aborts():
    sim = Sim([analysis()])
    sim.send(Start())
    for _ in range(4):
        sim.answer("Error", None, "connection refused")
        assert sim.state.phase == "Progressing"
        assert sim.tick.at == sim.now + 10
        sim.wait(10)
    sim.answer("Error", None, "connection refused")
    assert sim.state.phase == "Aborted"
    assert "consecutiveErrors (5) > consecutiveErrorLimit (4)" in sim.state.aborted_reason


def test_unresolved_argument_makes_the_run_error_and_aborts():
    sim = Sim([analysis(service=None)])
    sim.send(Start())
    assert sim.state.phase == "Aborted"
    assert sim.state.aborted_reason == "step 1 analysis error: unresolved argument 'service'"


def test_missing_template_makes_the_run_error():
    sim = Sim([analysis("nope")])
    sim.send(Start())
    assert sim.state.aborted_reason == "step 1 analysis error: AnalysisTemplate 'nope' not found"


def test_inconclusive_analysis_pauses_until_promote_moves_past_it():
    sim = Sim([SetWeightStep(10), analysis(), SetWeightStep(50)])
    sim.send(Start())
    sim.healthy()
    sim.answer("Inconclusive", None, "no data")
    assert sim.state.phase == "Paused" and sim.state.step_index == 1
    assert sim.tick is None
    assert "inconclusive: /promote or /abort" in status(sim.state)[1]
    sim.wait(3600)
    assert sim.state.step_index == 1
    sim.send(Promote("bob"))
    assert sim.state.step_index == 2 and sim.of(SetWeight) == [SetWeight(50)]


def test_promote_during_a_running_analysis_skips_it():
    slow = template("slow", metric("m", interval=60.0, count=10))
    sim = Sim([SetWeightStep(10), analysis("slow"), SetWeightStep(50)], templates=[slow])
    sim.send(Start())
    sim.healthy()
    run_id = sim.state.step_run.id
    sim.send(Promote("carol"))
    assert stopped(sim, run_id)
    assert sim.state.step_index == 2 and sim.state.step_run is None
    late = sim.send(MeasurementTaken(run_id, "m", Measurement("Failed", "0", "", sim.now)))
    assert late == [] and sim.state.phase == "Progressing"


def test_promote_full_skips_everything_and_completes():
    sim = Sim([SetWeightStep(10), PauseStep(None), analysis(), SetWeightStep(50)])
    sim.send(Start())
    sim.send(PromoteFull("dave"))
    assert sim.state.phase == "Completing" and sim.of(Complete) == [Complete()]
    assert sim.tick is not None  # waits on the completion with a deadline
    sim.send(WorkloadHealth(ok=True))
    assert sim.state.phase == "Promoted"
    assert sim.of(PostStatus) == [PostStatus("success", "promoted", "a1b2c3d4e5")]
    assert sim.tick is None


def test_last_step_completes_and_then_promoted():
    sim = Sim([SetWeightStep(50)])
    sim.send(Start())
    sim.healthy()
    assert sim.state.phase == "Completing" and sim.of(Complete) == [Complete()]
    assert sim.state.weight == 100
    sim.send(WorkloadHealth(ok=True, weight=100))
    assert sim.state.phase == "Promoted" and sim.state.finished_at == sim.now


def test_failed_completion_times_out_into_an_abort():
    sim = Sim([], deadline=120)
    sim.send(Start())
    assert sim.state.phase == "Completing"
    sim.wait(60)
    assert sim.of(Complete) == [Complete()]  # re-sent
    sim.wait(60)
    assert sim.state.phase == "Aborted"
    assert "stable with the new version" in sim.state.aborted_reason


def test_same_template_as_stable_skips_the_steps():
    sim = Sim([SetWeightStep(10), PauseStep(None)])
    sim.send(Start(same_as_stable=True))
    assert sim.state.phase == "Completing" and sim.of(SetWeight) == []


@pytest.mark.parametrize("first", [PauseStep(None), SetWeightStep(0)])
def test_first_step_not_a_weight_scales_away_an_old_canary(first):
    sim = Sim([first, SetWeightStep(10), PauseStep(None)])
    sim.send(Start())
    assert sim.of(SetWeight)[0] == SetWeight(0)


# -------------------------------------------------------------------- background analysis


def test_background_analysis_starts_at_its_step_and_aborts_on_failure():
    bg_template = template("errors", metric("error-rate", interval=60.0))
    sim = Sim(
        [SetWeightStep(10), PauseStep(60), SetWeightStep(40), PauseStep(600)],
        templates=[bg_template],
        background=BackgroundAnalysis((TemplateRef("errors"),), (Arg("service", "web"),), 2),
    )
    sim.send(Start())
    sim.healthy()
    assert sim.state.background_run is None
    sim.wait(60)
    assert sim.state.step_index == 2
    assert sim.state.background_run.purpose == "background"
    sim.healthy()
    sim.answer("Successful")
    sim.wait(60)
    assert len(sim.of(Measure)) == 1
    sim.answer("Failed", "0.5")
    assert sim.state.phase == "Aborted"
    assert sim.state.aborted_reason.startswith("background analysis failed")


def test_background_analysis_is_stopped_at_completion():
    bg_template = template("errors", metric("error-rate", interval=60.0))
    sim = Sim(
        [SetWeightStep(10), PauseStep(60)],
        templates=[bg_template],
        background=BackgroundAnalysis((TemplateRef("errors"),), (Arg("service", "web"),)),
    )
    sim.send(Start())
    run_id = sim.state.background_run.id
    sim.healthy()
    sim.answer("Successful")
    sim.wait(60)
    assert sim.state.phase == "Completing"
    assert stopped(sim, run_id)


def test_inconclusive_background_pauses_and_promote_starts_a_new_run():
    bg_template = template("errors", metric("error-rate", interval=60.0))
    sim = Sim(
        [SetWeightStep(10), PauseStep(600), SetWeightStep(20)],
        templates=[bg_template],
        background=BackgroundAnalysis((TemplateRef("errors"),), (Arg("service", "web"),)),
    )
    sim.send(Start())
    sim.healthy()
    first = sim.state.background_run.id
    sim.answer("Inconclusive", None, "no data")
    assert sim.state.phase == "Paused" and engine.waiting_on_people(sim.state)
    sim.wait(600)
    assert sim.state.step_index == 1  # the pause duration passed, but the rollout is held
    sim.send(Promote("erin"))
    assert sim.state.background_run.id != first
    # As Argo's promote clears every pause condition, the pause step is passed too.
    assert sim.state.step_index == 2 and sim.state.phase == "Progressing"


# ---------------------------------------------------------------------- user commands


def test_abort_by_user_opens_a_revert_pr_and_retry_restarts_at_step_zero():
    sim = Sim([SetWeightStep(10), analysis(), SetWeightStep(50)])
    sim.send(Start())
    sim.healthy()
    first_run = sim.state.step_run.id
    sim.send(Abort(user="frank"))
    assert sim.state.phase == "Aborted" and sim.state.aborted_reason == "aborted by @frank"
    assert sim.of(OpenRevertPR) == [OpenRevertPR("aborted by @frank", ())]
    assert stopped(sim, first_run)

    assert sim.send(Promote("frank")) == [
        CommandRejected("promote", "frank", "the rollout is aborted; use /retry to run it again")
    ]
    sim.send(Retry("frank"))
    assert sim.state.phase == "Progressing" and sim.state.step_index == 0
    assert sim.state.aborted_reason is None and sim.state.attempt == 2
    assert sim.of(SetWeight) == [SetWeight(10)]
    sim.healthy()
    assert sim.state.step_run.id != first_run


def test_retry_is_only_for_aborted_rollouts():
    sim = Sim([SetWeightStep(10)])
    sim.send(Start())
    (rejected,) = sim.send(Retry("gina"))
    assert rejected.reason == "only an aborted rollout can be retried (it is progressing)"


def test_user_pause_holds_after_the_pause_duration_and_resume_continues():
    sim = Sim([SetWeightStep(10), PauseStep(60), SetWeightStep(20)])
    sim.send(Start())
    sim.healthy()
    sim.send(Pause("hank"))
    assert sim.state.phase == "Paused" and sim.tick is None
    assert "paused by @hank" in status(sim.state)[1]
    sim.now += 120
    sim.send(Tick())
    assert sim.state.step_index == 1
    sim.send(Resume("hank"))
    assert sim.state.step_index == 2 and sim.of(SetWeight) == [SetWeight(20)]


def test_pause_and_resume_rejections():
    sim = Sim([SetWeightStep(10), PauseStep(None)])
    sim.send(Start())
    sim.healthy()
    (rejected,) = sim.send(Resume("ivy"))
    assert rejected.reason == "not paused by a user (waiting for /promote)"
    sim.send(Pause("ivy"))
    (rejected,) = sim.send(Pause("jay"))
    assert rejected.reason == "already paused by @ivy"


def test_user_pause_does_not_stop_a_failing_analysis_from_aborting():
    sim = Sim([SetWeightStep(10), analysis()])
    sim.send(Start())
    sim.healthy()
    sim.send(Pause("kim"))
    sim.answer("Failed", "0.2")
    assert sim.state.phase == "Aborted"


def test_progress_deadline_does_not_count_pauses_or_analysis():
    slow = template("slow", metric("m", interval=300.0, count=3))
    sim = Sim(
        [SetWeightStep(10), PauseStep(1800), analysis("slow"), SetWeightStep(50)],
        templates=[slow],
        deadline=600,
    )
    sim.send(Start())
    sim.now += 500
    sim.healthy()
    sim.wait(1800)
    for _ in range(3):
        sim.answer("Successful")
        if sim.state.step_index == 2:
            sim.wait(300)
    assert sim.state.step_index == 3 and sim.state.phase == "Progressing"
    sim.wait(599)
    assert sim.state.phase == "Progressing"
    sim.wait(1)
    assert sim.state.phase == "Aborted"


def test_user_pause_freezes_the_progress_deadline():
    sim = Sim([SetWeightStep(10)], deadline=600)
    sim.send(Start())
    sim.now += 500
    sim.send(Pause("lee"))
    sim.wait(5000)
    assert sim.state.phase == "Paused"
    sim.send(Resume("lee"))
    sim.wait(99)
    assert sim.state.phase == "Progressing"
    sim.wait(1)
    assert sim.state.phase == "Aborted"


def test_promote_on_a_health_wait_skips_the_step():
    sim = Sim([SetWeightStep(10), SetWeightStep(20)])
    sim.send(Start())
    sim.send(Promote("max"))
    assert sim.state.step_index == 1 and sim.of(SetWeight) == [SetWeight(20)]


# --------------------------------------------------------------------------- supersede


def test_new_revision_supersedes_and_stops_runs():
    sim = Sim([SetWeightStep(10), analysis()])
    sim.send(Start())
    sim.healthy()
    run_id = sim.state.step_run.id
    sim.send(NewRevision("ffffeeee00", pr=43))
    assert sim.state.phase == "Superseded" and sim.state.superseded_by == "ffffeeee00"
    assert stopped(sim, run_id)
    assert sim.of(PostStatus) == [
        PostStatus("error", "superseded by ffffeee at step 2/2", "a1b2c3d4e5")
    ]
    assert sim.of(SetWeight) == [] and sim.tick is None
    assert (
        sim.send(MeasurementTaken(run_id, "success-rate", Measurement("Failed", "0", "", sim.now)))
        == []
    )


def test_new_revision_after_promotion_changes_nothing():
    sim = Sim([], deadline=60)
    sim.send(Start())
    sim.send(WorkloadHealth(ok=True))
    version = sim.state.version
    assert sim.send(NewRevision("ffffeeee00")) == [] and sim.state.version == version


# ------------------------------------------------------------------------- bookkeeping


def test_stale_tick_does_nothing():
    sim = Sim([SetWeightStep(10), PauseStep(60)])
    sim.send(Start())
    old = sim.state.version
    sim.healthy()
    before = sim.state
    sim.now += 600
    assert sim.send(Tick(old)) == [] and sim.state == before


def test_a_tick_that_changes_nothing_reschedules_without_a_new_version():
    sim = Sim([SetWeightStep(10), PauseStep(60)])
    sim.send(Start())
    sim.healthy()
    version = sim.state.version
    sim.wait(1)  # too early
    assert sim.state.version == version
    assert sim.actions == [ScheduleTick(T0 + 60, version)]


def test_a_measurement_nobody_asked_for_is_ignored():
    sim = Sim([analysis()])
    sim.send(Start())
    run_id = sim.state.step_run.id
    sim.answer("Successful")
    assert sim.state.phase == "Completing"
    assert (
        sim.send(MeasurementTaken(run_id, "success-rate", Measurement("Failed", "0", "", sim.now)))
        == []
    )


def test_version_bumps_once_per_change():
    sim = Sim([SetWeightStep(10), PauseStep(None)])
    assert sim.state.version == 0
    sim.send(Start())
    assert sim.state.version == 1
    sim.healthy()
    assert sim.state.version == 2
    sim.send(Resume("nobody"))
    assert sim.state.version == 2


def test_status_description_format_and_limit():
    steps = [SetWeightStep(5), SetWeightStep(20), analysis("five"), PauseStep(None)]
    five = template("five", metric("m", interval=60.0, count=5))
    sim = Sim(steps, templates=[five])
    sim.send(Start())
    sim.healthy()
    sim.healthy()
    sim.answer("Successful")
    sim.wait(60)
    sim.answer("Successful")
    assert status(sim.state) == ("pending", "step 3/4 · canary 20% · analysis 2/5 ok")
    sim.send(Abort(reason="x" * 300))
    assert len(status(sim.state)[1]) == 140


def test_history_records_who_did_what():
    sim = Sim([SetWeightStep(10), PauseStep(None), SetWeightStep(20)])
    sim.send(Start())
    sim.healthy()
    sim.send(Promote("olga"))
    sim.send(Abort(user="pat"))
    kinds = [(h.kind, h.actor) for h in sim.state.history]
    assert ("promoted", "olga") in kinds and ("aborted", "pat") in kinds
    assert [p.weight for p in sim.state.weights] == [10, 20, 0]


def test_state_round_trips_through_json():
    bg_template = template("errors", metric("error-rate", interval=60.0))
    sim = Sim(
        [SetWeightStep(10), analysis("errors"), PauseStep(None)],
        templates=[bg_template],
        background=BackgroundAnalysis((TemplateRef("errors"),), (Arg("service", "web"),)),
    )
    sim.send(Start())
    sim.healthy()
    sim.answer("Successful")
    sim.send(Pause("quinn"))
    text = json.dumps(sim.state.to_dict())
    assert RolloutState.from_dict(json.loads(text)) == sim.state


# ------------------------------------------------- decisions the shell used to make itself


def test_a_failed_workload_aborts_at_once_and_restores_stable():
    sim = Sim([SetWeightStep(20), PauseStep(None)])
    sim.send(Start())
    sim.send(WorkloadHealth(ok=False, message="canary is Failed: deadline exceeded",
                            weight=20, failed=True))
    assert sim.state.phase == "Aborted"
    assert sim.state.aborted_reason == "canary is Failed: deadline exceeded"
    assert sim.of(RestoreStable) == [RestoreStable()] and sim.of(OpenRevertPR)


def test_an_unhealthy_but_not_failed_workload_is_waited_for():
    sim = Sim([SetWeightStep(20), PauseStep(None)])
    sim.send(Start())
    sim.send(WorkloadHealth(ok=False, message="canary: 0/2 ready", weight=20))
    assert sim.state.phase == "Progressing" and sim.of(RestoreStable) == []


@pytest.mark.parametrize(("starts_canary", "removed"), [(True, []), (False, [RemoveCanary()])])
def test_superseding_merge_without_a_canary_removes_this_one(starts_canary, removed):
    sim = Sim([SetWeightStep(20), PauseStep(None)])
    sim.send(Start())
    sim.healthy()
    sim.send(NewRevision("ffffeeee00", pr=43, starts_canary=starts_canary))
    assert sim.state.phase == "Superseded" and sim.of(RemoveCanary) == removed


def test_an_aborted_rollout_superseded_without_canary_removes_nothing_more():
    sim = Sim([SetWeightStep(20), PauseStep(None)])
    sim.send(Start())
    sim.send(Abort(user="pat"))
    sim.send(NewRevision("ffffeeee00", starts_canary=False))
    assert sim.state.phase == "Superseded" and sim.of(RemoveCanary) == []


@pytest.mark.parametrize(
    ("revision", "same_template", "finished", "expected"),
    [
        ("a1b2c3d4e5", False, False, True),  # the same merge delivered again
        ("ffffeeee00", True, False, True),  # a merge that left the template alone
        ("ffffeeee00", False, False, False),  # a new template: supersede
        ("a1b2c3d4e5", True, True, False),  # a finished rollout continues nothing
    ],
)
def test_continues_with(revision, same_template, finished, expected):
    sim = Sim([SetWeightStep(20), PauseStep(None)])
    sim.send(Start())
    if finished:
        sim.send(Abort(user="pat"))
    assert engine.continues_with(sim.state, revision, same_template) is expected


def test_history_entries_are_typed_with_step_phase_and_reason():
    sim = Sim([SetWeightStep(10), PauseStep(None), SetWeightStep(20), PauseStep(None)])
    sim.send(Start())
    sim.healthy()
    sim.send(Promote("olga"))
    sim.healthy()
    sim.send(PromoteFull("pat"))
    entries = [(h.kind, h.step, h.phase, h.reason, h.actor) for h in sim.state.history]
    assert ("promoted", 1, "Progressing", "past hold", "olga") in entries
    assert ("step", 2, "Progressing", None, None) in entries
    assert ("promoted", 3, "Completing", "full", "pat") in entries
    assert all(h.phase is not None for h in sim.state.history)


def test_same_template_start_is_typed():
    sim = Sim([SetWeightStep(10)])
    sim.send(Start(same_as_stable=True))
    assert any(h.kind == "step" and h.reason == "same template" for h in sim.state.history)
