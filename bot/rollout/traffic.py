"""The two tracks of a rollout: the stable Deployment `<name>` and the canary `<name>-canary`,
and the Services a strategy pins to one of them.

Without a traffic router the only lever is pod counts behind one Service. Both Deployments carry a
`coalmine.dev/track` label in their selector, so their ReplicaSets never adopt each other's pods,
while a Service that selects on the app's own labels reaches both tracks. Selectors are immutable
in Kubernetes, which is why the stable track label is added on the very first (plain) deploy.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from bot.refs import REVISION_LABEL, ObjectRef
from bot.rollout import routers
from bot.rollout.model import CanaryStrategy, ExperimentTemplate, PodMetadata

Obj = dict[str, Any]
TRACK_LABEL = "coalmine.dev/track"
EXPERIMENT_LABEL = "coalmine.dev/experiment"  # the experiment template's name, on its pods
TEMPLATE_HASH_ANNOTATION = "coalmine.dev/template-hash"
CANARY_SUFFIX = "-canary"


def template_hash(deployment: Obj) -> str:
    """Fingerprint of the pod template as written in Git (before any label we add)."""
    template = copy.deepcopy(deployment.get("spec", {}).get("template", {}))
    labels = template.get("metadata", {}).get("labels", {})
    labels.pop(TRACK_LABEL, None)
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def replicas_of(deployment: Obj) -> int:
    value = deployment.get("spec", {}).get("replicas")
    return 1 if value is None else int(value)


def rollout_replicas(git_deployment: Obj, live_stable: Obj) -> int:
    """The replica count a rollout splits between the tracks: Git's, or the live count when Git
    leaves `replicas` out (an HPA-managed workload: the autoscaler owns the number)."""
    if git_deployment.get("spec", {}).get("replicas") is None:
        return replicas_of(live_stable)
    return replicas_of(git_deployment)


def _with_track(deployment: Obj, track: str) -> Obj:
    obj = copy.deepcopy(deployment)
    spec = obj.setdefault("spec", {})
    selector = spec.setdefault("selector", {}).setdefault("matchLabels", {})
    selector[TRACK_LABEL] = track
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta.setdefault("labels", {})[TRACK_LABEL] = track
    return obj


def with_pod_metadata(obj: Obj, metadata: PodMetadata | None) -> Obj:
    """`obj` (a Deployment, changed in place) with a track's extra pod labels and annotations
    (Argo's canaryMetadata / stableMetadata, previewMetadata / activeMetadata)."""
    if metadata is None:
        return obj
    template_meta = obj.setdefault("spec", {}).setdefault("template", {}).setdefault(
        "metadata", {})
    if metadata.labels:
        template_meta.setdefault("labels", {}).update(
            {k: v for k, v in metadata.labels if k != TRACK_LABEL})
    if metadata.annotations:
        template_meta.setdefault("annotations", {}).update(dict(metadata.annotations))
    return obj


def with_rolling_update(deployment: Obj, max_surge: int | str | None,
                        max_unavailable: int | str | None) -> Obj:
    """A copy of `deployment` whose rolling update uses the strategy's maxSurge and
    maxUnavailable (Argo's fields; they pace the stable Deployment taking the new version)."""
    if max_surge is None and max_unavailable is None:
        return deployment
    obj = {**deployment, "spec": copy.deepcopy(deployment.get("spec") or {})}
    strategy = obj["spec"].setdefault("strategy", {})
    strategy["type"] = "RollingUpdate"
    rolling = strategy.setdefault("rollingUpdate", {})
    if max_surge is not None:
        rolling["maxSurge"] = max_surge
    if max_unavailable is not None:
        rolling["maxUnavailable"] = max_unavailable
    return obj


def as_stable(deployment: Obj, metadata: PodMetadata | None = None) -> Obj:
    """Git's Deployment as Coalmine applies it: stable track, template fingerprint recorded."""
    digest = template_hash(deployment)
    obj = with_pod_metadata(_with_track(deployment, "stable"), metadata)
    obj.setdefault("metadata", {}).setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = digest
    return obj


def canary_of(deployment: Obj, replicas: int, revision: str,
              metadata: PodMetadata | None = None) -> Obj:
    """The canary Deployment running Git's new template at `replicas` pods."""
    obj = with_pod_metadata(_with_track(deployment, "canary"), metadata)
    meta = obj["metadata"]
    meta["name"] = meta["name"] + CANARY_SUFFIX
    meta.setdefault("labels", {})[TRACK_LABEL] = "canary"
    meta["labels"][REVISION_LABEL] = revision
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    obj["spec"]["replicas"] = replicas
    obj.pop("status", None)
    return obj


def experiment_of(deployment: Obj, template: ExperimentTemplate, revision: str) -> Obj:
    """The Deployment `<name>-exp-<template>` running `deployment`'s pod template (the stable's or
    the canary's) for an experiment step. Its pods carry `coalmine.dev/track: experiment` and
    `coalmine.dev/experiment: <template>`, so neither track's Deployment adopts them and
    queries tell a baseline from a canary by the template's name."""
    obj = _with_track(deployment, "experiment")
    spec = obj["spec"]
    spec["selector"]["matchLabels"][EXPERIMENT_LABEL] = template.name
    pod_labels = spec["template"]["metadata"]["labels"]
    pod_labels.update({k: v for k, v in template.labels
                       if k not in (TRACK_LABEL, EXPERIMENT_LABEL)})
    pod_labels[EXPERIMENT_LABEL] = template.name
    meta = obj["metadata"]
    meta["name"] = template.deployment_name(meta["name"])
    meta.setdefault("labels", {}).update({TRACK_LABEL: "experiment",
                                          EXPERIMENT_LABEL: template.name,
                                          REVISION_LABEL: revision})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop(TEMPLATE_HASH_ANNOTATION, None)
    spec["replicas"] = template.replicas
    obj.pop("status", None)
    return obj


def experiment_service(experiment: Obj, template: ExperimentTemplate, workload: str) -> Obj | None:
    """The Service for an experiment template that has a `weight` or a `service`, as Argo's
    experiment controller makes it: selecting exactly the template's pods (the experiment
    Deployment's selector, where Argo uses its ReplicaSet's labels), one port per container
    port (same number, protocol and name). None when the template asks for no Service, or its
    pods declare no port (Argo then makes none either)."""
    name = template.service_name(workload)
    if name is None:
        return None
    spec = experiment.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    ports = []
    for container in containers:
        for port in container.get("ports") or []:
            entry = {"protocol": port.get("protocol") or "TCP",
                     "port": port["containerPort"], "targetPort": port["containerPort"]}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
    if not ports:
        return None
    meta = experiment["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": meta.get("namespace"),
                     "labels": dict(meta.get("labels") or {})},
        "spec": {"selector": dict(spec["selector"]["matchLabels"]), "ports": ports},
    }


