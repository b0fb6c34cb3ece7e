"""The rollout use case: the jobs that start, advance and steer an app's canary.

Each job takes the rollout's lock, loads its record, feeds the engine one event through
`handlers.rollout_shell.run` (which carries out the cluster actions and saves), and releases the
lock; only then does slow I/O run: measurements go to background threads whose results come back
as jobs feeding `MeasurementTaken` under the lock again (a result for a run that an /abort or
/retry replaced is dropped by the engine, which matches it by run id), and statuses, comments
and replies go to the forge (`handlers.rollout_report`). So a metric that never answers or a
slow forge never holds the rollout: an /abort takes effect at once. A crash before the save
loses nothing: the previous tick or the start-up sweep repeats the step, and every action is
idempotent. The revert PR after an abort is `handlers.revert`.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from bot import services
from bot.analysis.measure import BackgroundMeasurements
from bot.analysis.measurement import Measurement
from bot.config import AppConfig
from bot.events import MergedPullRequest
from bot.logs import bind_log_context, revision_job, rollout_job
from bot.policy import Policy
from bot.refs import RepoRef
from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.plan import CanaryPlan
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from handlers import revert, rollout_measure
from handlers.rollout_report import report
from handlers.rollout_shell import Shell, WorkloadCluster, run

log = logging.getLogger(__name__)
RESTORE_RETRY_S = 5.0
REPORT_GRACE_S = 20.0  # a final report not made by then is taken as lost
# Process-wide, like the adapters: measurements outlive the job that asked for them.
MEASUREMENTS = BackgroundMeasurements()


# --------------------------------------------------------------------------- entry points


def start(svc: services.Services, event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
          live_stable: dict[str, Any], *, policy: Policy) -> None:
    """Begin the canary for `event`'s revision, superseding any rollout of the same app."""
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    store = RolloutStore(svc.redis)
    shells: list[Shell] = []
    with store.locked(key):
        previous = store.load(key)
        if previous is not None and not engine.is_finished(previous.state):
            same_template = previous.context.template_hash == traffic.template_hash(
                plan.deployment)
            if engine.continues_with(previous.state, event.merge_sha, same_template):
                return
            previous.context.superseded_by_pr = f"#{event.number}"
            shells.append(run(_cluster(svc, previous.context), store, key, previous,
                              m.NewRevision(event.merge_sha, event.number)))
        store.drop_held(key)  # a newer template rolls out: a held older merge must not start
        record = _new_record(event, app, plan, live_stable, policy)
        store.index_pr(event.repo.forge, event.repo.full_name, event.number, key)
        shells.append(run(_cluster(svc, record.context), store, key, record, m.Start()))
        for shell in shells:
            _schedule(svc, shell, key)
    for shell in shells:
        _after_release(svc, shell, key)


def hold(svc: services.Services, event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
         live_stable: dict[str, Any], *, policy: Policy) -> None:
    """Remember a merge held back because it re-lands an aborted template, so that `/retry`
    (on it, or on the PR that aborted) can start its canary later."""
    key = rollout_key(event.repo.forge, event.repo.full_name, app.name)
    store = RolloutStore(svc.redis)
    with store.locked(key):
        store.save_held(key, _new_record(event, app, plan, live_stable, policy))
        store.index_pr(event.repo.forge, event.repo.full_name, event.number, key)


def _new_record(event: MergedPullRequest, app: AppConfig, plan: CanaryPlan,
                live_stable: dict[str, Any], policy: Policy) -> RolloutRecord:
    """A rollout of `event`'s revision that has not started yet."""
    context = RolloutContext(
        repo=event.repo, number=event.number, title=event.title, url=event.url,
        base_branch=event.base_branch, app=app.name, cluster=app.cluster,
        namespace=plan.namespace, deployment=plan.deployment,
        stable=traffic.stable_at(live_stable, traffic.replicas_of(live_stable)),
        replicas=traffic.rollout_replicas(plan.deployment, live_stable),
        template_hash=traffic.template_hash(plan.deployment),
        impersonate=policy.impersonate_user, adopt=policy.adopt,
        stable_revision=(live_stable["metadata"].get("labels") or {}).get(
            "coalmine.dev/revision"),
        services=plan.services,
    )
    state = m.new_state(app=app.name, revision=event.merge_sha,
                        stable_revision=context.stable_revision, pr=event.number,
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
                previous.context.template_hash == traffic.template_hash(plan.deployment)):
            return False
        previous.context.superseded_by_pr = f"#{event.number}"
        shell = run(_cluster(svc, previous.context), store, key, previous, m.NewRevision(
            event.merge_sha, event.number, starts_canary=False))
        _schedule(svc, shell, key)
    _after_release(svc, shell, key)
    return True


