"""Argo's `kayenta` metric provider, read for Coalmine's in-process judge (README: Judge in a
rollout).

Argo's provider sends the scopes and thresholds to a Kayenta server, which reads the metrics of
a canary config stored there. Coalmine has no Kayenta server: the same mapping, without an
`address`, lists the metrics itself (`metrics:`, each a PromQL query with a `{{scope}}`
placeholder, or a `canaryQuery` and a `baselineQuery`, plus the judge's settings of
`coalmine judge --cases`). The control scope is the baseline, the experiment scope the canary,
as in Kayenta. Pure: the provider (bot.analysis.providers.kayenta) reads Prometheus and
bot.judge.score judges; this module reads the mapping (at load time, to refuse a template
with the key at fault, and again at measure time, once `{{args.*}}` are resolved), fills in
queries and windows, and maps a judged case to a measurement's phase and record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bot.judge.cases import SETTING_KEYS, CaseError, metric_settings
from bot.judge.model import (
    CaseResult,
    Classification,
    JudgedMetric,
    Judgement,
    MetricSpec,
    Thresholds,
    Verdict,
)

# Argo's KayentaMetric fields, then Coalmine's additions (see the README).
ARGO_KEYS = ("address", "application", "canaryConfigName", "metricsAccountName",
             "configurationAccountName", "storageAccountName", "threshold", "thresholds",
             "scopes", "lookback")
COALMINE_KEYS = ("metrics", "window", "prometheus", "groupWeights")
SCOPE_KEYS = ("name", "controlScope", "experimentScope")
DETAIL_KEYS = ("scope", "region", "step", "start", "end")
QUERY_KEYS = ("name", "query", "canaryQuery", "baselineQuery", "scope")
PROMETHEUS_KEYS = ("address", "timeout", "headers", "insecure")
DEFAULT_STEP_S = 60  # Kayenta's usual step; Argo requires one, Coalmine defaults to a minute
# Samples of one side a measurement may read: step 1 s over two hours. Beyond it the judge's
# pairs (canary x baseline) would pass the memory bound of bot.judge.model.MAX_PAIRS.
MAX_POINTS = 2000

_PLACEHOLDER = re.compile(r"\{\{\s*(scope|region|step)\s*\}\}")
_PHASES = {Verdict.PASS: "Successful", Verdict.MARGINAL: "Inconclusive",
           Verdict.FAIL: "Failed", Verdict.NODATA: "Inconclusive"}


class KayentaError(ValueError):
    """A kayenta mapping Coalmine cannot judge; `key` is the path inside the mapping."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class ScopeDetail:
    scope: str
    region: str = ""
    step: int = DEFAULT_STEP_S  # seconds between samples
    start: str = ""  # RFC 3339; empty: `window` before the measurement
    end: str = ""  # RFC 3339; empty: the measurement's time


@dataclass(frozen=True)
class Scope:
    name: str
    control: ScopeDetail  # the baseline
    experiment: ScopeDetail  # the canary


@dataclass(frozen=True)
class QueryMetric:
    """One metric: how to judge it (samples empty) and the query of each side."""

    settings: MetricSpec
    canary_query: str
    baseline_query: str
    scope: str


@dataclass(frozen=True)
class KayentaConfig:
    thresholds: Thresholds
    scopes: tuple[Scope, ...]
    metrics: tuple[QueryMetric, ...]
    window: float | None = None  # seconds read back from the measurement
    # Argo's lookback: a scope without start reads from the analysis run's start instead of
    # one window back, so each measurement judges everything since the run began.
    lookback: bool = False
    application: str = ""
    config_name: str = ""
    prometheus: Mapping[str, Any] = field(default_factory=dict)
    group_weights: Mapping[str, float] = field(default_factory=dict)

    def scope(self, name: str) -> Scope:
        return next(s for s in self.scopes if s.name == name)