def experiment_backend_port(service: Obj) -> int | None:
    """The port of an experiment Service that an HTTP route sends to: the one named `http`,
    else the first TCP one (as the Gateway API plugin picks, minus UDP ports that cannot carry
    HTTP); None when there is none."""
    ports = [p for p in (service.get("spec") or {}).get("ports") or []
             if (p.get("protocol") or "TCP") == "TCP"]
    named = [p for p in ports if p.get("name") == "http"]
    return (named or ports)[0]["port"] if ports else None


def is_experiment_service(live: Obj | None, desired: Obj) -> bool:
    """Whether a live Service is the one Coalmine made for the same experiment template of
    the same workload (labels and selector say so): the only Service an experiment may
    overwrite or delete, since `service.name` could name the app's own Service, which the
    cluster's ownership check lets the app's rollout write. Labels and selector can be copied
    by another repository, so the shell also requires this app's owner labels."""
    if live is None:
        return False
    labels = (live.get("metadata") or {}).get("labels") or {}
    wanted = desired["metadata"]["labels"]
    return (labels.get(TRACK_LABEL) == "experiment"
            and labels.get(EXPERIMENT_LABEL) == wanted.get(EXPERIMENT_LABEL)
            and (live.get("spec") or {}).get("selector") == desired["spec"]["selector"])


def experiment_subset_labels(template: ExperimentTemplate) -> tuple[tuple[str, str], ...]:
    """The pod labels only `template`'s pods carry (an Istio subset selects them)."""
    return ((EXPERIMENT_LABEL, template.name), (TRACK_LABEL, "experiment"))


BASELINE_SUFFIX = "-baseline"


def baseline_of(stable: Obj, replicas: int, revision: str) -> Obj:
    """The baseline Deployment `<name>-baseline`: the stable's pod template at `replicas` pods,
    labelled `coalmine.dev/track: baseline` (a fresh copy of the old version, so the judge
    compares the canary with pods as young as it is)."""
    obj = canary_of(stable, replicas, revision)
    obj = _with_track(obj, "baseline")
    meta = obj["metadata"]
    meta["name"] = stable["metadata"]["name"] + BASELINE_SUFFIX
    meta["labels"][TRACK_LABEL] = "baseline"
    (meta.get("annotations") or {}).pop(TEMPLATE_HASH_ANNOTATION, None)
    return obj


