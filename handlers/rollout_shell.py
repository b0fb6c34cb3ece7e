"""Carrying out the rollout engine's actions: the cluster part under the rollout's lock, the
rest collected for after it.

`run` feeds one event to the engine, executes the cluster actions it asks for at once (a scale
answers with the workloads' health, which goes back into the engine), and saves the record. It
decides nothing: restore, abort, supersede and the replica count are the engine's calls; an
action this module does not know fails loudly instead of being dropped. Measurements, statuses,
comments, replies and follow-up jobs are only collected on the `Shell`; the caller carries them
out once the lock is released, so slow I/O never holds a rollout.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, assert_never

from bot.cluster.health import assess
from bot.cluster.model import ClusterError, Owner
from bot.rollout import engine, traffic
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord

MAX_FOLLOW_UPS = 200  # a guard against an engine/shell loop, never reached in practice
Obj = dict[str, Any]


class WorkloadCluster(Protocol):
    """What the shell does to a cluster (`bot.cluster.client.Cluster`, impersonating the
    repository's account): apply the canary or stable, scale stable, delete the canary, read."""

    def apply(self, objects: Sequence[Obj], *, app: str, revision: str, default_namespace: str,
              owner: Owner, adopt: bool) -> Any: ...

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> Any: ...

    def scale(self, namespace: str, name: str, replicas: int) -> Any: ...

    def get(self, api_version: str, kind: str, namespace: str | None,
            name: str) -> Obj | None: ...


class RecordStore(Protocol):
    """The part of `bot.rollout.store.RolloutStore` the shell writes, under the caller's lock."""

    def save(self, key: str, record: RolloutRecord, due: float | None) -> Any: ...

    def hold(self, key: str, template_hash: str, pr: int | None) -> None: ...

    def clear_hold(self, key: str) -> None: ...


def run(cluster: WorkloadCluster, store: RecordStore, key: str, record: RolloutRecord,
        event: m.Event, clock: Callable[[], float] = time.time) -> Shell:
    """Advance and save under the caller's lock; the returned shell holds what is left to do
    once the lock is released. `cluster` acts as the rollout's repository (see its context)."""
    shell = Shell(record.context, record.state, cluster_port=cluster, store=store, key=key)
    state, actions = engine.advance(record.state, event, clock())
    pending = deque(actions)
    follow_ups = 0
    while pending:
        action = pending.popleft()
        shell.state = state
        for follow in shell.execute(action):
            follow_ups += 1
            if follow_ups > MAX_FOLLOW_UPS:
                raise RuntimeError(f"rollout {key}: too many follow-up events")
            state, more = engine.advance(state, follow, clock())
            pending.extend(more)
    if isinstance(event, m.Retry) and state.phase != "Aborted":
        store.clear_hold(key)
    saved = RolloutRecord(state, shell.context)
    store.save(key, saved, engine.next_wakeup(state))
    shell.state = state
    shell.record = saved
    return shell


@dataclass
class Shell:
    """Carries out actions: cluster ones at once, under the lock; measurements, forge writes
    and replies are collected for after the state is saved and the lock released."""

    context: RolloutContext
    state: m.RolloutState
    cluster_port: WorkloadCluster | None = None  # None for a shell that only replies
    store: RecordStore | None = None
    key: str = ""
    record: RolloutRecord | None = None
    status: m.PostStatus | None = None
    comment: bool = False
    ticks: list[m.ScheduleTick] = field(default_factory=list)
    measures: list[m.Measure] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    replies_elsewhere: list[tuple[int, str]] = field(default_factory=list)
    revert: bool = False
    restore_retry: bool = False

    def execute(self, action: m.Action) -> list[m.Event]:
        if isinstance(action, m.SetWeight):
            return self.set_weight(action.weight)
        if isinstance(action, m.RestoreStable):
            return self.restore_stable()
        if isinstance(action, m.RemoveCanary):
            return self.remove_canary()
        if isinstance(action, m.Complete):
            return self.complete()
        if isinstance(action, m.CheckHealth):
            return [self.health_event(completing=self.state.phase == "Completing")]
        if isinstance(action, m.Measure):
            self.measures.append(action)
        elif isinstance(action, m.PostStatus):
            self.status = action
        elif isinstance(action, m.UpdateComment):
            self.comment = True
        elif isinstance(action, m.ScheduleTick):
            self.ticks.append(action)
        elif isinstance(action, m.OpenRevertPR):
            self.revert = True
            self.context.revert = {"state": "pending"}
            assert self.store is not None, "actions are carried out by run()"
            self.store.hold(self.key, self.context.template_hash, self.state.pr)
        elif isinstance(action, m.CommandRejected):
            who = f"@{action.user} " if action.user else ""
            self.replies.append(f"{who}`/{action.command}` changed nothing: {action.reason}")
        else:
            assert_never(action)  # every action the engine emits is carried out
        return []

    # -- cluster ----------------------------------------------------------------------------
    @property
    def cluster(self) -> WorkloadCluster:
        assert self.cluster_port is not None, "this shell was made to reply only"
        return self.cluster_port

    def _canary(self) -> Any:
        return traffic.canary_ref(self.context.deployment, self.context.namespace)

    def _delete_canary(self) -> None:
        canary = self._canary()
        self.cluster.delete(canary.api_version, canary.kind, canary.namespace, canary.name)

    def _apply(self, obj: dict[str, Any], revision: str | None) -> None:
        ctx = self.context
        assert ctx.repo.repo_id is not None, "rollouts start from verified merges"
        owner = Owner(ctx.repo.forge, ctx.repo.repo_id, ctx.repo.full_name, ctx.app)
        self.cluster.apply([obj], app=ctx.app, revision=revision or "unknown",
                           default_namespace=ctx.namespace, owner=owner, adopt=ctx.adopt)

    def set_weight(self, weight: int) -> list[m.Event]:
        ctx = self.context
        stable_n, canary_n = engine.split_replicas(weight, ctx.replicas)
        try:
            if canary_n > 0:
                self._apply(traffic.canary_of(ctx.deployment, canary_n, self.state.revision),
                            self.state.revision)
            else:
                self._delete_canary()
            # Only the replica count moves: the scale subresource leaves Git's fields alone.
            self.cluster.scale(ctx.namespace, ctx.deployment["metadata"]["name"], stable_n)
        except ClusterError as exc:
            # A passing API hiccup is no verdict on the release: retry; the deadline decides.
            return [m.WorkloadHealth(False, f"the cluster refused the change: {exc}", weight)]
        return [self.health_event(completing=False)]

    def restore_stable(self) -> list[m.Event]:
        """Stable back to its own template at full size, then the canary gone.

        Stable comes first so capacity never dips; a failure is retried by a job until it
        succeeds, because leaving a bad canary serving must not depend on the next tick.
        """
        ctx = self.context
        try:
            if ctx.stable_touched:
                self._apply(traffic.stable_at(ctx.stable, ctx.replicas), ctx.stable_revision)
            self.cluster.scale(ctx.namespace, ctx.deployment["metadata"]["name"], ctx.replicas)
            self._delete_canary()
        except ClusterError as exc:
            ctx.restore_pending = str(exc)
            self.restore_retry = True
            return []
        ctx.restore_pending = None
        return []

    def remove_canary(self) -> list[m.Event]:
        self._delete_canary()
        return []

    def complete(self) -> list[m.Event]:
        ctx = self.context
        ctx.stable_touched = True
        stable = traffic.as_stable(ctx.deployment)
        stable["spec"].setdefault("replicas", ctx.replicas)
        try:
            self._apply(stable, self.state.revision)
        except ClusterError as exc:
            return [m.WorkloadHealth(False, f"the cluster refused the new stable: {exc}", 100)]
        return [self.health_event(completing=True)]

    def health_event(self, *, completing: bool) -> m.Event:
        """Judge the tracks now; when not yet healthy, the engine asks again (CheckHealth)."""
        ctx = self.context
        name = ctx.deployment["metadata"]["name"]
        try:
            stable_obj = self.cluster.get("apps/v1", "Deployment", ctx.namespace, name)
            checks = [("stable", stable_obj)]
            if not completing and self.state.weight > 0:
                checks.append(("canary", self.cluster.get("apps/v1", "Deployment",
                                                          ctx.namespace, self._canary().name)))
        except ClusterError as exc:
            return m.WorkloadHealth(False, f"cluster unreachable: {exc}", self.state.weight)
        problems = []
        for track, obj in checks:
            health = assess(obj)
            if health.failed:
                return m.WorkloadHealth(False, f"{track} is {health.status}: {health.message}",
                                        self.state.weight, failed=True)
            if not health.healthy:
                problems.append(f"{track}: {health.message or health.status}")
        if completing and stable_obj is not None:
            live_hash = (stable_obj["metadata"].get("annotations") or {}).get(
                traffic.TEMPLATE_HASH_ANNOTATION)
            if live_hash != ctx.template_hash:
                problems.append("stable: new template not applied yet")
        if problems:
            return m.WorkloadHealth(False, "; ".join(problems), self.state.weight)
        if completing:
            try:
                self._delete_canary()
            except ClusterError as exc:
                return m.WorkloadHealth(False, f"canary not removed yet: {exc}", self.state.weight)
        return m.WorkloadHealth(True, "healthy", self.state.weight)
