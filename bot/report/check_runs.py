"""Each app's deploy or rollout as a check run on its merge commit, with buttons (GitHub App).

A check run shows the same state as the app's section of the PR comment (rendered by the same
code, `comment.app_details`) and, while the rollout runs or waits, offers Promote, Promote fully
and Abort as requested actions; a finished one is completed with a conclusion and no actions.
Commit statuses stay as they are: check runs are added where the forge can write them (GitHub
as an App, `check_runs_of`), never instead of statuses.

Like the comment, check runs are derived from the stored sections, so the outbox's retry
(handlers.outbox.flush) re-derives and posts the newest state after a forge outage and a final
state is never lost. Under the PR's check-run lock, each app's run is created once and then
updated; what was posted last is remembered (no call when nothing changed), and the run's id is
mapped to its repository, PR, commit and rollout, so a click is resolved through Redis and
never through the payload's text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError

from bot import keys
from bot.deployments import deployment_path
from bot.forge.base import (
    CheckAction,
    CheckConclusion,
    CheckRuns,
    CheckRunSpec,
    Forbidden,
    NotFound,
    RepoRef,
    check_runs_of,
)
from bot.report import comment, status
from bot.rollout.model import RolloutState

log = logging.getLogger(__name__)
RECORD_TTL_S = comment.SECTION_TTL_S
LOCK_TIMEOUT_S = 30
REFUSED_PAUSE_S = 3600  # after a 403, how long the repository gets statuses only
# The buttons of a running or paused rollout; identifiers are what a click sends back.
PROMOTE = "promote"
PROMOTE_FULL = "promote-full"
ABORT = "abort"
ACTIONS = (
    CheckAction("Promote", "End the pause or analysis: next step", PROMOTE),
    CheckAction("Promote fully", "Skip all remaining steps, promote now", PROMOTE_FULL),
    CheckAction("Abort", "Traffic back to stable, open a revert PR", ABORT),
)
_STEERABLE_PHASES = frozenset({"Progressing", "Paused"})


@dataclasses.dataclass(frozen=True)
class CheckRunTarget:
    """What a check run's buttons steer, as recorded when Coalmine created it."""

    repo: str  # full name when created
    repo_id: int | None
    number: int
    sha: str
    app: str
    rollout_key: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def load_target(redis: Redis, forge: str, run_id: int) -> CheckRunTarget | None:
    """The target recorded for check run `run_id`, None when Coalmine made no such run."""
    raw = redis.get(keys.check_run_target(forge, run_id))
    if raw is None:
        return None
    try:
        return CheckRunTarget(**json.loads(raw))
    except (TypeError, ValueError):
        return None


def is_app_section(name: str) -> bool:
    """Apps have DNS-label names; the rows "(repository)" and "(CI gate)" get no check run."""
    return not name.startswith("(")


def spec_for(app: str, section: dict[str, Any], details_url: str | None) -> CheckRunSpec:
    """The check run of an app's section: in progress while pending (with the buttons while
    its rollout runs or is paused), completed with a conclusion once final."""
    rollout = _rollout_state(section)
    state = str(section.get("state") or "pending")
    title = status.clip(str(section.get("summary") or state))
    summary = "\n".join(comment.app_details(app, section))
    if state == "pending" and (rollout is None or rollout.phase not in
                               ("Promoted", "Aborted", "Superseded")):
        steerable = rollout is not None and rollout.phase in _STEERABLE_PHASES
        return CheckRunSpec(status.context(app), "in_progress", title, summary,
                            actions=ACTIONS if steerable else (), details_url=details_url)
    return CheckRunSpec(status.context(app), "completed", title, summary,
                        conclusion=conclusion(state, rollout), details_url=details_url)


