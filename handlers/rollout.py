"""The imperative shell around the pure rollout engine.

Each job takes the rollout's lock, loads its record, feeds the engine one event, carries out the
engine's actions (which may produce further events: a scale answers with health, a measurement
with its result), saves the record, and only then talks to the forge and schedules the next
tick. A crash before the save loses nothing: the previous tick or the start-up sweep repeats
the step, and every action is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from bot import services
from bot.analysis.measure import measure
from bot.cluster.health import assess
from bot.cluster.model import ClusterError, Owner
from bot.config import AppConfig
from bot.deployments import deployment_path
from bot.events import MergedPullRequest
from bot.forge.base import Forge, ForgeError, RepoRef
from bot.gitrepo import GitError
from bot.leases import leased
from bot.policy import Policy
from bot.report import comment, status
from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.plan import CanaryPlan
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from handlers import outbox

log = logging.getLogger(__name__)
HEALTH_POLL_S = 1.0
RESTORE_RETRY_S = 5.0
REVERT_RETRY_S = 30.0
REVERT_ATTEMPTS = 8
MAX_FOLLOW_UPS = 200  # a guard against an engine/shell loop, never reached in practice
REVERT_LABEL = "coalmine-revert"


def aborted_key(key: str) -> str:
    return f"{key}:aborted-template"


# --------------------------------------------------------------------------- entry points


def start(svc: services.Services, event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
          live_stable: dict[str, Any], *, policy: Policy) -> None:
    """Begin the canary for `event`'s revision, superseding any rollout of the same app."""
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    store = RolloutStore(svc.redis)
    with store.locked(key):
        previous = store.load(key)
        if previous is not None and not engine.is_finished(previous.state):
            if previous.state.revision == event.merge_sha or (
                    previous.context.get("template_hash") == traffic.template_hash(plan.deployment)):
                return  # the same merge again, or one that left this workload alone: carry on
            previous.context["superseded_by_pr"] = f"#{event.number}"
            _run(svc, store, key, previous, m.NewRevision(event.merge_sha, event.number))
        git_replicas = plan.deployment.get("spec", {}).get("replicas")
        # An HPA-managed workload leaves replicas out of Git: keep the live count then.
        replicas = traffic.replicas_of(live_stable if git_replicas is None else plan.deployment)
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
        svc.redis.sadd(_pr_index(event.repo, event.number), key)
        _run(svc, store, key, RolloutRecord(state, context), m.Start())


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
        previous = store.load(key)
        if previous is None or engine.is_finished(previous.state):
            return False
        if previous.context.get("template_hash") == traffic.template_hash(plan.deployment):
            return False  # the rollout is completing this very template: let it finish
        previous.context["superseded_by_pr"] = f"#{event.number}"
        _run(svc, store, key, previous, m.NewRevision(event.merge_sha, event.number))
        canary = traffic.canary_ref(plan.deployment, plan.namespace)
        svc.cluster(app.cluster, impersonate=policy.impersonate_user).delete(
            canary.api_version, canary.kind, canary.namespace,
                                        canary.name)
        return True


def tick(key: str, version: int | None) -> None:
    """RQ job: time has come for a rollout; a tick for an older version does nothing."""
    dispatch(key, m.Tick(version))


def dispatch(key: str, event: m.Event, *, pr: int | None = None) -> RolloutRecord | None:
    """Feed one event (a tick, a command) to a stored rollout under its lock.

    `pr` is the PR a command was typed on: checked under the lock, since another merge may have
    superseded the rollout between the command's lookup and now; a command never acts on the
    rollout of another PR. None (ticks, polls) skips the check.
    """
    svc = services.current()
    store = RolloutStore(svc.redis)
    with store.locked(key):
        record = store.load(key)
        if record is None:
            log.info("no rollout %s; %s ignored", key, type(event).__name__)
            return None
        if pr is None or record.state.pr == pr:
            return _run(svc, store, key, record, event)
    # The forge is told after the lock is released: slow I/O never runs under it.
    log.info("rollout %s now belongs to #%s; %s from #%s ignored", key, record.state.pr,
             type(event).__name__, pr)
    repo = RepoRef(**record.context["repo"])
    who = f"@{event.user} " if getattr(event, "user", None) else ""
    svc.forge(repo).comment(repo, pr, f"{who}your command changed nothing: the rollout of "
                            f"`{record.state.app}` now belongs to #{record.state.pr}.")
    return None


def health_poll(key: str, revision: str, attempt: int, weight: int) -> None:
    """RQ job: check the workloads after a scale until they are healthy (or the state moves)."""
    svc = services.current()
    store = RolloutStore(svc.redis)
    with store.locked(key):
        record = store.load(key)
        if record is None:
            return
        s = record.state
        if (s.revision, s.attempt, s.weight) != (revision, attempt, weight) or not s.awaiting_health:
            return
        shell = _Shell(svc, record.context, s)
        event = shell.health_event(completing=s.phase == "Completing")
        _run(svc, store, key, record, event)


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
    scheduling). Identical schedule entries collapse and stale ticks do nothing."""
    store = RolloutStore(svc.redis)
    now = time.time()
    count = 0
    for key, due in store.due():
        if overdue_by is not None and due > now - overdue_by:
            continue
        record = store.load(key)
        if record is None or engine.is_finished(record.state):
            continue
        s = record.state
        svc.queue.enqueue_at(max(due, now), tick, key, s.version)
        if s.awaiting_health:
            svc.queue.enqueue_at(now, health_poll, key, s.revision, s.attempt, s.weight)
        count += 1
    return count


def rollouts_of_pr(svc: services.Services, repo: RepoRef, number: int) -> dict[str, str]:
    """app name → rollout key for the rollouts that PR `number`'s merge started."""
    found = {}
    for raw in svc.redis.smembers(_pr_index(repo, number)):
        key = raw.decode() if isinstance(raw, bytes) else raw
        record = RolloutStore(svc.redis).load(key)
        if record is not None and record.state.pr == number:
            found[record.state.app] = key
    return found


