"""Health rules for live objects, one case per Argo CD rule."""

from __future__ import annotations

import pytest

from bot.cluster.health import assess


def deployment(generation=2, desired=3, paused=False, **status):
    spec = {"replicas": desired, **({"paused": True} if paused else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": generation},
        "spec": spec,
        "status": status,
    }


def progressing(reason):
    return [{"type": "Progressing", "status": "False", "reason": reason}]


DONE = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}


@pytest.mark.parametrize(
    ("obj", "status", "says"),
    [
        (deployment(**DONE), "Healthy", "3 of 3"),
        (deployment(paused=True, **DONE), "Suspended", "paused"),
        (
            deployment(**{**DONE, "observedGeneration": 1}),
            "Progressing",
            "observed deployment generation less than desired",
        ),
        (
            deployment(**{**DONE, "conditions": progressing("ProgressDeadlineExceeded")}),
            "Degraded",
            "exceeded its progress deadline",
        ),
        (
            deployment(**{**DONE, "updatedReplicas": 1}),
            "Progressing",
            "1 out of 3 new replicas have been updated",
        ),
        (deployment(**{**DONE, "replicas": 4}), "Progressing", "1 old replicas are pending"),
        (
            deployment(**{**DONE, "availableReplicas": 2}),
            "Progressing",
            "2 of 3 updated replicas are available",
        ),
        (
            deployment(desired=0, observedGeneration=2),
            "Healthy",
            "0 of 0",
        ),
        (
            deployment(generation=2, desired=None, observedGeneration=2),
            "Progressing",
            "0 out of 1 new replicas",
        ),
    ],
    ids=[
        "rolled out",
        "paused",
        "generation not observed",
        "deadline exceeded",
        "updating",
        "old replicas terminating",
        "updated not yet available",
        "scaled to zero",
        "replicas defaults to one",
    ],
)
def test_deployment_rules(obj, status, says):
    health = assess(obj)
    assert health.status == status
    assert says in health.message


def statefulset(strategy=None, desired=2, **status):
    spec = {"replicas": desired, **({"updateStrategy": strategy} if strategy else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 1},
        "spec": spec,
        "status": status,
    }


STS_DONE = {
    "observedGeneration": 1,
    "readyReplicas": 2,
    "updatedReplicas": 2,
    "currentRevision": "db-1",
    "updateRevision": "db-1",
}


@pytest.mark.parametrize(
    ("obj", "status", "says"),
    [
        (statefulset(**STS_DONE), "Healthy", "rolling update complete"),
        (statefulset(**{**STS_DONE, "observedGeneration": 0}), "Progressing", "to be observed"),
        (statefulset(**{**STS_DONE, "readyReplicas": 1}), "Progressing", "1 pods to be ready"),
        (
            statefulset(**{**STS_DONE, "updateRevision": "db-2"}),
            "Progressing",
            "rolling update to complete",
        ),
        (
            statefulset(
                {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                **{**STS_DONE, "updatedReplicas": 0},
            ),
            "Progressing",
            "0 out of 1 new pods",
        ),
        (
            statefulset(
                {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                **{**STS_DONE, "updatedReplicas": 1, "updateRevision": "db-2"},
            ),
            "Healthy",
            "partitioned roll out complete",
        ),
        (
            statefulset({"type": "OnDelete"}, **{**STS_DONE, "updateRevision": "db-2"}),
            "Healthy",
            "2 ready pods",
        ),
    ],
    ids=["complete", "unobserved", "not ready", "revision", "partition", "partition done", "ondelete"],
)
def test_statefulset_rules(obj, status, says):
    health = assess(obj)
    assert health.status == status
    assert says in health.message


def daemonset(strategy="RollingUpdate", generation=1, **status):
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "generation": generation},
        "spec": {"updateStrategy": {"type": strategy}},
        "status": status,
    }


DS_DONE = {
    "observedGeneration": 1,
    "desiredNumberScheduled": 2,
    "updatedNumberScheduled": 2,
    "numberAvailable": 2,
}


@pytest.mark.parametrize(
    ("obj", "status", "says"),
    [
        (daemonset(**DS_DONE), "Healthy", "2 of 2"),
        (daemonset(generation=2, **DS_DONE), "Progressing", "generation less than desired"),
        (daemonset(**{**DS_DONE, "updatedNumberScheduled": 1}), "Progressing", "1 out of 2 new"),
        (daemonset(**{**DS_DONE, "numberAvailable": 1}), "Progressing", "1 of 2 updated pods"),
        (
            daemonset("OnDelete", **{**DS_DONE, "updatedNumberScheduled": 0}),
            "Healthy",
            "0 out of 2",
        ),
    ],
    ids=["complete", "unobserved", "updating", "unavailable", "ondelete"],
)
def test_daemonset_rules(obj, status, says):
    health = assess(obj)
    assert health.status == status
    assert says in health.message


def test_other_kinds_are_healthy_when_they_exist():
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert assess(config_map).status == "Healthy"
    assert assess(None).status == "Missing"


def test_a_custom_kind_named_deployment_is_not_judged_as_one():
    custom = {"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    assert assess(custom).status == "Healthy"


def test_waiting_cannot_cure_degraded_or_suspended():
    deadline = deployment(**{**DONE, "conditions": progressing("ProgressDeadlineExceeded")})
    assert assess(deadline).failed
    assert assess(deployment(paused=True, **DONE)).failed
    assert not assess(deployment(**{**DONE, "updatedReplicas": 1})).failed
