"""The `kayenta` provider without a Kayenta server: canary against baseline, judged in-process.

For each metric of the mapping (bot.judge.kayenta reads it) two range queries go to
Prometheus, the canary's with the experiment scope and the baseline's with the control scope,
over the scope's window at its step; the two series become the samples of one case of the
judge (bot.judge: Mann-Whitney U per metric, a 0-100 score). The measurement's value is the
score; its phase is Argo's mapping of a Kayenta score (pass → Successful, marginal →
Inconclusive, below → Failed; no data → Inconclusive, never Successful); its message says
why in words, and its `judgement` keeps every metric's numbers for the PR comment.

Requests go through the egress policy like the prometheus provider's (PROMETHEUS_URL is
trusted, any other address must be allowed). One series per side is expected: a query that
returns several is an error asking for an aggregation, since pooling series of pods with
different traffic would compare mixtures, not versions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.analysis.measurement import Measurement
from bot.analysis.providers import (
    ProviderError,
    display_url,
    header_list,
    require_http_url,
    send,
    timeout_seconds,
    transport_failure,
)
from bot.egress import DENY_ALL, Egress
from bot.judge.kayenta import (
    KayentaError,
    QueryMetric,
    ScopeDetail,
    judgement_of,
    message_of,
    parse_kayenta,
    phase_of,
    render_query,
    time_range,
    with_samples,
)
from bot.judge.model import Case, CaseResult

DEFAULT_TIMEOUT_S = 10.0  # per query; a measurement makes two per metric
# All queries of one measurement together: well below the 120 s after which the engine asks
# for the measurement again (bot.analysis.run.MEASUREMENT_TIMEOUT_SECONDS).
MEASUREMENT_DEADLINE_S = 60.0


def measure_kayenta(spec: Mapping[str, Any], *, default_address: str | None,
                    egress: Egress = DENY_ALL, now: float,
                    run_started_at: float | None = None) -> Measurement:
    """Judge the canary against the baseline as `spec` (Argo's kayenta mapping, args resolved)
    says; with `lookback`, scopes without a start read from `run_started_at` (the analysis
    run's start). Raises ProviderError with a message fit for the PR when a query cannot be
    run."""
    try:
        config = parse_kayenta(spec)
    except KayentaError as error:
        where = f"provider.kayenta.{error.key}" if error.key else "provider.kayenta"
        raise ProviderError(f"{where}: {error.reason}") from None
    since = None
    if config.lookback:
        if run_started_at is None:
            raise ProviderError("provider.kayenta.lookback: the analysis run's start is not "
                                "known, so there is no time to read back from")
        since = run_started_at
    settings = config.prometheus
    address = settings.get("address") or default_address
    if not address:
        raise ProviderError("no Prometheus address: set provider.kayenta.prometheus.address or "
                            "the server's PROMETHEUS_URL")
    reader = _RangeReader(
        address=require_http_url(address, "the Prometheus address"),
        egress=(egress.trusting(require_http_url(default_address, "PROMETHEUS_URL"))
                if default_address else egress),
        timeout=timeout_seconds(settings.get("timeout"), "provider.kayenta.prometheus.timeout",
                                DEFAULT_TIMEOUT_S),
        headers=header_list(settings.get("headers"), "provider.kayenta.prometheus.headers"),
        insecure=settings.get("insecure"),
        deadline=time.monotonic() + MEASUREMENT_DEADLINE_S)
    specs = []
    for metric in config.metrics:
        scope = config.scope(metric.scope)
        canary = reader.samples(metric, "canary", scope.experiment, config.window, now, since)
        baseline = reader.samples(metric, "baseline", scope.control, config.window, now, since)
        specs.append(with_samples(metric, canary, baseline))
    case = Case(id=config.config_name or "kayenta", thresholds=config.thresholds,
                metrics=tuple(specs), group_weights=dict(config.group_weights))
    result = _judge(case)
    judgement = judgement_of(result, specs, config.thresholds)
    return Measurement(phase_of(result.verdict), f"{result.score:g}", message_of(judgement),
                       now, judgement)


def _judge(case: Case) -> CaseResult:
    # Imported here, not at the top: the judge needs scipy and numpy (0.8 s and ~90 MiB per
    # process), and every web worker imports the providers through the handlers without ever
    # measuring (README: dependency notes; tests/unit/test_layers.py lists this import).
    from bot.judge.score import judge_cases

    return judge_cases([case])[0]


class _RangeReader:
    """Range queries of one measurement, against one Prometheus, within one deadline."""

    def __init__(self, *, address: str, egress: Egress, timeout: float,
                 headers: dict[str, str], insecure: Any, deadline: float) -> None:
        self.address, self.egress, self.timeout = address, egress, timeout
        self.headers, self.insecure, self.deadline = headers, insecure, deadline

    def samples(self, metric: QueryMetric, side: str, detail: ScopeDetail,
                window: float | None, now: float, since: float | None) -> list[float]:
        what = f"the {side} query of '{metric.settings.name}'"
        try:
            start, end = time_range(detail, window, now, since)
        except KayentaError as error:
            raise ProviderError(f"{what}: {error.key}: {error.reason}") from None
        template = metric.canary_query if side == "canary" else metric.baseline_query
        form = {"query": render_query(template, detail), "start": f"{start:.3f}",
                "end": f"{end:.3f}", "step": str(detail.step)}
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ProviderError(f"{what} was not sent: the measurement's queries took more "
                                f"than {MEASUREMENT_DEADLINE_S:g} s")
        timeout = min(self.timeout, left)
        url = self.address.rstrip("/") + "/api/v1/query_range"
        try:
            response = send(self.egress, "POST", url, timeout=timeout, insecure=self.insecure,
                            headers={"Content-Type": "application/x-www-form-urlencoded",
                                     **self.headers},
                            content=urlencode(form).encode())
        except httpx.HTTPError as error:
            raise transport_failure(error, "Prometheus", self.address, timeout) from None
        return _series_values(response, what, self.address)


def _series_values(response: httpx.Response, what: str, address: str) -> list[float]:
    """The values of the one series a range query returned; none when nothing matched."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "error":
        reason = body.get("error") or body.get("errorType") or "no reason given"
        raise ProviderError(f"Prometheus rejected {what}: {reason}")
    data = body.get("data") if isinstance(body, dict) else None
    if not response.is_success or not isinstance(data, dict) \
            or body.get("status") != "success":
        raise ProviderError(f"Prometheus at {display_url(address)} answered HTTP "
                            f"{response.status_code} to {what} without a result")
    series = data.get("result")
    if data.get("resultType") != "matrix" or not isinstance(series, list):
        raise ProviderError(f"Prometheus sent no range result (matrix) for {what}")
    if len(series) > 1:
        raise ProviderError(f"{what} returned {len(series)} series; aggregate them to one "
                            "(sum, avg, histogram_quantile) so each side is one series")
    try:
        values = [float(point[1]) for point in series[0]["values"]] if series else []
    except (KeyError, IndexError, TypeError, ValueError):
        raise ProviderError(f"Prometheus sent a malformed range result for {what}") from None
    return [v if math.isfinite(v) else math.nan for v in values]
