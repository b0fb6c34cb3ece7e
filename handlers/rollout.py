"""The imperative shell around the pure rollout engine.

Each job takes the rollout's lock, loads its record, feeds the engine one event, carries out the
engine's cluster actions (a scale answers with health), saves the record and releases the lock;
only then does slow I/O run: measurements go to background threads whose results come back as
jobs feeding `MeasurementTaken` under the lock again (a result for a run that an /abort or
/retry replaced is dropped by the engine, which matches it by run id), and statuses, comments
and replies go to the forge under the PR's report lock, each only if no newer snapshot was
reported already. So a metric that never answers or a slow forge never holds the rollout: an
/abort takes effect at once. A crash before the save loses nothing: the previous tick or the
start-up sweep repeats the step, and every action is idempotent.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, assert_never

from bot import services
from bot.analysis.measure import BackgroundMeasurements, measure
from bot.analysis.measurement import Measurement
from bot.cluster.health import assess
from bot.cluster.model import ClusterError, Owner
from bot.config import AppConfig
from bot.deployments import deployment_path
from bot.events import MergedPullRequest
from bot.forge.base import Forge, ForgeError, RepoRef
from bot.gitrepo import GitError
from bot.leases import GivenUp, leased
from bot.policy import Policy
from bot.report import comment, status
from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.plan import CanaryPlan
from bot.rollout.store import (
    RolloutRecord,
    RolloutStore,
    report_lock_key,
    rollout_key,
)
from handlers import outbox

log = logging.getLogger(__name__)
RESTORE_RETRY_S = 5.0
REVERT_RETRY_S = 30.0
REVERT_ATTEMPTS = 8
MAX_FOLLOW_UPS = 200  # a guard against an engine/shell loop, never reached in practice
REVERT_LABEL = "coalmine-revert"
# Process-wide, like the adapters: measurements outlive the job that asked for them.
MEASUREMENTS = BackgroundMeasurements()


# --------------------------------------------------------------------------- entry points


def start(svc: services.Services, event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
          live_stable: dict[str, Any], *, policy: Policy) -> None:
    """Begin the canary for `event`'s revision, superseding any rollout of the same app."""
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    store = RolloutStore(svc.redis)
    shells: list[_Shell] = []
    with store.locked(key):
        previous = store.load(key)
        if previous is not None and not engine.is_finished(previous.state):
            same_template = previous.context.get("template_hash") == traffic.template_hash(
                plan.deployment)
            if engine.continues_with(previous.state, event.merge_sha, same_template):
                return
            previous.context["superseded_by_pr"] = f"#{event.number}"
            shells.append(_run(svc, store, key, previous, m.NewRevision(event.merge_sha,
                                                                        event.number)))
        store.drop_held(key)  # a newer template rolls out: a held older merge must not start
        record = _new_record(event, app, plan, live_stable, policy)
        svc.redis.sadd(_pr_index(event.repo, event.number), key)
        shells.append(_run(svc, store, key, record, m.Start()))
    for shell in shells:
        shell.after_release(key)


def hold(svc: services.Services, event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
         live_stable: dict[str, Any], *, policy: Policy) -> None:
    """Remember a merge held back because it re-lands an aborted template, so that `/retry`
    (on it, or on the PR that aborted) can start its canary later."""
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    store = RolloutStore(svc.redis)
    with store.locked(key):
        store.save_held(key, _new_record(event, app, plan, live_stable, policy))
        svc.redis.sadd(_pr_index(event.repo, event.number), key)


