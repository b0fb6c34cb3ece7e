"""What the dashboard shows of a rollout and of a deployment: pure view models.

Nothing here escapes HTML: the templates do (autoescape is always on), so values stay the plain
text they were (repository names, PR titles, messages are untrusted) until they become HTML.
A link is the one thing escaping cannot make safe (`javascript:…` survives it), so `safe_link`
keeps only http(s) URLs. Every list has a cap, so a hostile or very long rollout still renders
a page of bounded size. The times are UTC; `now` is an argument, as everywhere in the core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.analysis import run as runs
from bot.analysis.run import AnalysisRun, MetricResult
from bot.analysis.templates import MetricSpec
from bot.rollout import engine
from bot.rollout.context import RolloutContext
from bot.rollout.durations import format_duration
from bot.rollout.model import (
    PROMOTED_FULL,
    PROMOTED_SKIP,
    TERMINAL_PHASES,
    HistoryEntry,
    PauseStep,
    RolloutState,
    Step,
)

HISTORY_SHOWN = 50
MEASUREMENTS_SHOWN = 30
RUNS_SHOWN = 5
STEPS_SHOWN = 60
TRAFFIC_SHOWN = 12
EVIDENCE_SHOWN = 12
TEXT = 300  # characters of a message, title or reason
NAME = 120  # characters of a repository, app, metric or user name


@dataclass(frozen=True)
class RolloutRow:
    """One line of the rollout list, and the head of a rollout's page."""

    forge: str
    repo: str
    app: str
    phase: str
    kind: str  # "canary" | "blue-green"
    step: str  # "2/4", "no steps"
    step_text: str  # what the current step does
    weight: int
    pr: int | None
    pr_url: str  # "" unless an http(s) URL
    title: str
    revision: str
    age: str
    waiting: bool  # held until someone promotes, resumes or aborts
    path: str  # the rollout's page, below the dashboard's root

    @property
    def active(self) -> bool:
        return self.phase not in TERMINAL_PHASES


@dataclass(frozen=True)
class StepView:
    number: int
    text: str
    status: str  # done, current, paused, pending, skipped, failed, superseded, not-run


@dataclass(frozen=True)
class MetricView:
    name: str
    phase: str
    latest: str
    conditions: str
    counts: str
    message: str


@dataclass(frozen=True)
class RunView:
    id: str
    purpose: str
    phase: str
    message: str
    metrics: tuple[MetricView, ...]


@dataclass(frozen=True)
class MeasurementView:
    at: str
    metric: str
    phase: str
    value: str


@dataclass(frozen=True)
class HistoryView:
    at: str
    kind: str
    message: str
    actor: str


@dataclass(frozen=True)
class TrafficView:
    object: str
    detail: str
    weight: str


@dataclass(frozen=True)
class RolloutDetail:
    row: RolloutRow
    stable_revision: str
    why: str
    next_move: str
    steps: tuple[StepView, ...]
    runs: tuple[RunView, ...]
    measurements: tuple[MeasurementView, ...]
    history: tuple[HistoryView, ...]
    history_hidden: int
    traffic: tuple[TrafficView, ...]
    traffic_lead: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class DeploymentRow:
    forge: str
    repo: str
    app: str
    sha: str
    pr: int | None
    state: str
    summary: str
    age: str
    rollout_path: str


def clip(text: object, limit: int = TEXT) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def safe_link(url: object) -> str:
    """`url` when it is an absolute http(s) URL with a host, else "" (shown without a link)."""
    if not isinstance(url, str):
        return ""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    return url.strip()


def rollout_path(forge: str, repo: str, app: str) -> str:
    """The rollout page's path below the dashboard root, every untrusted part quoted."""
    return (f"rollouts/{quote(forge, safe='')}/{quote(repo, safe='/')}"
            f"/apps/{quote(app, safe='')}")


def age(since: float | None, now: float) -> str:
    if since is None:
        return "—"
    return format_duration(max(now - since, 0.0))


