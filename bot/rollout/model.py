"""The rollout model: canary strategy, rollout state, the events the engine takes and the actions
it asks the shell to perform. All values are immutable and serialise to plain JSON, because the
shell stores the state in Redis between jobs.

Why this file is long (~650 lines): it is the engine's whole vocabulary, and the JSON codec at
its end must name every type in it; kept together, a new event or action is added in one place
and cannot be forgotten by the codec. Each part is a run of small frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from bot.analysis.measurement import Measurement
from bot.analysis.run import AnalysisRun, MetricResult
from bot.analysis.templates import (
    AnalysisTemplate,
    Arg,
    MetricSpec,
    TemplateArg,
)
from bot.judge.model import JudgedMetric, Judgement
from bot.rollout import routers
from bot.rollout.routers import HeaderRoute, MirrorRoute, TrafficRouting

DEFAULT_PROGRESS_DEADLINE_SECONDS = 600

# ---------------------------------------------------------------------------------- strategy


@dataclass(frozen=True)
class TemplateRef:
    name: str
    cluster_scope: bool = False


# `label` names a step a blue-green strategy compiles (e.g. "switch the active Service");
# steps written by people have none and are described by their kind.


@dataclass(frozen=True)
class SetWeightStep:
    weight: int  # 0..100
    label: str = ""


@dataclass(frozen=True)
class PauseStep:
    duration: float | None = None  # seconds; None waits for /promote
    label: str = ""


@dataclass(frozen=True)
class AnalysisStep:
    templates: tuple[TemplateRef, ...]
    args: tuple[Arg, ...] = ()
    label: str = ""
    dry_run: tuple[str, ...] = ()  # Argo's dryRun metricName regexes
    measurement_retention: tuple[tuple[str, int], ...] = ()  # (metricName regex, limit)


@dataclass(frozen=True)
class SetCanaryScaleStep:
    """Argo's setCanaryScale: the canary's pod count decoupled from its traffic weight.

    Exactly one of `replicas` / `weight` (percent of the rollout's replicas), or
    `match_traffic_weight` to go back to pods following the weight. Needs a traffic router."""

    replicas: int | None = None
    weight: int | None = None
    match_traffic_weight: bool = False
    label: str = ""


@dataclass(frozen=True)
class SetHeaderRouteStep:
    """Argo's setHeaderRoute: a managed route sending matching requests to the canary."""

    route: HeaderRoute


@dataclass(frozen=True)
class SetMirrorRouteStep:
    """Argo's setMirrorRoute: a managed route mirroring matching requests to the canary."""

    route: MirrorRoute


_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def is_service_name(name: str) -> bool:
    """Whether a Service may be called `name` (a DNS-1035 label of at most 63 characters)."""
    return len(name) <= 63 and _SERVICE_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class ExperimentTemplate:
    """One set of pods an experiment runs: the stable's or the canary's pod template
    (`spec_ref`), as Deployment `<workload>-exp-<name>` with `replicas` pods, its pods labelled
    `coalmine.dev/track: experiment` and `coalmine.dev/experiment: <name>`."""

    name: str
    spec_ref: Literal["stable", "canary"]
    replicas: int = 1
    labels: tuple[tuple[str, str], ...] = ()  # the template's extra pod labels (metadata)
    weight: int | None = None  # traffic share through the router while the step runs
    service: str | None = None  # service.name ("" for the default name); None: not asked

    def deployment_name(self, workload: str) -> str:
        """`<workload>-exp-<template>`: a template named "canary" (as in Argo's own examples)
        must not land on the canary track's `<workload>-canary`."""
        return f"{workload}-exp-{self.name}"

    def service_name(self, workload: str) -> str | None:
        """The Service made for the template's pods: Argo makes one when the template has a
        `weight` or a `service`, named `service.name` or else after the pods' ReplicaSet (here
        the Deployment); None when there is none."""
        if self.weight is None and self.service is None:
            return None
        return self.service or self.deployment_name(workload)


@dataclass(frozen=True)
class ExperimentAnalysis:
    name: str
    template: TemplateRef
    args: tuple[Arg, ...] = ()
    required_for_completion: bool = False


@dataclass(frozen=True)
class ExperimentStep:
    """Argo's experiment step: pods beside the canary (a baseline from the stable template,
    say) judged by analyses; the step ends after `duration`, or when the analyses finish."""

    templates: tuple[ExperimentTemplate, ...]
    analyses: tuple[ExperimentAnalysis, ...] = ()
    duration: float | None = None  # seconds
    dry_run: tuple[str, ...] = ()  # Argo's dryRun metricName regexes, for each analysis's run


Step = (
    ExperimentStep
    | SetWeightStep
    | PauseStep
    | AnalysisStep
    | SetCanaryScaleStep
    | SetHeaderRouteStep
    | SetMirrorRouteStep
)


@dataclass(frozen=True)
class BackgroundAnalysis:
    templates: tuple[TemplateRef, ...]
    args: tuple[Arg, ...] = ()
    starting_step: int = 0
    dry_run: tuple[str, ...] = ()
    measurement_retention: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class WorkloadRef:
    kind: str  # only "Deployment" for now
    name: str


@dataclass(frozen=True)
class PodMetadata:
    """Labels and annotations one track's pods carry (Argo's canary/stable/active/preview
    metadata), as sorted pairs so the strategy stays hashable and serialisable."""

    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BlueGreen:
    """What makes a strategy blue-green: the Services it switches. Its pre/post-promotion
    analyses and auto-promotion are compiled into `CanaryStrategy.steps` (bot.rollout.bluegreen),
    so the engine runs one state machine for both strategies."""

    active_service: str
    preview_service: str = ""
    preview_replica_count: int | None = None  # None: the preview runs at full size
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int = 0


# Argo's defaults (utils/defaults): the scale-down delay of the replaced version is 30 s for
# blue-green and for a canary with a traffic router, 0 otherwise; after an abort, 30 s.
DEFAULT_SCALE_DOWN_DELAY_SECONDS = 30
DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS = 30


@dataclass(frozen=True)
class CanaryStrategy:
    """A rollout strategy: Argo's canary, or blue-green compiled to the same steps.

    With neither a traffic router nor blue-green, traffic follows pod counts behind one
    Service; with either, the router (or the Services) carries the weight and pod counts
    follow Argo's traffic-routed rules (`bot.rollout.traffic.routed_replicas`)."""

    workload: WorkloadRef
    steps: tuple[Step, ...]
    analysis: BackgroundAnalysis | None = None
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE_SECONDS
    ignored_fields: tuple[str, ...] = ()  # Argo fields read but without effect in Coalmine
    source: str = ""  # file the strategy came from
    source_key: str = ""  # where in that file: "spec.strategy.canary" or "apps[0].canary"
    traffic: TrafficRouting | None = None
    canary_service: str = ""
    stable_service: str = ""
    blue_green: BlueGreen | None = None
    dynamic_stable_scale: bool = False
    scale_down_delay_seconds: int | None = None  # None: Argo's default for the strategy
    abort_scale_down_delay_seconds: int = DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS  # 0: never
    max_surge: int | str | None = None  # the Deployments' rollingUpdate, as Argo's IntOrString
    max_unavailable: int | str | None = None
    min_pods_per_replica_set: int | None = None  # floor of a routed track's non-zero count
    # `.coalmine.yaml` only: a baseline Deployment `<name>-baseline` from the stable template,
    # as many pods as the canary at every step, so the judge compares like with like.
    baseline: bool = False
    # `.coalmine.yaml` only: templates the strategy defines itself, beside the app's manifests
    # (its `judge:` section, compiled by bot.rollout.judge_config).
    templates: tuple[AnalysisTemplate, ...] = ()
    canary_metadata: PodMetadata | None = None  # blue-green: the preview's
    stable_metadata: PodMetadata | None = None  # blue-green: the active's

    @property
    def routed(self) -> bool:
        """Whether something other than pod counts carries the traffic weight."""
        return self.traffic is not None or self.blue_green is not None

    @property
    def kind(self) -> str:
        return "blueGreen" if self.blue_green is not None else "canary"


# ------------------------------------------------------------------------------------- state

Phase = Literal[
    "Pending", "Progressing", "Paused", "Completing", "Promoted", "Aborted", "Superseded"
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Promoted", "Aborted", "Superseded"})

# Why the engine holds the rollout at its step. A user pause (`paused_by`) and an inconclusive
# background run (read from the run itself) are tracked separately.
PAUSE_STEP = "pause step"
INCONCLUSIVE_STEP = "inconclusive analysis"


# `HistoryEntry.reason` of a "promoted" entry: what the promotion did.
PROMOTED_SKIP = "skipped"  # /promote skipped a step that was still running
PROMOTED_PAST_HOLD = "past hold"  # /promote moved past a pause or an inconclusive analysis step
PROMOTED_FULL = "full"  # /promote --full skipped every remaining step
PROMOTED_BACKGROUND = "background"  # /promote accepted an inconclusive background run
# `HistoryEntry.reason` of the "step" entry of a rollout whose template equals stable's.
SAME_TEMPLATE = "same template"


@dataclass(frozen=True)
class HistoryEntry:
    """One thing that happened to a rollout, typed so reports never read the wording back.

    `message` is for people; `kind`, `step`, `phase` and `reason` are for code."""

    at: float
    kind: str  # started, step, paused, resumed, promoted, aborted, retried, completed, ...
    message: str
    actor: str | None = None  # the user behind a command; None for the engine itself
    step: int | None = None  # 0-based index of the step the entry is about, if any
    phase: str | None = None  # the rollout's phase once the event that logged it was handled
    reason: str | None = None  # a PROMOTED_* or SAME_TEMPLATE code, or an abort's reason


@dataclass(frozen=True)
class WeightPoint:
    at: float
    weight: int


@dataclass(frozen=True)
class MetricPoint:
    at: float
    run_id: str
    metric: str
    phase: str
    value: str | None


@dataclass(frozen=True)
class RolloutState:
    """Everything the engine knows about one app's rollout of one revision."""

    app: str
    revision: str
    stable_revision: str | None
    pr: int | None
    strategy: CanaryStrategy
    templates: tuple[AnalysisTemplate, ...] = ()
    version: int = 0
    phase: Phase = "Pending"
    pause_reason: str | None = None  # PAUSE_STEP or INCONCLUSIVE_STEP; None when not held
    paused_by: str | None = None  # user who paused with /pause
    step_index: int = 0
    weight: int = 0  # canary weight last asked of the cluster
    attempt: int = 1  # bumped by Retry
    started_at: float | None = None
    finished_at: float | None = None
    # A finished rollout's canary waiting out its scale-down delay (Argo's
    # scaleDownDelaySeconds / abortScaleDownDelaySeconds): RemoveCanary is due then.
    scale_down_at: float | None = None
    experiment_ready_at: float | None = None  # when the current experiment's pods were ready
    step_started_at: float | None = None
    pause_started_at: float | None = None
    awaiting_health: bool = False  # SetWeight/Complete issued, WorkloadHealth not yet ok
    health_requested_at: float | None = None
    # When to look at the workloads again after an unhealthy answer (a read, not a re-apply);
    # part of the state so the due tick carries it and no re-poll is lost with a worker.
    health_poll_at: float | None = None
    health_message: str = ""
    deadline_at: float | None = None  # progress deadline while awaiting health
    deadline_remaining: float | None = None  # frozen remainder while paused by a user
    step_run: AnalysisRun | None = None
    background_run: AnalysisRun | None = None
    finished_runs: tuple[AnalysisRun, ...] = ()  # latest few, for reports
    run_seq: int = 0
    history: tuple[HistoryEntry, ...] = ()
    weights: tuple[WeightPoint, ...] = ()
    metric_points: tuple[MetricPoint, ...] = ()
    aborted_reason: str | None = None
    evidence: tuple[str, ...] = ()
    superseded_by: str | None = None
    posted_status: tuple[str, str] | None = None  # (state, description) last asked to post

    def to_dict(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        state = decode(data)
        if not isinstance(state, cls):
            raise TypeError("not a serialised RolloutState")
        return state


def new_state(
    *,
    app: str,
    revision: str,
    stable_revision: str | None,
    pr: int | None,
    strategy: CanaryStrategy,
    templates: tuple[AnalysisTemplate, ...] = (),
) -> RolloutState:
    """A rollout that has not started; feed it `Start` to begin."""
    return RolloutState(
        app=app,
        revision=revision,
        stable_revision=stable_revision,
        pr=pr,
        strategy=strategy,
        templates=tuple(templates),
    )


# ------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class Start:
    same_as_stable: bool = False  # the new pod template equals stable's: skip the steps


@dataclass(frozen=True)
class Tick:
    version: int | None = None  # the state version the tick was scheduled for; stale ones no-op


@dataclass(frozen=True)
class MeasurementTaken:
    run_id: str
    metric: str
    measurement: Measurement


@dataclass(frozen=True)
class WorkloadHealth:
    ok: bool
    message: str = ""
    weight: int | None = None  # the weight the report is about; a stale weight is ignored
    # The workload reports a failure no wait will cure (e.g. its own progress deadline
    # exceeded): the engine aborts rather than waiting for the deadline.
    failed: bool = False


@dataclass(frozen=True)
class Promote:
    user: str


@dataclass(frozen=True)
class PromoteFull:
    user: str


@dataclass(frozen=True)
class Abort:
    user: str | None = None  # None: an automatic abort by the shell
    reason: str = ""


@dataclass(frozen=True)
class Retry:
    user: str


@dataclass(frozen=True)
class Pause:
    """A user's /pause: hold the rollout where it is until /resume or /promote."""

    user: str


@dataclass(frozen=True)
class Resume:
    user: str


@dataclass(frozen=True)
class NewRevision:
    sha: str
    pr: int | None = None
    # False when the new merge needs no canary (its template is applied straight to stable):
    # then nothing replaces this rollout's canary, so the engine asks for it to be removed.
    starts_canary: bool = True


Event = (
    Start
    | Tick
    | MeasurementTaken
    | WorkloadHealth
    | Promote
    | PromoteFull
    | Abort
    | Retry
    | Pause
    | Resume
    | NewRevision
)

# ----------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SetWeight:
    """Scale stable/canary to `weight` (see engine.split_replicas), then report WorkloadHealth."""

    weight: int


@dataclass(frozen=True)
class RestoreStable:
    """After an abort: traffic back to stable, stable back to its own template at full size,
    then the canary removed unless its scale-down is delayed (`remove_canary` False; a later
    RemoveCanary does it). Retried by the shell until the cluster accepts it; no health
    report follows."""

    remove_canary: bool = True


@dataclass(frozen=True)
class StartExperiment:
    """Run the current experiment step's pods (Deployments `<workload>-exp-<template>`), then
    report WorkloadHealth for them like SetWeight."""

    step: int


@dataclass(frozen=True)
class StopExperiment:
    """Delete the pods and Services of the experiment step `step` (it ended, or the rollout
    did). With a router, `route` is first written: what the router held during the step less
    the experiment's destinations, so no traffic is sent to a Service about to go (Argo drops
    them from the weights once the experiment is no longer running)."""

    step: int
    route: routers.RouteState | None = None


@dataclass(frozen=True)
class RouteToStable:
    """Send all traffic to stable (router at 0, Services on the stable track, no managed
    route) before a rollout starts: a superseded rollout may have left weight on a canary whose
    template the new rollout is about to replace. No health report follows."""


@dataclass(frozen=True)
class RemoveCanary:
    """Delete the canary workload (a newer merge applied its template to stable directly)."""


@dataclass(frozen=True)
class Measure:
    """Run `provider` once, judge it, and feed back MeasurementTaken(run_id, metric, ...)."""

    run_id: str
    metric: str
    provider: dict[str, Any]  # Argo's shape, args resolved; pass to bot.analysis.measure
    success_condition: str
    failure_condition: str


@dataclass(frozen=True)
class PostStatus:
    state: Literal["pending", "success", "failure", "error"]
    description: str  # <= 140 characters
    sha: str = ""  # the revision the status belongs to


@dataclass(frozen=True)
class UpdateComment:
    """Re-render the sticky PR comment from the state just returned."""


@dataclass(frozen=True)
class OpenRevertPR:
    reason: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Complete:
    """Give stable the new template, wait until healthy, delete the canary; then report
    WorkloadHealth(ok, message) (weight 100)."""


@dataclass(frozen=True)
class CheckHealth:
    """Read the workloads again (nothing is applied) and report WorkloadHealth at the current
    weight; asked while waiting for health, between the re-sends of SetWeight/Complete."""


@dataclass(frozen=True)
class ScheduleTick:
    at: float
    version: int


@dataclass(frozen=True)
class CommandRejected:
    """A command that changed nothing; the shell replies to `user` with `reason`."""

    command: str
    user: str | None
    reason: str


Action = (
    RouteToStable
    | StartExperiment
    | StopExperiment
    | SetWeight
    | RestoreStable
    | RemoveCanary
    | Measure
    | PostStatus
    | UpdateComment
    | OpenRevertPR
    | Complete
    | CheckHealth
    | ScheduleTick
    | CommandRejected
)

# ------------------------------------------------------------------------------- JSON codec

_TYPE_KEY = "__type__"
_JSON_KEY = "__json__"
_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        TemplateRef,
        SetWeightStep,
        PauseStep,
        AnalysisStep,
        SetCanaryScaleStep,
        SetHeaderRouteStep,
        SetMirrorRouteStep,
        ExperimentTemplate,
        ExperimentAnalysis,
        ExperimentStep,
        BackgroundAnalysis,
        WorkloadRef,
        PodMetadata,
        BlueGreen,
        CanaryStrategy,
        HistoryEntry,
        WeightPoint,
        MetricPoint,
        RolloutState,
        AnalysisTemplate,
        Arg,
        MetricSpec,
        TemplateArg,
        AnalysisRun,
        MetricResult,
        Measurement,
        Start,
        Tick,
        MeasurementTaken,
        WorkloadHealth,
        Promote,
        PromoteFull,
        Abort,
        Retry,
        Pause,
        Resume,
        NewRevision,
        RouteToStable,
        StartExperiment,
        StopExperiment,
        SetWeight,
        RestoreStable,
        RemoveCanary,
        Measure,
        PostStatus,
        UpdateComment,
        OpenRevertPR,
        Complete,
        CheckHealth,
        ScheduleTick,
        CommandRejected,
        *routers.ALL_CLASSES,
        Judgement,
        JudgedMetric,
    )
}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES.values()
}


def encode(value: Any) -> Any:
    """Plain JSON data for a model value. Dataclasses carry their type name; tuples become
    lists; plain dicts (Argo-shaped providers) are JSON already and are wrapped untouched so
    their lists stay lists."""
    names = _FIELD_NAMES.get(type(value))
    if names is not None:
        data = {name: encode(getattr(value, name)) for name in names}
        data[_TYPE_KEY] = type(value).__name__
        return data
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {_JSON_KEY: value}
    if dataclasses.is_dataclass(value):
        raise TypeError(f"{type(value).__name__} is not a registered model type")
    return value


def decode(data: Any) -> Any:
    """The model value `encode` produced."""
    if isinstance(data, list):
        return tuple(decode(v) for v in data)
    if isinstance(data, dict):
        if _JSON_KEY in data:
            return data[_JSON_KEY]
        cls = _CLASSES.get(data.get(_TYPE_KEY, ""))
        if cls is None:
            raise ValueError(f"unknown model type {data.get(_TYPE_KEY)!r}")
        return cls(**{k: decode(data[k]) for k in _FIELD_NAMES[cls] if k in data})
    return data