def _new_record(event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
                live_stable: dict[str, Any], policy: Policy) -> RolloutRecord:
    """A rollout of `event`'s revision that has not started yet."""
    replicas = traffic.rollout_replicas(plan.deployment, live_stable)
    snapshot = traffic.stable_at(live_stable, traffic.replicas_of(live_stable))
    context = {
        "repo": asdict(event.repo), "number": event.number, "title": event.title,
        "url": event.url, "base_branch": event.base_branch, "app": app.name,
        "cluster": app.cluster, "namespace": plan.namespace, "deployment": plan.deployment,
        "stable": snapshot, "replicas": replicas,
        "template_hash": traffic.template_hash(plan.deployment),
        # The repository's boundary travels with the rollout: every later write by a tick or
        # a command is made as the same owner, impersonating the same account.
        "impersonate": policy.impersonate_user, "adopt": policy.adopt,
        "stable_revision": (live_stable["metadata"].get("labels") or {}).get(
            "coalmine.dev/revision"),
    }
    state = m.new_state(app=app.name, revision=event.merge_sha,
                        stable_revision=context["stable_revision"], pr=event.number,
                        strategy=plan.strategy, templates=plan.templates)
    return RolloutRecord(state, context)


def running_rollout(svc: services.Services, repo: RepoRef, app: str) -> RolloutRecord | None:
    """The app's unfinished rollout, if any."""
    record = RolloutStore(svc.redis).load(rollout_key(repo.forge, repo.full_name, app))
    return record if record is not None and not engine.is_finished(record.state) else None


def supersede_without_canary(svc: services.Services, event: MergedPullRequest,
                             app: AppConfig, plan: CanaryPlan, policy: Policy) -> bool:
    """A merge that needs no canary (its template equals stable) ends any running rollout."""
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    store = RolloutStore(svc.redis)
    with store.locked(key):
        store.drop_held(key)  # this merge applies the workload: a held older one must not
        previous = store.load(key)
        if previous is None or engine.continues_with(
                previous.state, event.merge_sha,
                previous.context.get("template_hash") == traffic.template_hash(plan.deployment)):
            return False
        previous.context["superseded_by_pr"] = f"#{event.number}"
        shell = _run(svc, store, key, previous, m.NewRevision(
            event.merge_sha, event.number, starts_canary=False))
    shell.after_release(key)
    return True


def tick(key: str, version: int | None) -> None:
    """RQ job: time has come for a rollout; a tick for an older version does nothing."""
    dispatch(key, m.Tick(version))


def measured(key: str, run_id: str, metric: str, measurement: Measurement) -> None:
    """RQ job: a measurement taken in the background; a stale one (its run was stopped or
    replaced meanwhile) changes nothing."""
    dispatch(key, m.MeasurementTaken(run_id, metric, measurement))


def dispatch(key: str, event: m.Event, *, pr: int | None = None) -> RolloutRecord | None:
    """Feed one event (a tick, a command) to a stored rollout under its lock.

    `pr` is the PR a command was typed on: checked under the lock, since another merge may have
    superseded the rollout between the command's lookup and now; a command never acts on the
    rollout of another PR. None (ticks, polls) skips the check. A `/retry` from a PR that holds
    a claim on the app's aborted-template hold clears it (see `_retry_hold`).
    """
    svc = services.current()
    store = RolloutStore(svc.redis)
    with store.locked(key):
        record = store.load(key)
        if record is not None and (pr is None or record.state.pr == pr):
            shell = _run(svc, store, key, record, event)
        elif isinstance(event, m.Retry) and pr is not None and pr in store.hold_claims(key):
            shell = _retry_hold(svc, store, key, record, pr, event.user)
        else:
            shell = None
    # The forge is told after the lock is released: slow I/O never runs under it.
    if shell is not None:
        shell.after_release(key)
        return shell.record
    if record is None:
        log.info("no rollout %s; %s ignored", key, type(event).__name__)
        return None
    log.info("rollout %s now belongs to #%s; %s from #%s ignored", key, record.state.pr,
             type(event).__name__, pr)
    repo = RepoRef(**record.context["repo"])
    who = f"@{event.user} " if getattr(event, "user", None) else ""
    svc.forge(repo).comment(repo, pr, f"{who}your command changed nothing: the rollout of "
                            f"`{record.state.app}` now belongs to #{record.state.pr}.")
    return None