# --------------------------------------------------------------------------- the loop


def _run(svc: services.Services, store: RolloutStore, key: str, record: RolloutRecord,
         event: m.Event) -> RolloutRecord:
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
        svc.redis.delete(aborted_key(key))
    record = RolloutRecord(state, shell.context)
    store.save(key, record, engine.next_wakeup(state))
    shell.state = state
    shell.after_save(key)
    return record


@dataclass
class _Shell:
    """Carries out actions; forge writes and scheduling wait until the state is saved."""

    svc: services.Services
    context: dict[str, Any]
    state: m.RolloutState
    status: m.PostStatus | None = None
    comment: bool = False
    ticks: list[m.ScheduleTick] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    revert: bool = False
    poll: tuple[str, int, int] | None = None
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
        if isinstance(action, m.Complete):
            return self.complete()
        if isinstance(action, m.Measure):
            result = measure(action.provider, action.success_condition or None,
                             action.failure_condition or None,
                             prometheus_url=self.svc.settings.prometheus_url,
                             egress=self.svc.settings.egress, now=time.time())
            return [m.MeasurementTaken(action.run_id, action.metric, result)]
        if isinstance(action, m.PostStatus):
            self.status = action
        elif isinstance(action, m.UpdateComment):
            self.comment = True
        elif isinstance(action, m.ScheduleTick):
            self.ticks.append(action)
        elif isinstance(action, m.OpenRevertPR):
            self.revert = True
            self.context["revert"] = {"state": "pending"}
            self.svc.redis.set(aborted_key(self._key()), self.context["template_hash"])
        elif isinstance(action, m.CommandRejected):
            who = f"@{action.user} " if action.user else ""
            self.replies.append(f"{who}`/{action.command}` changed nothing: {action.reason}")
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
        if self.state.phase in m.TERMINAL_PHASES:
            return self.restore_stable()
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
            self.poll = (self.state.revision, self.state.attempt, self.state.weight)
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

    def complete(self) -> list[m.Event]:
        self.context["stable_touched"] = True
        stable = traffic.as_stable(self.context["deployment"])
        stable["spec"].setdefault("replicas", self.context["replicas"])
        try:
            self._apply(stable, self.state.revision)
        except ClusterError as exc:
            self.poll = (self.state.revision, self.state.attempt, self.state.weight)
            return [m.WorkloadHealth(False, f"the cluster refused the new stable: {exc}", 100)]
        return [self.health_event(completing=True)]

    def health_event(self, *, completing: bool) -> m.Event:
        """Judge the tracks now; when not yet healthy, poll again shortly."""
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
            self.poll = (self.state.revision, self.state.attempt, self.state.weight)
            return m.WorkloadHealth(False, f"cluster unreachable: {exc}", self.state.weight)
        problems = []
        for track, obj in checks:
            health = assess(obj)
            if health.failed:
                return m.Abort(None, f"{track} is {health.status}: {health.message}")
            if not health.healthy:
                problems.append(f"{track}: {health.message or health.status}")
        if completing and stable_obj is not None:
            live_hash = (stable_obj["metadata"].get("annotations") or {}).get(
                traffic.TEMPLATE_HASH_ANNOTATION)
            if live_hash != self.context["template_hash"]:
                problems.append("stable: new template not applied yet")
        if problems:
            self.poll = (self.state.revision, self.state.attempt, self.state.weight)
            return m.WorkloadHealth(False, "; ".join(problems), self.state.weight)
        if completing:
            try:
                self.cluster.delete(canary.api_version, canary.kind, canary.namespace, canary.name)
            except ClusterError as exc:
                self.poll = (self.state.revision, self.state.attempt, self.state.weight)
                return m.WorkloadHealth(False, f"canary not removed yet: {exc}", self.state.weight)
        return m.WorkloadHealth(True, "healthy", self.state.weight)

    # -- after the save -----------------------------------------------------------------------
    def _key(self) -> str:
        return rollout_key(self.context["repo"]["forge"], self.context["repo"]["full_name"],
                           self.context["app"])

    def after_save(self, key: str) -> None:
        queue = self.svc.queue
        if self.ticks:
            last = self.ticks[-1]
            queue.enqueue_at(last.at, tick, key, last.version)
        if self.poll is not None and self.state.awaiting_health:
            queue.enqueue_at(time.time() + HEALTH_POLL_S, health_poll, key, *self.poll)
        if self.revert:
            queue.enqueue(open_revert, key, self.state.revision, 0)
        if self.restore_retry:
            queue.enqueue_at(time.time() + RESTORE_RETRY_S, restore, key, self.state.revision)
        forge, repo, number = self.forge, self.repo, self.context["number"]
        if self.status is not None:
            description = self.status.description
            if self.state.phase == "Superseded" and self.state.superseded_by:
                description = f"superseded by {self.context.get('superseded_by_pr') or self.state.superseded_by[:7]}"
            outbox.post_status(self.svc, repo, number, self.status.sha or self.state.revision,
                               status.context(self.context["app"]), self.status.state,
                               status.clip(description), self._target_url())
        if self.comment or self.status is not None:
            publish_section(self.svc, self.context, self.state)
        for reply in self.replies:
            forge.comment(repo, number, reply)

    def _target_url(self) -> str:
        repo = self.context["repo"]
        return self.svc.settings.public_url + deployment_path(
            repo["forge"], repo["full_name"], self.state.revision, self.context["app"])


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
        publish_section(svc, record.context, record.state)


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
