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

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, assert_never

from bot.cluster.health import assess
from bot.cluster.model import ClusterError, Owner
from bot.cluster.ownership import owned_by
from bot.cluster.prune import delete_if_owned
from bot.rollout import engine, routers, traffic
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord

log = logging.getLogger(__name__)
MAX_FOLLOW_UPS = 200  # a guard against an engine/shell loop, never reached in practice
Obj = dict[str, Any]


class WorkloadCluster(Protocol):
    """What the shell does to a cluster (`bot.cluster.client.Cluster`, impersonating the
    repository's account): apply the canary or stable, scale stable, delete the canary, read."""

    def apply(self, objects: Sequence[Obj], *, app: str, revision: str, default_namespace: str,
              owner: Owner, adopt: bool) -> Any: ...

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
               preconditions: Mapping[str, str] | None = None) -> Any: ...

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
        if isinstance(action, m.RouteToStable):
            return self.route_to_stable()
        if isinstance(action, m.StartExperiment):
            return self.start_experiment(action.step)
        if isinstance(action, m.StopExperiment):
            return self.stop_experiment(action.step, action.route)
        if isinstance(action, m.RestoreStable):
            return self.restore_stable(action.remove_canary)
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
        """The canary, and the baseline that lives and dies with it."""
        canary = self._canary()
        self._delete_own(canary.api_version, canary.kind, canary.name)
        if self.state.strategy.baseline:
            self._delete_own("apps/v1", "Deployment", self._baseline_name())

    def _delete_own(self, api_version: str, kind: str, name: str) -> None:
        """Delete an object the rollout made (canary, baseline, experiment pods and Services)
        only while the live one carries this app's owner labels (`prune.delete_if_owned`). The
        names derive from names a repository chooses (`<workload>-canary`,
        `<workload>-exp-<template>`), so they may be another app's object in a shared
        namespace: the apply refused to overwrite it, and the clean-up must not delete it."""
        live = self.cluster.get(api_version, kind, self.context.namespace, name)
        if live is not None:
            delete_if_owned(self.cluster, live, self._owner())

    def _baseline_name(self) -> str:
        return self.context.deployment["metadata"]["name"] + traffic.BASELINE_SUFFIX

    def _owner(self) -> Owner:
        ctx = self.context
        assert ctx.repo.repo_id is not None, "rollouts start from verified merges"
        return Owner(ctx.repo.forge, ctx.repo.repo_id, ctx.repo.full_name, ctx.app)

    def _apply(self, obj: dict[str, Any], revision: str | None) -> None:
        ctx = self.context
        self.cluster.apply([obj], app=ctx.app, revision=revision or "unknown",
                           default_namespace=ctx.namespace, owner=self._owner(), adopt=ctx.adopt)

    def _is_own_experiment_service(self, live: Obj | None, service: Obj) -> bool:
        """The live Service is this template's and this app's: labels and a selector anyone
        can copy say the first, only the owner labels Coalmine wrote say the second."""
        return (live is not None and traffic.is_experiment_service(live, service)
                and owned_by(live, self._owner()))

    def set_weight(self, weight: int) -> list[m.Event]:
        """Pods for the new weight; with a router the traffic moves once the canary is healthy
        (`health_event`), as Argo keeps the previous weight until the canary is ready."""
        ctx, strategy = self.context, self.state.strategy
        stable_n, canary_n = engine.replica_split(self.state, ctx.replicas)
        try:
            if canary_n > 0:
                self._apply(traffic.canary_of(ctx.deployment, canary_n, self.state.revision,
                                              strategy.canary_metadata), self.state.revision)
                if strategy.baseline:
                    self._apply(traffic.baseline_of(ctx.stable, canary_n, self.state.revision),
                                self.state.revision)
            elif not strategy.routed:
                self._delete_canary()
            if not strategy.routed:
                # Only the replica count moves: the scale subresource leaves Git's fields alone.
                self.cluster.scale(ctx.namespace, ctx.deployment["metadata"]["name"], stable_n)
        except ClusterError as exc:
            # A passing API hiccup is no verdict on the release: retry; the deadline decides.
            return [m.WorkloadHealth(False, f"the cluster refused the change: {exc}", weight)]
        return [self.health_event(completing=False)]

    def _experiment(self, index: int) -> tuple[m.ExperimentTemplate, ...]:
        step = self.state.strategy.steps[index] if index < len(self.state.strategy.steps) \
            else None
        return step.templates if isinstance(step, m.ExperimentStep) else ()

    def _experiment_objects(self, index: int) -> list[Obj]:
        ctx = self.context
        return [traffic.experiment_of(ctx.stable if t.spec_ref == "stable" else ctx.deployment,
                                      t, self.state.revision)
                for t in self._experiment(index)]

    def _experiment_services(self, index: int) -> list[tuple[m.ExperimentTemplate, Obj | None]]:
        """(template, its Service or None) for each template that asks for a Service."""
        workload = self.context.deployment["metadata"]["name"]
        return [(t, traffic.experiment_service(obj, t, workload))
                for t, obj in zip(self._experiment(index), self._experiment_objects(index),
                                  strict=True)
                if t.service_name(workload) is not None]

    def start_experiment(self, index: int) -> list[m.Event]:
        """The experiment's Deployments and Services, then their health (the analyses start
        once ready, and the router gives the Services their weights then)."""
        try:
            for obj in self._experiment_objects(index):
                self._apply(obj, self.state.revision)
            for template, service in self._experiment_services(index):
                refusal = self._service_refusal(template, service)
                if refusal:
                    return [m.WorkloadHealth(False, refusal, self.state.weight, failed=True)]
                assert service is not None
                self._apply(service, self.state.revision)
        except ClusterError as exc:
            return [m.WorkloadHealth(False, f"the cluster refused the experiment: {exc}",
                                     self.state.weight)]
        return [self.health_event(completing=False)]

    def _service_refusal(self, template: m.ExperimentTemplate, service: Obj | None) -> str:
        """Why the template's Service cannot be written ("" when it can): its name is no
        Service name, its pods declare no port, or the name is taken by a Service that is not
        this template's."""
        name = template.service_name(self.context.deployment["metadata"]["name"])
        if name is not None and not m.is_service_name(name):
            # The default name follows the workload's: the API would answer 422, a refusal
            # the health loop would retry until the deadline without naming the key.
            return (f"experiment template '{template.name}': Service {name} is not a DNS-1035 "
                    "label of at most 63 characters; set the template's service.name")
        if service is None:
            return (f"experiment template '{template.name}': its pods declare no container "
                    f"port, so Service {name} cannot be made to send its traffic to")
        live = self.cluster.get("v1", "Service", self.context.namespace, name)
        if live is not None and not self._is_own_experiment_service(live, service):
            return (f"experiment template '{template.name}': Service {name} already exists and "
                    "is not this template's; choose another service.name")
        return ""

    def stop_experiment(self, index: int, route: routers.RouteState | None = None
                        ) -> list[m.Event]:
        """Take the experiment's weights off the router (`route`), then remove its Services
        and Deployments; a refusal is logged and left to the next removal (the rollout's end
        removes them again) rather than failing the step that follows."""
        strategy = self.state.strategy
        if route is not None and strategy.traffic is not None:
            try:
                rows = self._write_router(route)
                self.context.traffic = rows + [row for row in self.context.traffic or []
                                               if str(row.get("object")).startswith("Service ")]
            except (ClusterError, routers.RouterError, ValueError) as exc:
                log.warning("experiment weights not taken off the router yet: %s", exc)
        for template, service in self._experiment_services(index):
            name = template.service_name(self.context.deployment["metadata"]["name"])
            try:
                live = self.cluster.get("v1", "Service", self.context.namespace, name)
                if (service is not None and live is not None
                        and traffic.is_experiment_service(live, service)):
                    delete_if_owned(self.cluster, live, self._owner())
            except ClusterError as exc:
                log.warning("experiment Service %s not removed yet: %s", name, exc)
        for obj in self._experiment_objects(index):
            try:
                self._delete_own("apps/v1", "Deployment", obj["metadata"]["name"])
            except ClusterError as exc:
                log.warning("experiment Deployment %s not removed yet: %s",
                            obj["metadata"]["name"], exc)
        return []

    def route_to_stable(self) -> list[m.Event]:
        """All traffic to stable before a new canary template is applied; a refusal is logged
        and left to the health-gated routing of the first step, which writes the router again."""
        try:
            self._route(running=False)
        except (ClusterError, routers.RouterError) as exc:
            log.warning("rollout %s: traffic not yet back on stable before the start: %s",
                        self.key, exc)
        return []

    def restore_stable(self, remove_canary: bool | None = None) -> list[m.Event]:
        """Stable back to its own template at full size, traffic back to it, then the canary
        gone (unless its scale-down is delayed: the engine's `scale_down_delay`).

        Stable comes first so capacity never dips; a failure is retried by a job until it
        succeeds, because leaving a bad canary serving must not depend on the next tick.
        """
        ctx = self.context
        if remove_canary is None:
            remove_canary = engine.scale_down_delay(self.state) == 0
        try:
            if ctx.stable_touched:
                self._apply(traffic.stable_at(ctx.stable, ctx.replicas), ctx.stable_revision)
            self.cluster.scale(ctx.namespace, ctx.deployment["metadata"]["name"], ctx.replicas)
            if self.state.strategy.routed:
                self._route(running=False)
            if remove_canary:
                self._delete_canary()
        except (ClusterError, routers.RouterError) as exc:
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
        stable = traffic.as_stable(ctx.deployment, self.state.strategy.stable_metadata)
        stable["spec"].setdefault("replicas", ctx.replicas)
        try:
            self._apply(stable, self.state.revision)
        except ClusterError as exc:
            return [m.WorkloadHealth(False, f"the cluster refused the new stable: {exc}", 100)]
        return [self.health_event(completing=True)]

    def health_event(self, *, completing: bool) -> m.Event:
        """Judge the tracks now; when not yet healthy, the engine asks again (CheckHealth).

        Healthy, a routed rollout then moves the traffic (Services and router) to what the
        engine says: the step's weight and routes, or after completion everything back to the
        stable track, which now runs the new version."""
        ctx, strategy = self.context, self.state.strategy
        name = ctx.deployment["metadata"]["name"]
        stable_n, canary_n = engine.replica_split(self.state, ctx.replicas)
        try:
            stable_obj = self.cluster.get("apps/v1", "Deployment", ctx.namespace, name)
            checks = [("stable", stable_obj)]
            if not completing and canary_n > 0:
                checks.append(("canary", self.cluster.get("apps/v1", "Deployment",
                                                          ctx.namespace, self._canary().name)))
                if strategy.baseline:
                    checks.append(("baseline", self.cluster.get(
                        "apps/v1", "Deployment", ctx.namespace, self._baseline_name())))
            if not completing and self.state.phase in ("Progressing", "Paused"):
                for obj in self._experiment_objects(self.state.step_index):
                    name = obj["metadata"]["name"]
                    checks.append((f"experiment {name}", self.cluster.get(
                        "apps/v1", "Deployment", ctx.namespace, name)))
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
        try:
            if strategy.routed:
                self._route(running=not completing)
                if not completing and strategy.dynamic_stable_scale:
                    self.cluster.scale(ctx.namespace, name, stable_n)
            if (completing and engine.scale_down_delay(self.state) == 0) or (
                    strategy.routed and not completing and canary_n == 0):
                self._delete_canary()
        except (ClusterError, routers.RouterError) as exc:
            what = "traffic not moved yet" if strategy.routed else "canary not removed yet"
            return m.WorkloadHealth(False, f"{what}: {exc}", self.state.weight)
        return m.WorkloadHealth(True, "healthy", self.state.weight)

    def _route(self, *, running: bool) -> None:
        """Point the strategy's Services and the traffic router at the rollout's state now
        (`running`), or back at the stable track with no managed route. Records what each
        object carries for the PR comment."""
        ctx, state = self.context, self.state
        strategy = state.strategy
        weight = state.weight if running else 0
        carried: list[Obj] = []
        tracks = traffic.service_tracks(strategy, running=running, weight=weight)
        for service_name, track in tracks.items():
            service = ctx.services.get(service_name)
            if service is None:
                continue
            self._apply(traffic.pin_service(service, track), state.revision)
            carried.append({"object": f"Service {ctx.namespace}/{service_name}",
                            "detail": f"selects the {track} pods",
                            "canary_weight": 100 if track == "canary" else 0})
        if strategy.traffic is not None:
            route = engine.route_state(state) if running else routers.RouteState(weight=0)
            carried = self._write_router(route) + carried
        ctx.traffic = carried

    def _write_router(self, route: routers.RouteState) -> list[Obj]:
        """Write the strategy's router objects for `route`; what each now carries, for the PR
        comment."""
        ctx, strategy = self.context, self.state.strategy
        assert strategy.traffic is not None
        router_ctx = traffic.router_context(strategy, ctx.deployment["metadata"]["name"],
                                            ctx.namespace)
        assert router_ctx is not None
        live = {key: self.cluster.get(key.api_version, key.kind, key.namespace, key.name)
                for key in routers.reads(strategy.traffic, router_ctx)}
        route = self._with_experiment_ports(route)
        for obj in routers.desired(strategy.traffic, router_ctx, live, route):
            self._apply(obj, self.state.revision)
            live[_key_of(obj, ctx.namespace)] = obj
        return [{"object": w.object, "detail": w.detail, "canary_weight": w.canary_weight}
                for w in routers.describe(strategy.traffic, router_ctx, live)]


    def _with_experiment_ports(self, route: routers.RouteState) -> routers.RouteState:
        """`route` with each experiment destination's port (a Gateway API backendRef names
        one), taken from the Service the shell makes for its template."""
        if not route.extra:
            return route
        ports = {service["metadata"]["name"]: traffic.experiment_backend_port(service)
                 for _, service in self._experiment_services(self.state.step_index)
                 if service is not None}
        return replace(route, extra=tuple(replace(d, port=ports.get(d.service))
                                          for d in route.extra))


def _key_of(obj: Obj, namespace: str) -> routers.ObjectKey:
    meta = obj["metadata"]
    return routers.ObjectKey(obj["apiVersion"], obj["kind"], meta.get("namespace") or namespace,
                             meta["name"])
