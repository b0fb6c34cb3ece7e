"""The CI gate of a merge: deploy only once the checks the repository (and the server) require
are green on the merge commit.

`MergeGate.admit` runs inside `handlers.merged.deploy_in_order`, under the branch's merge lock,
right before the deploy: it reads the gate (`.coalmine.yaml` at the merge commit, tightened by
the server's, bot.gate), asks the forge for the commit's CI results once, and answers at once.
Passed, overridden by `/deploy`, or no gate: deploy. Failed or timed out: the `coalmine/gate`
status fails naming the check and its link, nothing is deployed. Pending: the merge is written
to its branch's one waiting slot in Redis (a newer merge replaces an older one there, which is
told it was superseded), `coalmine/gate` is pending with what it waits for, and a re-check is
scheduled (`handlers.merged.recheck`); nothing holds a worker or the lock while CI runs.

The waiting slot survives a worker restart (the scheduled re-check is in Redis, and the worker
sweep `gate_jobs.resume_waiting` re-schedules one that was lost). Coalmine's own `coalmine/*`
statuses never count. `MergeGate` takes its ports as Protocols (checks, commits, store, report,
schedule); it is tested end to end in tests/e2e/test_gate.py, its rules in
tests/unit/test_gate_rules.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from redis import Redis

from bot import gate as ci_gate
from bot import keys, services
from bot.config import REPO_CONFIG_FILE, ConfigError, Settings, parse_repo_config
from bot.events import MergedPullRequest
from bot.forge.base import CheckResult, ForgeError, StatusState
from bot.gitrepo import GitError, repo_key
from bot.refs import RepoRef
from handlers import drift
from handlers.deploy import AppOutcome

log = logging.getLogger(__name__)
SECTION = "(CI gate)"  # its row in the PR comment; its status is coalmine/gate
STATUS_APP = "gate"
PR_RECORD_TTL_S = 30 * 24 * 3600


# --------------------------------------------------------------------------- the waiting merge


@dataclass(frozen=True)
class Waiting:
    """A merge held by the gate: kept in its branch's slot while pending, and per PR (also
    once failed or timed out) so that `/deploy` finds it."""

    event: MergedPullRequest
    repo_id: int
    branch: str
    spec: ci_gate.GateSpec
    since: float  # when the gate first held it (the timeout counts from here)
    next_at: float = 0.0  # when its checks are read again
    summary: str = ""  # the status line last reported

    @property
    def sha(self) -> str:
        return self.event.merge_sha

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Waiting:
        data = json.loads(raw)
        event = dict(data["event"])
        event["repo"] = RepoRef(**event["repo"])
        spec = data["spec"]
        return cls(MergedPullRequest(**event), int(data["repo_id"]), data["branch"],
                   ci_gate.GateSpec(tuple(spec["require"]), spec["all"], spec["timeout_s"]),
                   float(data["since"]), float(data.get("next_at", 0.0)),
                   data.get("summary", ""))


@dataclass(frozen=True)
class GateStore:
    """The waiting slots, the PRs' gated merges and the overrides, in Redis (bot.keys)."""

    redis: Redis

    def slot(self, forge: str, repo_id: int, branch: str) -> Waiting | None:
        raw = self.redis.hget(keys.GATES_WAITING, keys.gate_slot(forge, repo_id, branch))
        return Waiting.from_json(raw) if raw else None

    def wait(self, waiting: Waiting) -> None:
        """Put `waiting` in its branch's slot (replacing any other) and index it by PR."""
        slot = keys.gate_slot(waiting.event.repo.forge, waiting.repo_id, waiting.branch)
        pipe = self.redis.pipeline()
        pipe.hset(keys.GATES_WAITING, slot, waiting.to_json())
        pipe.set(self._pr_key(waiting), waiting.to_json(), ex=PR_RECORD_TTL_S)
        pipe.execute()

    def stopped(self, waiting: Waiting) -> None:
        """The gate stopped the merge (failed, timed out): out of the slot, kept for /deploy."""
        self.leave(waiting)
        self.redis.set(self._pr_key(waiting), waiting.to_json(), ex=PR_RECORD_TTL_S)

    def leave(self, waiting: Waiting) -> None:
        """Out of the slot if it still holds this very merge."""
        slot = keys.gate_slot(waiting.event.repo.forge, waiting.repo_id, waiting.branch)
        current = self.redis.hget(keys.GATES_WAITING, slot)
        if current and Waiting.from_json(current).sha == waiting.sha:
            self.redis.hdel(keys.GATES_WAITING, slot)

    def done(self, waiting: Waiting) -> None:
        """Passed or overridden: nothing of it is kept."""
        self.leave(waiting)
        self.redis.delete(self._pr_key(waiting))

    def of_pr(self, repo: RepoRef, number: int) -> Waiting | None:
        raw = self.redis.get(keys.gate_pr(repo.forge, repo.full_name, number))
        return Waiting.from_json(raw) if raw else None

    def all_waiting(self) -> list[Waiting]:
        return [Waiting.from_json(v) for v in self.redis.hvals(keys.GATES_WAITING)]

    def override(self, forge: str, repo_id: int, sha: str) -> dict[str, Any] | None:
        raw = self.redis.get(keys.gate_override(forge, repo_id, sha))
        return json.loads(raw) if raw else None

    def record_override(self, waiting: Waiting, user: str, at: float) -> None:
        self.redis.set(keys.gate_override(waiting.event.repo.forge, waiting.repo_id,
                                          waiting.sha),
                       json.dumps({"user": user, "at": at}), ex=PR_RECORD_TTL_S)

    @staticmethod
    def _pr_key(waiting: Waiting) -> str:
        event = waiting.event
        return keys.gate_pr(event.repo.forge, event.repo.full_name, event.number)