def conclusion(state: str, rollout: RolloutState | None) -> CheckConclusion:
    """Promoted or applied: success. Superseded by a newer merge: neutral (nothing went wrong,
    it simply stopped mattering). Aborted by a person: cancelled. Aborted by the analysis, the
    deadline or the cluster, or a failed deploy: failure."""
    if rollout is not None and rollout.phase == "Superseded":
        return "neutral"
    if rollout is not None and rollout.phase == "Aborted":
        aborts = [h for h in rollout.history if h.kind == "aborted"]
        return "cancelled" if aborts and aborts[-1].actor else "failure"
    if rollout is not None and rollout.phase == "Promoted":
        return "success"
    return "success" if state == "success" else "failure"


def publish(redis: Redis, forge: object, repo: RepoRef, number: int, public_url: str) -> None:
    """Bring every app's check run of PR `number` in line with its section; nothing on a forge
    without check runs. A `ForgeError` propagates after the runs before it were posted: the
    caller schedules the outbox's retry, which calls this again. A 403 (`Forbidden`) is no
    passing fault: the repository gets statuses only for REFUSED_PAUSE_S, without a retry."""
    runs = check_runs_of(forge)
    if runs is None or redis.exists(keys.check_runs_refused(repo)):
        return
    lock = redis.lock(keys.pr_check_runs_lock(repo, number), timeout=LOCK_TIMEOUT_S,
                      blocking_timeout=60)
    if not lock.acquire():
        raise LockError(f"the check runs of {repo.full_name}#{number} stayed locked")
    try:
        record_key = keys.pr_check_runs(repo, number)
        posted = {_text(k): json.loads(v) for k, v in redis.hgetall(record_key).items()}
        for app, section in sorted(comment.load_sections(redis, repo, number).items()):
            if not is_app_section(app) or not section.get("sha"):
                continue
            url = public_url + deployment_path(repo.forge, repo.full_name, section["sha"], app)
            spec = spec_for(app, section, url if url.startswith(("http://", "https://"))
                            else None)
            try:
                _post(redis, runs, repo, number, app, str(section["sha"]), spec,
                      posted.get(app))
            except Forbidden as exc:
                # Not a passing fault: retrying would cost rate limit for the same answer, and
                # the statuses and the comment already say everything a check run would.
                redis.set(keys.check_runs_refused(repo), "1", ex=REFUSED_PAUSE_S)
                log.warning("GitHub refuses Coalmine's check runs in %s (does the App have the "
                            "Checks: write permission? `coalmine doctor` tells): statuses only "
                            "for %d s: %s", repo.full_name, REFUSED_PAUSE_S, exc)
                return
    finally:
        try:
            lock.release()
        except LockNotOwnedError:
            pass  # expired during a slow call: the next publish compares digests again


def _post(redis: Redis, runs: CheckRuns, repo: RepoRef, number: int, app: str, sha: str,
          spec: CheckRunSpec, posted: dict[str, Any] | None) -> None:
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True)
                            .encode()).hexdigest()
    known = posted if posted and posted.get("sha") == sha else None
    if known is not None and known.get("sha256") == digest:
        return
    run_id = None
    if known is not None:
        try:
            runs.update_check_run(repo, int(known["id"]), spec)
            run_id = int(known["id"])
        except NotFound:
            log.warning("check run %s of %s on %s is gone; creating another", known["id"], app,
                        repo.full_name)
    if run_id is None:
        run_id = runs.create_check_run(repo, sha, spec)
    target = CheckRunTarget(repo.full_name, repo.repo_id, number, sha, app,
                            keys.rollout(repo.forge, repo.full_name, app))
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.check_run_target(repo.forge, run_id), target.to_json(), ex=RECORD_TTL_S)
    pipe.hset(keys.pr_check_runs(repo, number), app,
              json.dumps({"id": run_id, "sha": sha, "sha256": digest}))
    pipe.expire(keys.pr_check_runs(repo, number), RECORD_TTL_S)
    pipe.execute()


def _rollout_state(section: dict[str, Any]) -> RolloutState | None:
    data = section.get("rollout")
    if not data:
        return None
    try:
        return RolloutState.from_dict(data)
    except (TypeError, ValueError):
        return None  # written by another version: shown as a plain deploy, without buttons


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
