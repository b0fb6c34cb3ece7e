"""The `job` metric provider: a Kubernetes Job whose success or failure is the measurement.

As Argo Rollouts' job provider (metricproviders/job/job.go):
- the Job is named `<run>.<metric>.<n>`, n being the metric's measurements and errors so far
  plus one, the metric part cut so the name fits 63 characters (the Job controller copies the
  name into a pod label). Argo's run part is the AnalysisRun's UID; Coalmine's is the app and its
  run id, unique among the Jobs of a namespace;
- it runs in the rollout's namespace, labelled with its run (pods too) and annotated with its
  metric; creating it again (a repeated measurement request) finds the same Job and goes on
  watching it, when the Job is this run's;
- `JobComplete` is Successful and `JobFailed` Failed (after the Job's own backoffLimit); a pod
  whose container waits in ErrImagePull, ImagePullBackOff or InvalidImageName makes the
  measurement Inconclusive, so the rollout pauses for a person instead of failing;
- a run that stops while its Job runs deletes the Job (Argo's Terminate), and a metric keeps
  its newest `limit` Jobs (measurementRetention, 10 by default); older ones are deleted.

What Coalmine adds: a Job is code execution in the cluster, so it is created as the
repository's account (the rollout's impersonated cluster view), with the repository's owner
labels (bot.cluster.ownership), and only when the repository's policy allows kind batch/Job in
the rollout's namespace; otherwise the measurement is an Error saying which rule refused it.

Nothing here waits for a Job: `start` creates it and `verdict` reads it once, so a Job that runs
for minutes holds no thread (the caller polls; see handlers.rollout_measure).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.analysis.measurement import Measurement
from bot.analysis.providers import ProviderError
from bot.cluster.model import ClusterError, Owner
from bot.cluster.ownership import owned_by
from bot.policy import Policy, check

Obj = dict[str, Any]
JOB_API = "batch/v1"
NAME_LIMIT = 63  # Argo's Kubernetes_DNS_Limit: the Job name becomes a pod label value
RUN_LABEL = "coalmine.dev/analysis-run"  # on the Job and its pods (Argo: analysisrun uid)
METRIC_ANNOTATION = "coalmine.dev/analysis-metric"
RUN_ANNOTATION = "coalmine.dev/analysis-run"
# Container waiting reasons a Job never recovers from on its own (Argo's terminalWaitingReasons).
TERMINAL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


class JobCluster(Protocol):
    """What the job provider does to a cluster, as the repository's account."""

    def apply(self, objects: Sequence[Obj], *, app: str, revision: str, default_namespace: str,
              owner: Owner, adopt: bool) -> Any: ...

    def get(self, api_version: str, kind: str, namespace: str | None,
            name: str) -> Obj | None: ...

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[Obj]: ...

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str,
               propagation_policy: str = "Background") -> Any: ...


@dataclass(frozen=True)
class JobTarget:
    """Where and for whom one measurement's Job runs."""

    app: str
    run_id: str
    metric: str
    number: int  # the metric's measurements + errors so far, + 1
    namespace: str
    owner: Owner
    revision: str
    cluster: str = "default"

    @property
    def run_part(self) -> str:
        return f"{self.app}-{self.run_id}"

    @property
    def name(self) -> str:
        return job_name(self.run_part, self.metric, self.number)


def job_name(run_part: str, metric: str, number: int) -> str:
    """`<run>.<metric>.<n>`; over 63 characters, the metric part is cut (then the run part)."""
    name = f"{run_part}.{metric}.{number}"
    over = len(name) - NAME_LIMIT
    if over <= 0:
        return name
    keep = max(len(metric) - over, 1)
    name = f"{run_part}.{metric[:keep]}.{number}"
    over = len(name) - NAME_LIMIT
    return name if over <= 0 else f"{run_part[:len(run_part) - over]}.{metric[:keep]}.{number}"


def manifest(job: Mapping[str, Any], target: JobTarget) -> Obj:
    """The Job for `target` from the metric's `job: {metadata?, spec}`."""
    meta = job.get("metadata") or {}
    spec = copy.deepcopy(dict(job["spec"]))
    template = spec.setdefault("template", {})
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), RUN_LABEL: target.run_id}
    return {
        "apiVersion": JOB_API,
        "kind": "Job",
        "metadata": {
            "name": target.name,
            "namespace": target.namespace,
            "labels": {**(meta.get("labels") or {}), RUN_LABEL: target.run_id},
            "annotations": {**(meta.get("annotations") or {}),
                            RUN_ANNOTATION: target.run_id, METRIC_ANNOTATION: target.metric},
        },
        "spec": spec,
    }


def policy_refusal(policy: Policy, job: Obj, target: JobTarget) -> str | None:
    """Why the repository's policy forbids creating `job`, or None."""
    violations = check(policy, [job], cluster=target.cluster,
                       default_namespace=target.namespace, cluster_scoped=lambda *_: False)
    if not violations:
        return None
    rules = "; ".join(v.rule for v in violations)
    return (f"the repository's policy does not allow the metric's Job in namespace "
            f"{target.namespace}: {rules}")


