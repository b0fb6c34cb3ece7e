"""Identities the core and the adapters share: a repository, a Kubernetes object, the labels.

They are plain values (no I/O), so the pure core may use them; `bot.forge.base` and
`bot.cluster.model` import them for their callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "coalmine"
APP_LABEL = "coalmine.dev/app"
REVISION_LABEL = "coalmine.dev/revision"
OWNER_LABEL = "coalmine.dev/owner"  # "<forge>.<repository id>": what ownership is decided on
REPOSITORY_ANNOTATION = "coalmine.dev/repository"  # "<forge>:<owner/name>", for people only


@dataclass(frozen=True)
class RepoRef:
    """Identifies a repository on one forge; built by the event parsers."""

    forge: Literal["github", "gitlab"]
    full_name: str  # "owner/name" on GitHub, "group/sub/project" on GitLab
    clone_url: str  # https URL without credentials
    default_branch: str = "main"
    project_id: int | None = None  # GitLab numeric project id
    installation_id: int | None = None  # GitHub App installation id, when sent
    repo_id: int | None = None  # the forge's stable repository id (survives renames)


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
