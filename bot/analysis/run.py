"""Argo Rollouts' analysis-run semantics as pure functions over immutable values.

A run holds resolved metrics and one result per metric. The rollout engine asks which metrics
are due (`due_metrics`), marks them requested, feeds judged measurements back (`record`) and
reads the verdict (`phase`). Time is always an argument.

Semantics follow argo-rollouts `analysis/analysis.go`:
- a measurement's phase updates counters; an Error does not count toward `count` and the metric
  is retried after 10 s;
- a metric is Failed when failed > failureLimit (unless -1), Inconclusive when inconclusive >
  inconclusiveLimit, Error when consecutive errors > consecutiveErrorLimit; Successful when
  consecutiveSuccessLimit is reached or `count` is reached (Inconclusive or Failed instead when
  a consecutiveSuccessLimit was required and not met);
- the run is terminated as soon as one metric is Failed, Error or Inconclusive, and its phase is
  the worst metric (Successful < Running < Pending < Inconclusive < Error < Failed);
- a dry-run metric (Argo's `dryRun`) is measured and judged like any other, and the run waits
  for it to finish, but its verdict never decides the run: it neither stops the run early nor
  counts toward its phase (a run of dry-run metrics only is Successful once they finish);
- each metric keeps its latest `measurement_limit` measurements (Argo's measurementRetention,
  10 by default).

One deliberate difference (Argo issue #4479): a run stopped early whose metric saw only errors
is Inconclusive for that metric, not Successful, because no data is not evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from bot.analysis.measurement import Measurement
from bot.analysis.templates import MEASUREMENT_HISTORY_LIMIT, MetricSpec

RunPhase = Literal["Pending", "Running", "Successful", "Failed", "Inconclusive", "Error"]

ERROR_RETRY_SECONDS = 10.0
# How long a requested measurement may stay unanswered before it is requested again; covers a
# shell that crashed between taking the job and reporting back.
MEASUREMENT_TIMEOUT_SECONDS = 120.0

_ORDER: tuple[RunPhase, ...] = (
    "Successful",
    "Running",
    "Pending",
    "Inconclusive",
    "Error",
    "Failed",
)
COMPLETED: frozenset[str] = frozenset({"Successful", "Failed", "Inconclusive", "Error"})
_DECISIVE: frozenset[str] = frozenset({"Failed", "Inconclusive", "Error"})


@dataclass(frozen=True)
class MetricResult:
    name: str
    phase: RunPhase = "Pending"
    message: str = ""
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    measurements: tuple[Measurement, ...] = ()  # the latest spec.measurement_limit
    last_at: float | None = None  # when the latest measurement was recorded
    requested_at: float | None = None  # a measurement was asked for and has not arrived


@dataclass(frozen=True)
class AnalysisRun:
    id: str
    metrics: tuple[MetricSpec, ...]
    results: tuple[MetricResult, ...]
    started_at: float
    error: str = ""  # set when the run could not start (unresolved argument, bad template)
    terminated: bool = False  # stopped by the rollout before finishing
    purpose: str = ""  # "step 3" / "background", for reports


def start_run(
    run_id: str, metrics: Sequence[MetricSpec], now: float, purpose: str = ""
) -> AnalysisRun:
    return AnalysisRun(
        id=run_id,
        metrics=tuple(metrics),
        results=tuple(MetricResult(name=m.name) for m in metrics),
        started_at=now,
        purpose=purpose,
    )


def errored_run(run_id: str, message: str, now: float, purpose: str = "") -> AnalysisRun:
    """A run that failed to start; its phase is Error with `message`, like Argo's."""
    return AnalysisRun(
        id=run_id, metrics=(), results=(), started_at=now, error=message, purpose=purpose
    )


def metric(run: AnalysisRun, name: str) -> MetricSpec:
    return next(m for m in run.metrics if m.name == name)


def result(run: AnalysisRun, name: str) -> MetricResult:
    return next(r for r in run.results if r.name == name)


