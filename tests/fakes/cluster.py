"""A cluster and a rollout record store in memory, for the rollout shell's use-case tests.

`FakeCluster` keeps Deployments in a dict (other kinds, such as Services and router objects, in
`others` by kind and name) and makes each Deployment ready as soon as it is written,
unless its name is in `unready` (pods never become available) or `failing` (its own progress
deadline is exceeded); an operation named in `refuse` raises `ClusterError` as a refusing API
server would. Every write is recorded in `calls`, in order. Like `bot.cluster.apply`, an apply
labels what it writes with its owner and is refused over an object another owner's labels
fence (objects put there unlabelled are taken over, as with the policy's `adopt`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.cluster.apply import labelled
from bot.cluster.model import ClusterError, Owner
from bot.cluster.ownership import refusal
from bot.rollout.store import RolloutRecord

Obj = dict[str, Any]


@dataclass
class FakeCluster:
    objects: dict[str, Obj] = field(default_factory=dict)  # by Deployment name
    others: dict[tuple[str, str], Obj] = field(default_factory=dict)  # by (kind, name)
    written: list[Obj] = field(default_factory=list)  # every non-Deployment write, in order
    unready: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)  # "apply", "scale", "delete", "get"
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    # name → the preconditions of its last delete (None: deleted by name alone)
    delete_preconditions: dict[str, Mapping[str, str] | None] = field(default_factory=dict)

    def replicas(self, name: str) -> int | None:
        obj = self.objects.get(name)
        return None if obj is None else obj["spec"].get("replicas")

    def image(self, name: str) -> str | None:
        obj = self.objects.get(name)
        return None if obj is None else obj["spec"]["template"]["spec"]["containers"][0]["image"]

    def put(self, obj: Obj) -> None:
        """A Deployment already running (ready, unless listed in `unready`); not a call."""
        stored = copy.deepcopy(obj)
        self._settle(stored)
        self.objects[stored["metadata"]["name"]] = stored

    def selects(self, service: str) -> str | None:
        """The track a Service's selector pins, if any."""
        obj = self.others.get(("Service", service))
        return None if obj is None else obj["spec"]["selector"].get("coalmine.dev/track")

    def _check(self, op: str) -> None:
        if op in self.refuse:
            raise ClusterError(f"{op} refused by the API server", status=500)

    def _settle(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        generation = int(obj["metadata"].get("generation") or 0) + 1
        obj["metadata"]["generation"] = generation
        want = int(obj["spec"].get("replicas") or 0)
        ready = 0 if name in self.unready | self.failing else want
        obj["status"] = {"observedGeneration": generation, "replicas": want,
                         "updatedReplicas": ready, "availableReplicas": ready}
        if name in self.failing:
            obj["status"]["conditions"] = [{"type": "Progressing",
                                            "reason": "ProgressDeadlineExceeded"}]

    def apply(self, objects: list[Obj], *, app: str, revision: str, default_namespace: str,
              owner: Owner, adopt: bool) -> None:
        self._check("apply")
        for obj in objects:
            stored = copy.deepcopy(labelled(obj, owner, revision))
            name = stored["metadata"]["name"]
            fenced = refusal(self.get(stored.get("apiVersion", ""), stored.get("kind",
                                      "Deployment"), default_namespace, name), owner, adopt=True)
            if fenced:
                raise ClusterError(f"{stored.get('kind', 'Deployment')} {name} {fenced}",
                                   status=409)
            if stored.get("kind", "Deployment") != "Deployment":
                self.calls.append(("apply", f"{stored['kind']}/{name}", revision, owner.app))
                self.others[(stored["kind"], name)] = stored
                self.written.append(copy.deepcopy(stored))
                continue
            self.calls.append(("apply", name, revision, owner.app))
            self._settle(stored)
            self.objects[name] = stored

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
               preconditions: Mapping[str, str] | None = None) -> None:
        self._check("delete")
        self.delete_preconditions[name] = preconditions
        stored = self.objects.get(name) if kind == "Deployment" else self.others.get((kind, name))
        meta = (stored or {}).get("metadata") or {}
        if preconditions and any(meta.get(k) != v for k, v in preconditions.items()):
            raise ClusterError(f"{kind} {name}: the precondition failed", status=409)
        if kind != "Deployment":
            self.calls.append(("delete", f"{kind}/{name}"))
            self.others.pop((kind, name), None)
            return
        self.calls.append(("delete", name))
        self.objects.pop(name, None)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self._check("scale")
        self.calls.append(("scale", name, replicas))
        self.objects[name]["spec"]["replicas"] = replicas
        self._settle(self.objects[name])

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        self._check("get")
        obj = self.objects.get(name) if kind == "Deployment" else self.others.get((kind, name))
        if obj is None:
            return None
        # What an API server's answer always holds: an owned delete names them as preconditions.
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{kind}-{name}")
        meta.setdefault("resourceVersion", "1")
        return copy.deepcopy(obj)


@dataclass
class FakeRecordStore:
    """RecordStore: the last record saved per key, and the aborted-template holds."""

    saved: dict[str, RolloutRecord] = field(default_factory=dict)
    due: dict[str, float | None] = field(default_factory=dict)
    holds: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def save(self, key: str, record: RolloutRecord, due: float | None) -> None:
        self.saved[key] = record
        self.due[key] = due

    def hold(self, key: str, template_hash: str, pr: int | None) -> None:
        self.holds[key] = (template_hash, pr)

    def clear_hold(self, key: str) -> None:
        self.holds.pop(key, None)