def parse_kayenta(spec: Any, *, need_window: bool = True) -> KayentaConfig:
    """The kayenta mapping of a metric's provider. `need_window`: a scope without `start` needs
    `window` (filled from the metric's interval when the template is read)."""
    spec = _mapping(spec, "", "a mapping")
    _known(spec, ARGO_KEYS + COALMINE_KEYS, "")
    if spec.get("address"):
        raise KayentaError("address", (
            "Coalmine does not call an external Kayenta: it judges canary against baseline "
            "itself, from Prometheus; remove address and list the queries under metrics "
            "(README: Judge in a rollout)"))
    lookback = spec.get("lookback", False)
    if not isinstance(lookback, bool):
        raise KayentaError("lookback", f"must be true or false, got {_shown(lookback)}")
    for key in ("application", "canaryConfigName", "metricsAccountName",
                "configurationAccountName", "storageAccountName"):
        _text(spec, key, "", required=False)
    thresholds = _thresholds(spec)
    scopes = _scopes(spec.get("scopes"))
    if "metrics" not in spec:
        raise KayentaError("metrics", (
            "is required: without a Kayenta server, Coalmine needs the queries to judge "
            "(metrics: [{name, query with {{scope}}, direction, ...}])"))
    metrics = _metrics(spec["metrics"], scopes)
    window = spec.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int | float)
                               or not math.isfinite(window) or window <= 0):
        raise KayentaError("window", f"must be a positive number of seconds, got {window!r}")
    if need_window and window is None and not lookback:
        open_scope = next((s for s in scopes if not s.control.start), None)
        if open_scope is not None:
            raise KayentaError("window", (
                f"scope '{open_scope.name}' has no start, so each measurement reads back a "
                "window: set window (e.g. 10m), the metric's interval, lookback: true (read "
                "from the analysis run's start) or the scopes' start"))
    return KayentaConfig(
        thresholds=thresholds, scopes=scopes, metrics=metrics,
        window=None if window is None else float(window),
        lookback=lookback,
        application=str(spec.get("application") or ""),
        config_name=str(spec.get("canaryConfigName") or ""),
        prometheus=_prometheus(spec.get("prometheus")),
        group_weights=_group_weights(spec.get("groupWeights")))


def _thresholds(spec: Mapping[str, Any]) -> Thresholds:
    # Argo's CRD field is `threshold`; its kayenta docs page writes `thresholds`. Either works.
    if "threshold" in spec and "thresholds" in spec:
        raise KayentaError("thresholds", "give threshold or thresholds, not both")
    key = "threshold" if "threshold" in spec else "thresholds"
    raw = _mapping(spec.get(key), key, "a mapping with pass and marginal")
    _known(raw, ("pass", "marginal"), f"{key}.")
    values = []
    for name in ("pass", "marginal"):
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 <= value <= 100:
            raise KayentaError(f"{key}.{name}", f"must be a number from 0 to 100, got {value!r}")
        values.append(float(value))
    if values[1] > values[0]:
        raise KayentaError(f"{key}.marginal", f"{values[1]:g} is above pass {values[0]:g}")
    return Thresholds(passing=values[0], marginal=values[1])


def _scopes(raw: Any) -> tuple[Scope, ...]:
    items = _list(raw, "scopes")
    scopes: list[Scope] = []
    for i, item in enumerate(items):
        at = f"scopes[{i}]"
        item = _mapping(item, at, "a mapping with name, controlScope and experimentScope")
        _known(item, SCOPE_KEYS, f"{at}.")
        name = _text(item, "name", at)
        if any(s.name == name for s in scopes):
            raise KayentaError(f"{at}.name", f"duplicate scope name '{name}'")
        control = _detail(item.get("controlScope"), f"{at}.controlScope")
        experiment = _detail(item.get("experimentScope"), f"{at}.experimentScope")
        for key in ("start", "end"):  # Argo's rule, checked when the measurement runs there
            if bool(getattr(control, key)) != bool(getattr(experiment, key)):
                raise KayentaError(f"{at}.experimentScope.{key}", (
                    f"controlScope.{key} and experimentScope.{key} must both be set or both "
                    "be empty"))
        scopes.append(Scope(name, control, experiment))
    return tuple(scopes)


def _detail(raw: Any, at: str) -> ScopeDetail:
    raw = _mapping(raw, at, "a mapping with scope and step")
    _known(raw, DETAIL_KEYS, f"{at}.")
    step = raw.get("step", DEFAULT_STEP_S)
    if isinstance(step, str) and step.strip().isdigit():
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise KayentaError(f"{at}.step", f"must be a whole number of seconds >= 1, got {step!r}")
    return ScopeDetail(scope=_text(raw, "scope", at),
                       region=_text(raw, "region", at, required=False),
                       step=step,
                       start=_text(raw, "start", at, required=False),
                       end=_text(raw, "end", at, required=False))


