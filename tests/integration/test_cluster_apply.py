"""Applying an app's manifests through the real kubernetes client to the fake API server."""

from __future__ import annotations

import copy

import pytest

from bot.cluster.client import Cluster, RetryPolicy
from bot.cluster.model import ClusterError, ObjectRef, Owner


def namespace(name="shop"):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name="web", image="nginx:1", namespace=None, labels=None):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }


def config_map(name="settings", **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True}],
    },
}
WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}


OWNER = Owner("github", 1296269, "acme/gitops", "web")


def apply(cluster, objects, revision="abc123"):
    return cluster.apply(
        objects, app="web", revision=revision, default_namespace="shop", owner=OWNER
    )


def test_namespace_and_crd_go_first_whatever_the_manifest_order(fake_kube, kube_cluster):
    report = apply(kube_cluster, [WIDGET, deployment(), CRD, namespace()])

    assert [str(ref) for ref in report.created] == [
        "CustomResourceDefinition widgets.example.com",
        "Namespace shop",
        "Widget shop/w",
        "Deployment shop/web",
    ]
    assert fake_kube.get_object("example.com/v1", "Widget", "shop", "w") is not None
    writes = [r.path for r in fake_kube.requests if r.method == "PATCH"]
    assert writes.index("/api/v1/namespaces/shop") < writes.index(
        "/apis/apps/v1/namespaces/shop/deployments/web"
    )


def test_created_then_unchanged_then_configured(fake_kube, kube_cluster):
    objects = [namespace(), deployment(), config_map(color="blue")]

    first = apply(kube_cluster, objects)
    fake_kube.wait_for(lambda: _observed(fake_kube))  # let the controller write status
    second = apply(kube_cluster, objects)
    third = apply(
        kube_cluster, [namespace(), deployment(image="nginx:2"), config_map(color="blue")]
    )

    assert len(first.created) == 3 and not first.configured and not first.unchanged
    assert second.unchanged == first.created and not second.changed
    assert [str(ref) for ref in third.configured] == ["Deployment shop/web"]
    assert third.summary() == "0 created, 1 configured, 2 unchanged"
    live = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert live["metadata"]["generation"] == 2


def _observed(kube) -> bool:
    live = kube.get_object("apps/v1", "Deployment", "shop", "web")
    return bool(live and live.get("status", {}).get("observedGeneration"))


def test_labels_namespaces_and_field_manager(fake_kube, kube_cluster):
    apply(
        kube_cluster,
        [namespace(), namespace("other"), deployment(labels={"team": "a"}), config_map()]
        + [{**config_map("elsewhere"), "metadata": {"name": "elsewhere", "namespace": "other"}}],
    )

    for obj in fake_kube.objects(kind="Deployment") + fake_kube.objects(kind="ConfigMap"):
        assert obj["metadata"]["labels"] == {
            **obj["metadata"]["labels"],
            "app.kubernetes.io/managed-by": "coalmine",
            "coalmine.dev/app": "web",
            "coalmine.dev/revision": "abc123",
            "coalmine.dev/owner": "github.1296269",
        }
        assert obj["metadata"]["annotations"]["coalmine.dev/repository"] == "github:acme/gitops"
    assert (
        fake_kube.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["labels"]["team"]
        == "a"
    )
    assert fake_kube.get_object("v1", "ConfigMap", "other", "elsewhere") is not None
    assert "namespace" not in fake_kube.get_object("v1", "Namespace", None, "shop")["metadata"]
    applies = [r for r in fake_kube.requests if r.method == "PATCH"]
    assert {r.content_type for r in applies} == {"application/apply-patch+yaml"}
    assert {r.query["fieldManager"] for r in applies} == {"coalmine"}
    assert {r.query["force"].lower() for r in applies} == {"true"}


def test_cluster_scoped_objects_drop_a_namespace(fake_kube, kube_cluster):
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "reader", "namespace": "shop"},
        "rules": [],
    }
    report = apply(kube_cluster, [role])
    assert report.created == [
        ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", None, "reader")
    ]


def test_input_objects_are_not_modified(kube_cluster):
    objects = [namespace(), deployment()]
    pristine = copy.deepcopy(objects)
    apply(kube_cluster, objects)
    assert objects == pristine


def test_a_new_revision_is_recorded_and_fields_dropped_from_git_disappear(fake_kube, kube_cluster):
    apply(kube_cluster, [namespace(), config_map(color="blue", size="L")], revision="one")
    report = apply(kube_cluster, [namespace(), config_map(color="blue")], revision="two")

    live = fake_kube.get_object("v1", "ConfigMap", "shop", "settings")
    assert live["data"] == {"color": "blue"}
    assert live["metadata"]["labels"]["coalmine.dev/revision"] == "two"
    assert len(report.configured) == 2


