"""Every trigger Coalmine answers and the use case that handles it, in one table.

A newcomer looking for "what happens on X" starts here: each row names the trigger, where it
comes from, the job (an RQ entry point, enqueued by dotted path) and what it does. The web
composition root takes the webhook jobs from this table; `tests/unit/test_registry.py` fails on a
job enqueued anywhere in `handlers/` that is not listed, so the table cannot fall behind.
PR comment commands have their own table (`handlers.commands.COMMANDS`, which `/help` prints).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers import check_actions, commands, drift, merged, outbox, preview, revert, rollout


@dataclass(frozen=True)
class Trigger:
    name: str
    source: str  # what starts it
    job: Callable[..., Any]  # the RQ entry point
    does: str


TRIGGERS: tuple[Trigger, ...] = (
    Trigger("merge", "webhook: a PR/MR merged into the deploy branch", merged.run,
            "verify through the forge API, then deploy in order under the branch lock: render, "
            "policy, apply, prune, health, start a canary where a strategy asks (handlers.deploy)"),
    Trigger("gate re-check", "the schedule: a merge held by the CI gate (every "
            "COALMINE_GATE_POLL s; the worker sweep re-schedules a lost one)", merged.recheck,
            "read the merge commit's CI results again; once passed, failed or timed out, run "
            "the merge again so the gate decides under the lock (handlers.gate)"),
    Trigger("drift check", "the worker sweep (every COALMINE_DRIFT_INTERVAL s), /status",
            drift.check, "compare the branch's last deployed commit with the cluster: "
                         "coalmine/drift, the gauge, the drift comment; selfHeal re-applies "
                         "(handlers.drift)"),
    Trigger("preview", "webhook: a PR/MR into the deploy branch opened, reopened or pushed to",
            preview.run, "verify through the forge API, render the head, check policy and "
            "content rules, dry-run and diff against the cluster, plan; coalmine/preview status "
            "and the preview comment (handlers.preview)"),
    Trigger("command", "webhook: a PR/MR comment holding a command", commands.run,
            "read the comment through the API, check the author's permission, act (COMMANDS)"),
    Trigger("check run action", "webhook (GitHub App only): a click on a check run's Promote, "
            "Promote fully or Abort button", check_actions.run,
            "read the run through the API (this App's, on the recorded commit), map its id "
            "through Redis to the rollout, check the clicker's permission, then act as the PR "
            "command does (handlers.check_actions)"),
    Trigger("operator command", "the CLI: coalmine promote/abort/retry/pause/resume "
            "(bot.cli_rollouts)", rollout.dispatch,
            "feed the PR command's engine event, attributed to 'USER (CLI)', under the "
            "rollout's lock"),
    Trigger("tick", "the schedule: a rollout's next wake-up (pause over, measurement due, "
            "health re-poll or recheck, deadline)", rollout.tick,
            "feed Tick to the engine under the rollout's lock; carry out its actions"),
    Trigger("measurement", "a background measuring thread", rollout.measured,
            "feed MeasurementTaken to the engine (a result of a replaced run is dropped)"),
    Trigger("analysis Job poll", "a `job` metric's Job still running (growing delays)",
            rollout.job_poll, "read the Job once: hand its verdict back, poll again later, or "
            "delete it when its run stopped (handlers.rollout_measure)"),
    Trigger("restore", "a restore after an abort that the cluster refused (every 5 s)",
            rollout.restore, "put stable back at full size and remove the canary"),
    Trigger("revert PR", "the shell, on the engine's OpenRevertPR", revert.open_revert,
            "push the revert branch and open the revert PR; retried with growing delays"),
    Trigger("final report", "the workers' sweep: a finished rollout left unreported",
            rollout.report_final, "post the final status and comment section"),
    Trigger("report retry", "a status or comment the forge refused", outbox.flush,
            "post the latest desired statuses and the comment"),
    Trigger("comment edit", "progress batched for COMMENT_EVERY_S", outbox.flush_comment,
            "re-render the PR comment"),
    # Jobs of earlier versions that may still sit in Redis after an upgrade:
    Trigger("health poll (legacy)", "jobs queued by versions before health polls became ticks",
            rollout.health_poll, "a Tick for the current version"),
    Trigger("revert PR (legacy path)", "jobs queued before the revert PR moved to "
            "handlers.revert", rollout.open_revert, "handlers.revert.open_revert"),
)


def job(name: str) -> Callable[..., Any]:
    """The entry point of the trigger called `name`."""
    return next(t.job for t in TRIGGERS if t.name == name)


# A job's dotted function name (what RQ records) → its trigger's name, for the jobs metrics.
_NAMES = {f"{t.job.__module__}.{t.job.__qualname__}": t.name for t in TRIGGERS}


def name_of(dotted: str) -> str:
    """The trigger whose job is the function at dotted path `dotted`, or "other"."""
    return _NAMES.get(dotted, "other")