@rollout_job
def tick(key: str, version: int | None) -> None:
    """RQ job: time has come for a rollout; a tick for an older version does nothing."""
    dispatch(key, m.Tick(version))


@rollout_job
def measured(key: str, run_id: str, metric: str, measurement: Measurement) -> None:
    """RQ job: a measurement taken in the background; a stale one (its run was stopped or
    replaced meanwhile) changes nothing."""
    dispatch(key, m.MeasurementTaken(run_id, metric, measurement))


@rollout_job
def job_poll(key: str, run_id: str, metric: str, name: str, requested_at: float,
             started_at: float) -> None:
    """RQ job: look at a running analysis Job (handlers.rollout_measure.poll) on a measuring
    thread; its verdict comes back as a `measured` job."""
    svc = services.current()
    record = RolloutStore(svc.redis).load(key)
    MEASUREMENTS.submit(functools.partial(
        rollout_measure.poll, svc, record, key, run_id, metric, name, requested_at,
        started_at, measured, job_poll))


@rollout_job  # also under a command's job: adds the rollout's app and revision
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
        if record is not None:
            bind_log_context(sha=record.state.revision, pr=pr or record.state.pr)
        if record is not None and (pr is None or record.state.pr == pr):
            shell = run(_cluster(svc, record.context), store, key, record, event)
        elif isinstance(event, m.Retry) and pr is not None and pr in store.hold_claims(key):
            shell = _retry_hold(svc, store, key, record, pr, event.user)
        else:
            shell = None
        if shell is not None:
            _schedule(svc, shell, key)
    # The forge is told after the lock is released: slow I/O never runs under it.
    if shell is not None:
        _after_release(svc, shell, key)
        return shell.record
    if record is None:
        log.info("no rollout %s; %s ignored", key, type(event).__name__)
        return None
    log.info("rollout %s now belongs to #%s; %s from #%s ignored", key, record.state.pr,
             type(event).__name__, pr)
    repo = record.context.repo
    who = f"@{event.user} " if getattr(event, "user", None) else ""
    svc.forge(repo).comment(repo, pr, f"{who}your command changed nothing: the rollout of "
                            f"`{record.state.app}` now belongs to #{record.state.pr}.")
    return None


def _retry_hold(svc: services.Services, store: RolloutStore, key: str,
                current: RolloutRecord | None, pr: int, user: str) -> Shell | None:
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
    name = ctx.deployment["metadata"]["name"]
    live = svc.cluster(ctx.cluster, impersonate=ctx.impersonate).get(
        "apps/v1", "Deployment", ctx.namespace, name)
    if live is None or traffic.template_hash(live) != traffic.template_hash(ctx.stable):
        return _reply(svc, held, pr, f"@{user} the hold on the aborted version is cleared, but "
                      f"`{name}` changed since #{held.state.pr} was held back: nothing started.")
    store.index_pr(ctx.repo.forge, ctx.repo.full_name, held.state.pr or pr, key)
    shell = run(_cluster(svc, held.context), store, key, held, m.Start())
    if held.state.pr != pr:
        shell.replies_elsewhere.append((pr, (
            f"@{user} the hold is cleared: the canary of {held.state.revision[:7]} from "
            f"#{held.state.pr}, the latest merge of this version, starts.")))
    return shell


def _reply(svc: services.Services, record: RolloutRecord | None, pr: int,
           text: str) -> Shell | None:
    """A shell that only answers on `pr` after the lock (nothing else to do)."""
    if record is None:
        return None
    shell = Shell(record.context, record.state, record=record)
    shell.replies_elsewhere.append((pr, text))
    return shell


@revision_job
def health_poll(key: str, revision: str, attempt: int, weight: int) -> None:
    """RQ job of earlier versions (health re-polls are due ticks now): kept so such jobs still
    scheduled in Redis run; a tick for the current version does what they did."""
    dispatch(key, m.Tick(None))


