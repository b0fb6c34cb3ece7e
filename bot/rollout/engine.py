"""The canary rollout engine: `advance(state, event, now) -> (state, actions)`, pure.

State machine (phases of `RolloutState.phase`):

    Pending ──Start──▶ Progressing ⇄ Paused ──(last step / PromoteFull)──▶ Completing ──▶ Promoted
                           │            │                                      │
                           └────────────┴──(analysis Failed/Error, deadline,   │
                                            Abort)──▶ Aborted ◀────────────────┘
                                                        │ Retry (back to step 0, new runs)
                                                        ▼
                                                   Progressing
    Any non-finished phase (and Aborted) ──NewRevision──▶ Superseded

Steps, as in Argo Rollouts' canary strategy:
- setWeight N: ask the shell for N% (SetWeight); the step is done when WorkloadHealth(ok) arrives.
  While waiting, the progress deadline runs (default 600 s) and SetWeight is re-sent every
  HEALTH_RECHECK_SECONDS; past the deadline the rollout aborts. After an unhealthy answer the
  workloads are read again (CheckHealth) HEALTH_POLL_SECONDS later, backing off to
  HEALTH_POLL_MAX_SECONDS; the re-poll is a due tick, so it is stored and never lost.
- pause {duration}: Paused until the duration has passed since the pause began.
- pause {}: Paused until Promote.
- analysis: starts a run and blocks. Successful → next step; Failed/Error → abort;
  Inconclusive → Paused until Promote, which moves past the step.
- background analysis (strategy.analysis) starts at `startingStep` and runs until completion;
  Failed/Error → abort; Inconclusive → Paused until Promote (which starts a fresh run).
- setCanaryScale / setHeaderRoute / setMirrorRoute: SetWeight again at the same weight (new pod
  count or routes, `canary_scale` and `route_state` say which); done like setWeight.
- experiment: StartExperiment, then its analyses once its pods are healthy; done after its
  duration and its required analyses (`experiment_done`); StopExperiment when it ends.
- A routed strategy (a traffic router, or blue-green, compiled to these same steps) starts with
  RouteToStable; a finished rollout keeps its canary for the scale-down delay (`scale_down_at`,
  a due tick, then RemoveCanary).

Commands:
- Promote clears a user pause and then: moves past a pause or inconclusive analysis step; after
  an inconclusive background run, starts a new one; otherwise skips the current step (a running
  analysis step is stopped, a setWeight step stops waiting for health).
- PromoteFull skips every remaining step and completes.
- Abort (from a user or the shell) sets weight 0, stops runs and opens a revert PR. Both manual
  and automatic aborts open the revert PR: after an abort the cluster runs the stable version
  while Git describes the new one, and the revert PR is how Git catches up. A later Retry still
  works; the revert PR can then be closed.
- Retry (only when Aborted) restarts at step 0 with new analysis runs.
- Pause holds the rollout at its step (analysis keeps measuring, and a failure still aborts; the
  progress deadline is frozen); Resume releases it.
- NewRevision marks the rollout Superseded and stops its runs; the shell then starts the new
  revision's rollout, whose Start re-sets the canary (a new template resets to step 0 and the
  stable is left alone, as in Argo).

Time in pauses and analysis steps never counts against the progress deadline, because only the
health wait after SetWeight/Complete carries a deadline.

The engine decides what the shell only carries out: every abort asks for RestoreStable (stable
back at full size with its own template, canary removed) and OpenRevertPR; a WorkloadHealth with
`failed` (the workload's own progress deadline exceeded, say) aborts at once instead of waiting
for the deadline; `continues_with` says whether a new merge lets a rollout carry on; a
NewRevision that starts no canary asks for RemoveCanary. History entries are typed (step,
phase, reason, actor), so reports never read the wording back.

Why this file is long (~1150 lines): as in h11's `_state.py`, everything that affects the state
machine lives here — the transitions, the handlers of each event, and the queries the shell and
the report ask (`next_wakeup`, `status`, `waiting_on_people`), which must agree with the
transitions exactly. Split apart, a change to one rule would have to be made in several files.

Every returned state that changed has `version` bumped by one. Whenever the state waits on time
(a pause duration, a measurement, a health re-check or deadline) the actions include a
ScheduleTick for the earliest such time and the new version, so a tick is never lost; a Tick
carrying an older version does nothing. States waiting only on people (pause {}, an inconclusive
analysis, a user pause) schedule nothing.
"""

from __future__ import annotations

from dataclasses import replace

from bot.analysis import run as runs
from bot.analysis.run import AnalysisRun
from bot.analysis.templates import (
    AnalysisTemplate,
    Arg,
    RunRules,
    UnresolvedArgument,
    resolve_metrics,
)
from bot.rollout.durations import format_duration
from bot.rollout.model import (
    DEFAULT_SCALE_DOWN_DELAY_SECONDS,
    INCONCLUSIVE_STEP,
    PAUSE_STEP,
    PROMOTED_BACKGROUND,
    PROMOTED_FULL,
    PROMOTED_PAST_HOLD,
    PROMOTED_SKIP,
    SAME_TEMPLATE,
    TERMINAL_PHASES,
    Abort,
    Action,
    AnalysisStep,
    BackgroundAnalysis,
    CheckHealth,
    CommandRejected,
    Complete,
    Event,
    ExperimentStep,
    HistoryEntry,
    Measure,
    MeasurementTaken,
    MetricPoint,
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
    RouteToStable,
    ScheduleTick,
    SetCanaryScaleStep,
    SetHeaderRouteStep,
    SetMirrorRouteStep,
    SetWeight,
    SetWeightStep,
    Start,
    StartExperiment,
    Step,
    StopExperiment,
    TemplateRef,
    Tick,
    UpdateComment,
    WeightPoint,
    WorkloadHealth,
)
from bot.rollout.routers import HeaderRoute, MirrorRoute, RouteState, WeightDestination
from bot.rollout.traffic import experiment_subset_labels