def _retry_hold(svc: services.Services, store: RolloutStore, key: str,
                current: RolloutRecord | None, pr: int, user: str) -> _Shell | None:
    """`/retry` from the PR that aborted the app's template, or from one held back since,
    when the aborted rollout is no longer the app's latest: the hold is cleared and the latest
    held-back merge of that template starts its canary, if the cluster still runs the stable
    it was held against. Called under the rollout's lock."""
    if current is not None and not engine.is_finished(current.state):
        return _reply(svc, current, pr, f"@{user} `/retry` changed nothing: the rollout of "
                      f"`{current.state.app}` by #{current.state.pr} is running.")
    held = store.load_held(key)
    store.clear_hold(key)
    if held is None:
        return _reply(svc, current, pr, f"@{user} the hold on the aborted version is cleared: "
                      "the next merge that lands it runs its canary.")
    ctx = held.context
    name = ctx["deployment"]["metadata"]["name"]
    live = svc.cluster(ctx.get("cluster"), impersonate=ctx.get("impersonate")).get(
        "apps/v1", "Deployment", ctx["namespace"], name)
    if live is None or traffic.template_hash(live) != traffic.template_hash(ctx["stable"]):
        return _reply(svc, held, pr, f"@{user} the hold on the aborted version is cleared, but "
                      f"`{name}` changed since #{held.state.pr} was held back: nothing started.")
    svc.redis.sadd(_pr_index(RepoRef(**ctx["repo"]), held.state.pr or pr), key)
    shell = _run(svc, store, key, held, m.Start())
    if held.state.pr != pr:
        shell.replies_elsewhere.append((pr, (
            f"@{user} the hold is cleared: the canary of {held.state.revision[:7]} from "
            f"#{held.state.pr}, the latest merge of this version, starts.")))
    return shell


def _reply(svc: services.Services, record: RolloutRecord | None, pr: int,
           text: str) -> _Shell | None:
    """A shell that only answers on `pr` after the lock (nothing else to do)."""
    if record is None:
        return None
    shell = _Shell(svc, record.context, record.state, record=record)
    shell.replies_elsewhere.append((pr, text))
    return shell


def health_poll(key: str, revision: str, attempt: int, weight: int) -> None:
    """RQ job of earlier versions (health re-polls are due ticks now): kept so such jobs still
    scheduled in Redis run; a tick for the current version does what they did."""
    dispatch(key, m.Tick(None))


def restore(key: str, revision: str) -> None:
    """RQ job: retry putting stable back after an abort whose restore the cluster refused."""
    svc = services.current()
    store = RolloutStore(svc.redis)
    with store.locked(key):
        record = store.load(key)
        if record is None or record.state.revision != revision:
            return
        if "restore_pending" not in record.context:
            return
        shell = _Shell(svc, record.context, record.state)
        shell.restore_stable()
        store.save(key, RolloutRecord(record.state, shell.context),
                   engine.next_wakeup(record.state))
        if shell.restore_retry:
            svc.queue.enqueue_at(time.time() + RESTORE_RETRY_S, restore, key, revision)


def resume_all(svc: services.Services, overdue_by: float | None = None) -> int:
    """Re-arm the tick of every rollout waiting on time: all of them at start-up, then
    periodically those overdue by `overdue_by` s (a tick lost between a save and its
    scheduling). Identical schedule entries collapse and stale ticks do nothing. Health
    re-polls are due ticks too, so they are re-armed with them."""
    store = RolloutStore(svc.redis)
    now = time.time()
    count = 0
    for key, due in store.due():
        if overdue_by is not None and due > now - overdue_by:
            continue
        record = store.load(key)
        if record is None or engine.is_finished(record.state):
            continue
        svc.queue.enqueue_at(max(due, now), tick, key, record.state.version)
        count += 1
    return count


def rollouts_of_pr(svc: services.Services, repo: RepoRef, number: int) -> dict[str, str]:
    """app name → rollout key for the rollouts that PR `number`'s merge started, and for the
    apps where it holds a claim on an aborted template's hold (so `/retry` reaches them)."""
    store = RolloutStore(svc.redis)
    found = {}
    for raw in svc.redis.smembers(_pr_index(repo, number)):
        key = raw.decode() if isinstance(raw, bytes) else raw
        record = store.load(key)
        if record is not None and record.state.pr == number:
            found[record.state.app] = key
        elif number in store.hold_claims(key):
            held = store.load_held(key)
            app = (held or record).state.app if (held or record) else key.rpartition(":")[2]
            found[app] = key
    return found