@revision_job
def restore(key: str, revision: str) -> None:
    """RQ job: retry putting stable back after an abort whose restore the cluster refused."""
    svc = services.current()
    store = RolloutStore(svc.redis)
    with store.locked(key):
        record = store.load(key)
        if record is None or record.state.revision != revision:
            return
        if record.context.restore_pending is None:
            return
        shell = Shell(record.context, record.state, cluster_port=_cluster(svc, record.context))
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


def rearm_final_reports(svc: services.Services, grace_s: float = REPORT_GRACE_S) -> int:
    """Queue a report for every finished rollout whose final status was saved more than
    `grace_s` ago but never reported (the job carrying it died, or Redis went away, between
    the save and the report). A periodic sweep of each worker; returns how many it queued."""
    store = RolloutStore(svc.redis)
    found = store.unreported(older_than=time.time() - grace_s)
    for key, revision, seq in found:
        store.postpone_unreported(key, revision, seq)
        svc.queue.enqueue(report_final, key, revision, seq)
    return len(found)


@revision_job
def report_final(key: str, revision: str, seq: int) -> None:
    """RQ job: report the final snapshot of `revision`'s rollout (see `rearm_final_reports`);
    a snapshot reported meanwhile is not posted again (the report claims its save number)."""
    svc = services.current()
    store = RolloutStore(svc.redis)
    record = store.load_final(key, revision)
    if record is not None:
        log.info("reporting the final state of %s at %s, left unreported", key, revision[:7])
        report(svc, key, record, post_status=True, again=True)
    store.mark_reported(key, revision, seq)


def rollouts_of_pr(svc: services.Services, repo: RepoRef, number: int) -> dict[str, str]:
    """app name → rollout key for the rollouts that PR `number`'s merge started, and for the
    apps where it holds a claim on an aborted template's hold (so `/retry` reaches them)."""
    store = RolloutStore(svc.redis)
    found = {}
    for key in store.keys_of_pr(repo.forge, repo.full_name, number):
        record = store.load(key)
        if record is not None and record.state.pr == number:
            found[record.state.app] = key
        elif number in store.hold_claims(key):
            held = store.load_held(key)
            app = (held or record).state.app if (held or record) else key.rpartition(":")[2]
            found[app] = key
    return found


def _cluster(svc: services.Services, ctx: RolloutContext) -> WorkloadCluster:
    """The rollout's cluster, acting as the account of the repository that started it."""
    return svc.cluster(ctx.cluster, impersonate=ctx.impersonate)


# --------------------------------------------------------------------------- after the save


def _schedule(svc: services.Services, shell: Shell, key: str) -> None:
    """Queue what follows the save (Redis only, so still under the lock)."""
    queue = svc.queue
    if shell.ticks:
        last = shell.ticks[-1]
        queue.enqueue_at(last.at, tick, key, last.version)
    if shell.revert:
        queue.enqueue(revert.open_revert, key, shell.state.revision, 0)
    if shell.restore_retry:
        queue.enqueue_at(time.time() + RESTORE_RETRY_S, restore, key, shell.state.revision)


def _after_release(svc: services.Services, shell: Shell, key: str) -> None:
    """The slow part, with the rollout's lock released: measurements, then the forge."""
    for action in shell.measures:
        _measure_in_background(svc, shell, key, action)
    if shell.record is not None and (shell.status is not None or shell.comment):
        report(svc, key, shell.record, shell.status is not None)
    repo, number = shell.context.repo, shell.context.number
    forge = svc.forge(repo)
    for reply in shell.replies:
        forge.comment(repo, number, reply)
    for pr, reply in shell.replies_elsewhere:
        forge.comment(repo, pr, reply)


def _measure_in_background(svc: services.Services, shell: Shell, key: str,
                           action: m.Measure) -> None:
    """Take the measurement on a measuring thread (handlers.rollout_measure: valueFrom args,
    the job provider, the others); its result comes back as a `measured` job, which feeds it
    to the engine under the rollout's lock like any other event."""
    record = shell.record or RolloutRecord(shell.state, shell.context)
    request = rollout_measure.request_for(key, record, action)
    MEASUREMENTS.submit(functools.partial(
        rollout_measure.measure_and_hand_back, svc, record, request, measured, job_poll))


@revision_job
def open_revert(key: str, revision: str, attempt: int = 0) -> None:
    """RQ job of earlier versions (the revert PR moved to handlers.revert): kept so such jobs
    still queued in Redis run."""
    revert.open_revert(key, revision, attempt)
