"""Rollout metrics counted on each save to a real Redis: DORA events, measurements and phases.

The rollout shell runs with an in-memory cluster (the WorkloadCluster port) and the real
RolloutStore, so what is counted is what a save changed, read from the record it replaced.
"""

from __future__ import annotations

import dataclasses

from prometheus_client import REGISTRY

from bot.refs import RepoRef
from bot.rollout import model as m
from bot.rollout import traffic
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord, RolloutStore
from handlers.rollout_shell import Shell, run
from tests.fakes.cluster import FakeCluster

REPO = RepoRef("github", "acme/metrics", "https://github.example/acme/metrics.git", repo_id=9)
KEY = "coalmine:rollout:github:acme/metrics:web"
LABELS = {"repo": "acme/metrics", "app": "web"}
STEPS = (m.SetWeightStep(25), m.PauseStep(None))


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _deployment(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def _start(store: RolloutStore, cluster: FakeCluster, revision: str) -> RolloutRecord:
    live = _deployment("web:1")
    cluster.objects["web"] = live
    new = _deployment("web:2")
    context = RolloutContext(repo=REPO, number=42, app="web", namespace="shop", deployment=new,
                             stable=traffic.stable_at(live, 4), replicas=4,
                             template_hash=traffic.template_hash(new))
    strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"), steps=STEPS,
                                progress_deadline_seconds=300)
    state = m.new_state(app="web", revision=revision, stable_revision="a" * 40, pr=42,
                        strategy=strategy)
    shell = run(cluster, store, KEY, RolloutRecord(state, context), m.Start())
    assert shell.record is not None
    return shell.record


def test_a_promotion_is_a_deployment_with_its_lead_time(redis_client):
    store, cluster = RolloutStore(redis_client), FakeCluster()
    deployments = _value("coalmine_dora_deployments_total", LABELS)
    lead_times = _value("coalmine_dora_lead_time_from_rollout_start_seconds_count", LABELS)
    record = _start(store, cluster, "b" * 40)
    assert store.active_phases()["Paused"] == 1

    shell = run(cluster, store, KEY, record, m.Promote("alice"))
    assert shell.record is not None and shell.record.state.phase == "Promoted"
    # Saved again unchanged (a report's bookkeeping): counted once, not twice.
    store.save(KEY, shell.record, None)

    assert _value("coalmine_dora_deployments_total", LABELS) == deployments + 1
    assert _value("coalmine_dora_lead_time_from_rollout_start_seconds_count",
                  LABELS) == lead_times + 1
    assert store.active_phases()["Paused"] == 0  # terminal: out of the gauge


def test_an_abort_is_a_failure_and_restore_is_timed_when_stable_is_back(redis_client):
    store, cluster = RolloutStore(redis_client), FakeCluster()
    failures = _value("coalmine_dora_failed_deployments_total", LABELS)
    restores = _value("coalmine_dora_time_to_restore_seconds_count", LABELS)
    record = _start(store, cluster, "c" * 40)
    cluster.refuse.add("scale")  # the cluster refuses the restore: not restored yet

    shell = run(cluster, store, KEY, record, m.Abort(user="bob"))
    assert shell.record is not None and shell.record.context.restore_pending
    assert _value("coalmine_dora_failed_deployments_total", LABELS) == failures + 1
    assert _value("coalmine_dora_time_to_restore_seconds_count", LABELS) == restores

    # What the restore job does once the cluster accepts (handlers.rollout.restore).
    cluster.refuse.clear()
    aborted = store.load(KEY)
    assert aborted is not None
    retry = Shell(aborted.context, aborted.state, cluster_port=cluster)
    retry.restore_stable()
    store.save(KEY, RolloutRecord(aborted.state, retry.context), None)
    store.save(KEY, RolloutRecord(aborted.state, retry.context), None)  # counted once

    assert _value("coalmine_dora_failed_deployments_total", LABELS) == failures + 1
    assert _value("coalmine_dora_time_to_restore_seconds_count", LABELS) == restores + 1


def test_each_measurement_is_counted_once_by_phase(redis_client):
    store, cluster = RolloutStore(redis_client), FakeCluster()
    record = _start(store, cluster, "d" * 40)
    before = {phase: _value("coalmine_measurements_total", {"phase": phase})
              for phase in ("Successful", "Failed")}
    first = m.MetricPoint(at=1.0, run_id="r1", metric="errors", phase="Successful", value="0")
    second = m.MetricPoint(at=2.0, run_id="r1", metric="errors", phase="Failed", value="9")

    state = dataclasses.replace(record.state, metric_points=(first,))
    store.save(KEY, RolloutRecord(state, record.context), None)
    state = dataclasses.replace(record.state, metric_points=(first, second))
    store.save(KEY, RolloutRecord(state, record.context), None)

    assert _value("coalmine_measurements_total", {"phase": "Successful"}) == \
        before["Successful"] + 1
    assert _value("coalmine_measurements_total", {"phase": "Failed"}) == before["Failed"] + 1


def test_an_unreadable_replaced_record_never_fails_the_save(redis_client, caplog):
    store, cluster = RolloutStore(redis_client), FakeCluster()
    record = _start(store, cluster, "e" * 40)
    redis_client.set(KEY, b"{not json")

    store.save(KEY, record, None)

    loaded = store.load(KEY)
    assert loaded is not None and loaded.state == record.state
    assert "could not count a rollout's metrics" in caplog.text
