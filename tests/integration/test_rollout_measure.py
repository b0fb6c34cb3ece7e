"""handlers.rollout_measure against the fake API server: a job metric's Job is created, polled
by scheduled jobs, handed back, deleted when its run stops; secrets never leave the thread.

The queue is an in-memory recorder of what would be enqueued (a port, not the cluster client);
the cluster is Coalmine's real adapter talking to the fake API server.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from bot.analysis import run as runs
from bot.analysis.templates import AnalysisTemplate, MetricSpec, TemplateArg
from bot.egress import DENY_ALL
from bot.policy import KindPattern, Policy
from bot.refs import RepoRef
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord
from bot.tenancy import Tenant
from handlers import rollout_measure as rm
from tests.harness.processes import wait_until
from tests.unit.test_report_rollout import Rollout, analysis

JOB = {"spec": {"backoffLimit": 0, "template": {"spec": {
    "restartPolicy": "Never", "containers": [{"name": "t", "image": "registry.example/t:1"}]}}}}
REPO = RepoRef("github", "acme/gitops", "https://github.example/acme/gitops.git", repo_id=42)


def measured(*args: Any) -> None:
    """Stands for handlers.rollout.measured (only its identity is recorded)."""


def job_poll(*args: Any) -> None:
    """Stands for handlers.rollout.job_poll."""


@dataclass
class Queue:
    now: list[tuple[Any, tuple]] = field(default_factory=list)
    later: list[tuple[float, Any, tuple]] = field(default_factory=list)

    def enqueue(self, func, *args, job_id=None):
        self.now.append((func, args))

    def enqueue_at(self, at, func, *args, job_id=None):
        self.later.append((at, func, args))


@dataclass
class Settings:
    prometheus_url: str | None = None
    egress: Any = DENY_ALL


@dataclass
class Tenants:
    policy: Policy

    def resolve(self, forge, repo_id, full_name):
        return Tenant(forge, repo_id, full_name, full_name, self.policy)


@dataclass
class Ports:
    view: Any
    policy: Policy = field(default_factory=Policy)
    settings: Settings = field(default_factory=Settings)
    queue: Queue = field(default_factory=Queue)

    def cluster(self, name, *, impersonate=None):
        return self.view

    @property
    def tenants(self):
        return Tenants(self.policy)


def rollout_waiting_on(metric: MetricSpec, *args: TemplateArg) -> Rollout:
    rollout = Rollout([m.SetWeightStep(50), analysis()], metric)
    rollout.state = replace(rollout.state, templates=(AnalysisTemplate(
        name="success-rate", metrics=(metric,), args=args),))
    return rollout.send(m.Start()).healthy()


def record_of(rollout: Rollout) -> RolloutRecord:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 2}}
    context = RolloutContext(repo=REPO, number=7, app="web", namespace="shop",
                             deployment=deployment, stable=deployment, replicas=2,
                             template_hash="h")
    return RolloutRecord(rollout.state, context)


def ask(ports: Ports, rollout: Rollout, name: str) -> None:
    """What handlers.rollout does with a Measure of `name`: measure on this thread."""
    run = rollout.state.step_run
    spec = runs.metric(run, name)
    action = m.Measure(run.id, name, spec.provider, spec.success_condition,
                       spec.failure_condition)
    record = record_of(rollout)
    rm.measure_and_hand_back(ports, record, rm.request_for("key", record, action), measured,
                             job_poll)


def poll_once(ports: Ports, rollout: Rollout) -> None:
    _at, func, args = ports.queue.later.pop(0)
    assert func is job_poll
    rm.poll(ports, record_of(rollout), *args, measured, job_poll)


@pytest.fixture
def ports(fake_kube, kube_cluster) -> Ports:
    fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    return Ports(kube_cluster)


def jobs_in_shop(fake_kube) -> list[str]:
    return [j["metadata"]["name"] for j in fake_kube.objects("Job", "shop")]


def test_a_running_job_is_polled_then_its_verdict_handed_back(fake_kube, ports):
    fake_kube.job_outcome("registry.example/t:1", "Running")
    rollout = rollout_waiting_on(MetricSpec(name="smoke", provider={"job": JOB}))
    ask(ports, rollout, "smoke")
    assert ports.queue.now == []  # nothing to hand back yet: a poll is scheduled
    (_at, func, args) = ports.queue.later[0]
    assert func is job_poll and args[3] == jobs_in_shop(fake_kube)[0]
    poll_once(ports, rollout)
    assert ports.queue.now == [] and len(ports.queue.later) == 1  # still running: polled again
    fake_kube.job_outcome("registry.example/t:1", "Complete")
    wait_until(lambda: fake_kube.objects("Job", "shop")[0].get("status", {}).get("conditions"),
               10, 0.05)
    poll_once(ports, rollout)
    ((func, (_key, _run_id, metric, result)),) = ports.queue.now
    assert (func, metric, result.phase) == (measured, "smoke", "Successful")
    assert ports.queue.later == []


def test_a_job_whose_run_stopped_is_deleted_by_its_poll(fake_kube, ports):
    fake_kube.job_outcome("registry.example/t:1", "Running")
    rollout = rollout_waiting_on(MetricSpec(name="smoke", provider={"job": JOB}))
    ask(ports, rollout, "smoke")
    assert len(jobs_in_shop(fake_kube)) == 1
    rollout.send(m.Abort(user="alice"))
    poll_once(ports, rollout)
    assert jobs_in_shop(fake_kube) == [] and ports.queue.now == [] == ports.queue.later


def test_a_newer_request_takes_over_and_the_old_poll_stops(fake_kube, ports):
    fake_kube.job_outcome("registry.example/t:1", "Running")
    rollout = rollout_waiting_on(MetricSpec(name="smoke", provider={"job": JOB}))
    ask(ports, rollout, "smoke")
    rollout.wait(runs.MEASUREMENT_TIMEOUT_SECONDS)  # the engine asks again
    ask(ports, rollout, "smoke")
    assert len(jobs_in_shop(fake_kube)) == 1  # the same Job is watched
    poll_once(ports, rollout)  # the first request's poll: stops quietly
    assert len(ports.queue.later) == 1 and len(jobs_in_shop(fake_kube)) == 1


def test_a_policy_without_jobs_is_an_error_measurement(fake_kube, ports):
    ports.policy = Policy(allow_kinds=(KindPattern("apps", "*"),))
    rollout = rollout_waiting_on(MetricSpec(name="smoke", provider={"job": JOB}))
    ask(ports, rollout, "smoke")
    ((_, (_, _, _, result)),) = ports.queue.now
    assert result.phase == "Error" and "kind batch/Job is not in allowKinds" in result.message
    assert jobs_in_shop(fake_kube) == []


def test_a_secret_in_a_providers_error_is_masked_before_it_is_handed_back(fake_kube, ports):
    token = "tok3n-value-xyz"
    fake_kube.put_object({"apiVersion": "v1", "kind": "Secret",
                          "metadata": {"name": "creds", "namespace": "shop"},
                          "data": {"token": base64.b64encode(token.encode()).decode()}})
    metric = MetricSpec(name="api", provider={"web": {"url": "http://{{args.token}}.example/"}})
    rollout = rollout_waiting_on(
        metric, TemplateArg("token", value_from=("secretKeyRef", "creds", "token")))
    assert token not in repr(rollout.state)  # the state keeps the placeholder
    ask(ports, rollout, "api")
    ((_, (_, _, _, result)),) = ports.queue.now
    assert result.phase == "Error" and token not in result.message
    assert "*****.example" in result.message
