"""Waiting until applied objects are healthy, failing fast when waiting cannot help."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from bot.cluster.health import assess
from bot.cluster.model import Health, HealthReport, ObjectRef


class HealthSource(Protocol):
    """The one call waiting makes: read an object (`bot.cluster.client.Cluster` is one).
    Declared here so that the client can call wait_healthy without an import cycle."""

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None: ...


def wait_healthy(
    cluster: HealthSource,
    refs: Iterable[ObjectRef],
    timeout_s: float,
    poll_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthReport:
    """Polls every object until all are Healthy, one is Degraded/Suspended, or time runs out."""
    refs = list(refs)
    started = clock()
    deadline = started + timeout_s
    # Only workloads have a rollout to wait for; anything else is healthy once applied, so it
    # costs no request. A workload found healthy is not asked again.
    results: dict[ObjectRef, Health] = {
        ref: APPLIED for ref in refs if ref.kind not in WORKLOAD_KINDS}
    while True:
        for ref in refs:
            if ref not in results or not results[ref].healthy:
                results[ref] = _health(cluster, ref)
        elapsed = clock() - started
        failed = next(((ref, h) for ref, h in results.items() if h.failed), None)
        if failed:
            ref, health = failed
            return HealthReport(
                False, f"{ref} is {health.status}: {health.message}", results, elapsed
            )
        waiting = next(((ref, h) for ref, h in results.items() if not h.healthy), None)
        if waiting is None:
            return HealthReport(True, f"{len(refs)} objects healthy", results, elapsed)
        remaining = deadline - clock()
        if remaining <= 0:
            ref, health = waiting
            return HealthReport(
                False,
                f"timed out after {timeout_s:g} s waiting for {ref} "
                f"({health.status}: {health.message})",
                results,
                elapsed,
            )
        sleep(min(poll_s, remaining))


WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
APPLIED = Health("Healthy", "applied")


def _health(cluster: HealthSource, ref: ObjectRef) -> Health:
    return assess(cluster.get(ref.api_version, ref.kind, ref.namespace, ref.name))