def utc(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------------- the list


def rollout_row(forge: str, repo: str, state: RolloutState, context: RolloutContext | None,
                now: float) -> RolloutRow:
    total = len(state.strategy.steps)
    step = engine.current_step(state)
    if state.phase in TERMINAL_PHASES or step is None:
        step_text = ""
    else:
        step_text = _describe(step)
    position = f"{min(state.step_index + 1, total)}/{total}" if total else "no steps"
    return RolloutRow(
        forge=forge,
        repo=clip(repo, NAME),
        app=clip(state.app, NAME),
        phase=state.phase,
        kind="blue-green" if state.strategy.blue_green is not None else "canary",
        step=position,
        step_text=clip(step_text, NAME),
        weight=state.weight,
        pr=state.pr if state.pr is not None else (context.number if context else None),
        pr_url=safe_link(context.url) if context else "",
        title=clip(context.title) if context else "",
        revision=state.revision[:7],
        age=age(state.started_at, now),
        waiting=engine.waiting_on_people(state),
        path=rollout_path(forge, repo, state.app),
    )


def deployment_row(record: Mapping[str, Any], now: float) -> DeploymentRow | None:
    """A deployment record as a row; None for one without its identity (written elsewhere)."""
    names = [record.get(name) for name in ("forge", "repo", "app", "sha")]
    if not all(isinstance(name, str) and name for name in names):
        return None
    forge, repo, app, sha = (str(name) for name in names)
    pr = record.get("pr")
    updated = record.get("updated_at")
    return DeploymentRow(
        forge=forge,
        repo=clip(repo, NAME),
        app=clip(app, NAME),
        sha=sha[:7],
        pr=pr if isinstance(pr, int) and not isinstance(pr, bool) else None,
        state=clip(record.get("state") or "unknown", 20),
        summary=clip(record.get("summary") or ""),
        age=age(float(updated), now) if isinstance(updated, int | float) else "—",
        rollout_path=rollout_path(forge, repo, app),
    )


# ------------------------------------------------------------------------ one rollout


def rollout_detail(forge: str, repo: str, state: RolloutState,
                   context: RolloutContext | None, now: float) -> RolloutDetail:
    history = state.history[-HISTORY_SHOWN:]
    return RolloutDetail(
        row=rollout_row(forge, repo, state, context, now),
        stable_revision=(state.stable_revision or "")[:7],
        why=_why(state),
        next_move=_next_move(state),
        steps=_steps(state),
        runs=tuple(_run_view(run) for run in _runs(state)),
        measurements=tuple(
            MeasurementView(utc(point.at), clip(point.metric, NAME), point.phase,
                            clip(point.value if point.value is not None else "no value", NAME))
            for point in reversed(state.metric_points[-MEASUREMENTS_SHOWN:])
        ),
        history=tuple(_history_view(entry) for entry in reversed(history)),
        history_hidden=len(state.history) - len(history),
        traffic=tuple(_traffic_view(row) for row in (context.traffic if context else [])
                      [:TRAFFIC_SHOWN] if isinstance(row, Mapping)),
        traffic_lead=_traffic_lead(state),
        evidence=tuple(clip(item) for item in state.evidence[:EVIDENCE_SHOWN]),
    )


def _why(state: RolloutState) -> str:
    if state.phase == "Aborted":
        return clip(state.aborted_reason or "no reason given")
    if state.phase == "Superseded":
        return f"superseded by {(state.superseded_by or '')[:7]}"
    if state.paused_by:
        return f"paused by @{clip(state.paused_by, NAME)}"
    if state.awaiting_health:
        message = f": {clip(state.health_message)}" if state.health_message else ""
        return f"waiting for the canary at {state.weight}% to become healthy{message}"
    return ""


def _next_move(state: RolloutState) -> str:
    app = clip(state.app, NAME)
    if state.phase == "Aborted":
        return f"Comment /retry {app} on the PR to run it again."
    if not engine.waiting_on_people(state):
        return ""
    if state.paused_by:
        return f"Comment /resume {app} on the PR to continue, /abort {app} to roll back."
    return f"Comment /promote {app} on the PR to continue, /abort {app} to roll back."


def _steps(state: RolloutState) -> tuple[StepView, ...]:
    steps = state.strategy.steps[:STEPS_SHOWN]
    status = _step_status(state, len(steps))
    return tuple(StepView(index + 1, clip(_describe(step), NAME), status[index])
                 for index, step in enumerate(steps))


def _describe(step: Step) -> str:
    if isinstance(step, PauseStep) and step.duration is None and not step.label:
        return "pause (until /promote)"
    return engine.describe_step(step)


def _step_status(state: RolloutState, count: int) -> list[str]:
    current = state.step_index
    if state.phase == "Promoted":
        status = ["done"] * count
    else:
        status = ["done" if index < current else "pending" for index in range(count)]
    for entry in _this_attempt(state.history):
        if entry.kind != "promoted" or entry.step is None or not 0 <= entry.step < count:
            continue
        if entry.reason == PROMOTED_FULL:
            status[entry.step:] = ["skipped"] * (count - entry.step)
        elif entry.reason == PROMOTED_SKIP:
            status[entry.step] = "skipped"
    if current < count and state.phase != "Promoted":
        status[current] = {"Aborted": "failed", "Superseded": "superseded", "Paused": "paused",
                           "Pending": "pending"}.get(state.phase, "current")
        if state.phase in ("Aborted", "Superseded"):
            status[current + 1:] = ["not-run"] * (count - current - 1)
    return status


def _this_attempt(history: Sequence[HistoryEntry]) -> Sequence[HistoryEntry]:
    """History since the latest retry, which starts the steps over."""
    retried = [index for index, entry in enumerate(history) if entry.kind == "retried"]
    return history[retried[-1]:] if retried else history


def _runs(state: RolloutState) -> list[AnalysisRun]:
    seen: set[str] = set()
    shown = []
    for run in (state.step_run, state.background_run, *reversed(state.finished_runs)):
        if run is not None and run.id not in seen:
            seen.add(run.id)
            shown.append(run)
    return shown[:RUNS_SHOWN]


def _run_view(run: AnalysisRun) -> RunView:
    return RunView(
        id=clip(run.id, NAME),
        purpose=clip(run.purpose, NAME),
        phase=runs.phase(run),
        message=clip(run.error or runs.message(run)),
        metrics=tuple(_metric_view(spec, result)
                      for spec, result in zip(run.metrics, run.results, strict=False)),
    )


def _metric_view(spec: MetricSpec, result: MetricResult) -> MetricView:
    last = result.measurements[-1] if result.measurements else None
    if last is None:
        latest = "measuring…" if result.requested_at is not None else "—"
    else:
        latest = last.value if last.value is not None else "no value"
    conditions = [f"{kind}: {text}" for kind, text in (("success", spec.success_condition),
                                                        ("failure", spec.failure_condition))
                  if text]
    wanted = spec.effective_count
    counts = f"{result.successful}/{wanted} ok" if wanted is not None else f"{result.successful} ok"
    counts += f", {result.failed} failed, {result.inconclusive} inconclusive"
    if result.error:
        counts += f", {result.error} errors"
    message = result.message or (last.message if last is not None else "")
    return MetricView(clip(result.name, NAME), result.phase, clip(latest, NAME),
                      clip(" · ".join(conditions) or "none (any value passes)"), counts,
                      clip(message))


def _history_view(entry: HistoryEntry) -> HistoryView:
    return HistoryView(utc(entry.at), clip(entry.kind, 20), clip(entry.message),
                       clip(entry.actor or "", NAME))


def _traffic_lead(state: RolloutState) -> str:
    strategy = state.strategy
    if strategy.traffic is not None:
        return f"Traffic is routed by {clip(strategy.traffic.name, NAME)}."
    if strategy.blue_green is not None:
        return "Traffic is switched by the Services' selectors."
    return "Traffic follows pod counts: the canary's share of the pods behind the app's Service."


def _traffic_view(row: Mapping[str, Any]) -> TrafficView:
    weight = row.get("canary_weight")
    return TrafficView(clip(row.get("object", ""), NAME), clip(row.get("detail", ""), NAME),
                       f"{weight}%" if isinstance(weight, int) else "unknown")