HEALTH_RECHECK_SECONDS = 60.0
HEALTH_POLL_SECONDS = 2.0
HEALTH_POLL_MAX_SECONDS = 10.0
STATUS_LIMIT = 140
_HISTORY_LIMIT = 200
_WEIGHT_POINTS_LIMIT = 500
_METRIC_POINTS_LIMIT = 500
_FINISHED_RUNS_LIMIT = 10
_ACTIVE = frozenset({"Progressing", "Paused"})


def split_replicas(weight: int, replicas: int) -> tuple[int, int]:
    """(stable, canary) pods for `weight`% of `replicas`.

    canary = round-half-up(weight × replicas / 100), at least 1 when weight > 0. Stable keeps the
    rest but never drops to 0 before completion: at 100% (or 1 replica) one stable pod is
    surged instead, so an abort always has a warm stable to fall back to.
    """
    if replicas <= 0:
        return 0, 0
    weight = max(0, min(100, weight))
    canary = (weight * replicas + 50) // 100
    if weight > 0:
        canary = max(canary, 1)
    return max(replicas - canary, 1), canary


def _share(weight: int, replicas: int) -> int:
    """ceil(weight × replicas / 100): Argo's trafficWeightToReplicas."""
    return -(-max(0, min(100, weight)) * replicas // 100)


def replica_split(state: RolloutState, replicas: int) -> tuple[int, int]:
    """(stable, canary) pods for the rollout now.

    Without a router, the weight is the pod share (`split_replicas`). With a router (or
    blue-green's Services) Argo's rules: the canary runs ceil(weight × replicas / 100) pods, or
    what the setCanaryScale in force says; the stable stays at full size, unless
    dynamicStableScale gives it ceil((100 − weight) × replicas / 100); a non-zero count is at
    least minPodsPerReplicaSet."""
    strategy = state.strategy
    if not strategy.routed:
        return split_replicas(state.weight, replicas)
    scale = canary_scale(state)
    if scale is None:
        canary = _share(state.weight, replicas)
    elif scale.replicas is not None:
        canary = scale.replicas
    else:
        canary = _share(scale.weight or 0, replicas)
    stable = replicas
    if strategy.dynamic_stable_scale and state.phase in _ACTIVE:
        stable = _share(100 - state.weight, replicas)
    floor = strategy.min_pods_per_replica_set or 0
    return (max(stable, floor) if stable else 0), (max(canary, floor) if canary else 0)


def advance(state: RolloutState, event: Event, now: float) -> tuple[RolloutState, list[Action]]:
    """The state after `event` at `now`, and what the shell must do about it."""
    if isinstance(event, Tick) and event.version is not None and event.version != state.version:
        return state, []
    transition = _Transition(state, now)
    _HANDLERS[type(event)](transition, event)
    return transition.finish(original=state, rescheduling=isinstance(event, Tick))


# --------------------------------------------------------------------------- queries


def is_finished(state: RolloutState) -> bool:
    return state.phase in TERMINAL_PHASES


def current_step(state: RolloutState) -> Step | None:
    steps = state.strategy.steps
    return steps[state.step_index] if state.step_index < len(steps) else None


def target_weight(state: RolloutState) -> int:
    """The weight of the latest setWeight step at or before the current one (Argo's
    GetCurrentSetWeight); 100 once completing."""
    if state.phase in ("Completing", "Promoted"):
        return 100
    weight = 0
    for step in state.strategy.steps[: state.step_index + 1]:
        if isinstance(step, SetWeightStep):
            weight = step.weight
    return weight


def canary_scale(state: RolloutState) -> SetCanaryScaleStep | None:
    """The setCanaryScale in force: the latest at or before the current step, unless it says
    matchTrafficWeight (Argo's UseSetCanaryScale). None once completing or finished: then the
    canary's pods follow the weight again."""
    if state.phase not in _ACTIVE:
        return None
    scale = None
    for step in state.strategy.steps[: state.step_index + 1]:
        if isinstance(step, SetCanaryScaleStep):
            scale = None if step.match_traffic_weight else step
    return scale


def route_state(state: RolloutState) -> RouteState:
    """What the traffic router must say now: the canary's weight and the managed header and
    mirror routes the steps so far have set (a route set again replaces itself; one set with
    no match is removed), and during an experiment step its weighted templates' Services
    (`experiment_destinations`). Outside the steps (completing, finished) the router is back
    at stable 100 with no managed route, as Argo leaves it."""
    if state.phase not in _ACTIVE:
        return RouteState(weight=0)
    headers: dict[str, HeaderRoute] = {}
    mirrors: dict[str, MirrorRoute] = {}
    for step in state.strategy.steps[: state.step_index + 1]:
        if isinstance(step, SetHeaderRouteStep):
            headers.pop(step.route.name, None)
            if step.route.matches:
                headers[step.route.name] = step.route
        elif isinstance(step, SetMirrorRouteStep):
            mirrors.pop(step.route.name, None)
            if step.route.matches:
                mirrors[step.route.name] = step.route
    return RouteState(weight=state.weight, header_routes=tuple(headers.values()),
                      mirror_routes=tuple(mirrors.values()),
                      extra=experiment_destinations(state))


def experiment_destinations(state: RolloutState) -> tuple[WeightDestination, ...]:
    """The current experiment step's templates that have a `weight`, as router destinations.

    The shell writes the router with them once the experiment's pods are healthy (health
    gates every routing), as Argo adds them only while the experiment is running."""
    step = current_step(state)
    if state.phase not in _ACTIVE or not isinstance(step, ExperimentStep):
        return ()
    workload = state.strategy.workload.name
    return tuple(
        WeightDestination(service=t.service_name(workload) or "", weight=t.weight,
                          subset_labels=experiment_subset_labels(t))
        for t in step.templates if t.weight is not None
    )


def scale_down_delay(state: RolloutState) -> int | None:
    """Seconds a finished rollout keeps the canary's pods before removing them; None: never.

    Argo's rules: after a promotion, `scaleDownDelaySeconds` (default 30 s with a traffic
    router or blue-green, 0 otherwise); after an abort, a replica-split canary goes at once
    (its pods share the stable's Service, so they must), a routed one after
    `abortScaleDownDelaySeconds` (default 30 s; 0 means never)."""
    strategy = state.strategy
    if state.phase == "Aborted" or state.aborted_reason:
        if not strategy.routed:
            return 0
        delay = strategy.abort_scale_down_delay_seconds
        return None if delay == 0 else delay
    if strategy.scale_down_delay_seconds is not None:
        return strategy.scale_down_delay_seconds
    return DEFAULT_SCALE_DOWN_DELAY_SECONDS if strategy.routed else 0


def continues_with(state: RolloutState, revision: str, same_template: bool) -> bool:
    """Whether a new merge lets this rollout carry on instead of superseding it: the same
    merge delivered again, or a merge that left the workload's template as this rollout has it
    (the rollout is completing that very template). A finished rollout continues nothing."""
    return not is_finished(state) and (state.revision == revision or same_template)


def background_inconclusive(state: RolloutState) -> bool:
    run = state.background_run
    return run is not None and runs.phase(run) == "Inconclusive"


def waiting_on_people(state: RolloutState) -> bool:
    """Held until someone promotes, resumes or aborts."""
    if state.phase not in _ACTIVE:
        return False
    step = current_step(state)
    indefinite_pause = (
        state.pause_reason == PAUSE_STEP and isinstance(step, PauseStep) and (step.duration is None)
    )
    return bool(
        state.paused_by
        or state.pause_reason == INCONCLUSIVE_STEP
        or indefinite_pause
        or background_inconclusive(state)
    )


def next_wakeup(state: RolloutState) -> float | None:
    """The earliest time the rollout needs a Tick; None when waiting on people, or finished
    with no canary left to scale down."""
    if state.phase in ("Promoted", "Aborted"):
        return state.scale_down_at
    if state.phase not in _ACTIVE | {"Completing"}:
        return None
    times: list[float] = []
    if state.awaiting_health and state.health_requested_at is not None:
        times.append(state.health_requested_at + HEALTH_RECHECK_SECONDS)
        if state.deadline_at is not None:
            times.append(state.deadline_at)
        if state.health_poll_at is not None:
            times.append(state.health_poll_at)
    step = current_step(state)
    if (
        state.pause_reason == PAUSE_STEP
        and isinstance(step, PauseStep)
        and step.duration is not None
        and state.pause_started_at is not None
        and not state.paused_by
        and not background_inconclusive(state)
    ):
        times.append(state.pause_started_at + step.duration)
    if (
        isinstance(step, ExperimentStep)
        and step.duration is not None
        and state.experiment_ready_at is not None
        and not state.paused_by
    ):
        times.append(state.experiment_ready_at + step.duration)
    for run in (state.step_run, state.background_run):
        if run is not None:
            due = runs.next_due(run)
            if due is not None:
                times.append(due)
    return min(times, default=None)


def status(state: RolloutState) -> tuple[str, str]:
    """(commit status state, description ≤ 140 chars), e.g. 'step 3/7 · canary 20% · analysis
    2/5 ok'."""
    total = len(state.strategy.steps)
    position = f"step {min(state.step_index + 1, total)}/{total}"
    canary = f"canary {state.weight}%"
    if state.strategy.blue_green is not None:
        canary = "active: new version" if state.weight >= 100 else "preview"
    if state.phase == "Pending":
        return "pending", _cut("waiting to start")
    if state.phase == "Promoted":
        return "success", "promoted"
    if state.phase == "Aborted":
        return "failure", _cut(f"aborted: {state.aborted_reason or 'no reason given'}")
    if state.phase == "Superseded":
        sha = (state.superseded_by or "")[:7]
        if state.aborted_reason:
            return "failure", _cut(f"aborted, then superseded by {sha}")
        return "error", _cut(f"superseded by {sha} at {position}")
    if state.phase == "Completing":
        return "pending", _cut(f"promoting: stable takes the new version · {total}/{total} steps")
    parts = [position, canary]
    analysis = _analysis_summary(state)
    if analysis:
        parts.append(analysis)
    if state.phase == "Paused":
        parts.insert(0, "paused")
        parts.append(_hold_reason(state))
    return "pending", _cut(" · ".join(parts))


def _cut(text: str) -> str:
    return text if len(text) <= STATUS_LIMIT else text[: STATUS_LIMIT - 1] + "…"


def _analysis_summary(state: RolloutState) -> str:
    pieces = []
    for label, run in (("analysis", state.step_run), ("background", state.background_run)):
        if run is None:
            continue
        verdict = runs.phase(run)
        if verdict in ("Inconclusive", "Failed", "Error"):
            pieces.append(f"{label} {verdict.lower()}")
            continue
        ok, wanted = runs.progress(run)
        pieces.append(f"{label} {ok}/{wanted} ok" if wanted is not None else f"{label} {ok} ok")
    return " · ".join(pieces)


def _hold_reason(state: RolloutState) -> str:
    if state.paused_by:
        return f"paused by @{state.paused_by}, /resume to continue"
    if state.pause_reason == INCONCLUSIVE_STEP or background_inconclusive(state):
        return "inconclusive: /promote or /abort"
    step = current_step(state)
    if isinstance(step, PauseStep) and step.duration is not None:
        return f"pause {format_duration(step.duration)}"
    return "waiting for /promote"


def describe_step(step: Step) -> str:
    label = getattr(step, "label", "")
    if label:
        return label
    if isinstance(step, SetCanaryScaleStep):
        if step.match_traffic_weight:
            return "setCanaryScale matchTrafficWeight"
        if step.replicas is not None:
            return f"setCanaryScale {step.replicas} pods"
        return f"setCanaryScale {step.weight}%"
    if isinstance(step, SetHeaderRouteStep):
        verb = "setHeaderRoute" if step.route.matches else "remove header route"
        return f"{verb} {step.route.name}"
    if isinstance(step, SetMirrorRouteStep):
        verb = "setMirrorRoute" if step.route.matches else "remove mirror route"
        return f"{verb} {step.route.name}"
    if isinstance(step, ExperimentStep):
        names = ", ".join(t.name + (f" ({t.weight}%)" if t.weight is not None else "")
                          for t in step.templates)
        lasting = f" for {format_duration(step.duration)}" if step.duration is not None else ""
        return f"experiment {names}{lasting}"
    if isinstance(step, SetWeightStep):
        return f"setWeight {step.weight}"
    if isinstance(step, PauseStep):
        return "pause {}" if step.duration is None else f"pause {format_duration(step.duration)}"
    return "analysis " + ", ".join(ref.name for ref in step.templates)


# --------------------------------------------------------------------------- transition


class _Transition:
    """Accumulates one event's effect on an immutable state; pure, no I/O."""

    def __init__(self, state: RolloutState, now: float) -> None:
        self.state = state
        self.now = now
        self.actions: list[Action] = []
        self.logged = 0  # history entries added by this event

    # -- bookkeeping --------------------------------------------------------------------

    def update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]

    def log(
        self,
        kind: str,
        message: str,
        actor: str | None = None,
        *,
        step: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Record an entry; its `phase` is filled in by `finish`, once the phase is settled."""
        entry = HistoryEntry(
            at=self.now, kind=kind, message=message, actor=actor, step=step, reason=reason
        )
        self.update(history=(self.state.history + (entry,))[-_HISTORY_LIMIT:])
        self.logged += 1

    def reject(self, command: str, user: str | None, reason: str) -> None:
        self.actions.append(CommandRejected(command=command, user=user, reason=reason))

    def set_weight(self, weight: int, *, await_health: bool = True) -> None:
        self.actions.append(SetWeight(weight))
        self.record_weight(weight)
        if await_health:
            self.await_health()

    def record_weight(self, weight: int) -> None:
        if weight != self.state.weight or not self.state.weights:
            point = WeightPoint(at=self.now, weight=weight)
            self.update(weights=(self.state.weights + (point,))[-_WEIGHT_POINTS_LIMIT:])
        self.update(weight=weight)

    def await_health(self) -> None:
        deadline = self.now + self.state.strategy.progress_deadline_seconds
        frozen = self.state.paused_by is not None
        self.update(
            awaiting_health=True,
            health_requested_at=self.now,
            health_poll_at=None,
            deadline_at=None if frozen else deadline,
            deadline_remaining=float(self.state.strategy.progress_deadline_seconds)
            if frozen
            else None,
        )

    def stop_health_wait(self) -> None:
        self.update(
            awaiting_health=False,
            health_requested_at=None,
            health_poll_at=None,
            deadline_at=None,
            deadline_remaining=None,
        )

    # -- analysis runs --------------------------------------------------------------------

    def new_run(
        self, refs: tuple[TemplateRef, ...], args: tuple[Arg, ...], purpose: str,
        rules: RunRules | None = None,
    ) -> AnalysisRun:
        seq = self.state.run_seq + 1
        label = "bg" if purpose == "background" else purpose.replace(" ", "")
        run_id = f"{self.state.revision[:7]}-a{self.state.attempt}-{seq}-{label}"
        self.update(run_seq=seq)
        templates: list[AnalysisTemplate] = []
        for ref in refs:
            found = next(
                (
                    t
                    for t in self.state.templates
                    if t.name == ref.name and t.cluster_scope == ref.cluster_scope
                ),
                None,
            )
            if found is None:
                kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
                return self._started(
                    runs.errored_run(run_id, f"{kind} '{ref.name}' not found", self.now, purpose)
                )
            templates.append(found)
        try:
            metrics = resolve_metrics(templates, args, rules)
        except (UnresolvedArgument, ValueError) as error:
            return self._started(runs.errored_run(run_id, str(error), self.now, purpose))
        return self._started(runs.start_run(run_id, metrics, self.now, purpose))

    def _started(self, run: AnalysisRun) -> AnalysisRun:
        # Nothing for the shell to do: measurements are asked for by Measure once due.
        self.log("analysis", f"{run.purpose} analysis {run.id} started", step=self.state.step_index)
        return run

    def stop_run(self, run: AnalysisRun | None) -> None:
        """Terminate `run` if it is still going and archive it for the report."""
        if run is None:
            return
        # A measurement still in flight for it comes back with its run id and is dropped.
        stopped = runs.terminate(run)
        archive = (self.state.finished_runs + (stopped,))[-_FINISHED_RUNS_LIMIT:]
        self.update(finished_runs=archive)

    def start_background_if_due(self) -> None:
        background = self.state.strategy.analysis
        if (
            background is None
            or self.state.background_run is not None
            or self.state.step_index < background.starting_step
            or self.state.phase not in _ACTIVE
        ):
            return
        run = self.new_run(background.templates, background.args, "background",
                           _run_rules(background))
        self.update(background_run=run)

    def measure_due(self) -> None:
        if self.state.phase not in _ACTIVE:
            return
        for slot in ("step_run", "background_run"):
            run: AnalysisRun | None = getattr(self.state, slot)
            if run is None:
                continue
            for spec in runs.due_metrics(run, self.now):
                self.actions.append(
                    Measure(
                        run_id=run.id,
                        metric=spec.name,
                        provider=spec.provider,
                        success_condition=spec.success_condition,
                        failure_condition=spec.failure_condition,
                    )
                )
                run = runs.mark_requested(run, spec.name, self.now)
            self.update(**{slot: run})

    # -- steps ----------------------------------------------------------------------------

    def enter_step(self, index: int) -> None:
        self.stop_run(self.state.step_run)
        self.stop_health_wait()
        if index > self.state.step_index:
            self.stop_experiment()
        self.update(
            step_index=index,
            step_started_at=self.now,
            pause_started_at=None,
            pause_reason=None,
            step_run=None,
            experiment_ready_at=None,
        )
        self.start_background_if_due()
        steps = self.state.strategy.steps
        if index >= len(steps):
            return
        step = steps[index]
        self.log("step", f"step {index + 1}/{len(steps)}: {describe_step(step)}", step=index)
        if isinstance(step, SetWeightStep):
            if step.weight != self.state.weight:
                self.set_weight(step.weight)
        elif isinstance(step, SetCanaryScaleStep | SetHeaderRouteStep | SetMirrorRouteStep):
            # Same weight, new pod count or routes: the shell re-applies and the step is done
            # once the canary is healthy and the router written (Argo counts route steps done
            # at once; waiting for the write to land is the safer reading).
            self.set_weight(self.state.weight)
        elif isinstance(step, PauseStep):
            self.update(pause_started_at=self.now, pause_reason=PAUSE_STEP)
        elif isinstance(step, ExperimentStep):
            # Its pods first; its analyses start once they are healthy (`experiment_ready`).
            self.actions.append(StartExperiment(index))
            self.await_health()
        else:
            self.update(step_run=self.new_run(step.templates, step.args, f"step {index + 1}",
                                              _run_rules(step)))

    def stop_experiment(self) -> None:
        """Remove the current step's experiment pods, if it is an experiment."""
        if isinstance(current_step(self.state), ExperimentStep):
            route = None
            if self.state.strategy.traffic is not None and experiment_destinations(self.state):
                route = replace(route_state(self.state), extra=())
            self.actions.append(StopExperiment(self.state.step_index, route))

    def experiment_ready(self, step: ExperimentStep) -> None:
        """The experiment's pods are healthy: its clock starts and its analyses run."""
        self.update(experiment_ready_at=self.now)
        self.log("experiment", "experiment pods ready", step=self.state.step_index)
        if step.analyses:
            self.update(step_run=self.new_experiment_run(step))

    def new_experiment_run(self, step: ExperimentStep) -> AnalysisRun:
        """One run holding every analysis of the experiment, each resolved with its own args;
        with several analyses a metric is named `<analysis>/<metric>`."""
        seq = self.state.run_seq + 1
        run_id = f"{self.state.revision[:7]}-a{self.state.attempt}-{seq}-exp"
        self.update(run_seq=seq)
        purpose = f"step {self.state.step_index + 1}"
        metrics = []
        for analysis in step.analyses:
            ref = analysis.template
            found = next((t for t in self.state.templates if t.name == ref.name
                          and t.cluster_scope == ref.cluster_scope), None)
            if found is None:
                kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
                return self._started(runs.errored_run(
                    run_id, f"{kind} '{ref.name}' not found", self.now, purpose))
            try:
                # Argo gives each analysis of the experiment its own run with the step's
                # dryRun rules, so a rule must match a metric of every analysis.
                resolved = resolve_metrics([found], analysis.args, RunRules(step.dry_run))
            except (UnresolvedArgument, ValueError) as error:
                return self._started(runs.errored_run(run_id, str(error), self.now, purpose))
            prefix = f"{analysis.name}/" if len(step.analyses) > 1 else ""
            metrics += [replace(metric, name=prefix + metric.name) for metric in resolved]
        return self._started(runs.start_run(run_id, metrics, self.now, purpose))

    def step_done(self, step: Step) -> bool:
        if isinstance(
            step, SetWeightStep | SetCanaryScaleStep | SetHeaderRouteStep | SetMirrorRouteStep
        ):
            return not self.state.awaiting_health
        if isinstance(step, PauseStep):
            started = self.state.pause_started_at
            return (
                step.duration is not None
                and started is not None
                and self.now >= started + step.duration
            )
        if isinstance(step, ExperimentStep):
            return self.experiment_done(step)
        run = self.state.step_run
        return run is not None and runs.phase(run) == "Successful"

    def experiment_done(self, step: ExperimentStep) -> bool:
        """Argo's rule: before `duration` only the analyses required for completion end the
        experiment, once each of them succeeded (analyses that merely finished early leave
        the pods running for the duration); after it, once the required ones finished.
        Without a duration (Coalmine's reading of an open-ended step): once every analysis
        finished, at once when there is none. A failed analysis aborts (`judge_runs`)."""
        ready = self.state.experiment_ready_at
        if self.state.awaiting_health or ready is None:
            return False
        run = self.state.step_run
        if step.duration is None:
            return run is None or runs.phase(run) == "Successful"
        if run is None:
            return self.now >= ready + step.duration  # pods only: they run for the duration
        required = {a.name for a in step.analyses if a.required_for_completion}

        def analysis_of(metric: str) -> str:
            return metric.split("/", 1)[0] if len(step.analyses) > 1 else step.analyses[0].name

        needed = [(spec, r) for spec, r in zip(run.metrics, run.results, strict=True)
                  if analysis_of(r.name) in required]
        finished = all(r.phase in runs.COMPLETED for _, r in needed)
        if self.now >= ready + step.duration:
            return finished
        return bool(needed) and finished and all(
            r.phase == "Successful" for spec, r in needed if not spec.dry_run)

    def judge_runs(self) -> None:
        """Abort on a Failed/Error run; hold on an Inconclusive step run."""
        for run in (self.state.step_run, self.state.background_run):
            if run is None:
                continue
            verdict = runs.phase(run)
            if verdict in ("Failed", "Error"):
                why = runs.message(run) or verdict.lower()
                self.abort(f"{run.purpose} analysis {verdict.lower()}: {why}", _evidence(run))
                return
        step_run = self.state.step_run
        if (
            step_run is not None
            and runs.phase(step_run) == "Inconclusive"
            and self.state.pause_reason != INCONCLUSIVE_STEP
        ):
            self.update(pause_reason=INCONCLUSIVE_STEP)
            self.log(
                "paused", f"analysis inconclusive ({runs.message(step_run)}); /promote or /abort"
            )

    def reconcile(self) -> None:
        """Move through as many steps as are already done, then settle."""
        for _ in range(len(self.state.strategy.steps) + 2):
            if self.state.phase not in _ACTIVE:
                return
            self.judge_runs()
            if self.state.phase not in _ACTIVE:
                return
            if (
                self.state.paused_by
                or self.state.pause_reason == INCONCLUSIVE_STEP
                or background_inconclusive(self.state)
            ):
                return
            step = current_step(self.state)
            if step is None:
                self.begin_completion()
                return
            if not self.step_done(step):
                return
            self.enter_step(self.state.step_index + 1)

    def begin_completion(self) -> None:
        self.stop_experiment()
        self.stop_run(self.state.step_run)
        self.stop_run(self.state.background_run)
        self.update(
            phase="Completing",
            step_index=len(self.state.strategy.steps),
            step_run=None,
            background_run=None,
            pause_reason=None,
            paused_by=None,
        )
        self.record_weight(100)
        self.actions.append(Complete())
        self.await_health()
        self.log("completing", "all steps done: stable takes the new version")

    def abort(self, reason: str, evidence: tuple[str, ...] = (), actor: str | None = None) -> None:
        self.stop_experiment()
        self.stop_run(self.state.step_run)
        self.stop_run(self.state.background_run)
        self.stop_health_wait()
        self.update(
            phase="Aborted",
            step_run=None,
            background_run=None,
            pause_reason=None,
            paused_by=None,
            aborted_reason=reason,
            evidence=evidence,
            finished_at=self.now,
        )
        self.record_weight(0)
        delay = scale_down_delay(self.state)
        self.actions.append(RestoreStable(remove_canary=delay == 0))
        self.schedule_scale_down(delay)
        self.actions.append(OpenRevertPR(reason=reason, evidence=evidence))
        self.log("aborted", reason, actor, step=self.state.step_index, reason=reason)

    def schedule_scale_down(self, delay: int | None) -> None:
        """Remember when the finished rollout's canary goes (nothing to do for 0 or never)."""
        self.update(scale_down_at=self.now + delay if delay else None)

    def settle_phase(self) -> None:
        if self.state.phase not in _ACTIVE:
            return
        held = (
            self.state.paused_by
            or self.state.pause_reason is not None
            or background_inconclusive(self.state)
        )
        self.update(phase="Paused" if held else "Progressing")

    def stamp_phase(self) -> None:
        """Give the entries this event logged the phase it leaves the rollout in."""
        history = self.state.history
        fresh = len(history) - min(self.logged, len(history))
        if fresh == len(history):
            return
        stamped = tuple(
            replace(entry, phase=self.state.phase) if index >= fresh else entry
            for index, entry in enumerate(history)
        )
        self.update(history=stamped)

    # -- result ---------------------------------------------------------------------------

    def finish(
        self, *, original: RolloutState, rescheduling: bool
    ) -> tuple[RolloutState, list[Action]]:
        self.measure_due()
        self.settle_phase()
        self.stamp_phase()
        state = self.state
        actions = self.actions
        changed = state != original
        if changed:
            posted = status(state)
            informative = (
                posted != original.posted_status
                or state.history != original.history
                or state.metric_points != original.metric_points
                or state.weights != original.weights
            )
            if posted != state.posted_status:
                actions.append(
                    PostStatus(
                        state=posted[0],
                        description=posted[1],  # type: ignore[arg-type]
                        sha=state.revision,
                    )
                )
                state = replace(state, posted_status=posted)
            if informative:
                actions.append(UpdateComment())
            state = replace(state, version=original.version + 1)
        if changed or rescheduling:
            wake = next_wakeup(state)
            if wake is not None:
                actions.append(ScheduleTick(at=max(wake, self.now), version=state.version))
        return state, actions


def _run_rules(analysis: AnalysisStep | BackgroundAnalysis) -> RunRules:
    """The rollout's dryRun and measurementRetention for a run of `analysis`."""
    return RunRules(analysis.dry_run, analysis.measurement_retention)


def _evidence(run: AnalysisRun) -> tuple[str, ...]:
    """What the PR, the revert PR and the status show for an abort: the run's verdict, then
    each measured metric's recent values. A dry-run metric's line says so, since a Failed
    among its values would otherwise read as a reason for the abort it never decided."""
    lines = [
        f"{run.purpose} analysis {run.id}: {runs.phase(run)} — {runs.message(run)}".rstrip(" —")
    ]
    for result in run.results:
        if not result.measurements:
            continue
        recent = ", ".join(
            f"{m.value if m.value is not None else '∅'} ({m.phase})"
            for m in result.measurements[-5:]
        )
        last = result.measurements[-1].message
        dry = " (dry run: shown, never deciding)" if runs.is_dry_run(run, result.name) else ""
        line = f"{result.name}{dry}: {recent}"
        lines.append(f"{line}; last: {last}" if last else line)
    return tuple(lines)


# --------------------------------------------------------------------------- handlers


def _on_start(t: _Transition, event: Start) -> None:
    if t.state.phase != "Pending":
        t.reject("start", None, f"rollout already {t.state.phase.lower()}")
        return
    t.update(phase="Progressing", started_at=t.now)
    t.log("started", f"rollout of {t.state.revision[:7]} started")
    if event.same_as_stable:
        t.log("step", "new pod template equals stable: steps skipped", reason=SAME_TEMPLATE)
        t.begin_completion()
        return
    if t.state.strategy.routed:
        # Before the canary takes this revision's template, no traffic may still reach it.
        t.actions.append(RouteToStable())
    steps = t.state.strategy.steps
    first = steps[0] if steps else None
    resets_canary = isinstance(first, SetCanaryScaleStep | SetHeaderRouteStep | SetMirrorRouteStep)
    if first is not None and not resets_canary and not (
        isinstance(first, SetWeightStep) and first.weight > 0
    ):
        # Scale away any canary a superseded rollout left, since no first weight will replace it.
        t.set_weight(0, await_health=False)
    t.enter_step(0)
    t.reconcile()


def _on_tick(t: _Transition, event: Tick) -> None:
    state = t.state
    if state.phase in ("Promoted", "Aborted") and state.scale_down_at is not None:
        if t.now >= state.scale_down_at:
            t.update(scale_down_at=None)
            t.actions.append(RemoveCanary())
            t.log("scaled down", "scale-down delay over: the replaced canary's pods removed")
        return
    if state.phase not in _ACTIVE | {"Completing"}:
        return
    if state.awaiting_health:
        if state.deadline_at is not None and t.now >= state.deadline_at:
            waited = state.strategy.progress_deadline_seconds
            what = (
                "stable with the new version"
                if state.phase == "Completing"
                else (f"canary at {state.weight}%")
            )
            detail = f": {state.health_message}" if state.health_message else ""
            t.abort(
                f"progress deadline exceeded ({waited} s) waiting for {what} to be healthy{detail}",
                (state.health_message,) if state.health_message else (),
            )
            return
        if state.health_requested_at is not None and (
            t.now >= state.health_requested_at + HEALTH_RECHECK_SECONDS
        ):
            t.actions.append(Complete() if state.phase == "Completing" else SetWeight(state.weight))
            t.update(health_requested_at=t.now, health_poll_at=None)
        elif state.health_poll_at is not None and t.now >= state.health_poll_at:
            t.actions.append(CheckHealth())
            t.update(health_poll_at=None)
    t.reconcile()


def _on_measurement(t: _Transition, event: MeasurementTaken) -> None:
    for slot in ("step_run", "background_run"):
        run: AnalysisRun | None = getattr(t.state, slot)
        if run is None or run.id != event.run_id:
            continue
        if event.metric not in {r.name for r in run.results}:
            return
        if runs.result(run, event.metric).requested_at is None:
            return  # not asked for (a duplicate delivery): counting it twice would skew limits
        recorded = runs.record(run, event.metric, event.measurement, t.now)
        point = MetricPoint(
            at=t.now,
            run_id=run.id,
            metric=event.metric,
            phase=event.measurement.phase,
            value=event.measurement.value,
        )
        t.update(
            **{slot: recorded},
            metric_points=(t.state.metric_points + (point,))[-_METRIC_POINTS_LIMIT:],
        )
        t.reconcile()
        return


def _poll_backoff(state: RolloutState, now: float) -> float:
    """Seconds until the next look at unhealthy workloads: HEALTH_POLL_SECONDS at first, then
    half the time waited so far, at most HEALTH_POLL_MAX_SECONDS (pods usually become ready
    within seconds; a long wait needs no tight polling)."""
    waited = now - (state.health_requested_at if state.health_requested_at is not None else now)
    return min(max(HEALTH_POLL_SECONDS, waited / 2), HEALTH_POLL_MAX_SECONDS)


def _on_health(t: _Transition, event: WorkloadHealth) -> None:
    state = t.state
    if not state.awaiting_health or state.phase not in _ACTIVE | {"Completing"}:
        return
    if event.weight is not None and event.weight != state.weight:
        return
    if event.failed:
        # The workload itself says waiting will not help (e.g. its progressDeadlineSeconds).
        t.abort(event.message)
        return
    if not event.ok:
        if event.message != state.health_message:
            t.update(health_message=event.message)
        t.update(health_poll_at=t.now + _poll_backoff(state, t.now))
        return
    t.stop_health_wait()
    t.update(health_message=event.message)
    step = current_step(t.state)
    if (state.phase in _ACTIVE and isinstance(step, ExperimentStep)
            and t.state.experiment_ready_at is None):
        t.experiment_ready(step)
    if state.phase == "Completing":
        t.update(phase="Promoted", finished_at=t.now)
        delay = scale_down_delay(t.state)
        t.schedule_scale_down(delay)
        gone = f"canary removed in {delay} s" if delay else "canary removed"
        t.log("completed", f"promoted: stable runs the new version, {gone}")
        return
    t.reconcile()


def _active_or_reject(t: _Transition, command: str, user: str | None) -> bool:
    phase = t.state.phase
    if phase in _ACTIVE:
        return True
    reasons = {
        "Pending": "the rollout has not started yet",
        "Completing": "the rollout is already being promoted",
        "Promoted": "the rollout is already promoted",
        "Aborted": "the rollout is aborted; use /retry to run it again",
        "Superseded": f"the rollout was superseded by {(t.state.superseded_by or '')[:7]}",
    }
    t.reject(command, user, reasons[phase])
    return False


def _on_promote(t: _Transition, event: Promote) -> None:
    if not _active_or_reject(t, "promote", event.user):
        return
    state = t.state
    step = current_step(state)
    t.update(paused_by=None)
    restarted_background = False
    if background_inconclusive(state):
        t.stop_run(state.background_run)
        t.update(background_run=None)
        t.start_background_if_due()
        restarted_background = True
    index = state.step_index
    if state.pause_reason in (INCONCLUSIVE_STEP, PAUSE_STEP):
        t.log(
            "promoted", f"promoted past step {index + 1}", event.user,
            step=index, reason=PROMOTED_PAST_HOLD,
        )
        t.enter_step(index + 1)
    elif restarted_background:
        t.log(
            "promoted", "inconclusive background analysis accepted; new run started", event.user,
            step=index, reason=PROMOTED_BACKGROUND,
        )
    else:
        skipped = describe_step(step) if step else "completion"
        t.log(
            "promoted", f"skipped step {index + 1} ({skipped})", event.user,
            step=index, reason=PROMOTED_SKIP,
        )
        t.enter_step(index + 1)
    t.reconcile()


def _on_promote_full(t: _Transition, event: PromoteFull) -> None:
    if not _active_or_reject(t, "promote --full", event.user):
        return
    t.log(
        "promoted", "full promotion: remaining steps skipped", event.user,
        step=t.state.step_index, reason=PROMOTED_FULL,
    )
    t.begin_completion()


def _on_abort(t: _Transition, event: Abort) -> None:
    if t.state.phase not in _ACTIVE | {"Completing"}:
        _active_or_reject(t, "abort", event.user)
        return
    reason = event.reason or (f"aborted by @{event.user}" if event.user else "aborted")
    t.abort(reason, (), event.user)


def _on_retry(t: _Transition, event: Retry) -> None:
    if t.state.phase != "Aborted":
        t.reject(
            "retry",
            event.user,
            f"only an aborted rollout can be retried (it is {t.state.phase.lower()})",
        )
        return
    t.update(
        phase="Progressing",
        attempt=t.state.attempt + 1,
        aborted_reason=None,
        evidence=(),
        finished_at=None,
        step_run=None,
        background_run=None,
        health_message="",
        scale_down_at=None,
    )
    t.log("retried", f"retry #{t.state.attempt - 1}: back to step 1", event.user, step=0)
    t.enter_step(0)
    t.reconcile()


def _on_pause(t: _Transition, event: Pause) -> None:
    if not _active_or_reject(t, "pause", event.user):
        return
    if t.state.paused_by:
        t.reject("pause", event.user, f"already paused by @{t.state.paused_by}")
        return
    remaining = None
    if t.state.deadline_at is not None:
        remaining = max(t.state.deadline_at - t.now, 0.0)
    t.update(
        paused_by=event.user,
        deadline_at=None,
        deadline_remaining=remaining if remaining is not None else t.state.deadline_remaining,
    )
    t.log("paused", "paused by user", event.user)


def _on_resume(t: _Transition, event: Resume) -> None:
    if not _active_or_reject(t, "resume", event.user):
        return
    if not t.state.paused_by:
        hint = _hold_reason(t.state) if t.state.phase == "Paused" else "it is progressing"
        t.reject("resume", event.user, f"not paused by a user ({hint})")
        return
    remaining = t.state.deadline_remaining
    t.update(
        paused_by=None,
        deadline_at=t.now + remaining if remaining is not None else None,
        deadline_remaining=None,
    )
    t.log("resumed", "resumed", event.user)
    t.reconcile()


def _on_new_revision(t: _Transition, event: NewRevision) -> None:
    state = t.state
    if event.sha == state.revision or state.phase in ("Promoted", "Superseded"):
        return
    if state.phase != "Aborted":
        t.stop_experiment()
    t.stop_run(state.step_run)
    t.stop_run(state.background_run)
    t.stop_health_wait()
    t.update(
        phase="Superseded",
        superseded_by=event.sha,
        step_run=None,
        background_run=None,
        pause_reason=None,
        paused_by=None,
        finished_at=t.now,
    )
    if not event.starts_canary and (state.phase != "Aborted" or state.scale_down_at):
        t.actions.append(RemoveCanary())  # no Start of a new canary will replace this one
    t.update(scale_down_at=None)
    pr = f" (#{event.pr})" if event.pr is not None else ""
    t.log("superseded", f"superseded by {event.sha[:7]}{pr}", reason=event.sha)


_HANDLERS = {
    Start: _on_start,
    Tick: _on_tick,
    MeasurementTaken: _on_measurement,
    WorkloadHealth: _on_health,
    Promote: _on_promote,
    PromoteFull: _on_promote_full,
    Abort: _on_abort,
    Retry: _on_retry,
    Pause: _on_pause,
    Resume: _on_resume,
    NewRevision: _on_new_revision,
}