# --------------------------------------------------------------------------- ports


class Checks(Protocol):
    def commit_checks(self, repo: RepoRef, sha: str) -> list[CheckResult]:
        """The commit's CI results, the latest of each name (bot.forge.base.CommitChecks)."""


class Commits(Protocol):
    def is_ancestor(self, repo_key: str, clone_url: str, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is `descendant` or one of its ancestors."""

    def file_at(self, repo_key: str, clone_url: str, sha: str, path: str) -> str | None:
        """The text of `path` at `sha`; None when it is not a file there."""


class Report(Protocol):
    def __call__(self, event: MergedPullRequest, app: str, outcome: AppOutcome) -> None:
        """Set the status and the PR comment's section (handlers.deploy's report)."""


class Schedule(Protocol):
    def __call__(self, waiting: Waiting) -> None:
        """Read the waiting merge's checks again at `waiting.next_at`."""


# --------------------------------------------------------------------------- the use case


@dataclass
class MergeGate:
    """`handlers.merged.Gate`: admits a merge, or holds it, under the branch's merge lock."""

    settings: Settings
    forge: Checks
    mirrors: Commits
    store: GateStore
    report: Report
    schedule: Schedule
    watch: Callable[[MergedPullRequest, int, str], None] = lambda *_: None  # drift's record
    clock: Callable[[], float] = time.time

    def deployed(self, event: MergedPullRequest, repo_id: int, branch: str) -> None:
        """The merge deployed completely: drift detection watches it from now on."""
        self.watch(event, repo_id, branch)

    def admit(self, event: MergedPullRequest, repo_id: int, branch: str,
              clone_url: str) -> bool:
        """True: deploy now. False: the gate holds it (waiting) or stopped it; reported."""
        spec = ci_gate.tighten(self.settings.gate, self._repo_gate(event, clone_url))
        current = self.store.slot(event.repo.forge, repo_id, branch)
        now = self.clock()
        mine = current is not None and current.sha == event.merge_sha
        held = current if mine else Waiting(event, repo_id, branch, spec, now)
        if not mine and current is not None:
            if self._newer(current, event, clone_url):
                self._tell(event, "success", f"not deployed: superseded by {current.sha[:7]} "
                           f"(#{current.event.number}), which waits for CI")
                return False
            self._supersede(current, event)
        if not spec.active:
            return True
        overridden = self.store.override(event.repo.forge, repo_id, event.merge_sha)
        if overridden is not None:
            self.store.done(held)
            when = _utc(float(overridden["at"]))
            self._tell(event, "success", f"CI gate overridden by @{overridden['user']} at "
                       f"{when} UTC with /deploy; deploying",
                       notes=[(f"@{overridden['user']} overrode the CI gate ({spec.describe()}) "
                              f"with /deploy at {when} UTC.")])
            return True
        return self.decide(held, now)

    def decide(self, held: Waiting, now: float) -> bool:
        """Judge `held`'s checks now: True to deploy; otherwise reported and kept or stopped."""
        event, spec = held.event, held.spec
        try:
            checks = self.forge.commit_checks(event.repo, event.merge_sha)
        except ForgeError as exc:
            log.warning("cannot read the checks of %s@%s: %s", event.repo.full_name,
                        event.merge_sha[:7], exc)
            checks = None
        judgement = ci_gate.judge(spec, checks or [], waited_s=now - held.since)
        if checks is None and judgement.verdict != "timeout":
            judgement = ci_gate.Judgement("wait", waiting_for=("the forge's answer",))
        summary = judgement.summary(spec)
        lines = ci_gate.check_lines(judgement, checks or [], spec)
        if judgement.verdict == "pass":
            self.store.done(held)
            self._tell(event, "success", summary, notes=lines)
            return True
        if judgement.verdict in ("fail", "timeout"):
            self.store.stopped(held)
            first = judgement.failed[0] if judgement.failed else None
            error = (f"{first.name} ({first.kind}) is {first.detail or first.state}"
                     + (f": {first.url}" if first.url else "") if first else summary)
            self._tell(event, "failure", summary, notes=lines, error=(
                f"{error}. Nothing was deployed. Fix CI and merge again, or comment /deploy "
                "to deploy this commit anyway (needs the permission /promote needs)."),
                       error_title="CI gate failed" if first else "CI gate timed out")
            return False
        waiting = dataclasses.replace(held, next_at=now + self.settings.gate_poll_s,
                                      summary=summary)
        self.store.wait(waiting)
        if summary != held.summary:
            self._tell(event, "pending", summary, notes=[
                (f"Coalmine deploys this commit once these are green (waiting up to "
                f"{spec.timeout_s:.0f}s; /deploy deploys it now):"), *lines])
        self.schedule(waiting)
        return False

    def _repo_gate(self, event: MergedPullRequest, clone_url: str) -> ci_gate.GateSpec:
        """The gate `.coalmine.yaml` at the merge commit asks for; an unreadable file asks for
        none here (the deploy reports the file's error and applies nothing)."""
        try:
            text = self.mirrors.file_at(repo_key(event.repo), clone_url, event.merge_sha,
                                        REPO_CONFIG_FILE)
            return parse_repo_config(text, self.settings).gate if text else ci_gate.NO_GATE
        except (ConfigError, GitError):
            return ci_gate.NO_GATE

    def _newer(self, current: Waiting, event: MergedPullRequest, clone_url: str) -> bool:
        try:
            return self.mirrors.is_ancestor(repo_key(event.repo), clone_url, event.merge_sha,
                                            current.sha)
        except GitError:
            return False

    def _supersede(self, older: Waiting, by: MergedPullRequest) -> None:
        self.store.stopped(older)
        self._tell(older.event, "success", f"not deployed: superseded by newer merge "
                   f"{by.merge_sha[:7]} (#{by.number}) while waiting for CI")

    def _tell(self, event: MergedPullRequest, state: StatusState, summary: str, *,
              notes: list[str] | None = None, error: str | None = None,
              error_title: str = "CI gate") -> None:
        self.report(event, SECTION, AppOutcome(state, summary, notes=notes or [], error=error,
                                               error_title=error_title,
                                               status_app=STATUS_APP))