def stable_at(live_stable: Obj, replicas: int) -> Obj:
    """The live stable Deployment as an apply object (server-set fields dropped) at `replicas`.

    The whole spec is kept, so restoring it after an aborted completion brings back every
    field Git had, not only the template.
    """
    meta = live_stable["metadata"]
    spec = copy.deepcopy(live_stable["spec"])
    spec["replicas"] = replicas
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k not in _SERVER_ANNOTATIONS}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": spec,
    }


_SERVER_ANNOTATIONS = frozenset({"deployment.kubernetes.io/revision"})


def canary_ref(deployment: Obj, namespace: str) -> ObjectRef:
    meta = deployment["metadata"]
    return ObjectRef("apps/v1", "Deployment", meta.get("namespace") or namespace,
                     meta["name"] + CANARY_SUFFIX)


def needs_canary(new_deployment: Obj, live: Obj | None) -> bool:
    """A canary only when a stable track exists and the pod template really changed."""
    if live is None:
        return False
    live_hash = (live.get("metadata", {}).get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
    selector = live.get("spec", {}).get("selector", {}).get("matchLabels", {})
    if live_hash is None or selector.get(TRACK_LABEL) != "stable":
        return False  # not deployed by Coalmine with a stable track yet: plain apply adopts it
    return live_hash != template_hash(new_deployment)


# ---------------------------------------------------------------------------- Services


def named_services(strategy: CanaryStrategy) -> list[tuple[str, str]]:
    """(strategy key, Service name) of each Service the strategy pins to a track."""
    if strategy.blue_green is not None:
        pairs = [("activeService", strategy.blue_green.active_service),
                 ("previewService", strategy.blue_green.preview_service)]
    else:
        pairs = [("canaryService", strategy.canary_service),
                 ("stableService", strategy.stable_service)]
    return [(key, name) for key, name in pairs if name]


def service_tracks(strategy: CanaryStrategy, *, running: bool, weight: int) -> dict[str, str]:
    """The track each named Service selects now.

    While a rollout runs, the canary (preview) Service selects the canary and the stable one
    the stable track; the active Service of a blue-green switches to the new version at weight
    100. Outside a rollout every one of them selects stable, as Argo points them all at the
    stable ReplicaSet."""
    tracks = {name: "stable" for _key, name in named_services(strategy)}
    if not running:
        return tracks
    if strategy.blue_green is not None:
        if strategy.blue_green.preview_service:
            tracks[strategy.blue_green.preview_service] = "canary"
        if weight >= 100:
            tracks[strategy.blue_green.active_service] = "canary"
    elif strategy.canary_service:
        tracks[strategy.canary_service] = "canary"
    return tracks


def pin_service(service: Obj, track: str) -> Obj:
    """A copy of `service` whose selector also requires the pods of `track`."""
    obj = {**service, "spec": copy.deepcopy(service.get("spec") or {})}
    obj["spec"].setdefault("selector", {})[TRACK_LABEL] = track
    return obj


def pinned_track(live_service: Obj | None) -> str | None:
    """The track a live Service selects, if a rollout pinned it."""
    if live_service is None:
        return None
    return ((live_service.get("spec") or {}).get("selector") or {}).get(TRACK_LABEL)


def router_context(strategy: CanaryStrategy, name: str, namespace: str
                   ) -> routers.RouterContext | None:
    """What the strategy's traffic router needs to know of the rollout; None without one."""
    if strategy.traffic is None:
        return None
    return routers.RouterContext(rollout=name, namespace=namespace,
                                 canary_service=strategy.canary_service,
                                 stable_service=strategy.stable_service)


def router_objects(strategy: CanaryStrategy, name: str, namespace: str) -> list[Obj]:
    """Stand-ins (kind, namespace, name) for every object the strategy's router reads or
    writes: the canary Ingress it creates, an HTTPRoute in the namespace the Gateway API
    plugin names. The rollout writes them as the repository, so the repository's policy must
    allow them exactly as it allows the app's own manifests."""
    router_ctx = router_context(strategy, name, namespace)
    if strategy.traffic is None or router_ctx is None:
        return []
    return [{"apiVersion": key.api_version, "kind": key.kind,
             "metadata": {"name": key.name, "namespace": key.namespace}}
            for key in routers.reads(strategy.traffic, router_ctx)]
