"""`coalmine get` and the operator commands (`promote`, `abort`, `retry`, `pause`, `resume`).

Reading is done straight from the rollout store (`RolloutStore`), never writing: `get rollouts`
lists the active ones, `get rollout` shows one with its steps, weights, analysis runs and
history, and `--watch` redraws whenever the stored record changes (each save bumps its `seq`),
polling at a bounded interval until Ctrl-C or `--timeout-seconds`.

Steering goes through the very path a PR command takes: the engine event of
`handlers.commands.COMMANDS`, attributed to "<user> (CLI)", is queued as the job
`handlers.rollout.dispatch(key, event)` (both handed in by the composition root, bot.cli, so
this module stays below the use cases), which a worker runs under the rollout's lock; the
history, the commit status and the PR comment record who did it. The job runs in a worker, not
in this process, because that is where the bot's network reaches the cluster and the metric
sources: a measurement started by a `/promote` must not run (and die) on an operator's laptop.
Before queueing, the engine is asked (pure, on the loaded state) whether it would refuse the
command, so a refusal is told here instead of as a PR comment mentioning the operator.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from bot.analysis import run as analysis
from bot.analysis.run import AnalysisRun
from bot.checks import Target
from bot.queue import JobQueue
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key

ACTIONS = ("promote", "abort", "retry", "pause", "resume")
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DONE = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


class CliError(Exception):
    """A problem the operator can act on; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- reading


def key_of(repo: str, app: str) -> str:
    """The rollout key of `[FORGE:]OWNER/NAME` and an app; CliError (2) on a malformed name."""
    try:
        target = Target.parse(repo)
    except ValueError as exc:
        raise CliError(f"REPO {exc}", 2) from None
    return rollout_key(target.forge, target.full_name, app)


def load(store: RolloutStore, repo: str, app: str) -> RolloutRecord:
    """The app's rollout; an active one is also found when `repo`'s case differs from the
    forge's spelling (which the key holds)."""
    key = key_of(repo, app)
    record = store.load(key)
    if record is None:
        spelled = next((k for k in store.active_keys() if k.casefold() == key.casefold()), None)
        record = store.load(spelled) if spelled else None
    if record is None:
        raise CliError(f"no rollout of {app!r} in {repo} (finished ones are kept 30 days)")
    return record


def record_key(record: RolloutRecord) -> str:
    repo = record.context.repo
    return rollout_key(repo.forge, repo.full_name, record.state.app)


def summary(record: RolloutRecord, now: float) -> dict[str, Any]:
    """One line of `get rollouts`: where, which PR, how far."""
    state, repo = record.state, record.context.repo
    total = len(state.strategy.steps)
    return {
        "forge": repo.forge, "repo": repo.full_name, "app": state.app, "pr": state.pr,
        "revision": state.revision, "phase": state.phase,
        "step": min(state.step_index + 1, total), "steps": total, "weight": state.weight,
        "age_seconds": None if state.started_at is None else round(now - state.started_at),
        "status": engine.status(state)[1],
    }


def active(store: RolloutStore) -> list[RolloutRecord]:
    records = (store.load(key) for key in store.active_keys())
    return [r for r in records if r is not None and not engine.is_finished(r.state)]


