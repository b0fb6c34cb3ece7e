"""Coalmine's Prometheus metrics: every family, the few functions the adapters call, and /metrics.

The families are counted where work crosses a boundary (the edge's answer, a job's run, an HTTP
call to a forge or a cluster, a rollout record's save), never inside the core. What operators
see is documented in the README ("Metrics").

Processes. gunicorn runs several web workers, each with its own counters, and a scrape reaches
just one of them; so the web process tree runs in prometheus-client's multiprocess mode: each
process writes its values to files in PROMETHEUS_MULTIPROC_DIR and /metrics adds them all up.
The library picks that mode when it is imported, so the directory has to be in the environment
before the process starts: `coalmine serve` (the root of the tree) chooses a default under the
data dir when it is unset and wipes it before gunicorn starts (`prepare_multiprocess_dir`).
The RQ worker (`coalmine worker`) is one process and, in a cluster, its own pod with no file
system shared with the web: it serves its own registry on COALMINE_WORKER_METRICS_PORT
(`serve_worker_metrics`) instead of writing into a directory nobody reads. The rollouts-by-phase
gauge is read from Redis at scrape time (`RolloutPhases`), so it is right whichever process
saved a rollout, and no gauge needs multiprocess bookkeeping.

Label values are bounded: forge names, event and outcome words, trigger names, phases, and for
the DORA families the repository and app from the served configuration; never a sha, a delivery
id, a user or a URL (which could carry a secret).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_PORT_ENV = "COALMINE_WORKER_METRICS_PORT"
DEFAULT_WORKER_PORT = 9102
CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"  # a job or event no table names: bounded, never the raw name


# Seconds: jobs run from milliseconds (a comment) to many minutes (a deploy waiting for health).
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# Seconds: DORA durations run from minutes to days.
DORA_BUCKETS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400,
                7 * 86400)

WEBHOOKS = Counter("coalmine_webhooks", "Webhook deliveries answered, by forge, event and outcome",
                   ["forge", "event", "outcome"])
JOBS = Counter("coalmine_jobs", "Jobs run, by trigger (handlers/registry.py) and outcome",
               ["kind", "outcome"])
JOB_SECONDS = Histogram("coalmine_job_duration_seconds", "How long jobs ran, by trigger and outcome",
                        ["kind", "outcome"], buckets=JOB_BUCKETS)
FORGE_CALLS = Counter("coalmine_forge_api_calls", "HTTP requests to a forge API", ["forge"])
FORGE_ERRORS = Counter("coalmine_forge_api_errors",
                       "Forge API requests that failed (no answer, or 4xx other than 404, or 5xx)",
                       ["forge"])
KUBE_CALLS = Counter("coalmine_kubernetes_api_calls", "Kubernetes API calls (each attempt)")
KUBE_ERRORS = Counter("coalmine_kubernetes_api_errors",
                      "Kubernetes API calls that failed (no answer, or 4xx other than 404, or 5xx)")
MEASUREMENTS = Counter("coalmine_measurements", "Analysis measurements taken, by phase", ["phase"])
DEPLOYMENTS = Counter("coalmine_dora_deployments",
                      "DORA deployment frequency: rollouts promoted, per repository and app",
                      ["repo", "app"])
FAILED_DEPLOYMENTS = Counter("coalmine_dora_failed_deployments",
                             "DORA change failures: rollouts aborted (each opens a revert PR)",
                             ["repo", "app"])
LEAD_TIME = Histogram("coalmine_dora_lead_time_from_rollout_start_seconds",
                      "DORA lead time, measured from the rollout's start (the merge job, "
                      "seconds after the merge) to its promotion: PR creation times are not "
                      "recorded yet", ["repo", "app"], buckets=DORA_BUCKETS)
TIME_TO_RESTORE = Histogram("coalmine_dora_time_to_restore_seconds",
                            "DORA time to restore: from an abort to stable restored",
                            ["repo", "app"], buckets=DORA_BUCKETS)


# -- processes ------------------------------------------------------------------------------

def multiprocess_mode() -> bool:
    """Whether this process writes its values to PROMETHEUS_MULTIPROC_DIR (set at its start)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def split_counts_warning(env: Mapping[str, str]) -> str | None:
    """What to tell an operator whose gunicorn started without the shared directory: each
    worker then has its own counters and a scrape sees only the one that answers it."""
    if env.get("SERVER_SOFTWARE", "").startswith("gunicorn") and not env.get(MULTIPROC_ENV):
        return (f"{MULTIPROC_ENV} is not set: under several gunicorn workers each one's /metrics "
                "shows only its own counts; start with `coalmine serve`, or set the variable "
                "to an empty directory before gunicorn starts (README: Metrics)")
    return None