# --------------------------------------------------------------------------- jobs' bodies
# The RQ entry points are in handlers.merged (`recheck`) and handlers.commands (`/deploy`):
# they run the merge again, which this module cannot import (merged imports it).


def adapter(svc: services.Services, forge: Any, deployer: Any,
            recheck: Callable[..., Any]) -> MergeGate:
    """The gate over the process's adapters; `recheck` is the RQ job re-reading checks."""
    def schedule(waiting: Waiting) -> None:
        svc.queue.enqueue_at(waiting.next_at, recheck, waiting.event.repo.forge,
                             waiting.repo_id, waiting.branch, waiting.sha)

    return MergeGate(svc.settings, forge, svc.mirrors, GateStore(svc.redis), deployer.report,
                     schedule, watch=lambda event, repo_id, branch: drift.remember(
                         svc.redis, event, repo_id, branch))


def read_again(svc: services.Services, forge: str, repo_id: int, branch: str, sha: str,
            recheck: Callable[..., Any]) -> MergedPullRequest | None:
    """Read a waiting merge's checks again, outside the merge lock. Still pending: re-checked
    later (None). Decided (passed, failed, timed out): its event, for the merge to run again
    and decide under the lock. A merge no longer in its slot (superseded, done): None."""
    store = GateStore(svc.redis)
    waiting = store.slot(forge, repo_id, branch)
    if waiting is None or waiting.sha != sha:
        return None
    event = waiting.event
    now = time.time()
    try:
        checks = svc.forge(event.repo).commit_checks(event.repo, sha)
    except ForgeError as exc:
        log.warning("cannot read the checks of %s@%s: %s", event.repo.full_name, sha[:7], exc)
        checks = None
    judgement = ci_gate.judge(waiting.spec, checks or [], waited_s=now - waiting.since)
    if judgement.verdict != "wait" and (checks is not None or judgement.verdict == "timeout"):
        return event
    waiting = dataclasses.replace(waiting, next_at=now + svc.settings.gate_poll_s)
    store.wait(waiting)
    svc.queue.enqueue_at(waiting.next_at, recheck, forge, repo_id, branch, sha)
    return None