def list_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No active rollouts."
    header = ("REPO", "APP", "PR", "PHASE", "STEP", "WEIGHT", "AGE")
    lines = [header] + [(
        f"{r['forge']}:{r['repo']}", r["app"], f"#{r['pr']}" if r["pr"] else "-", r["phase"],
        f"{r['step']}/{r['steps']}", f"{r['weight']}%", age(r["age_seconds"]))
        for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


def age(seconds: float | None) -> str:
    """Like kubectl's AGE column: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


def detail(record: RolloutRecord, now: float) -> dict[str, Any]:
    """`get rollout --output json`: the summary, then steps, weights, runs and history."""
    state = record.state
    runs = [r for r in (state.step_run, state.background_run) if r is not None]
    runs += [r for r in reversed(state.finished_runs) if all(r.id != s.id for s in runs)]
    return {
        **summary(record, now),
        "stable_revision": state.stable_revision, "attempt": state.attempt,
        "url": record.context.url, "started_at": state.started_at,
        "finished_at": state.finished_at, "paused_by": state.paused_by,
        "aborted_reason": state.aborted_reason,
        "steps_detail": [{"step": i + 1, "description": engine.describe_step(s),
                          "state": cell} for i, (s, cell) in
                         enumerate(zip(state.strategy.steps, step_cells(state), strict=True))],
        "weights": [{"at": p.at, "weight": p.weight} for p in state.weights],
        "analysis_runs": [_run_dict(r) for r in runs],
        "history": [{"at": e.at, "kind": e.kind, "message": e.message, "actor": e.actor,
                     "step": None if e.step is None else e.step + 1, "phase": e.phase}
                    for e in state.history],
    }


def step_cells(state: m.RolloutState) -> list[str]:
    """done / the current step's phase / pending, one per step."""
    cells = []
    for index in range(len(state.strategy.steps)):
        if index < state.step_index or state.phase in ("Promoted", "Completing"):
            cells.append("done")
        elif index == state.step_index:
            cells.append({"Progressing": "running"}.get(state.phase, state.phase.lower()))
        else:
            cells.append("not run" if engine.is_finished(state) else "pending")
    return cells


def _run_dict(run: AnalysisRun) -> dict[str, Any]:
    return {
        "id": run.id, "purpose": run.purpose, "phase": analysis.phase(run),
        "message": analysis.message(run),
        "metrics": [{"name": r.name, "phase": r.phase, "message": r.message,
                     "measurements": r.count, "successful": r.successful, "failed": r.failed,
                     "inconclusive": r.inconclusive, "error": r.error,
                     "latest": r.measurements[-1].value if r.measurements else None}
                    for r in run.results],
    }


def detail_text(record: RolloutRecord, now: float) -> str:
    info = detail(record, now)
    revision = info["revision"][:7]
    stable = (info["stable_revision"] or "-")[:7]
    lines = [
        f"Rollout:   {info['forge']}:{info['repo']} {info['app']}",
        f"PR:        #{info['pr']}  {info['url']}".rstrip(),
        f"Revision:  {revision} (stable {stable}), attempt {info['attempt']}",
        f"Phase:     {info['phase']}  {info['status']}",
        (f"Step:      {info['step']}/{info['steps']}   Weight: {info['weight']}%   "
         f"Age: {age(info['age_seconds'])}"),
        "",
        "Steps:",
        *(f"  {s['step']:>2}. {s['description']:<40} {s['state']}"
          for s in info["steps_detail"]),
    ]
    if info["weights"]:
        lines += ["", "Weights: " + " → ".join(
            f"{p['weight']}% ({_clock(p['at'])})" for p in info["weights"][-12:])]
    if info["analysis_runs"]:
        lines += ["", "Analysis runs:"]
        for run in info["analysis_runs"]:
            lines.append(f"  {run['id']} ({run['purpose'] or 'run'}): {run['phase']}"
                         + (f" — {run['message']}" if run["message"] else ""))
            for metric in run["metrics"]:
                lines.append(
                    f"    {metric['name']}: {metric['phase']}, {metric['successful']} ok, "
                    f"{metric['failed']} failed, {metric['inconclusive']} inconclusive, "
                    f"{metric['error']} error; latest {metric['latest'] or '-'}")
    lines += ["", "History (UTC):"]
    for entry in info["history"]:
        who = f" — by {entry['actor']}" if entry["actor"] else ""
        lines.append(f"  {_clock(entry['at'])}  {entry['kind']:<9} {entry['message']}{who}")
    return "\n".join(lines)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at))


def frame(store: RolloutStore, repo: str | None, app: str | None, *, as_json: bool,
          compact: bool) -> tuple[object, str]:
    """(change key, text) of `get rollouts` (repo None) or `get rollout`: the key is what the
    store saved last (each save numbers the record), so a watch redraws only on a change.
    `compact` JSON is one line per frame (a watch's JSON Lines)."""
    now = time.time()
    if repo is None or app is None:
        records = active(store)
        data: Any = [summary(r, now) for r in records]
        key: object = [(r.context.repo.full_name, r.state.app, r.seq) for r in records]
        text = list_text(data)
    else:
        record = load(store, repo, app)
        data, key, text = detail(record, now), record.seq, detail_text(record, now)
    if as_json:
        text = json.dumps(data, separators=(",", ":")) if compact else dumps(data)
    return key, text


