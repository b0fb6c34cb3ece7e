"""Replica-based traffic: the stable Deployment `<name>` and the canary `<name>-canary`.

Without a mesh the only lever is pod counts behind one Service. Both Deployments carry a
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

Obj = dict[str, Any]
TRACK_LABEL = "coalmine.dev/track"
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


def as_stable(deployment: Obj) -> Obj:
    """Git's Deployment as Coalmine applies it: stable track, template fingerprint recorded."""
    digest = template_hash(deployment)
    obj = _with_track(deployment, "stable")
    obj.setdefault("metadata", {}).setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = digest
    return obj


def canary_of(deployment: Obj, replicas: int, revision: str) -> Obj:
    """The canary Deployment running Git's new template at `replicas` pods."""
    obj = _with_track(deployment, "canary")
    meta = obj["metadata"]
    meta["name"] = meta["name"] + CANARY_SUFFIX
    meta.setdefault("labels", {})[TRACK_LABEL] = "canary"
    meta["labels"][REVISION_LABEL] = revision
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    obj["spec"]["replicas"] = replicas
    obj.pop("status", None)
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
