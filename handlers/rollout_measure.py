"""Taking one measurement for a rollout, on a measuring thread, away from its lock.

The engine asks for a measurement with `Measure(run_id, metric, provider, conditions)`; this
module carries it out with the rollout's record (as saved) at hand:

1. Arguments valued from the cluster (`valueFrom`) are read as the repository's account and
   filled into a copy of the provider and conditions that lives only here
   (bot.analysis.providers.valuefrom); secret values are masked in the measurement before it leaves.
2. A `job` metric creates its Job (bot.analysis.providers.job) as the repository's account,
   after the repository's policy allowed it, then reads it once. A Job that is still running
   hands nothing back: a poll is scheduled instead (`poll`, an RQ job at a growing delay, as
   Argo resumes a job measurement after sqrt(2 × elapsed) seconds). Why a scheduled poll and not
   a thread that waits: a Job may run for minutes, and the few measuring threads are shared by
   every rollout of the process; a thread parked on one Job would delay every other
   measurement. A poll costs one read and frees its thread at once. The poll checks the stored
   rollout first: when the engine asked for the measurement again (its 120 s timeout), the
   newer request's poll takes over and the older stops; when the run stopped (abort, promote,
   new revision) or the metric no longer waits for this Job, the Job is deleted as Argo deletes
   it on termination. After each Job's verdict, the metric's Jobs beyond its retention limit are
   deleted, and so are the Jobs of this app's runs that the rollout no longer keeps.
3. Any other provider measures at once (bot.analysis.measure).

The result goes back as a job (`measured`: handlers.rollout.measured), fed to the engine under
the rollout's lock like any other event.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.analysis import run as runs
from bot.analysis.measure import measure
from bot.analysis.measurement import Measurement
from bot.analysis.providers import ProviderError, valuefrom
from bot.analysis.providers import job as jobs
from bot.analysis.run import AnalysisRun
from bot.analysis.templates import MetricSpec, provider_kind
from bot.cluster import ownership
from bot.cluster.model import ClusterError, Owner
from bot.logs import PROCESS_REDACTOR
from bot.rollout import model as m
from bot.rollout.store import RolloutRecord

log = logging.getLogger(__name__)
POLL_MIN_S = 1.0
HandBack = Callable[[str, str, str, Measurement], Any]


class MeasurePorts(Protocol):
    """What a measurement needs from the process (bot.services.Services is one)."""

    settings: Any  # prometheus_url, egress
    queue: Any  # enqueue, enqueue_at

    def cluster(self, name: str | None, *, impersonate: str | None = None) -> Any: ...

    @property
    def tenants(self) -> Any: ...


@dataclass(frozen=True)
class Request:
    """One measurement as the engine asked for it, with what the record says about it."""

    key: str
    action: m.Measure
    spec: MetricSpec | None  # None: the run is no longer in the record (answered anyway)
    number: int  # the metric's measurements and errors so far, + 1 (a Job's name suffix)
    requested_at: float | None


def live_run(record: RolloutRecord, run_id: str) -> AnalysisRun | None:
    for run in (record.state.step_run, record.state.background_run):
        if run is not None and run.id == run_id:
            return run
    return None


def request_for(key: str, record: RolloutRecord, action: m.Measure) -> Request:
    run = live_run(record, action.run_id)
    if run is None or action.metric not in {r.name for r in run.results}:
        return Request(key, action, None, 1, None)
    result = runs.result(run, action.metric)
    return Request(key, action, runs.metric(run, action.metric),
                   result.count + result.error + 1, result.requested_at)


def measure_and_hand_back(ports: MeasurePorts, record: RolloutRecord, request: Request,
                          measured: HandBack, job_poll: Callable[..., Any]) -> None:
    """On a measuring thread: take the measurement (or start the Job and schedule its poll),
    then queue the result as a `measured` job."""
    action, now = request.action, time.time()
    secrets: list[str] = []
    try:
        provider, success, failure, secrets = _resolved(ports, record, request)
        if provider_kind(provider) == "job":
            result = _start_job(ports, record, request, provider["job"], now, job_poll)
            if result is None:
                return  # running: its poll hands the verdict back
        else:
            settings = ports.settings
            run = live_run(record, action.run_id)
            result = measure(provider, success or None, failure or None,
                             prometheus_url=settings.prometheus_url, egress=settings.egress,
                             now=now, run_started_at=None if run is None else run.started_at)
    except ProviderError as error:
        result = Measurement("Error", None, str(error), now)
    ports.queue.enqueue(measured, request.key, action.run_id, action.metric,
                        valuefrom.mask(result, secrets))


def _resolved(ports: MeasurePorts, record: RolloutRecord,
              request: Request) -> tuple[dict[str, Any], str, str, list[str]]:
    """The provider and conditions with cluster-valued arguments filled in, and the secrets."""
    action, spec = request.action, request.spec
    if spec is None or not spec.value_from:
        return action.provider, action.success_condition, action.failure_condition, []
    ctx = record.context
    values, secrets = valuefrom.resolve(
        spec.value_from, cluster=_cluster(ports, record), namespace=ctx.namespace,
        workload=ctx.deployment, live=ctx.stable)
    PROCESS_REDACTOR.add(*secrets)  # the log redactor masks them from here on
    provider, success, failure = valuefrom.fill(
        action.provider, action.success_condition, action.failure_condition, values)
    return provider, success, failure, secrets


def _cluster(ports: MeasurePorts, record: RolloutRecord) -> Any:
    ctx = record.context
    return ports.cluster(ctx.cluster, impersonate=ctx.impersonate)


def _owner(record: RolloutRecord) -> Owner:
    repo = record.context.repo
    assert repo.repo_id is not None, "rollouts start from verified merges"
    return Owner(repo.forge, repo.repo_id, repo.full_name, record.context.app)


def _target(record: RolloutRecord, run_id: str, metric: str, number: int) -> jobs.JobTarget:
    ctx = record.context
    return jobs.JobTarget(app=ctx.app, run_id=run_id, metric=metric, number=number,
                          namespace=ctx.namespace, owner=_owner(record),
                          revision=record.state.revision, cluster=ctx.cluster or "default")


def _start_job(ports: MeasurePorts, record: RolloutRecord, request: Request,
               job: dict[str, Any], now: float,
               job_poll: Callable[..., Any]) -> Measurement | None:
    """Create (or find) the measurement's Job; its verdict if already decided, else None with
    a poll scheduled."""
    if request.spec is None or request.requested_at is None:
        raise ProviderError("the analysis run no longer waits for this measurement")
    repo = record.context.repo
    tenant = ports.tenants.resolve(repo.forge, repo.repo_id, repo.full_name)
    if isinstance(tenant, str):
        raise ProviderError(tenant)
    cluster = _cluster(ports, record)
    target = _target(record, request.action.run_id, request.action.metric, request.number)
    name = jobs.start(cluster, job, target, tenant.policy)
    _forget_old_runs(cluster, record)
    return _verdict_or_poll(ports, cluster, record, request.key, target, name,
                            request.requested_at, now, now, job_poll)


def _verdict_or_poll(ports: MeasurePorts, cluster: Any, record: RolloutRecord, key: str,
                     target: jobs.JobTarget, name: str, requested_at: float,
                     started_at: float, now: float,
                     job_poll: Callable[..., Any]) -> Measurement | None:
    result = jobs.verdict(cluster, target.namespace, name, now)
    if result is None:
        delay = max(POLL_MIN_S, math.sqrt(2 * max(now - started_at, 0.0)))
        ports.queue.enqueue_at(now + delay, job_poll, key, target.run_id, target.metric, name,
                               requested_at, started_at)
        return None
    spec = _spec(record, target.run_id, target.metric)
    limit = spec.measurement_limit if spec is not None else runs.MEASUREMENT_HISTORY_LIMIT
    try:
        jobs.collect_garbage(cluster, target.namespace, target.run_id, target.metric,
                             target.owner, limit)
    except ProviderError as error:  # a Job left over is no verdict on the release
        log.warning("%s", error)
    return result


def _spec(record: RolloutRecord, run_id: str, metric: str) -> MetricSpec | None:
    run = live_run(record, run_id)
    return next((s for s in run.metrics if s.name == metric), None) if run else None


def _forget_old_runs(cluster: Any, record: RolloutRecord) -> None:
    """Delete this app's analysis Jobs of runs the rollout no longer keeps (Argo deletes a
    run's Jobs with the run, once it falls out of the rollout's history)."""
    state = record.state
    kept = {r.id for r in (state.step_run, state.background_run, *state.finished_runs) if r}
    try:
        owned = cluster.list(jobs.JOB_API, "Job", record.context.namespace,
                             label_selector=ownership.selector(_owner(record)))
        for job in owned:
            run = ((job.get("metadata") or {}).get("labels") or {}).get(jobs.RUN_LABEL)
            if run is not None and run not in kept:
                jobs.delete(cluster, record.context.namespace, job["metadata"]["name"])
    except (ClusterError, ProviderError) as error:  # housekeeping: never fails a measurement
        log.warning("could not delete old analysis Jobs: %s", error)


def poll(ports: MeasurePorts, record: RolloutRecord | None, key: str, run_id: str, metric: str,
         name: str, requested_at: float, started_at: float, measured: HandBack,
         job_poll: Callable[..., Any]) -> None:
    """A scheduled look at a running measurement Job: hand its verdict back, poll again later,
    stop (a newer request watches the same Job), or delete it (the run no longer wants it)."""
    if record is None:
        return
    run = live_run(record, run_id)
    asked = (runs.result(run, metric).requested_at
             if run is not None and metric in {r.name for r in run.results} else None)
    cluster = _cluster(ports, record)
    target = _target(record, run_id, metric, 0)
    if asked != requested_at:
        if asked is None:  # the run stopped, or the metric has its verdict: nobody waits
            _terminate(cluster, target.namespace, name)
        return  # else asked again since: that request's poll watches the same Job
    now = time.time()
    try:
        result = _verdict_or_poll(ports, cluster, record, key, target, name, requested_at,
                                  started_at, now, job_poll)
    except ProviderError as error:
        result = Measurement("Error", None, str(error), now)
    if result is not None:
        ports.queue.enqueue(measured, key, run_id, metric, result)


def _terminate(cluster: Any, namespace: str, name: str) -> None:
    """Argo's Terminate: a Job no run waits for is deleted while it runs."""
    try:
        live = cluster.get(jobs.JOB_API, "Job", namespace, name)
        if live is not None and jobs.unfinished(live):
            jobs.delete(cluster, namespace, name)
            log.info("analysis Job %s/%s deleted: its run stopped", namespace, name)
    except (ClusterError, ProviderError) as error:  # a Job left running is logged
        log.warning("could not delete analysis Job %s/%s: %s", namespace, name, error)