def start(cluster: JobCluster, job: Mapping[str, Any], target: JobTarget,
          policy: Policy) -> str:
    """Create the measurement's Job as the repository (or find it, already this run's) and
    return its name. ProviderError when the policy or the cluster refuses."""
    obj = manifest(job, target)
    refusal = policy_refusal(policy, obj, target)
    if refusal:
        raise ProviderError(refusal)
    live = _get(cluster, target.namespace, target.name)
    if live is not None:
        labels = (live.get("metadata") or {}).get("labels") or {}
        if labels.get(RUN_LABEL) == target.run_id and owned_by(live, target.owner):
            return target.name  # asked again while it runs: keep watching the same Job
        raise ProviderError(f"Job {target.namespace}/{target.name} exists and is not this "
                            "analysis run's")
    try:
        cluster.apply([obj], app=target.app, revision=target.revision,
                      default_namespace=target.namespace, owner=target.owner, adopt=False)
    except ClusterError as error:
        raise ProviderError(f"cannot create Job {target.namespace}/{target.name}: "
                            f"{error}") from None
    return target.name


def verdict(cluster: JobCluster, namespace: str, name: str, now: float) -> Measurement | None:
    """The measurement the Job gives now, or None while it still runs."""
    job = _get(cluster, namespace, name)
    where = f"Job {namespace}/{name}"
    if job is None:
        return Measurement("Error", None, f"{where} not found (deleted?)", now)
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return Measurement("Successful", "Complete", f"{where} completed", now)
        if condition.get("type") == "Failed":
            why = ": ".join(str(condition[k]) for k in ("reason", "message") if condition.get(k))
            return Measurement("Failed", "Failed", f"{where} failed" + (f": {why}" if why else ""),
                               now)
    stuck = _terminal_pod_error(cluster, job)
    if stuck:
        return Measurement("Inconclusive", None, stuck, now)
    return None


def _terminal_pod_error(cluster: JobCluster, job: Obj) -> str | None:
    """A pod of the Job whose container can never start (its image cannot be pulled)."""
    meta = job["metadata"]
    selector = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels") or {
        "job-name": meta["name"]}
    text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    try:
        pods = cluster.list("v1", "Pod", meta.get("namespace"), label_selector=text)
    except ClusterError as error:
        raise ProviderError(f"cannot read the pods of Job {meta['name']}: {error}") from None
    for pod in pods:
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (
                status.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in TERMINAL_WAITING:
                return (f"Pod {pod['metadata']['name']}, container {cs.get('name')} has "
                        f"terminal error ({waiting['reason']}): {waiting.get('message', '')}"
                        ).rstrip(": ")
    return None


def delete(cluster: JobCluster, namespace: str, name: str) -> None:
    """Delete the Job and its pods (Argo deletes in the foreground)."""
    try:
        cluster.delete(JOB_API, "Job", namespace, name, propagation_policy="Foreground")
    except ClusterError as error:
        raise ProviderError(f"cannot delete Job {namespace}/{name}: {error}") from None


def run_jobs(cluster: JobCluster, namespace: str, run_id: str, owner: Owner) -> list[Obj]:
    """The run's Jobs that carry the owner's labels, oldest first."""
    selector = f"{RUN_LABEL}={run_id}"
    try:
        jobs = cluster.list(JOB_API, "Job", namespace, label_selector=selector)
    except ClusterError as error:
        raise ProviderError(f"cannot list the Jobs of run {run_id}: {error}") from None
    mine = [j for j in jobs if owned_by(j, owner)]
    return sorted(mine, key=_age_order)


def _age_order(job: Obj) -> tuple[str, int, str]:
    """Creation time, then the measurement number the name ends with (`.10` after `.9`)."""
    meta = job["metadata"]
    number = meta["name"].rpartition(".")[2]
    return (meta.get("creationTimestamp") or "", int(number) if number.isdigit() else 0,
            meta["name"])


def collect_garbage(cluster: JobCluster, namespace: str, run_id: str, metric: str,
                    owner: Owner, limit: int) -> list[str]:
    """Delete the metric's oldest Jobs beyond `limit` (Argo's GarbageCollect); their names."""
    jobs = [j for j in run_jobs(cluster, namespace, run_id, owner)
            if (j["metadata"].get("annotations") or {}).get(METRIC_ANNOTATION) == metric]
    doomed = [j["metadata"]["name"] for j in jobs[:max(len(jobs) - limit, 0)]]
    for name in doomed:
        delete(cluster, namespace, name)
    return doomed


def unfinished(job: Obj) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in conditions)


def _get(cluster: JobCluster, namespace: str, name: str) -> Obj | None:
    try:
        return cluster.get(JOB_API, "Job", namespace, name)
    except ClusterError as error:
        raise ProviderError(f"cannot read Job {namespace}/{name}: {error}") from None