def override(svc: services.Services, repo: RepoRef, number: int,
             user: str) -> tuple[str, MergedPullRequest | None]:
    """`/deploy` by a permitted `user`: record who and when, and return the merge to run
    again (None with the reply when nothing of the PR is held by the gate)."""
    waiting = GateStore(svc.redis).of_pr(repo, number)
    if waiting is None:
        return ((f"@{user} no merge of this PR is held by the CI gate, so `/deploy` has "
                "nothing to override."), None)
    now = time.time()
    GateStore(svc.redis).record_override(waiting, user, now)
    log.warning("CI gate of %s@%s (#%s) overridden by @%s with /deploy", repo.full_name,
                waiting.sha[:7], number, user)
    return ((f"@{user} the CI gate of `{waiting.sha[:7]}` is overridden ({_utc(now)} UTC): "
            "deploying it now."), waiting.event)


def resume_waiting(svc: services.Services, recheck: Callable[..., Any],
                   overdue_s: float = 30.0) -> int:
    """Worker sweep: re-schedule the re-check of every waiting merge whose re-check is long
    overdue (lost with an embedded queue, say); returns how many."""
    count = 0
    for waiting in GateStore(svc.redis).all_waiting():
        if waiting.next_at < time.time() - overdue_s:
            svc.queue.enqueue(recheck, waiting.event.repo.forge, waiting.repo_id,
                              waiting.branch, waiting.sha)
            count += 1
    return count


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