def test_unknown_kind_fails_before_anything_is_written(fake_kube, kube_cluster):
    gadget = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}

    with pytest.raises(ClusterError) as caught:
        apply(kube_cluster, [namespace(), config_map(), gadget])

    assert "Gadget g" in str(caught.value)
    assert "does not serve kind 'Gadget'" in str(caught.value)
    assert not [r for r in fake_kube.requests if r.method == "PATCH"]


def test_api_errors_carry_the_servers_message(fake_kube, kube_cluster):
    broken = deployment()
    broken["spec"]["selector"] = {"matchLabels": {"app": "other"}}

    with pytest.raises(ClusterError) as caught:
        apply(kube_cluster, [namespace(), broken])

    message = str(caught.value)
    assert message.startswith("apply Deployment shop/web: ")
    assert "`selector` does not match template `labels`" in message
    assert "Invalid, HTTP 422" in message
    assert fake_kube.token not in message


def test_missing_namespace_is_reported(kube_cluster):
    with pytest.raises(ClusterError, match='namespaces "shop" not found'):
        apply(kube_cluster, [deployment()])


def test_retries_after_injected_server_errors(fake_kube, kube_cluster):
    fake_kube.fail_next(2, status=500, method="PATCH")

    report = apply(kube_cluster, [namespace()])

    assert [str(ref) for ref in report.created] == ["Namespace shop"]
    patches = [r for r in fake_kube.requests if r.method == "PATCH"]
    assert len(patches) == 3


def test_gives_up_after_the_last_attempt(fake_kube, kube_cluster):
    fake_kube.fail_next(10, status=503, method="PATCH")

    with pytest.raises(ClusterError, match=r"apply Namespace shop: injected failure .*HTTP 503"):
        apply(kube_cluster, [namespace()])

    assert len([r for r in fake_kube.requests if r.method == "PATCH"]) == 4


def test_client_errors_are_not_retried(fake_kube, kube_cluster):
    fake_kube.fail_next(1, status=403, method="PATCH")

    with pytest.raises(ClusterError, match="HTTP 403"):
        apply(kube_cluster, [namespace()])

    assert len([r for r in fake_kube.requests if r.method == "PATCH"]) == 1


def test_retries_after_a_timeout(fake_kube):
    cluster = Cluster.from_config(
        str(fake_kube.kubeconfig),
        retry=RetryPolicy(attempts=3, first_delay_s=0.01),
        request_timeout_s=0.3,
    )
    fake_kube.delay_next(1, seconds=1.0, method="PATCH")

    report = apply(cluster, [namespace()])

    assert [str(ref) for ref in report.refs] == ["Namespace shop"]
    assert len([r for r in fake_kube.requests if r.method == "PATCH"]) == 2


def test_connection_refused_becomes_a_cluster_error(fake_kube):
    cluster = Cluster.from_config(
        str(fake_kube.kubeconfig), retry=RetryPolicy(attempts=2, first_delay_s=0.01)
    )
    fake_kube.stop()

    with pytest.raises(ClusterError, match="discover the API"):
        cluster.get("v1", "Namespace", None, "default")


def test_missing_kubeconfig_is_a_cluster_error(tmp_path):
    with pytest.raises(ClusterError, match="cannot load cluster configuration"):
        Cluster.from_config(str(tmp_path / "nope"))


def test_the_kubeconfig_token_is_sent_and_never_echoed(fake_kube, tmp_path):
    fake_kube.require_token = True
    good = Cluster.from_config(str(fake_kube.kubeconfig))
    assert good.get("v1", "Namespace", None, "default") is not None

    wrong = fake_kube.kubeconfig.read_text().replace(fake_kube.token, "s3cret-wrong-token")
    (tmp_path / "wrong").write_text(wrong)
    cluster = Cluster.from_config(str(tmp_path / "wrong"), retry=RetryPolicy(attempts=1))

    with pytest.raises(ClusterError) as caught:
        cluster.get("v1", "Namespace", None, "default")
    assert "HTTP 401" in str(caught.value)
    assert "s3cret-wrong-token" not in str(caught.value)


def test_many_objects_are_judged_from_one_list_per_kind(fake_kube, kube_cluster):
    """Past the list threshold no object is fetched one by one, and the report stays exact."""
    maps = [config_map(f"cm-{i:02}", n=str(i)) for i in range(25)]
    first = apply(kube_cluster, [namespace(), *maps])
    assert len(first.created) == 26
    gets_before = sum(1 for r in fake_kube.requests
                      if r[0] == "GET" and "/configmaps/" in r[1])
    maps[7] = config_map("cm-07", n="changed")
    again = apply(kube_cluster, [namespace(), *maps])
    single_gets = sum(1 for r in fake_kube.requests
                      if r[0] == "GET" and "/configmaps/" in r[1]) - gets_before
    assert single_gets == 0
    assert [str(r) for r in again.configured] == ["ConfigMap shop/cm-07"]
    assert len(again.unchanged) == 25  # the Namespace and 24 ConfigMaps