def prepare_multiprocess_dir(env: Mapping[str, str], data_dir: str) -> str:
    """The directory a process tree about to start will share, emptied.

    The library's rule: wipe it before the processes start, or counters of an earlier run (and
    of dead workers' pids) would be added to this one's. Called by the tree's root only."""
    path = Path(env.get(MULTIPROC_ENV) or Path(data_dir) / "prometheus" / "web").resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return str(path)


def exposition(collectors: Iterable[Collector] = ()) -> bytes:
    """The text a scrape gets: every process's values, plus `collectors` read now."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


class _ThisProcess(Collector):
    """The process's own registry (one process: nothing to add up)."""

    def collect(self) -> Iterator[Any]:
        return REGISTRY.collect()


class RolloutPhases(Collector):
    """`coalmine_rollouts{phase}`: the active rollouts by phase, read from Redis at scrape time,
    so every process's saves count and a dead worker leaves nothing stale behind."""

    def __init__(self, phases: Callable[[], Mapping[str, int]]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._phases()
        except RedisError:
            log.warning("/metrics: Redis unreachable; coalmine_rollouts left out of this scrape")
            return
        family = GaugeMetricFamily("coalmine_rollouts", "Active rollouts, by phase",
                                   labels=["phase"])
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family


class DriftObjects(Collector):
    """`coalmine_drift_objects{repo,app}`: how many objects of each deployed app differ from its
    last deployed commit at the last drift check, read from Redis at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
        except RedisError:
            log.warning("/metrics: Redis unreachable; coalmine_drift_objects left out")
            return
        family = GaugeMetricFamily("coalmine_drift_objects", "Objects that drifted from the "
                                   "last deployed commit, per repository and app, at the last "
                                   "drift check", labels=["repo", "app"])
        for (repo, app), count in sorted(counts.items()):
            family.add_metric([repo, app], count)
        yield family


def serve_worker_metrics(env: Mapping[str, str]) -> int | None:
    """Serve the worker's own registry on its port (0 turns it off); returns the port, or
    None when it is off or taken. A taken port (a second worker on the host with the same
    setting) costs that worker its metrics endpoint, not its jobs: it logs and carries on."""
    port = int(env.get(WORKER_PORT_ENV) or DEFAULT_WORKER_PORT)
    if port == 0:
        return None
    try:
        start_http_server(port)
    except OSError as exc:
        log.error("worker metrics not served: port %s: %s (set %s to a free port, or 0)",
                  port, exc.strerror or exc, WORKER_PORT_ENV)
        return None
    return port


# -- the edge ----------------------------------------------------------------------------------

# The event names a label may take; any other is "other", so a sender cannot grow the label set.
# The edge reads them only once the sender is known (before that the event is "unknown").
GITHUB_EVENTS = frozenset({
    "pull_request", "issue_comment", "ping", "push", "check_run", "check_suite", "status",
    "installation", "installation_repositories", "pull_request_review",
    "pull_request_review_comment", "workflow_run",
})
GITLAB_EVENTS = {"Merge Request Hook": "merge_request", "Note Hook": "note",
                 "Push Hook": "push", "Pipeline Hook": "pipeline", "Tag Push Hook": "tag_push",
                 "System Hook": "system"}


def webhook_event(forge: str, header: str) -> str:
    """The `event` label of a delivery, from its (authenticated) event header."""
    if forge == "github":
        return header if header in GITHUB_EVENTS else OTHER
    return GITLAB_EVENTS.get(header, OTHER)


def webhook_outcome(code: int, duplicate: bool) -> str:
    """An answer as an outcome: 4xx is a refusal, 5xx asks the forge to redeliver (error)."""
    if code == 202:
        return "accepted"
    if code < 400:
        return "duplicate" if duplicate else "ignored"
    return "refused" if code < 500 else "error"


def webhook(forge: str, event: str, outcome: str) -> None:
    """One answered delivery. `event` must be a word from a fixed set (the caller maps it)."""
    WEBHOOKS.labels(forge, event, outcome).inc()


# -- jobs ----------------------------------------------------------------------------------

def observe_job(kind: str, run: Callable[[], bool]) -> bool:
    """Run a job (`run` returns whether it succeeded, or raises) and count it with its time."""
    started = time.monotonic()
    ok = False
    try:
        ok = run()
        return ok
    finally:
        outcome = "ok" if ok else "error"
        JOBS.labels(kind, outcome).inc()
        JOB_SECONDS.labels(kind, outcome).observe(time.monotonic() - started)


class MeteredQueue:
    """The embedded queue (one process, jobs on a thread), timing and counting each job as the
    RQ worker does; everything else is the wrapped queue's."""

    def __init__(self, inner: Any, kind_of: Callable[[str], str]) -> None:
        self.inner = inner
        self._kind_of = kind_of

    def _metered(self, func: Callable[..., Any]) -> Callable[..., Any]:
        kind = self._kind_of(f"{func.__module__}.{func.__qualname__}")

        @functools.wraps(func)
        def run(*args: Any) -> Any:
            result: list[Any] = []

            def call() -> bool:
                result.append(func(*args))
                return True

            observe_job(kind, call)
            return result[0]

        return run

    def enqueue(self, func: Callable[..., Any], *args: Any, job_id: str | None = None) -> str:
        return self.inner.enqueue(self._metered(func), *args, job_id=job_id)

    def enqueue_at(self, at: float, func: Callable[..., Any], *args: Any,
                   job_id: str | None = None) -> str:
        return self.inner.enqueue_at(at, self._metered(func), *args, job_id=job_id)

    def enqueue_once(self, claim: str | None, ttl_s: int, func: Callable[..., Any],
                     *args: Any) -> str | None:
        return self.inner.enqueue_once(claim, ttl_s, self._metered(func), *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- API calls -------------------------------------------------------------------------------

def failed(status: int | None) -> bool:
    """No answer, or an answer that is an error (a 404 answers "is there a …?")."""
    return status is None or (status >= 400 and status != 404)


def forge_call(forge: str, status: int | None) -> None:
    FORGE_CALLS.labels(forge).inc()
    if failed(status):
        FORGE_ERRORS.labels(forge).inc()


def gitlab_response(response: Any, *args: Any, **kwargs: Any) -> None:
    """A requests response hook for python-gitlab's session (every HTTP request it makes)."""
    forge_call("gitlab", response.status_code)


def kubernetes_call(status: int | None) -> None:
    KUBE_CALLS.inc()
    if failed(status):
        KUBE_ERRORS.inc()


# -- rollouts ----------------------------------------------------------------------------------

def rollout_saved(previous_raw: bytes | str | None, record: Any) -> None:
    """Count what a rollout record's save changed: measurements and the DORA events.

    `previous_raw` is the JSON of the record the save replaced (read in the same round trip),
    so the difference is right whichever process saved before; `record` is the RolloutRecord
    saved. Only the few fields compared are read from the JSON (decoding the whole record cost
    a quarter of a save's CPU)."""
    try:
        before = _Before.read(previous_raw, record.state.revision)
        _count_changes(before, record)
    except Exception:  # metrics must never fail a save that succeeded
        log.warning("could not count a rollout's metrics", exc_info=True)


@dataclass(frozen=True)
class _Before:
    """What the replaced record said, for this revision (another revision's counts as none)."""

    phase: str | None = None
    points: frozenset[tuple[Any, ...]] = frozenset()
    restore_pending: Any = None

    @classmethod
    def read(cls, raw: bytes | str | None, revision: str) -> _Before:
        if not raw:
            return cls()
        data = json.loads(raw)
        state = data["state"]
        if state.get("revision") != revision:
            return cls()
        return cls(state.get("phase"),
                   frozenset(_point_key(p) for p in state.get("metric_points") or ()),
                   (data.get("context") or {}).get("restore_pending"))


def _point_key(point: Any) -> tuple[Any, ...]:
    if isinstance(point, dict):
        return (point.get("at"), point.get("run_id"), point.get("metric"))
    return (point.at, point.run_id, point.metric)


def _count_changes(before: _Before, record: Any) -> None:
    state = record.state
    for point in state.metric_points:
        if _point_key(point) not in before.points:
            MEASUREMENTS.labels(point.phase).inc()
    labels = (record.context.repo.full_name, record.context.app)
    ended = state.finished_at or time.time()
    if state.phase == "Promoted" and before.phase != "Promoted":
        DEPLOYMENTS.labels(*labels).inc()
        if state.started_at is not None:
            LEAD_TIME.labels(*labels).observe(max(0.0, ended - state.started_at))
    if state.phase == "Aborted":
        if before.phase != "Aborted":
            FAILED_DEPLOYMENTS.labels(*labels).inc()
        restored_now = record.context.restore_pending is None
        restored_before = before.phase == "Aborted" and before.restore_pending is None
        if restored_now and not restored_before:
            TIME_TO_RESTORE.labels(*labels).observe(max(0.0, time.time() - ended))
