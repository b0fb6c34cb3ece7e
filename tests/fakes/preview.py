"""In-memory fakes of the ports of handlers/preview.py: the checked-out head, the cluster's
reads and dry run, and the report. Each records what was asked of it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bot.cluster.model import DryRun, ObjectRef, Owner
from bot.errors import ManifestError

Obj = dict[str, Any]


@dataclass
class FakeTree:
    config: str | None
    apps: dict[str, list[Obj] | str] = field(default_factory=dict)  # path → objects, or error

    def config_text(self) -> str | None:
        return self.config

    def render(self, app_path: str) -> list[tuple[Obj, str]]:
        found = self.apps.get(app_path, f"{app_path}: no such file or directory")
        if isinstance(found, str):
            raise ManifestError(found)
        return [(copy.deepcopy(obj), f"{app_path}/{obj['metadata']['name']}.yaml")
                for obj in found]


@dataclass
class FakeSources:
    """`Sources`: one FakeTree per commit; records (sha, clone URL) of every checkout."""

    trees: dict[str, FakeTree] = field(default_factory=dict)
    checked_out: list[tuple[str, str]] = field(default_factory=list)

    @contextmanager
    def checkout(self, repo: Any, clone_url: str, sha: str) -> Iterator[FakeTree]:
        self.checked_out.append((sha, clone_url))
        yield self.trees[sha]


def _ref(obj: Obj, default_namespace: str) -> ObjectRef:
    meta = obj["metadata"]
    namespace = None if obj["kind"] == "Namespace" else meta.get("namespace") or default_namespace
    return ObjectRef(obj["apiVersion"], obj["kind"], namespace, meta["name"])


@dataclass
class FakePreviewCluster:
    """`PreviewCluster` over dicts: `live` objects by ref, `errors` by ref for the dry run,
    `refused` refs (another owner's), `owned` refs prune would find. It has no way to write."""

    live: dict[ObjectRef, Obj] = field(default_factory=dict)
    errors: dict[ObjectRef, str] = field(default_factory=dict)
    refused: set[ObjectRef] = field(default_factory=set)
    owned: list[ObjectRef] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def discovered(self, api_version: str, kind: str) -> bool | None:
        self.calls.append(("discovered", kind))
        return kind in ("Namespace", "ClusterRole")

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        self.calls.append(("get", kind, namespace, name))
        return copy.deepcopy(self.live.get(ObjectRef(api_version, kind, namespace, name)))

    def dry_run(self, objects: Iterable[Obj], *, revision: str, default_namespace: str,
                owner: Owner, adopt: bool = False) -> list[DryRun]:
        objects = list(objects)
        self.calls.append(("dry_run", revision, owner, tuple(str(_ref(o, default_namespace))
                                                             for o in objects)))
        out = []
        for obj in objects:
            ref = _ref(obj, default_namespace)
            if ref in self.refused:
                out.append(DryRun(ref, refused=f"{ref} is owned by someone else"))
            elif ref in self.errors:
                out.append(DryRun(ref, live=self.live.get(ref), error=self.errors[ref]))
            else:
                answer = copy.deepcopy(obj)
                answer["metadata"]["namespace"] = ref.namespace
                out.append(DryRun(ref, live=copy.deepcopy(self.live.get(ref)), answer=answer))
        return out

    def prune_candidates(self, app: str, keep: Iterable[ObjectRef], *, owner: Owner,
                         may_delete: Callable[[ObjectRef], bool],
                         namespaces: Iterable[str] | None = None) -> list[ObjectRef]:
        keep = set(keep)
        self.calls.append(("prune_candidates", app, frozenset(keep)))
        return [ref for ref in self.owned if ref not in keep and may_delete(ref)]


@dataclass
class FakeClusters:
    """`Clusters`: one FakePreviewCluster, and whom each view impersonates."""

    cluster_view: FakePreviewCluster = field(default_factory=FakePreviewCluster)
    views: list[tuple[str | None, str | None]] = field(default_factory=list)

    def cluster(self, name: str | None, *, impersonate: str | None = None) -> FakePreviewCluster:
        self.views.append((name, impersonate))
        return self.cluster_view


@dataclass
class FakeReport:
    statuses: list[tuple[str, str, str]] = field(default_factory=list)  # (sha, state, text)
    comments: list[tuple[int, str]] = field(default_factory=list)

    def status(self, repo: Any, number: int, sha: str, state: str, description: str) -> None:
        self.statuses.append((sha, state, description))

    def comment(self, repo: Any, number: int, body: str) -> None:
        self.comments.append((number, body))
