"""Waiting for health, and the single-workload helpers canaries will use."""

from __future__ import annotations

import pytest

from bot.cluster.model import ClusterError, ObjectRef, Owner

OWNER = Owner("github", 1, "acme/gitops", "web")

WEB = ObjectRef("apps/v1", "Deployment", "default", "web")


class StepClock:
    """A clock that only moves when the code under test sleeps; `on_sleep` lets the fake act."""

    def __init__(self, on_sleep=lambda: None):
        self.now = 0.0
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep()


def deployment(image="nginx:1", replicas=2, deadline_s=None, name="web"):
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": image}]},
        },
    }
    if deadline_s is not None:
        spec["progressDeadlineSeconds"] = deadline_s
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(cluster, *objects):
    return cluster.apply(objects, app="web", revision="r", default_namespace="default",
                         owner=OWNER)


def test_wait_healthy_succeeds_once_the_controller_catches_up(kube_cluster):
    report = apply(kube_cluster, deployment(), _config_map())

    result = kube_cluster.wait_healthy(report.refs, timeout_s=5, poll_s=0.05)

    assert result.ok, result.message
    assert result.message == "2 objects healthy"
    assert result.results[WEB].status == "Healthy"
    assert result.results[WEB].message == "2 of 2 replicas available"


def test_blocked_template_ends_degraded_at_the_progress_deadline(fake_kube, kube_cluster):
    apply(kube_cluster, deployment(deadline_s=1))
    assert kube_cluster.wait_healthy([WEB], timeout_s=5, poll_s=0.05).ok
    fake_kube.block_image("nginx:bad")

    apply(kube_cluster, deployment(image="nginx:bad", deadline_s=1))
    result = kube_cluster.wait_healthy([WEB], timeout_s=10, poll_s=0.05)

    assert not result.ok
    assert (
        result.message == 'Deployment default/web is Degraded: Deployment "web" exceeded its '
        "progress deadline"
    )
    assert result.elapsed_s >= 1
    live = kube_cluster.get("apps/v1", "Deployment", "default", "web")
    assert live["status"]["observedGeneration"] == live["metadata"]["generation"] == 2
    assert live["status"]["availableReplicas"] == 2  # the old pods keep serving
    assert live["status"]["updatedReplicas"] < 2


def test_wait_healthy_times_out_with_the_reason(fake_kube, kube_cluster):
    fake_kube.block(lambda template: template["spec"]["containers"][0]["image"] == "slow:1")
    apply(kube_cluster, deployment(image="slow:1"))
    clock = StepClock()

    result = kube_cluster.wait_healthy([WEB], timeout_s=3, poll_s=1, clock=clock, sleep=clock.sleep)

    assert not result.ok
    assert result.message.startswith("timed out after 3 s waiting for Deployment default/web")
    assert "Progressing" in result.message
    assert clock.now == 3


def test_missing_objects_are_waited_for_then_reported(kube_cluster):
    ghost = ObjectRef("apps/v1", "Deployment", "default", "ghost")
    clock = StepClock()

    result = kube_cluster.wait_healthy([ghost], timeout_s=1, clock=clock, sleep=clock.sleep)

    assert not result.ok
    assert "Deployment default/ghost (Missing: not found in the cluster)" in result.message


def test_objects_without_a_rollout_cost_no_request(fake_kube, kube_cluster):
    """Wait only polls workloads: a ConfigMap that was just applied is healthy as it is."""
    refs = [ObjectRef("v1", "ConfigMap", "default", f"cm-{i}") for i in range(5)]
    before = len(fake_kube.requests)
    result = kube_cluster.wait_healthy(refs, timeout_s=1)
    assert result.ok and len(fake_kube.requests) == before


def test_scale_get_and_delete(fake_kube, kube_cluster):
    apply(kube_cluster, deployment())

    kube_cluster.scale("default", "web", 5)
    live = kube_cluster.get("apps/v1", "Deployment", "default", "web")
    assert live["spec"]["replicas"] == 5
    assert kube_cluster.wait_healthy([WEB], timeout_s=5, poll_s=0.05).results[WEB].message == (
        "5 of 5 replicas available"
    )

    assert kube_cluster.delete("apps/v1", "Deployment", "default", "web") is True
    assert kube_cluster.get("apps/v1", "Deployment", "default", "web") is None
    assert kube_cluster.delete("apps/v1", "Deployment", "default", "web") is False
    scale_patches = [r for r in fake_kube.requests if r.path.endswith("/web/scale")]
    assert [r.content_type for r in scale_patches] == ["application/merge-patch+json"]


def test_server_side_apply_of_a_single_object(fake_kube, kube_cluster):
    canary = deployment(name="web-canary", replicas=1)
    canary["metadata"]["namespace"] = "default"

    result = kube_cluster.server_side_apply(canary)

    assert result["metadata"]["resourceVersion"]
    stored = fake_kube.get_object("apps/v1", "Deployment", "default", "web-canary")
    assert stored["metadata"]["managedFields"][0]["manager"] == "coalmine"


def test_scaling_a_missing_deployment_names_it(kube_cluster):
    with pytest.raises(ClusterError, match=r"scale Deployment default/nope to 1: .*not found"):
        kube_cluster.scale("default", "nope", 1)


def test_listing_across_namespaces_with_a_selector(fake_kube, kube_cluster):
    apply(kube_cluster, deployment(name="a"), deployment(name="b"))
    fake_kube.put_object(
        {**deployment(name="c"), "metadata": {"name": "c", "namespace": "default"}}
    )

    managed = kube_cluster.list(
        "apps/v1", "Deployment", label_selector="coalmine.dev/app in (web),!coalmine.dev/track"
    )

    assert sorted(obj["metadata"]["name"] for obj in managed) == ["a", "b"]
    assert {obj["kind"] for obj in managed} == {"Deployment"}


def _config_map():
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {}}


def _workload(kind, name, image):
    obj = deployment(image=image, name=name)
    obj["kind"] = kind
    if kind == "DaemonSet":
        del obj["spec"]["replicas"]
    return obj


def test_statefulsets_and_daemonsets_roll_out_and_can_be_held_back(fake_kube, kube_cluster):
    refs = apply(
        kube_cluster,
        _workload("StatefulSet", "db", "pg:1"),
        _workload("DaemonSet", "agent", "agent:1"),
    ).refs
    assert kube_cluster.wait_healthy(refs, timeout_s=5, poll_s=0.05).ok
    fake_kube.block_image("pg:2")
    fake_kube.block_image("agent:2")

    refs = apply(
        kube_cluster,
        _workload("StatefulSet", "db", "pg:2"),
        _workload("DaemonSet", "agent", "agent:2"),
    ).refs
    clock = StepClock(on_sleep=lambda: fake_kube.wait_for(lambda: _observed_all(fake_kube)))
    held = kube_cluster.wait_healthy(refs, timeout_s=1, poll_s=0.5, clock=clock, sleep=clock.sleep)

    assert not held.ok
    assert held.results[ObjectRef("apps/v1", "StatefulSet", "default", "db")].message.startswith(
        "Waiting for 1 pods to be ready"
    )
    assert (
        "0 out of 2 new pods have been updated"
        in held.results[ObjectRef("apps/v1", "DaemonSet", "default", "agent")].message
    )


def _observed_all(kube) -> bool:
    return all(
        obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        for obj in kube.objects(kind="StatefulSet") + kube.objects(kind="DaemonSet")
    )
