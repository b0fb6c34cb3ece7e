"""Pruning deletes exactly the app's objects that left its manifests."""

from __future__ import annotations

from bot.cluster.model import ObjectRef

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def config_map(name, namespace=None):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def service(name):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 80}]},
    }


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


def widget(name):
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}}


def deploy(cluster, app, objects):
    return cluster.apply(objects, app=app, revision="r1", default_namespace="shop")


def test_prune_deletes_what_left_the_set(fake_kube, kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("a"), config_map("b"), service("web"), CRD])
    deploy(kube_cluster, "web", [widget("keep"), widget("drop")])
    report = deploy(kube_cluster, "web", [NS, config_map("a"), CRD, widget("keep")])

    pruned = kube_cluster.prune("web", report.refs)

    assert sorted(str(ref) for ref in pruned) == [
        "ConfigMap shop/b",
        "Service shop/web",
        "Widget shop/drop",
    ]
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "a") is not None
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "b") is None
    assert fake_kube.get_object("example.com/v1", "Widget", "shop", "keep") is not None
    assert kube_cluster.prune("web", report.refs) == []


def test_prune_leaves_other_apps_and_unmanaged_objects_alone(fake_kube, kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("mine")])
    deploy(kube_cluster, "api", [config_map("theirs")])
    fake_kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "hand-made",
                "namespace": "shop",
                "labels": {"coalmine.dev/app": "web"},
            },
        }
    )

    pruned = kube_cluster.prune("web", [ObjectRef("v1", "Namespace", None, "shop")])

    assert [str(ref) for ref in pruned] == ["ConfigMap shop/mine"]
    remaining = {o["metadata"]["name"] for o in fake_kube.objects(kind="ConfigMap")}
    assert remaining == {"theirs", "hand-made"}


def test_prune_removes_namespaces_last(fake_kube, kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("a")])

    pruned = kube_cluster.prune("web", [])

    assert [str(ref) for ref in pruned] == ["ConfigMap shop/a", "Namespace shop"]
    deletes = [r.path for r in fake_kube.requests if r.method == "DELETE"]
    assert deletes == ["/api/v1/namespaces/shop/configmaps/a", "/api/v1/namespaces/shop"]


def test_keep_matches_whatever_api_version_the_ref_names(kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("a")])
    keep = {ObjectRef("v1", "Namespace", None, "shop"), ObjectRef("v1", "ConfigMap", "shop", "a")}

    assert kube_cluster.prune("web", keep) == []