# --------------------------------------------------------------------------- the loop


def _run(svc: services.Services, store: RolloutStore, key: str, record: RolloutRecord,
         event: m.Event) -> _Shell:
    """Advance and save under the caller's lock; returns the shell whose `after_release`
    carries out the slow part once the lock is released."""
    shell = _Shell(svc, record.context, record.state)
    state, actions = engine.advance(record.state, event, time.time())
    pending = deque(actions)
    follow_ups = 0
    while pending:
        action = pending.popleft()
        shell.state = state
        for follow in shell.execute(action):
            follow_ups += 1
            if follow_ups > MAX_FOLLOW_UPS:
                raise RuntimeError(f"rollout {key}: too many follow-up events")
            state, more = engine.advance(state, follow, time.time())
            pending.extend(more)
    if isinstance(event, m.Retry) and state.phase != "Aborted":
        store.clear_hold(key)
    record = RolloutRecord(state, shell.context)
    store.save(key, record, engine.next_wakeup(state))
    shell.state = state
    shell.record = record
    shell.schedule(key)
    return shell


@dataclass
class _Shell:
    """Carries out actions: cluster ones at once, under the lock; measurements, forge writes
    and replies only after the state is saved and the lock released (`after_release`)."""

    svc: services.Services
    context: dict[str, Any]
    state: m.RolloutState
    record: RolloutRecord | None = None
    status: m.PostStatus | None = None
    comment: bool = False
    ticks: list[m.ScheduleTick] = field(default_factory=list)
    measures: list[m.Measure] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    replies_elsewhere: list[tuple[int, str]] = field(default_factory=list)
    revert: bool = False
    restore_retry: bool = False

    @property
    def repo(self) -> RepoRef:
        return RepoRef(**self.context["repo"])

    @property
    def forge(self) -> Forge:
        return self.svc.forge(self.repo)

    def execute(self, action: m.Action) -> list[m.Event]:
        if isinstance(action, m.SetWeight):
            return self.set_weight(action.weight)
        if isinstance(action, m.RestoreStable):
            return self.restore_stable()
        if isinstance(action, m.RemoveCanary):
            return self.remove_canary()
        if isinstance(action, m.Complete):
            return self.complete()
        if isinstance(action, m.CheckHealth):
            return [self.health_event(completing=self.state.phase == "Completing")]
        if isinstance(action, m.Measure):
            self.measures.append(action)
        elif isinstance(action, m.PostStatus):
            self.status = action
        elif isinstance(action, m.UpdateComment):
            self.comment = True
        elif isinstance(action, m.ScheduleTick):
            self.ticks.append(action)
        elif isinstance(action, m.OpenRevertPR):
            self.revert = True
            self.context["revert"] = {"state": "pending"}
            RolloutStore(self.svc.redis).hold(self._key(), self.context["template_hash"],
                                              self.state.pr)
        elif isinstance(action, m.CommandRejected):
            who = f"@{action.user} " if action.user else ""
            self.replies.append(f"{who}`/{action.command}` changed nothing: {action.reason}")
        else:
            assert_never(action)  # every action the engine emits is carried out
        return []

    # -- cluster ----------------------------------------------------------------------------
    @property
    def cluster(self):
        return self.svc.cluster(self.context.get("cluster"),
                                impersonate=self.context.get("impersonate"))

    def _apply(self, obj: dict[str, Any], revision: str | None) -> None:
        repo = self.repo
        assert repo.repo_id is not None, "rollouts start from verified merges"
        owner = Owner(repo.forge, repo.repo_id, repo.full_name, self.context["app"])
        self.cluster.apply([obj], app=self.context["app"], revision=revision or "unknown",
                           default_namespace=self.context["namespace"], owner=owner,
                           adopt=bool(self.context.get("adopt")))

    def set_weight(self, weight: int) -> list[m.Event]:
        stable_n, canary_n = engine.split_replicas(weight, self.context["replicas"])
        deployment = self.context["deployment"]
        canary = traffic.canary_ref(deployment, self.context["namespace"])
        try:
            if canary_n > 0:
                self._apply(traffic.canary_of(deployment, canary_n, self.state.revision),
                            self.state.revision)
            else:
                self.cluster.delete(canary.api_version, canary.kind, canary.namespace, canary.name)
            # Only the replica count moves: the scale subresource leaves Git's fields alone.
            self.cluster.scale(canary.namespace, deployment["metadata"]["name"], stable_n)
        except ClusterError as exc:
            # A passing API hiccup is no verdict on the release: retry; the deadline decides.
            return [m.WorkloadHealth(False, f"the cluster refused the change: {exc}", weight)]
        return [self.health_event(completing=False)]

    def restore_stable(self) -> list[m.Event]:
        """After an abort: stable back to its own template at full size, then the canary gone.

        Stable comes first so capacity never dips; a failure is retried by a job until it
        succeeds, because leaving a bad canary serving must not depend on the next tick.
        """
        deployment = self.context["deployment"]
        ns = self.context["namespace"]
        canary = traffic.canary_ref(deployment, ns)
        try:
            if self.context.get("stable_touched"):
                self._apply(traffic.stable_at(self.context["stable"], self.context["replicas"]),
                            self.context.get("stable_revision"))
            self.cluster.scale(ns, deployment["metadata"]["name"], self.context["replicas"])
            self.cluster.delete(canary.api_version, canary.kind, canary.namespace, canary.name)
        except ClusterError as exc:
            self.context["restore_pending"] = str(exc)
            self.restore_retry = True
            return []
        self.context.pop("restore_pending", None)
        return []

    def remove_canary(self) -> list[m.Event]:
        canary = traffic.canary_ref(self.context["deployment"], self.context["namespace"])
        self.cluster.delete(canary.api_version, canary.kind, canary.namespace, canary.name)
        return []

    def complete(self) -> list[m.Event]:
        self.context["stable_touched"] = True
        stable = traffic.as_stable(self.context["deployment"])
        stable["spec"].setdefault("replicas", self.context["replicas"])
        try:
            self._apply(stable, self.state.revision)
        except ClusterError as exc:
            return [m.WorkloadHealth(False, f"the cluster refused the new stable: {exc}", 100)]
        return [self.health_event(completing=True)]

    def health_event(self, *, completing: bool) -> m.Event:
        """Judge the tracks now; when not yet healthy, the engine asks again (CheckHealth)."""
        deployment = self.context["deployment"]
        ns = self.context["namespace"]
        name = deployment["metadata"]["name"]
        canary = traffic.canary_ref(deployment, ns)
        try:
            stable_obj = self.cluster.get("apps/v1", "Deployment", ns, name)
            checks = [("stable", stable_obj)]
            if not completing and self.state.weight > 0:
                checks.append(("canary", self.cluster.get("apps/v1", "Deployment", ns, canary.name)))
        except ClusterError as exc:
            return m.WorkloadHealth(False, f"cluster unreachable: {exc}", self.state.weight)
        problems = []
        for track, obj in checks:
            health = assess(obj)
            if health.failed:
                return m.WorkloadHealth(False, f"{track} is {health.status}: {health.message}",
                                        self.state.weight, failed=True)
            if not health.healthy:
                problems.append(f"{track}: {health.message or health.status}")
        if completing and stable_obj is not None:
            live_hash = (stable_obj["metadata"].get("annotations") or {}).get(
                traffic.TEMPLATE_HASH_ANNOTATION)
            if live_hash != self.context["template_hash"]:
                problems.append("stable: new template not applied yet")
        if problems:
            return m.WorkloadHealth(False, "; ".join(problems), self.state.weight)
        if completing:
            try:
                self.cluster.delete(canary.api_version, canary.kind, canary.namespace, canary.name)
            except ClusterError as exc:
                return m.WorkloadHealth(False, f"canary not removed yet: {exc}", self.state.weight)
        return m.WorkloadHealth(True, "healthy", self.state.weight)

    # -- after the save -----------------------------------------------------------------------
    def _key(self) -> str:
        return rollout_key(self.context["repo"]["forge"], self.context["repo"]["full_name"],
                           self.context["app"])

    def schedule(self, key: str) -> None:
        """Queue what follows the save (Redis only, so still under the lock)."""
        queue = self.svc.queue
        if self.ticks:
            last = self.ticks[-1]
            queue.enqueue_at(last.at, tick, key, last.version)
        if self.revert:
            queue.enqueue(open_revert, key, self.state.revision, 0)
        if self.restore_retry:
            queue.enqueue_at(time.time() + RESTORE_RETRY_S, restore, key, self.state.revision)

    def after_release(self, key: str) -> None:
        """The slow part, with the rollout's lock released: measurements, then the forge."""
        settings = self.svc.settings
        for action in self.measures:
            MEASUREMENTS.submit(functools.partial(
                _measure_and_hand_back, self.svc.queue, key, action, settings.prometheus_url,
                settings.egress))
        if self.record is not None and (self.status is not None or self.comment):
            _report(self.svc, key, self.record, self.status is not None)
        forge, repo, number = self.forge, self.repo, self.context["number"]
        for reply in self.replies:
            forge.comment(repo, number, reply)
        for pr, reply in self.replies_elsewhere:
            forge.comment(repo, pr, reply)


