"""Pruning deletes exactly the app's objects that left its manifests."""

from __future__ import annotations

from bot.cluster.model import ObjectRef, Owner

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


def owner(app="web", repo_id=1296269, full_name="acme/gitops"):
    return Owner("github", repo_id, full_name, app)


def deploy(cluster, app, objects):
    return cluster.apply(
        objects, app=app, revision="r1", default_namespace="shop", owner=owner(app)
    )


def prune(cluster, app, keep, **kwargs):
    kwargs.setdefault("may_delete", lambda ref: True)
    return cluster.prune(app, keep, owner=owner(app), **kwargs)


def test_prune_deletes_what_left_the_set(fake_kube, kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("a"), config_map("b"), service("web"), CRD])
    deploy(kube_cluster, "web", [widget("keep"), widget("drop")])
    report = deploy(kube_cluster, "web", [NS, config_map("a"), CRD, widget("keep")])

    pruned = prune(kube_cluster, "web", report.refs)

    assert sorted(str(ref) for ref in pruned) == [
        "ConfigMap shop/b",
        "Service shop/web",
        "Widget shop/drop",
    ]
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "a") is not None
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "b") is None
    assert fake_kube.get_object("example.com/v1", "Widget", "shop", "keep") is not None
    assert prune(kube_cluster, "web", report.refs) == []


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

    pruned = prune(kube_cluster, "web", [ObjectRef("v1", "Namespace", None, "shop")])

    assert [str(ref) for ref in pruned] == ["ConfigMap shop/mine"]
    remaining = {o["metadata"]["name"] for o in fake_kube.objects(kind="ConfigMap")}
    assert remaining == {"theirs", "hand-made"}


def test_prune_removes_namespaces_last(fake_kube, kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("a")])

    pruned = prune(kube_cluster, "web", [])

    assert [str(ref) for ref in pruned] == ["ConfigMap shop/a", "Namespace shop"]
    deletes = [r.path for r in fake_kube.requests if r.method == "DELETE"]
    assert deletes == ["/api/v1/namespaces/shop/configmaps/a", "/api/v1/namespaces/shop"]


def test_keep_matches_whatever_api_version_the_ref_names(kube_cluster):
    deploy(kube_cluster, "web", [NS, config_map("a")])
    keep = {ObjectRef("v1", "Namespace", None, "shop"), ObjectRef("v1", "ConfigMap", "shop", "a")}

    assert prune(kube_cluster, "web", keep) == []


# -- ownership: repository, app, policy ------------------------------------------------------

OTHER = Owner("github", 424242, "acme/other", "web")  # another repository, same app name


def deployment(name, namespace):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx:1"}]},
            },
        },
    }


def in_namespace(obj, namespace):
    return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}


def only(namespace, kinds):
    """A repository policy's prune check: one namespace, some kinds, nothing cluster-scoped."""
    return lambda ref: ref.namespace == namespace and ref.kind in kinds


def test_prune_of_one_repository_never_touches_another_with_the_same_app_name(
    fake_kube, kube_cluster
):
    """The finding: repository B (app `web`, allowed team-b ConfigMaps only) used to delete
    repository A's Deployment, Service, ConfigMaps and Namespace, all labelled app `web`."""
    deploy(kube_cluster, "web", [NS, deployment("web", "shop"), service("web"), config_map("a")])
    fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}})
    b_objects = [config_map("b-old", "team-b"), config_map("b-new", "team-b")]
    kube_cluster.apply(b_objects, app="web", revision="b1", default_namespace="team-b", owner=OTHER)
    report = kube_cluster.apply(
        b_objects[1:], app="web", revision="b2", default_namespace="team-b", owner=OTHER
    )

    pruned = kube_cluster.prune(
        "web", report.refs, owner=OTHER, may_delete=only("team-b", {"ConfigMap"})
    )

    assert [str(ref) for ref in pruned] == ["ConfigMap team-b/b-old"]
    assert fake_kube.get_object("v1", "Namespace", None, "shop") is not None
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web") is not None
    assert fake_kube.get_object("v1", "Service", "shop", "web") is not None
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "a") is not None
    selectors = {r.query.get("labelSelector") for r in fake_kube.requests if r.method == "GET"}
    assert "app.kubernetes.io/managed-by=coalmine,coalmine.dev/owner=github.424242," \
        "coalmine.dev/app=web" in selectors


def test_prune_deletes_only_where_the_policy_allows(fake_kube, kube_cluster):
    """Objects the repository applied when its policy was wider stay once it is narrowed."""
    for name in ("team-a", "team-b"):
        fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deploy(kube_cluster, "web", [config_map("old", "team-a"), config_map("old", "team-b")])

    pruned = prune(kube_cluster, "web", [], may_delete=only("team-a", {"ConfigMap"}))

    assert [str(ref) for ref in pruned] == ["ConfigMap team-a/old"]
    assert fake_kube.get_object("v1", "ConfigMap", "team-b", "old") is not None
    deletes = [r.path for r in fake_kube.requests if r.method == "DELETE"]
    assert deletes == ["/api/v1/namespaces/team-a/configmaps/old"]


def test_prune_rechecks_the_owner_of_each_object_before_deleting_it(fake_kube, kube_cluster):
    """An object that changed hands between the list and the delete is left alone."""
    deploy(kube_cluster, "web", [NS, config_map("contested")])

    def taken_over():
        live = fake_kube.get_object("v1", "ConfigMap", "shop", "contested")
        live["metadata"]["labels"]["coalmine.dev/owner"] = OTHER.label_value
        fake_kube.put_object(live)

    fake_kube.intercept_next(taken_over, method="DELETE", path_contains="/configmaps/contested")

    pruned = prune(kube_cluster, "web", [ObjectRef("v1", "Namespace", None, "shop")])

    assert pruned == []
    live = fake_kube.get_object("v1", "ConfigMap", "shop", "contested")
    assert live["metadata"]["labels"]["coalmine.dev/owner"] == OTHER.label_value


def test_prune_lists_only_the_given_namespaces_and_skips_kinds_it_may_not_list(
    fake_kube, kube_cluster
):
    """An identity with a Role per namespace can neither list across the cluster nor list
    what it has no Role for: prune asks only where it may and skips a forbidden kind."""
    deploy(kube_cluster, "web", [NS, config_map("a"), service("web")])
    fake_kube.fail_next(1, status=403, method="GET", path_contains="/services")

    pruned = prune(kube_cluster, "web", [], namespaces=["shop"], may_delete=only("shop", {
        "ConfigMap", "Service"}))

    assert [str(ref) for ref in pruned] == ["ConfigMap shop/a"]
    assert fake_kube.get_object("v1", "Service", "shop", "web") is not None
    lists = [r.path for r in fake_kube.requests if r.method == "GET" and "labelSelector" in r.query]
    cluster_scoped = ("/namespaces", "/clusterroles", "/clusterrolebindings",
                      "/customresourcedefinitions")
    assert "/api/v1/namespaces/shop/configmaps" in lists
    assert all("/namespaces/shop/" in path or path.endswith(cluster_scoped) for path in lists)
