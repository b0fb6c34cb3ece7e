"""Small value types shared by the cluster adapter and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "coalmine"
APP_LABEL = "coalmine.dev/app"
REVISION_LABEL = "coalmine.dev/revision"
FIELD_MANAGER = "coalmine"

HealthStatus = Literal["Healthy", "Progressing", "Degraded", "Suspended", "Missing"]


class ClusterError(Exception):
    """A cluster call failed after retries; the message names the object and never a credential."""


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identifies one Kubernetes object; `namespace` is None for cluster-scoped kinds."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace"), meta["name"]
        )

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def identity(self) -> tuple[str, str, str | None, str]:
        """What makes two refs the same object whichever API version they were read at."""
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass
class ApplyReport:
    """What one apply did to each object, in the order the objects were applied."""

    created: list[ObjectRef] = field(default_factory=list)
    configured: list[ObjectRef] = field(default_factory=list)
    unchanged: list[ObjectRef] = field(default_factory=list)

    @property
    def refs(self) -> list[ObjectRef]:
        return [*self.created, *self.configured, *self.unchanged]

    @property
    def changed(self) -> bool:
        return bool(self.created or self.configured)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.configured)} configured, "
            f"{len(self.unchanged)} unchanged"
        )


@dataclass(frozen=True)
class Health:
    """The judgement of one live object, with the reason people will read in the PR."""

    status: HealthStatus
    message: str = ""

    @property
    def healthy(self) -> bool:
        return self.status == "Healthy"

    @property
    def failed(self) -> bool:
        """States that waiting will not cure."""
        return self.status in ("Degraded", "Suspended")


@dataclass(frozen=True)
class HealthReport:
    """The outcome of waiting for a set of objects to become healthy."""

    ok: bool
    message: str
    results: dict[ObjectRef, Health]
    elapsed_s: float