def _measure_and_hand_back(queue: Any, key: str, action: m.Measure, prometheus_url: str | None,
                           egress: Any) -> None:
    """On a measuring thread: take the measurement, then queue its result as a job, which
    feeds it to the engine under the rollout's lock like any other event."""
    result = measure(action.provider, action.success_condition or None,
                     action.failure_condition or None, prometheus_url=prometheus_url,
                     egress=egress, now=time.time())
    queue.enqueue(measured, key, action.run_id, action.metric, result)


def _report(svc: services.Services, key: str, record: RolloutRecord, post_status: bool) -> None:
    """Post the snapshot's status and re-render its comment section, unless a newer snapshot of
    this rollout was reported already (reports run after the lock, so they may overtake each
    other); the PR's report lock makes the check and the post one step."""
    ctx, state = record.context, record.state
    repo = RepoRef(**ctx["repo"])
    store = RolloutStore(svc.redis)
    with store.locked(report_lock_key(repo.forge, repo.full_name, ctx["number"])):
        if post_status and store.claim_report(key, state.revision, "status", record.seq):
            posted = state.posted_status or engine.status(state)
            description = posted[1]
            if state.phase == "Superseded" and state.superseded_by:
                description = (f"superseded by "
                               f"{ctx.get('superseded_by_pr') or state.superseded_by[:7]}")
            outbox.post_status(svc, repo, ctx["number"], state.revision,
                               status.context(ctx["app"]), posted[0],  # type: ignore[arg-type]
                               status.clip(description), _target_url(svc, ctx, state))
        if store.claim_report(key, state.revision, "section", record.seq):
            publish_section(svc, ctx, state)


