"""Health of live objects, judged the way Argo CD's gitops-engine judges workloads.

Pure functions of the object as read from the API, so the rules are tested without a cluster.
"""

from __future__ import annotations

from typing import Any

from bot.cluster.model import Health

Obj = dict[str, Any]


def assess(obj: Obj | None) -> Health:
    """Judges any object: workloads by their rollout status, everything else by existing."""
    if obj is None:
        return Health("Missing", "not found in the cluster")
    judge = _JUDGES.get((obj.get("apiVersion", "").rpartition("/")[0], obj.get("kind", "")))
    return judge(obj) if judge else Health("Healthy", "exists")


def _replicas(spec: Obj) -> int:
    """An unset `spec.replicas` means 1, as the API server defaults it."""
    value = spec.get("replicas")
    return 1 if value is None else int(value)


def _observed(obj: Obj) -> bool:
    generation = int(obj.get("metadata", {}).get("generation") or 0)
    return generation <= int(obj.get("status", {}).get("observedGeneration") or 0)


def deployment_health(obj: Obj) -> Health:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    name = obj.get("metadata", {}).get("name", "")
    if spec.get("paused"):
        return Health("Suspended", "Deployment is paused")
    if not _observed(obj):
        return Health(
            "Progressing",
            "Waiting for rollout to finish: observed deployment generation less than desired "
            "generation",
        )
    progressing = next(
        (c for c in status.get("conditions", []) if c.get("type") == "Progressing"), {}
    )
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health("Degraded", f'Deployment "{name}" exceeded its progress deadline')
    desired = _replicas(spec)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < desired:
        return Health(
            "Progressing",
            f"Waiting for rollout to finish: {updated} out of {desired} new replicas have been "
            "updated...",
        )
    if total > updated:
        return Health(
            "Progressing",
            f"Waiting for rollout to finish: {total - updated} old replicas are pending "
            "termination...",
        )
    if available < updated:
        return Health(
            "Progressing",
            f"Waiting for rollout to finish: {available} of {updated} updated replicas are "
            "available...",
        )
    return Health("Healthy", f"{available} of {desired} replicas available")


def statefulset_health(obj: Obj) -> Health:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    observed = int(status.get("observedGeneration") or 0)
    if observed == 0 or not _observed(obj):
        return Health("Progressing", "Waiting for statefulset spec update to be observed...")
    desired = _replicas(spec)
    ready = int(status.get("readyReplicas") or 0)
    if ready < desired:
        return Health("Progressing", f"Waiting for {desired - ready} pods to be ready...")
    strategy = spec.get("updateStrategy") or {}
    partition = (strategy.get("rollingUpdate") or {}).get("partition")
    updated = int(status.get("updatedReplicas") or 0)
    if strategy.get("type", "RollingUpdate") == "RollingUpdate" and partition is not None:
        wanted = desired - int(partition)
        if updated < wanted:
            return Health(
                "Progressing",
                f"Waiting for partitioned roll out to finish: {updated} out of {wanted} new pods "
                "have been updated...",
            )
        return Health("Healthy", f"partitioned roll out complete: {updated} new pods updated")
    if strategy.get("type") == "OnDelete":
        return Health("Healthy", f"statefulset has {ready} ready pods")
    current, update = status.get("currentRevision"), status.get("updateRevision")
    if update != current:
        return Health(
            "Progressing",
            f"waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{update}...",
        )
    return Health(
        "Healthy", f"statefulset rolling update complete {ready} pods at revision {current}"
    )


def daemonset_health(obj: Obj) -> Health:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    name = obj.get("metadata", {}).get("name", "")
    if not _observed(obj):
        return Health(
            "Progressing",
            "Waiting for rollout to finish: observed daemon set generation less than desired "
            "generation",
        )
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return Health(
            "Healthy", f"daemon set {updated} out of {desired} new pods have been updated"
        )
    if updated < desired:
        return Health(
            "Progressing",
            f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} new '
            "pods have been updated...",
        )
    if available < desired:
        return Health(
            "Progressing",
            f'Waiting for daemon set "{name}" rollout to finish: {available} of {desired} '
            "updated pods are available...",
        )
    return Health("Healthy", f"{available} of {desired} pods available")


_JUDGES = {
    ("apps", "Deployment"): deployment_health,
    ("apps", "StatefulSet"): statefulset_health,
    ("apps", "DaemonSet"): daemonset_health,
}