def _metrics(raw: Any, scopes: Sequence[Scope]) -> tuple[QueryMetric, ...]:
    items = _list(raw, "metrics")
    metrics: list[QueryMetric] = []
    for i, item in enumerate(items):
        at = f"metrics[{i}]"
        item = _mapping(item, at, "a mapping with name and query")
        _known(item, QUERY_KEYS + tuple(sorted(SETTING_KEYS)), f"{at}.")
        name = _text(item, "name", at)
        if any(m.settings.name == name for m in metrics):
            raise KayentaError(f"{at}.name", f"duplicate metric name '{name}'")
        canary, baseline = _queries(item, at)
        try:
            settings = metric_settings(item, at, name=name)
        except CaseError as error:
            key, _, reason = str(error).partition(": ")
            raise KayentaError(key, reason) from None
        metrics.append(QueryMetric(settings, canary, baseline, _scope_of(item, at, scopes)))
    return tuple(metrics)


def _queries(item: Mapping[str, Any], at: str) -> tuple[str, str]:
    if "query" in item:
        if "canaryQuery" in item or "baselineQuery" in item:
            raise KayentaError(f"{at}.query", "give query, or canaryQuery and baselineQuery")
        query = _text(item, "query", at)
        if not any(m.group(1) == "scope" for m in _PLACEHOLDER.finditer(query)):
            raise KayentaError(f"{at}.query", (
                "has no {{scope}} placeholder, so canary and baseline would read the same "
                "series; put {{scope}} in its selector, or give canaryQuery and baselineQuery"))
        return query, query
    if "canaryQuery" not in item and "baselineQuery" not in item:
        raise KayentaError(f"{at}.query", "is required (or canaryQuery and baselineQuery)")
    return _text(item, "canaryQuery", at), _text(item, "baselineQuery", at)


def _scope_of(item: Mapping[str, Any], at: str, scopes: Sequence[Scope]) -> str:
    names = [s.name for s in scopes]
    if "scope" in item:
        name = _text(item, "scope", at)
        if name not in names:
            raise KayentaError(f"{at}.scope", f"'{name}' is not a scope (scopes: "
                                              f"{', '.join(names)})")
        return name
    if len(names) == 1:
        return names[0]
    if "default" in names:  # Kayenta's default scope name
        return "default"
    raise KayentaError(f"{at}.scope", f"needed with several scopes ({', '.join(names)})")


def _prometheus(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    raw = _mapping(raw, "prometheus", "a mapping with address, timeout, headers, insecure")
    _known(raw, PROMETHEUS_KEYS, "prometheus.")
    _text(raw, "address", "prometheus", required=False)
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or timeout < 0):
        raise KayentaError("prometheus.timeout", f"must be whole seconds, got {timeout!r}")
    if raw.get("insecure") is not None and not isinstance(raw["insecure"], bool):
        raise KayentaError("prometheus.insecure", "must be true or false")
    headers = raw.get("headers")
    if headers is not None and not (isinstance(headers, list) and all(
            isinstance(h, Mapping) and isinstance(h.get("key"), str)
            and isinstance(h.get("value"), str) for h in headers)):
        raise KayentaError("prometheus.headers", "must be a list of {key, value} strings")
    return dict(raw)


