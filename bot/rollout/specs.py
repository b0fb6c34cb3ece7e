"""The `canary` and `blueGreen` strategy mappings, read the same way from both sources.

An Argo Rollout's `spec.strategy.canary|blueGreen` and a `.coalmine.yaml` app's
`canary:|blueGreen:` use the same field names; the sources differ only in how they name the
workload and where the progress deadline lives, which the callers pass in. A blue-green strategy
is compiled into steps the canary engine runs (preview, pre-promotion analysis, the pause before
promotion, the switch, post-promotion analysis), so one state machine serves both and a failed
analysis aborts and reverts exactly as a canary's does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.rollout import options, routers
from bot.rollout.durations import format_duration
from bot.rollout.fields import At, as_whole, key_names
from bot.rollout.model import (
    BlueGreen,
    CanaryStrategy,
    PauseStep,
    SetCanaryScaleStep,
    SetWeightStep,
    Step,
    WorkloadRef,
)
from bot.rollout.steps import parse_analysis, parse_background, parse_steps

CANARY_KEYS = (
    "steps", "analysis", "trafficRouting", "canaryService", "stableService",
    "dynamicStableScale", "scaleDownDelaySeconds", "abortScaleDownDelaySeconds", "maxSurge",
    "maxUnavailable", "canaryMetadata", "stableMetadata", "minPodsPerReplicaSet",
)
BLUE_GREEN_KEYS = (
    "activeService", "previewService", "previewReplicaCount", "autoPromotionEnabled",
    "autoPromotionSeconds", "prePromotionAnalysis", "postPromotionAnalysis",
    "scaleDownDelaySeconds", "abortScaleDownDelaySeconds", "previewMetadata", "activeMetadata",
    "maxUnavailable", "maxSurge",
)
# Read but without effect in Coalmine; the PR says so.
IGNORED_KEYS = ("antiAffinity", "scaleDownDelayRevisionLimit", "replicaProgressThreshold",
                "analysisRunMetadata")
_REFUSED = {
    "pingPong": "ping-pong Services (Argo's ALB mode) are not supported; use canaryService and "
                "stableService",
}


def parse_canary(raw: dict[str, Any], at: At, *, workload: WorkloadRef, deadline: int,
                 source: str, extra_keys: Iterable[str] = ()) -> CanaryStrategy:
    """A canary mapping (`extra_keys` are the caller's own, e.g. `workload`)."""
    ignored = _check_keys(raw, at, CANARY_KEYS, extra_keys)
    canary_service = options.service_name(raw.get("canaryService"), at.key("canaryService"))
    stable_service = options.service_name(raw.get("stableService"), at.key("stableService"))
    traffic = None
    if raw.get("trafficRouting") is not None:
        traffic = routers.parse_traffic_routing(
            raw["trafficRouting"], at.key("trafficRouting"),
            canary_service=canary_service or None, stable_service=stable_service or None)
    if traffic is not None and traffic.max_traffic_weight not in (None, 100):
        at.key("trafficRouting.maxTrafficWeight").fail(
            "only 100 is supported: Coalmine's weights are percentages")
    parsed = parse_steps(raw.get("steps"), at.key("steps"), traffic)
    dynamic = options.flag(raw.get("dynamicStableScale"), at.key("dynamicStableScale"), False)
    if dynamic and traffic is None:
        at.key("dynamicStableScale").fail("needs trafficRouting (without a router the stable "
                                          "track always gives up the canary's pods)")
    min_pods = None
    if raw.get("minPodsPerReplicaSet") is not None:
        min_pods = as_whole(raw["minPodsPerReplicaSet"], at.key("minPodsPerReplicaSet"), 1)
    return CanaryStrategy(
        workload=workload,
        steps=parsed.steps,
        analysis=parse_background(raw.get("analysis"), at.key("analysis"), parsed),
        progress_deadline_seconds=deadline,
        ignored_fields=ignored,
        source=source,
        source_key=at.path,
        traffic=traffic,
        canary_service=canary_service,
        stable_service=stable_service,
        dynamic_stable_scale=dynamic,
        min_pods_per_replica_set=min_pods,
        **_common(raw, at),
        canary_metadata=options.pod_metadata(raw.get("canaryMetadata"), at.key("canaryMetadata")),
        stable_metadata=options.pod_metadata(raw.get("stableMetadata"), at.key("stableMetadata")),
    )


def parse_blue_green(raw: dict[str, Any], at: At, *, workload: WorkloadRef, deadline: int,
                     source: str, extra_keys: Iterable[str] = ()) -> CanaryStrategy:
    """A blueGreen mapping, compiled into the steps the engine runs."""
    ignored = _check_keys(raw, at, BLUE_GREEN_KEYS, extra_keys)
    active = options.service_name(raw.get("activeService"), at.key("activeService"))
    if not active:
        at.key("activeService").fail("is required: the Service that carries production traffic")
    preview = options.service_name(raw.get("previewService"), at.key("previewService"))
    if preview == active:
        at.key("previewService").fail(f"must differ from activeService ({active!r})")
    preview_count = None
    if raw.get("previewReplicaCount") is not None:
        preview_count = as_whole(raw["previewReplicaCount"], at.key("previewReplicaCount"), 1)
    auto = options.flag(raw.get("autoPromotionEnabled"), at.key("autoPromotionEnabled"), True)
    auto_seconds = options.seconds(raw.get("autoPromotionSeconds"),
                                   at.key("autoPromotionSeconds")) or 0
    blue_green = BlueGreen(active_service=active, preview_service=preview,
                           preview_replica_count=preview_count, auto_promotion_enabled=auto,
                           auto_promotion_seconds=auto_seconds if auto else 0)
    pre = post = None
    if raw.get("prePromotionAnalysis") is not None:
        pre = parse_analysis(raw["prePromotionAnalysis"], at.key("prePromotionAnalysis"),
                             label="pre-promotion analysis")
    if raw.get("postPromotionAnalysis") is not None:
        post = parse_analysis(raw["postPromotionAnalysis"], at.key("postPromotionAnalysis"),
                              label="post-promotion analysis")
    steps = blue_green_steps(blue_green, pre, post)
    return CanaryStrategy(
        workload=workload,
        steps=steps,
        progress_deadline_seconds=deadline,
        ignored_fields=ignored,
        source=source,
        source_key=at.path,
        blue_green=blue_green,
        **_common(raw, at),
        canary_metadata=options.pod_metadata(raw.get("previewMetadata"),
                                             at.key("previewMetadata")),
        stable_metadata=options.pod_metadata(raw.get("activeMetadata"), at.key("activeMetadata")),
    )


def blue_green_steps(blue_green: BlueGreen, pre: Step | None,
                     post: Step | None) -> tuple[Step, ...]:
    """Argo's blue-green update sequence as steps: the preview comes up (at
    previewReplicaCount, else full size) with no production traffic; the pre-promotion
    analysis judges it; the rollout pauses for /promote (autoPromotionEnabled: false) or for
    autoPromotionSeconds; the preview is scaled to full size; the active Service switches to
    it (weight 100); the post-promotion analysis judges it under production traffic."""
    count = blue_green.preview_replica_count
    steps: list[Step] = [
        SetCanaryScaleStep(weight=100, label="preview at full size") if count is None
        else SetCanaryScaleStep(replicas=count, label=f"preview with {count} pod(s)")
    ]
    if pre is not None:
        steps.append(pre)
    if not blue_green.auto_promotion_enabled:
        steps.append(PauseStep(label="waiting for /promote to switch"))
    elif blue_green.auto_promotion_seconds:
        seconds = blue_green.auto_promotion_seconds
        steps.append(PauseStep(duration=float(seconds),
                               label=f"auto-promotion in {format_duration(seconds)}"))
    if count is not None:
        steps.append(SetCanaryScaleStep(weight=100, label="preview scaled to full size"))
    steps.append(SetWeightStep(100, label=f"active Service {blue_green.active_service} "
                                          "switched to the new version"))
    if post is not None:
        steps.append(post)
    return tuple(steps)


def _common(raw: dict[str, Any], at: At) -> dict[str, Any]:
    """The scale-down delays and the Deployments' surge, as CanaryStrategy keywords."""
    fields: dict[str, Any] = {
        "scale_down_delay_seconds": options.seconds(raw.get("scaleDownDelaySeconds"),
                                                    at.key("scaleDownDelaySeconds")),
        "max_surge": options.int_or_percent(raw.get("maxSurge"), at.key("maxSurge")),
        "max_unavailable": options.int_or_percent(raw.get("maxUnavailable"),
                                                  at.key("maxUnavailable")),
    }
    abort_delay = options.seconds(raw.get("abortScaleDownDelaySeconds"),
                                  at.key("abortScaleDownDelaySeconds"))
    if abort_delay is not None:
        fields["abort_scale_down_delay_seconds"] = abort_delay
    if fields["max_surge"] in (0, "0%") and fields["max_unavailable"] in (0, "0%"):
        at.key("maxSurge").fail("maxSurge and maxUnavailable cannot both be 0 (nothing could "
                                "ever be replaced)")
    return fields


def _check_keys(raw: dict[str, Any], at: At, known: tuple[str, ...],
                extra: Iterable[str]) -> tuple[str, ...]:
    """Refuse unknown and unsupported keys; the ignored ones, for the PR's note."""
    allowed = set(known) | set(extra) | set(IGNORED_KEYS)
    for key in key_names(raw):
        if key in _REFUSED:
            at.key(key).fail(_REFUSED[key])
        if key not in allowed:
            at.key(key).fail(f"unknown key (allowed: {', '.join((*extra, *known))})")
    return tuple(k for k in key_names(raw) if k in IGNORED_KEYS)

