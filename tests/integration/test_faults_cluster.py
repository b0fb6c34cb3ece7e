"""Kubernetes API faults through the real client: 500s, 409 conflicts and slow answers are retried
with growing waits and then succeed; a fault that outlasts the retries is a ClusterError that
says what failed, without the cluster token. (Apply's own retries are in test_cluster_apply.)"""

from __future__ import annotations

import pytest

from bot.cluster.client import Cluster, RetryPolicy
from bot.cluster.model import ClusterError, Owner

DEPLOYMENT_PATH = "/namespaces/shop/deployments/web"


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def cluster(fake_kube, sleeps) -> Cluster:
    fake_kube.require_token = True  # the token is really sent, so a leak would be observable
    fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    fake_kube.put_object({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
        },
    })
    return Cluster.from_config(
        str(fake_kube.kubeconfig),
        retry=RetryPolicy(attempts=4, first_delay_s=0.01, max_delay_s=0.03),
        request_timeout_s=0.5,
        sleep=sleeps,
    )


def _calls(fake_kube, method: str, path: str = DEPLOYMENT_PATH) -> int:
    return len([r for r in fake_kube.requests if r.method == method and path in r.path])


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_get_is_retried_after_server_errors(fake_kube, cluster, sleeps, status):
    fake_kube.fail_next(3, status=status, method="GET", path_contains=DEPLOYMENT_PATH)

    live = cluster.get("apps/v1", "Deployment", "shop", "web")

    assert live["spec"]["replicas"] == 3
    assert _calls(fake_kube, "GET") == 4
    assert sleeps.waits == [0.01, 0.02, 0.03]  # doubling, capped at max_delay_s


def test_scale_is_retried_after_conflicts(fake_kube, cluster, sleeps):
    fake_kube.fail_next(2, status=409, method="PATCH", path_contains=f"{DEPLOYMENT_PATH}/scale")

    cluster.scale("shop", "web", 5)

    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 5
    assert _calls(fake_kube, "PATCH", f"{DEPLOYMENT_PATH}/scale") == 3
    assert sleeps.waits == [0.01, 0.02]


def test_get_and_scale_are_retried_after_timeouts(fake_kube, cluster):
    fake_kube.delay_next(1, seconds=1.5, method="GET", path_contains=DEPLOYMENT_PATH)
    fake_kube.delay_next(1, seconds=1.5, method="PATCH", path_contains=DEPLOYMENT_PATH)

    assert cluster.get("apps/v1", "Deployment", "shop", "web") is not None
    cluster.scale("shop", "web", 1)

    assert _calls(fake_kube, "GET") == 2 and _calls(fake_kube, "PATCH") == 2
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 1


def test_apply_is_retried_after_a_conflict(fake_kube, cluster):
    fake_kube.fail_next(1, status=409, method="PATCH", path_contains="/configmaps/settings")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "green"},
    }

    report = cluster.apply([config_map], app="web", revision="c0ffee", default_namespace="shop",
                           owner=Owner("github", 1, "acme/gitops", "web"))

    assert [str(ref) for ref in report.created] == ["ConfigMap shop/settings"]
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "settings")["data"] == {"mode": "green"}


@pytest.mark.parametrize(
    "operation,method",
    [
        (lambda c: c.get("apps/v1", "Deployment", "shop", "web"), "GET"),
        (lambda c: c.scale("shop", "web", 2), "PATCH"),
    ],
    ids=["get", "scale"],
)
def test_persistent_server_errors_become_a_clear_cluster_error(
    fake_kube, cluster, sleeps, operation, method
):
    fake_kube.fail_next(10, status=503, method=method, path_contains=DEPLOYMENT_PATH)

    with pytest.raises(ClusterError) as caught:
        operation(cluster)

    message = str(caught.value)
    assert "Deployment shop/web" in message and "HTTP 503" in message, message
    assert fake_kube.token not in message
    assert _calls(fake_kube, method) == 4 and len(sleeps.waits) == 3


def test_persistent_timeouts_become_a_clear_cluster_error(fake_kube, cluster):
    fake_kube.delay_next(4, seconds=1.5, method="GET", path_contains=DEPLOYMENT_PATH)

    with pytest.raises(ClusterError) as caught:
        cluster.get("apps/v1", "Deployment", "shop", "web")

    message = str(caught.value)
    assert message.startswith("get Deployment shop/web: ") and "timed out" in message, message
    assert fake_kube.token not in message
    # One request per attempt: the client library does not add immediate retries of its own,
    # which would multiply the time a hung API server costs.
    assert _calls(fake_kube, "GET") == 4