def _target_url(svc: services.Services, ctx: dict[str, Any], state: m.RolloutState) -> str:
    repo = ctx["repo"]
    return svc.settings.public_url + deployment_path(
        repo["forge"], repo["full_name"], state.revision, ctx["app"])


def publish_section(svc: services.Services, context: dict[str, Any],
                    state: m.RolloutState) -> None:
    """Write the rollout into its app's section of the PR comment and re-render the comment."""
    repo = RepoRef(**context["repo"])
    number = context["number"]
    sections = comment.load_sections(svc.redis, repo, number)
    section = sections.get(context["app"], {"app": context["app"], "sha": state.revision})
    posted = state.posted_status or engine.status(state)
    section.update({
        "state": posted[0], "summary": posted[1], "rollout": state.to_dict(),
        "revert": context.get("revert"),
    })
    comment.save_section(svc.redis, repo, number, context["app"], section)
    # People read the comment when the rollout waits for them or has ended: those edits go out
    # at once; progress in between is batched.
    urgent = engine.is_finished(state) or engine.waiting_on_people(state)
    outbox.post_comment(svc, repo, number, state.revision, urgent=urgent)


# --------------------------------------------------------------------------- revert PR


def open_revert(key: str, revision: str, attempt: int = 0) -> None:
    """RQ job: push `coalmine/revert-<sha>` reverting the merge and open a PR for it, once.

    Failures (forge or git away) are retried with growing delays and shown in the comment;
    an earlier revert PR that was closed unmerged does not count as opened.
    """
    svc = services.current()
    store = RolloutStore(svc.redis)
    record = store.load(key)
    if record is None or record.state.revision != revision:
        return
    try:
        with leased(svc.redis, open_revert, key, revision, attempt):
            outcome = _revert(svc, record)
    except GivenUp as exc:  # its worker died each time: shown, not tried again
        outcome = {"state": "failed", "reason": str(exc)[:300]}
    except (ForgeError, GitError, OSError) as exc:  # report it and try again later
        reason = services.redactor().redact(f"{type(exc).__name__}: {exc}")
        log.warning("revert PR for %s failed (attempt %d): %s", revision[:7], attempt + 1, reason)
        outcome = {"state": "failed", "reason": reason[:300]}
        if attempt + 1 < REVERT_ATTEMPTS:
            svc.queue.enqueue_at(time.time() + REVERT_RETRY_S * 2**attempt, open_revert, key,
                                 revision, attempt + 1)
    with store.locked(key):
        record = store.load(key)
        if record is None or record.state.revision != revision:
            return
        record.context["revert"] = outcome
        store.save(key, record, engine.next_wakeup(record.state))
    _report(svc, key, record, post_status=False)  # the forge is told after the lock


