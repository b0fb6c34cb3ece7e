"""The canary rollout part of an app's section in the sticky PR comment: pure rendering.

People decide from this text whether to `/promote` or `/abort`, so it leads with the phase and
what is expected of them, then shows the evidence: the steps, the latest measurements with the
conditions they were judged by, the abort evidence, who did what, and charts.

Everything that came from outside (metric values, messages, user names, reasons, template and
app names) goes through `escape` or `code`, and every part has a cap, so even a hostile or very
long rollout stays well under MAX_SECTION_BYTES (the whole comment must fit GitHub's 65536
characters together with the other apps' sections).

The charts are `bot.report.charts`.

Why this file is long (~460 lines): it is one renderer of one section, read top to bottom in the
order the section is shown (headline, notes, steps, analysis, evidence, history); each part is
small, shares the caps and icons above, and splitting them would scatter one page's wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.analysis import run as runs
from bot.analysis.run import AnalysisRun, MetricResult
from bot.analysis.templates import MetricSpec
from bot.report import charts, judgement
from bot.report.markdown import code, escape
from bot.rollout import engine
from bot.rollout.durations import format_duration
from bot.rollout.model import (
    INCONCLUSIVE_STEP,
    PAUSE_STEP,
    PROMOTED_FULL,
    PROMOTED_PAST_HOLD,
    PROMOTED_SKIP,
    SAME_TEMPLATE,
    AnalysisStep,
    HistoryEntry,
    PauseStep,
    RolloutState,
    Step,
)

MAX_SECTION_BYTES = 20_000
HISTORY_SHOWN = 15
STEP_ROWS = 20
RUNS_SHOWN = 3
METRIC_ROWS = 8
EVIDENCE_LINES = 8

_TEXT = 120  # characters of a message, reason or history line before escaping
_NAME = 60  # metric, template and user names
_VALUE = 60
_CONDITION = 80
_EVIDENCE = 240  # an evidence line lists recent values; it is what people judge an abort by

_PHASE_ICON = {
    "Pending": "⏳",
    "Progressing": "▶️",
    "Paused": "⏸",
    "Completing": "⏳",
    "Promoted": "✅",
    "Aborted": "❌",
    "Superseded": "⏹",
}
_RUN_ICON = {
    "Pending": "·",
    "Running": "▶️",
    "Successful": "✅",
    "Inconclusive": "⚠️",
    "Error": "❌",
    "Failed": "❌",
}
_HISTORY_ICON = {
    "started": "🚀",
    "step": "➡️",
    "analysis": "🔬",
    "paused": "⏸",
    "resumed": "▶️",
    "promoted": "⏭",
    "completing": "⏳",
    "completed": "✅",
    "aborted": "❌",
    "retried": "🔁",
    "superseded": "⏹",
}

def render_rollout(state: RolloutState, *, now: float | None = None,
                   traffic: Sequence[dict[str, Any]] = ()) -> list[str]:
    """Markdown lines for `state`. `now` (epoch seconds) lets the text say how long a pause or
    deadline has left and extends the weight chart to the present; without it the latest time
    recorded in the state is used, so rendering stays a pure function of its arguments.
    `traffic` is what the shell last wrote to the Services and the router (RolloutContext)."""
    at = now if now is not None else _latest_time(state)
    lines = ["", *_headline(state, at)]
    lines += _notes(state)
    lines += _traffic(state, traffic)
    lines += ["", *_steps_table(state)]
    lines += _analysis(state)
    lines += judgement.render_judgements(_runs_to_show(state))
    lines += _evidence(state)
    lines += _history(state)
    lines += charts.rollout_charts(state, at)
    return lines


def render_section(section: dict[str, Any]) -> list[str]:
    """The comment renderer hook: the rollout of an app section, or nothing without one."""
    data = section.get("rollout")
    if not data:
        return []
    try:
        state = RolloutState.from_dict(data)
    except (TypeError, ValueError) as error:
        # One app's unreadable state (e.g. written by another version) must not stop the shared
        # comment from being updated for every other app.
        return ["", f"_Rollout state could not be read ({escape(type(error).__name__)})._"]
    traffic = section.get("traffic")
    return render_rollout(state, traffic=traffic if isinstance(traffic, list) else ())


# ---------------------------------------------------------------------------- headline


def _headline(state: RolloutState, now: float) -> list[str]:
    revision = code(state.revision[:7])
    stable = f" (stable {code(state.stable_revision[:7])})" if state.stable_revision else ""
    why = _why(state, now)
    parts = [f"{_PHASE_ICON[state.phase]} **{state.phase}**" + (f" — {why}" if why else "")]
    blue_green = state.strategy.blue_green is not None
    if state.phase not in ("Pending", "Promoted", "Superseded"):
        share = f"canary **{state.weight}%**"
        if blue_green:
            share = "**active: new version**" if state.weight >= 100 else "**preview**"
        parts += [_position(state), share]
    kind = "Blue-green rollout" if blue_green else "Canary rollout"
    lines = [f"**{kind}** of {revision}{stable}: " + " · ".join(parts)]
    hint = _next_move(state)
    if hint:
        lines += ["", f"👉 {hint}"]
    return lines


def _position(state: RolloutState) -> str:
    total = len(state.strategy.steps)
    if total == 0:
        return "no steps"
    return f"step {min(state.step_index + 1, total)}/{total}"


def _why(state: RolloutState, now: float) -> str:
    """Why the rollout is in its phase, as Markdown (untrusted parts escaped)."""
    phase = state.phase
    if phase == "Pending":
        return "waiting to start"
    if phase == "Promoted":
        return "stable runs the new version"
    if phase == "Aborted":
        return escape(state.aborted_reason or "no reason given", _TEXT * 2)
    if phase == "Superseded":
        sha = code((state.superseded_by or "")[:7])
        if state.aborted_reason:
            return f"superseded by {sha} after an abort: {escape(state.aborted_reason, _TEXT)}"
        return f"superseded by {sha}"
    if phase == "Completing":
        return "stable takes the new version" + _health_wait(state, now)
    if phase == "Paused":
        return _hold(state, now)
    if state.awaiting_health:
        return f"waiting for the canary at {state.weight}% to become healthy" + _health_wait(
            state, now
        )
    if state.step_run is not None:
        return f"analysis {_run_progress(state.step_run)}"
    return ""


def _health_wait(state: RolloutState, now: float) -> str:
    text = ""
    if state.awaiting_health and state.health_message:
        text += f": {escape(state.health_message, _TEXT)}"
    if state.awaiting_health and state.deadline_at is not None:
        text += f" (deadline in {format_duration(max(state.deadline_at - now, 0.0))})"
    return text


def _hold(state: RolloutState, now: float) -> str:
    if state.paused_by:
        return f"paused by {_user(state.paused_by)}"
    if state.pause_reason == INCONCLUSIVE_STEP and state.step_run is not None:
        return f"analysis inconclusive: {escape(runs.message(state.step_run), _TEXT * 2)}"
    if engine.background_inconclusive(state) and state.background_run is not None:
        reason = escape(runs.message(state.background_run), _TEXT * 2)
        return f"background analysis inconclusive: {reason}"
    step = engine.current_step(state)
    if (
        state.pause_reason == PAUSE_STEP
        and isinstance(step, PauseStep)
        and step.duration is not None
    ):
        text = f"pause {format_duration(step.duration)}"
        if state.pause_started_at is not None:
            left = max(state.pause_started_at + step.duration - now, 0.0)
            text += f", {format_duration(left)} left"
        return text
    return "waiting for `/promote`"


def _next_move(state: RolloutState) -> str:
    """What people can do now; empty while the rollout needs nobody."""
    app = state.app
    if state.phase == "Aborted":
        return f"Comment {code('/retry ' + app)} to run it again."
    if not engine.waiting_on_people(state):
        return ""
    if state.paused_by:
        return (
            f"Comment {code('/resume ' + app)} to continue, {code('/abort ' + app)} to roll back."
        )
    return f"Comment {code('/promote ' + app)} to continue, {code('/abort ' + app)} to roll back."


def _user(name: str) -> str:
    """A user name as plain text: escaped so it neither mentions anyone nor injects markup."""
    return escape("@" + name, _NAME)


# ------------------------------------------------------------------------------- notes


def _notes(state: RolloutState) -> list[str]:
    strategy = state.strategy
    where = f" in {code(strategy.source)}" if strategy.source else ""
    notes = []
    ignored = list(strategy.ignored_fields)
    if ignored:
        shown = ", ".join(code(name, _NAME) for name in ignored[:10])
        more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
        notes.append(f"ℹ️ Ignored fields{where} (read, but without effect): {shown}{more}.")
    lines: list[str] = []
    for note in notes:
        lines += ["", f"> {note}"]
    return lines


# ------------------------------------------------------------------------------- traffic

_TRAFFIC_ROWS = 12


def _traffic(state: RolloutState, carried: Sequence[dict[str, Any]]) -> list[str]:
    """Which router and objects carry the traffic, and the canary's share each holds now."""
    strategy = state.strategy
    if strategy.traffic is not None:
        lead = f"**Traffic** is routed by {code(strategy.traffic.name, _NAME)}"
    elif strategy.blue_green is not None:
        lead = "**Traffic** is switched by the Services' selectors"
    else:
        return ["", ("**Traffic** follows pod counts: the canary's share of the pods behind the "
                    "app's Service")]
    if not carried:
        return ["", f"{lead}; nothing written yet."]
    lines = ["", f"{lead}, as last written:", "", "| Object | Route | Canary weight |",
             "|---|---|---|"]
    for row in carried[:_TRAFFIC_ROWS]:
        weight = row.get("canary_weight")
        shown = "unknown" if not isinstance(weight, int) else f"{weight}%"
        lines.append(f"| {code(str(row.get('object', '')), _NAME)} "
                     f"| {escape(str(row.get('detail', '')), _NAME)} | {shown} |")
    if len(carried) > _TRAFFIC_ROWS:
        lines.append(f"| … {len(carried) - _TRAFFIC_ROWS} more | | |")
    return lines