def _limit_breach(spec: MetricSpec, res: MetricResult) -> tuple[RunPhase, str] | None:
    """Argo's assessMetricFailureInconclusiveOrError: the last matching limit wins."""
    verdict: tuple[RunPhase, str] | None = None
    if spec.failure_limit >= 0 and res.failed > spec.failure_limit:
        verdict = ("Failed", f"failed ({res.failed}) > failureLimit ({spec.failure_limit})")
    if res.inconclusive > spec.inconclusive_limit:
        verdict = (
            "Inconclusive",
            f"inconclusive ({res.inconclusive}) > inconclusiveLimit ({spec.inconclusive_limit})",
        )
    if res.consecutive_error > spec.consecutive_error_limit:
        limit = spec.consecutive_error_limit
        verdict = (
            "Error",
            f"consecutiveErrors ({res.consecutive_error}) > consecutiveErrorLimit ({limit})",
        )
    return verdict


def _assess(spec: MetricSpec, res: MetricResult) -> tuple[RunPhase, str]:
    """The metric's phase after a measurement, as Argo's assessMetricStatus (not terminating)."""
    if not res.measurements:
        return "Pending", ""
    breach = _limit_breach(spec, res)
    if breach:
        return breach
    success_limit = spec.consecutive_success_limit
    if success_limit > 0 and res.consecutive_success >= success_limit:
        return "Successful", f"consecutiveSuccess ({res.consecutive_success}) reached"
    wanted = spec.effective_count
    if wanted is not None and res.count >= wanted:
        if success_limit > 0 and spec.failure_limit >= 0:
            return "Inconclusive", (
                f"count ({wanted}) reached without {success_limit} consecutive successes"
            )
        if success_limit > 0:
            return (
                "Failed",
                f"count ({wanted}) reached without {success_limit} consecutive successes",
            )
        return "Successful", f"count ({wanted}) reached"
    return "Running", ""


def record(run: AnalysisRun, metric_name: str, measurement: Measurement, now: float) -> AnalysisRun:
    """The run after `measurement` of `metric_name`.

    Unchanged when the run was stopped or never started, when the metric already has its
    verdict, or when the run has its verdict and this metric was not in flight. An in-flight
    measurement still lands after another metric decided the run, as Argo completes in-flight
    measurements while terminating: a late Failed must not be lost behind an Inconclusive.
    """
    if run.terminated or run.error or measurement.phase not in COMPLETED:
        return run
    if metric_name not in {r.name for r in run.results}:
        return run
    spec = metric(run, metric_name)
    res = result(run, metric_name)
    if res.phase in COMPLETED:
        return run
    if res.requested_at is None and phase(run) in COMPLETED:
        return run
    if measurement.phase == "Error":
        res = replace(
            res,
            error=res.error + 1,
            consecutive_error=res.consecutive_error + 1,
            consecutive_success=0,
        )
    else:
        res = replace(
            res,
            count=res.count + 1,
            consecutive_error=0,
            successful=res.successful + (measurement.phase == "Successful"),
            failed=res.failed + (measurement.phase == "Failed"),
            inconclusive=res.inconclusive + (measurement.phase == "Inconclusive"),
            consecutive_success=(
                res.consecutive_success + 1 if measurement.phase == "Successful" else 0
            ),
        )
    res = replace(
        res,
        measurements=(res.measurements + (measurement,))[-(spec.measurement_limit or MEASUREMENT_HISTORY_LIMIT):],
        last_at=now,
        requested_at=None,
    )
    new_phase, reason = _assess(spec, res)
    message = reason
    if new_phase in _DECISIVE and measurement.message:
        message = f"{reason}: {measurement.message}"
    res = replace(res, phase=new_phase, message=message)
    return replace(run, results=tuple(res if r.name == metric_name else r for r in run.results))


def mark_requested(run: AnalysisRun, metric_name: str, now: float) -> AnalysisRun:
    """Remember that a measurement was asked for, so it is not asked for again meanwhile."""
    return replace(
        run,
        results=tuple(
            replace(r, requested_at=now) if r.name == metric_name else r for r in run.results
        ),
    )


def _worst(phases: Sequence[RunPhase]) -> RunPhase:
    return max(phases, key=_ORDER.index)