def _revert(svc: services.Services, record: RolloutRecord) -> dict[str, Any]:
    from bot.gitrepo import repo_key

    ctx, state = record.context, record.state
    revision = state.revision
    repo = RepoRef(**ctx["repo"])
    forge = svc.forge(repo)
    branch = f"coalmine/revert-{revision[:7]}"
    existing = forge.find_pull_request(repo, branch)
    if existing is not None and existing.state != "closed":
        return {"state": "opened", "url": existing.url, "number": existing.number}
    result = svc.mirrors.create_revert_branch(
        repo_key(repo), forge.authenticated_clone_url(repo), ctx["base_branch"], revision,
        branch, "Coalmine", "coalmine@users.noreply.github.com")
    if result.conflict:
        files = ", ".join(f"`{f}`" for f in result.files) or "unknown files"
        forge.comment(repo, ctx["number"], (
            f"Coalmine could not open a revert PR for {revision[:7]}: reverting it conflicts "
            f"with later changes on `{ctx['base_branch']}` in {files}. The cluster runs the "
            "stable version; please revert the change by hand so Git matches it again."))
        return {"state": "conflict", "files": list(result.files)}
    if result.outcome == "nothing_to_revert":
        return {"state": "not needed", "reason": "the change is already undone"}
    title = f'Revert "{ctx.get("title") or revision[:7]}"'
    pr = forge.open_pull_request(repo, branch, ctx["base_branch"], title[:250],
                                 _revert_body(ctx, state), [REVERT_LABEL])
    return {"state": "opened", "url": pr.url, "number": pr.number}


def _revert_body(ctx: dict[str, Any], state: m.RolloutState) -> str:
    from bot.report.markdown import escape

    lines = [
        (f"Coalmine aborted the rollout of `{ctx['app']}` at {state.revision[:7]} from "
        f"{ctx.get('url') or '#' + str(ctx['number'])} and restored the stable version."),
        "",
        f"**Reason:** {escape(state.aborted_reason or 'aborted')}",
        "",
        ("Merging this PR makes Git describe what runs again (it deploys the stable version "
        "without a canary). To try the change again instead, comment `/retry` on the original "
        "PR and close this one."),
    ]
    if state.evidence:
        lines += ["", "**Failing measurements:**", ""]
        lines += [f"> {escape(line, 1000)}" for line in state.evidence]
    return "\n".join(lines)


def _pr_index(repo: RepoRef, number: int) -> str:
    return f"coalmine:pr-rollouts:{repo.forge}:{repo.full_name}:{number}"
