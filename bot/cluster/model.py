"""Small value types shared by the cluster adapter and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bot.refs import ObjectRef  # a value type of the core; the cluster's callers use it here

FIELD_MANAGER = "coalmine"
FORGES = ("github", "gitlab")

HealthStatus = Literal["Healthy", "Progressing", "Degraded", "Suspended", "Missing"]


class ClusterError(Exception):
    """A cluster call failed after retries; the message names the object and never a credential.

    `status` is the API server's HTTP code when it answered (404, 403, 409...), else None.
    """

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Owner:
    """The repository (by its forge's stable id) and app that own the objects they apply.

    The id, not the name, goes into the label: a renamed repository keeps its objects, and a
    new repository that takes over the old name cannot claim them. The name travels in an
    annotation only so that people (and error messages) can tell who the owner is.
    """

    forge: str
    repo_id: int
    full_name: str
    app: str

    def __post_init__(self) -> None:
        if self.forge not in FORGES:
            raise ValueError(f"owner forge {self.forge!r} is not one of {', '.join(FORGES)}")
        if isinstance(self.repo_id, bool) or not isinstance(self.repo_id, int) or self.repo_id < 1:
            raise ValueError(f"owner repo_id {self.repo_id!r} is not a positive integer")
        if not self.app:
            raise ValueError("owner app is empty")

    @property
    def label_value(self) -> str:
        """A valid label value (alphanumerics and dots, under 63 characters): forge and id."""
        return f"{self.forge}.{self.repo_id}"

    @property
    def repository(self) -> str:
        """`github:acme/gitops`: the value of the repository annotation."""
        return f"{self.forge}:{self.full_name}"


@dataclass(frozen=True)
class Conflict:
    """One live object a set may not write, and who it belongs to, in words."""

    ref: ObjectRef
    reason: str

    def __str__(self) -> str:
        return f"{self.ref} {self.reason}"


class OwnershipConflict(ClusterError):
    """Objects of an apply belong to someone else; nothing of the set was written."""

    def __init__(self, conflicts: list[Conflict]):
        self.conflicts = tuple(conflicts)
        listed = "; ".join(str(conflict) for conflict in self.conflicts)
        count = len(self.conflicts)
        noun = "object belongs" if count == 1 else "objects belong"
        super().__init__(f"nothing applied: {count} {noun} to someone else: {listed}")


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


@dataclass(frozen=True)
class DryRun:
    """What a server-side dry-run apply says of one object (bot.cluster.dryrun).

    Exactly one of these holds: `answer` (what the server would store; `live` is what it
    stores now, None when the object would be created), `refused` (another owner's object:
    nothing of it is read out), `error` (the server refused the object: schema, admission,
    immutable field) or `skipped` (it cannot be checked before the merge creates what it
    needs, e.g. its Namespace or CustomResourceDefinition).
    """

    ref: ObjectRef
    live: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    refused: str | None = None
    error: str | None = None
    skipped: str | None = None