# ------------------------------------------------------------------------------- steps


def _steps_table(state: RolloutState) -> list[str]:
    steps = state.strategy.steps
    lines = ["| # | step | state |", "|--:|---|---|"]
    if not steps:
        return [*lines, "| | no steps | |"]
    cells = _step_states(state)
    first = max(0, min(state.step_index - STEP_ROWS // 4, len(steps) - STEP_ROWS))
    last = min(len(steps), first + STEP_ROWS)
    if first:
        lines.append(f"| … | {first} earlier steps | |")
    for index in range(first, last):
        lines.append(f"| {index + 1} | {_cell_code(_describe(steps[index]))} | {cells[index]} |")
    if last < len(steps):
        lines.append(f"| … | {len(steps) - last} more steps | |")
    background = state.strategy.analysis
    if background is not None:
        names = code(", ".join(ref.name for ref in background.templates), _NAME)
        lines += ["", f"Background analysis {names} from step {background.starting_step + 1}."]
    return lines


def _describe(step: Step) -> str:
    if isinstance(step, PauseStep) and step.duration is None:
        return "pause (until /promote)"
    return engine.describe_step(step)


def _step_states(state: RolloutState) -> list[str]:
    """One state cell per step, from the position, the phase and the current attempt's
    history (which records who skipped or promoted past a step)."""
    steps = state.strategy.steps
    current = state.step_index
    cells = ["✅ done" if index < current else "· pending" for index in range(len(steps))]
    for entry in _this_attempt(state.history):
        if entry.kind == "step" and entry.reason == SAME_TEMPLATE:
            cells = ["⏭ skipped (same pod template as stable)"] * len(steps)
        if entry.kind != "promoted" or entry.step is None or not 0 <= entry.step < len(steps):
            continue
        who = f" by {_user(entry.actor)}" if entry.actor else ""
        if entry.reason == PROMOTED_FULL:
            for index in range(entry.step, len(steps)):
                cells[index] = f"⏭ skipped (full promotion{who})"
        elif entry.reason == PROMOTED_SKIP:
            cells[entry.step] = f"⏭ skipped{who}"
        elif entry.reason == PROMOTED_PAST_HOLD:
            if isinstance(steps[entry.step], AnalysisStep):
                cells[entry.step] = f"⏭ inconclusive, promoted{who}"
            else:
                cells[entry.step] = f"✅ promoted{who}"
    if current < len(steps):
        cells[current] = _current_cell(state)
        if state.phase in ("Aborted", "Superseded"):
            for index in range(current + 1, len(steps)):
                cells[index] = "· not run"
    return cells


def _current_cell(state: RolloutState) -> str:
    if state.phase == "Aborted" or (state.phase == "Superseded" and state.aborted_reason):
        abort = next((e for e in reversed(state.history) if e.kind == "aborted"), None)
        if abort is not None and abort.actor:
            return f"❌ aborted by {_user(abort.actor)}"
        return "❌ failed"
    if state.phase == "Superseded":
        return "⏹ superseded"
    if state.phase == "Paused":
        return "⏸ paused"
    if state.phase == "Pending":
        return "· pending"
    return "▶️ current"


def _this_attempt(history: Sequence[HistoryEntry]) -> Sequence[HistoryEntry]:
    """History since the latest retry: a retry starts the steps over."""
    for position in range(len(history) - 1, -1, -1):
        if history[position].kind == "retried":
            return history[position:]
    return history


def _cell_code(text: str, limit: int = _NAME) -> str:
    """A code span that is safe inside a table cell: GFM splits cells on `|` even in code."""
    return code(text, limit).replace("|", "\\|")


# ---------------------------------------------------------------------------- analysis


def _analysis(state: RolloutState) -> list[str]:
    shown = _runs_to_show(state)
    if not shown:
        return []
    lines = ["", "**Analysis**"]
    rows_left = METRIC_ROWS
    for run in shown:
        lines += ["", _run_line(run)]
        if run.error or not run.results:
            continue
        if rows_left <= 0:
            lines.append(f"_{len(run.results)} metrics not shown._")
            continue
        lines += [
            "",
            "| metric | phase | latest | condition | measurements | message |",
            "|---|---|---|---|---|---|",
        ]
        for spec, result in list(zip(run.metrics, run.results, strict=True))[:rows_left]:
            lines.append(_metric_row(spec, result))
        if len(run.results) > rows_left:
            lines.append(f"| … | {len(run.results) - rows_left} more metrics | | | | |")
        rows_left -= len(run.results)
    return lines


def _runs_to_show(state: RolloutState) -> list[AnalysisRun]:
    active = [r for r in (state.step_run, state.background_run) if r is not None]
    ids = {r.id for r in active}
    finished = [r for r in reversed(state.finished_runs) if r.id not in ids]
    return (active + finished)[:RUNS_SHOWN]


def _run_line(run: AnalysisRun) -> str:
    verdict = runs.phase(run)
    label = f"{escape(run.purpose, _NAME)} analysis" if run.purpose else "analysis"
    line = f"{_RUN_ICON[verdict]} **{label}** {code(run.id, _NAME)} — **{verdict}**"
    if run.error:
        return f"{line}: could not start: {escape(run.error, _TEXT * 2)}"
    if run.terminated:
        line += " (stopped)"
    if verdict == "Running":
        return f"{line}: {_run_progress(run)}"
    reason = runs.message(run)
    if reason:
        line += f": {escape(reason, _TEXT * 2)}"
    if verdict == "Inconclusive":
        line += " — inconclusive neither promotes nor aborts: a person decides"
    return line


def _run_progress(run: AnalysisRun) -> str:
    ok, wanted = runs.progress(run)
    return f"{ok}/{wanted} ok" if wanted is not None else f"{ok} ok"


def _metric_row(spec: MetricSpec, result: MetricResult) -> str:
    last = result.measurements[-1] if result.measurements else None
    if last is None:
        latest = "measuring…" if result.requested_at is not None else "—"
    else:
        latest = _cell_code(last.value, _VALUE) if last.value is not None else "∅ (no value)"
    conditions = [
        f"{kind} {_cell_code(text, _CONDITION)}"
        for kind, text in (
            ("success", spec.success_condition),
            ("failure", spec.failure_condition),
        )
        if text
    ]
    wanted = spec.effective_count
    counts = f"{result.successful}/{wanted} ok" if wanted is not None else f"{result.successful} ok"
    counts += f", {result.failed} failed, {result.inconclusive} inconclusive"
    if result.error:
        counts += f", {result.error} errors"
    messages = [result.message] if result.message else []
    if last is not None and last.message and last.message not in result.message:
        messages.append(last.message)
    return (
        f"| {escape(result.name, _NAME)}{_dry_run_mark(spec)} | {_RUN_ICON[result.phase]} "
        f"{result.phase} | {latest} "
        f"| {' · '.join(conditions) or _no_condition(spec)} | {counts} "
        f"| {escape(' · '.join(messages), _TEXT) if messages else ''} |"
    )


def _no_condition(spec: MetricSpec) -> str:
    """A job metric is judged by its Job, not by a condition."""
    return "the Job completes" if "job" in spec.provider else "none (any value passes)"


def _dry_run_mark(spec: MetricSpec) -> str:
    """A dry-run metric (Argo's dryRun) is measured and shown, but never decides the run."""
    return " _(dry run: shown, never deciding)_" if spec.dry_run else ""


# ---------------------------------------------------------------------- evidence, history


def _evidence(state: RolloutState) -> list[str]:
    if not state.evidence or state.phase not in ("Aborted", "Superseded"):
        return []
    lines = ["", "**Why it was aborted**", ""]
    lines += [f"> - {escape(item, _EVIDENCE)}" for item in state.evidence[:EVIDENCE_LINES]]
    if len(state.evidence) > EVIDENCE_LINES:
        lines.append(f"> - … {len(state.evidence) - EVIDENCE_LINES} more")
    return lines


def _history(state: RolloutState) -> list[str]:
    if not state.history:
        return []
    lines = ["", "**History** (UTC)", ""]
    hidden = len(state.history) - HISTORY_SHOWN
    if hidden > 0:
        lines.append(f"- … {hidden} earlier events")
    for entry in state.history[-HISTORY_SHOWN:]:
        time = datetime.fromtimestamp(entry.at, tz=UTC).strftime("%H:%M:%S")
        icon = _HISTORY_ICON.get(entry.kind, "•")
        line = f"- `{time}` {icon} {escape(entry.message, _TEXT)}"
        if entry.actor and f"@{entry.actor}" not in entry.message:
            line += f" — by {_user(entry.actor)}"
        lines.append(line)
    return lines


def _latest_time(state: RolloutState) -> float:
    times = [t for t in (state.started_at, state.finished_at) if t is not None]
    times += [e.at for e in state.history[-1:]]
    times += [p.at for p in state.weights[-1:]]
    times += [p.at for p in state.metric_points[-1:]]
    return max(times, default=0.0)