def watch(draw: Callable[[], tuple[object, str]], out: TextIO, *, interval_s: float,
          timeout_s: float | None, tty: bool, between: str = "\n",
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> int:
    """Print `draw()`'s text each time its change key differs, polling every `interval_s`,
    until Ctrl-C (exit 0) or `timeout_s`. A terminal is cleared before each frame; otherwise
    frames follow each other separated by `between` (a blank line; nothing for JSON Lines),
    so a pipe sees every one."""
    deadline = None if timeout_s is None else clock() + timeout_s
    last: object = None
    drawn = 0
    try:
        while True:
            key, text = draw()
            if drawn == 0 or key != last:
                if tty:
                    out.write("\x1b[H\x1b[2J")
                elif drawn:
                    out.write(between)
                out.write(text + "\n")
                out.flush()
                last, drawn = key, drawn + 1
            if deadline is not None and clock() >= deadline:
                return 0
            sleep(interval_s)
    except KeyboardInterrupt:
        return 0


# --------------------------------------------------------------------------- steering


@dataclass(frozen=True)
class Outcome:
    before: RolloutRecord
    after: RolloutRecord | None
    job_status: str


def actor(user: str) -> str:
    """How an operator is recorded: "<user> (CLI)"; CliError (2) for a name that is not one."""
    if not _USER.fullmatch(user):
        raise CliError(f"--as {user!r}: a name of letters, digits, '.', '_', '-' or '@'", 2)
    return f"{user} (CLI)"


def refusal(record: RolloutRecord, event: m.Event, now: float) -> str | None:
    """Why the engine would change nothing (asked of the pure engine on the loaded state)."""
    _state, actions = engine.advance(record.state, event, now)
    refused = [a for a in actions if isinstance(a, m.CommandRejected)]
    return refused[0].reason if refused else None


def steer(redis: Redis, queue: JobQueue, job: Callable[..., Any], repo: str, app: str,
          event: m.Event, *, wait_s: float, poll_s: float = 0.1,
          sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Queue `job(key, event)` (handlers.rollout.dispatch) for the rollout as a PR command
    would, then wait up to `wait_s` for a worker to run it. A job no worker took by then is
    cancelled: nothing happened."""
    store = RolloutStore(redis)
    before = load(store, repo, app)
    key = record_key(before)
    why = refusal(before, event, time.time())
    if why is not None:
        raise CliError(f"{_name(event)} changed nothing: {why}")
    job_id = queue.enqueue(job, key, event)
    status = _wait(redis, job_id, wait_s, poll_s, sleep)
    if status == JobStatus.QUEUED:
        _cancel(redis, job_id)
        raise CliError(f"no worker ran the command within {wait_s:g} s, so it was withdrawn "
                       "and nothing changed; is `coalmine worker` running?")
    if status == JobStatus.FAILED:
        raise CliError(f"the worker failed to carry out {_name(event)} (job {job_id}); see its "
                       "log")
    return Outcome(before, store.load(key), str(status))


def _name(event: m.Event) -> str:
    return {"PromoteFull": "promote --full"}.get(type(event).__name__,
                                                 type(event).__name__.lower())


def _wait(redis: Redis, job_id: str, wait_s: float, poll_s: float,
          sleep: Callable[[float], None]) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status = Job.fetch(job_id, connection=redis).get_status()
        except NoSuchJobError:  # finished and its result expired already
            return JobStatus.FINISHED
        if status in _DONE or time.monotonic() >= deadline:
            return status or JobStatus.QUEUED
        sleep(poll_s)


def _cancel(redis: Redis, job_id: str) -> None:
    try:
        Job.fetch(job_id, connection=redis).cancel()
    except NoSuchJobError:
        pass


def outcome_text(outcome: Outcome) -> str:
    before, after = outcome.before.state, outcome.after.state if outcome.after else None
    lines = [f"{before.app}: {_position(before)}"
             + (f" → {_position(after)}" if after else "")]
    if outcome.job_status != JobStatus.FINISHED:
        lines.append(f"(the worker is still carrying it out: {outcome.job_status})")
    if after is not None:
        new = [e for e in after.history if e.at >= _last_at(before.history)
               and e not in before.history]
        lines += [f"  {_clock(e.at)}  {e.kind:<9} {e.message}"
                  + (f" — by {e.actor}" if e.actor else "") for e in new]
    return "\n".join(lines)


def _position(state: m.RolloutState) -> str:
    total = len(state.strategy.steps)
    return (f"{state.phase} (step {min(state.step_index + 1, total)}/{total}, "
            f"canary {state.weight}%)")


def _last_at(history: Iterable[m.HistoryEntry]) -> float:
    return max((e.at for e in history), default=0.0)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