def phase(run: AnalysisRun) -> RunPhase:
    """The run's verdict: Error if it could not start; else the worst metric once every metric
    finished, or as soon as one is Failed, Error or Inconclusive; Running otherwise."""
    if run.error:
        return "Error"
    deciding = _deciding(run)
    phases = [r.phase for r in deciding]
    decisive = [p for p in phases if p in _DECISIVE]
    if decisive:
        return _worst(decisive)
    if all(r.phase in COMPLETED for r in run.results):
        return _worst(phases) if phases else "Successful"
    if run.terminated:
        return _worst([_terminated_phase(r)[0] for r in deciding] or ["Successful"])
    return "Running"


def _deciding(run: AnalysisRun) -> list[MetricResult]:
    """The results that decide the run: all but the dry-run metrics'."""
    return [r for spec, r in zip(run.metrics, run.results, strict=True) if not spec.dry_run]


def is_dry_run(run: AnalysisRun, metric_name: str) -> bool:
    return any(m.dry_run for m in run.metrics if m.name == metric_name)


def _terminated_phase(res: MetricResult) -> tuple[RunPhase, str]:
    if res.phase in COMPLETED:
        return res.phase, res.message
    if res.error and not res.count:
        return "Inconclusive", f"stopped after {res.error} errors and no measurement"
    return "Successful", "run stopped"


def terminate(run: AnalysisRun) -> AnalysisRun:
    """Stop the run: unfinished metrics settle as Argo's do on termination (Successful), except
    one that only ever errored, which is Inconclusive."""
    if run.terminated or phase(run) in COMPLETED:
        return run
    results = []
    for r in run.results:
        settled, message = _terminated_phase(r)
        results.append(replace(r, phase=settled, message=message, requested_at=None))
    return replace(run, terminated=True, results=tuple(results))


def message(run: AnalysisRun) -> str:
    """Why the run is where it is, naming the worst metric: 'success-rate: failed (1) > ...'."""
    if run.error:
        return run.error
    current = phase(run)
    for r in _deciding(run):
        if r.phase == current and r.message:
            return f"{r.name}: {r.message}"
    return ""


def _metric_due_at(spec: MetricSpec, res: MetricResult, started_at: float) -> float | None:
    if res.phase in COMPLETED:
        return None
    if res.last_at is None:
        return started_at + (spec.initial_delay or 0.0)
    wanted = spec.effective_count
    if wanted is not None and res.count >= wanted:
        return None
    if res.measurements and res.measurements[-1].phase == "Error":
        return res.last_at + ERROR_RETRY_SECONDS
    if spec.interval is not None:
        return res.last_at + spec.interval
    return None


def due_metrics(run: AnalysisRun, now: float) -> list[MetricSpec]:
    """Metrics whose next measurement is due at `now` and not already requested (a request
    unanswered for MEASUREMENT_TIMEOUT_SECONDS is due again)."""
    if phase(run) in COMPLETED:
        return []
    due = []
    for spec, res in zip(run.metrics, run.results, strict=True):
        if res.requested_at is not None:
            if now >= res.requested_at + MEASUREMENT_TIMEOUT_SECONDS:
                due.append(spec)
            continue
        at = _metric_due_at(spec, res, run.started_at)
        if at is not None and now >= at:
            due.append(spec)
    return due


def next_due(run: AnalysisRun) -> float | None:
    """The earliest time this run needs attention (a measurement due or a request timing out);
    None when it is finished."""
    if phase(run) in COMPLETED:
        return None
    times = []
    for spec, res in zip(run.metrics, run.results, strict=True):
        if res.requested_at is not None:
            times.append(res.requested_at + MEASUREMENT_TIMEOUT_SECONDS)
            continue
        at = _metric_due_at(spec, res, run.started_at)
        if at is not None:
            times.append(at)
    return min(times, default=None)


def progress(run: AnalysisRun) -> tuple[int, int | None]:
    """(successful measurements, measurements wanted or None if unbounded), summed over metrics,
    for status lines like 'analysis 2/5 ok'."""
    ok = sum(r.successful for r in run.results)
    wanted = [m.effective_count for m in run.metrics]
    if any(w is None for w in wanted):
        return ok, None
    return ok, sum(w for w in wanted if w is not None)