def _group_weights(raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    raw = _mapping(raw, "groupWeights", "a mapping of group name to weight")
    weights = {}
    for name, weight in raw.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise KayentaError(f"groupWeights.{name}", f"must be a positive number, "
                                                       f"got {weight!r}")
        weights[str(name)] = float(weight)
    return weights


def _mapping(value: Any, at: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise KayentaError(at, f"must be {what}, got {_shown(value)}")
    return value


def _list(value: Any, at: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise KayentaError(at, f"must be a non-empty list, got {_shown(value)}")
    return value


def _text(raw: Mapping[str, Any], key: str, at: str, *, required: bool = True) -> str:
    value = raw.get(key)
    path = f"{at}.{key}" if at else key
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise KayentaError(path, f"must be a non-empty string, got {_shown(value)}")
    return value


def _known(raw: Mapping[str, Any], keys: Sequence[str], prefix: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in keys)
    if unknown:
        raise KayentaError(f"{prefix}{unknown[0]}", f"unknown key (known: {', '.join(keys)})")


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)


# ------------------------------------------------------------------------- measuring


def with_window(spec: Mapping[str, Any], interval: float | None) -> dict[str, Any]:
    """`spec` with `window` (seconds) defaulting to the metric's interval, as Argo's provider
    reads back one interval when the scopes give no start."""
    filled = dict(spec)
    if filled.get("window") is None and interval is not None:
        filled["window"] = interval
    return filled


def render_query(template: str, detail: ScopeDetail) -> str:
    """`{{scope}}`, `{{region}}` and `{{step}}` (e.g. `60s`, for rate windows) filled in."""
    values = {"scope": detail.scope, "region": detail.region, "step": f"{detail.step}s"}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def time_range(detail: ScopeDetail, window: float | None, now: float,
               since: float | None = None) -> tuple[float, float]:
    """(start, end) in epoch seconds: the scope's own start and end; else, with lookback,
    from `since` (the analysis run's start) to `now`, as Argo's provider sends the run's start
    time; else `window` before `now` and `now`, as Argo's provider does without lookback."""
    end = _instant(detail.end, "end") if detail.end else now
    if detail.start:
        start = _instant(detail.start, "start")
    elif since is not None:
        start = since
        if start >= end:
            raise KayentaError("lookback", (
                "the analysis run started no earlier than this measurement, so there is "
                "nothing to read back yet: give the metric an initialDelay"))
    elif window is not None:
        start = end - window
    else:
        raise KayentaError("window", "no start and no window to read back")
    if start >= end:
        raise KayentaError("start", "the scope's start is not before its end")
    if (end - start) / detail.step > MAX_POINTS:
        longer = "; with lookback the range grows with the run" if since is not None else ""
        raise KayentaError("step", (
            f"{end - start:g} s at a step of {detail.step} s is more than {MAX_POINTS} samples; "
            f"use a larger step or a shorter window{longer}"))
    return start, end


def _instant(text: str, key: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise KayentaError(key, f"{text!r} is not an RFC 3339 time "
                                "(e.g. 2024-05-01T12:00:00Z)") from None
    if moment.tzinfo is None:
        raise KayentaError(key, f"{text!r} has no time zone (add Z or an offset)")
    return moment.timestamp()


def with_samples(metric: QueryMetric, canary: Sequence[float | None],
                 baseline: Sequence[float | None]) -> MetricSpec:
    return replace(metric.settings, canary=tuple(canary), baseline=tuple(baseline))


def phase_of(verdict: Verdict) -> str:
    """Argo's mapping of a Kayenta score: pass → Successful, marginal → Inconclusive, below →
    Failed; no data is never a pass (Inconclusive), and a failed critical metric is Failed."""
    return _PHASES[verdict]


def judgement_of(result: CaseResult, specs: Sequence[MetricSpec],
                 thresholds: Thresholds) -> Judgement:
    """The record a measurement keeps for reports."""
    return Judgement(
        score=result.score, verdict=result.verdict.value, passing=thresholds.passing,
        marginal=thresholds.marginal, explanation=result.explanation,
        metrics=tuple(JudgedMetric(
            name=m.name, classification=m.classification.value, explanation=m.explanation,
            direction=spec.direction.value, critical=m.critical,
            critical_breach=m.critical_breach, canary_mean=_finite(m.canary.mean),
            baseline_mean=_finite(m.baseline.mean), canary_count=m.canary.count,
            baseline_count=m.baseline.count, p_value=_finite(m.p_value), effect=m.effect.value,
            effect_size=_finite(m.effect_size), allowed_increase=m.allowed_increase,
            allowed_decrease=m.allowed_decrease)
            for m, spec in zip(result.metrics, specs, strict=True)))


def message_of(judgement: Judgement) -> str:
    """The measurement's message: the verdict's reason, then each metric in words, those that
    did not pass first (a report cuts long messages, so what decided comes first)."""
    ordered = sorted(judgement.metrics,
                     key=lambda m: m.classification == Classification.PASS.value)
    return "; ".join([judgement.explanation, *(m.explanation for m in ordered)])


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
