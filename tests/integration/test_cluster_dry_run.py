"""The preview's cluster calls (`Cluster.dry_run`, `prune_candidates`) against the fake API
server over HTTP: the server validates and answers, nothing is stored or deleted, and another
owner's object is refused without its content being read out."""

from __future__ import annotations

from bot.cluster.model import ObjectRef, Owner

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


def config_map(name: str, value: str = "v", namespace: str | None = None) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": value}}


def web(**spec: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                     **spec}}


def owner(app: str = "web", repo_id: int = 1296269) -> Owner:
    return Owner("github", repo_id, "acme/gitops", app)


def dry_run(cluster, objects, who: Owner | None = None):
    return cluster.dry_run(objects, revision="r2", default_namespace="shop",
                           owner=who or owner())


def test_a_dry_run_answers_what_would_be_stored_and_stores_nothing(fake_kube, kube_cluster):
    kube_cluster.apply([NS, config_map("cfg")], app="web", revision="r1",
                       default_namespace="shop", owner=owner())
    stored = len(fake_kube.stored)
    changed, new = dry_run(kube_cluster, [config_map("cfg", "w"), config_map("fresh")])

    assert changed.ref == ObjectRef("v1", "ConfigMap", "shop", "cfg")
    assert changed.live["data"] == {"k": "v"} and changed.answer["data"] == {"k": "w"}
    assert changed.answer["metadata"]["labels"]["coalmine.dev/revision"] == "r2"
    assert new.live is None and new.answer["metadata"]["namespace"] == "shop"
    assert len(fake_kube.stored) == stored
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "cfg")["data"] == {"k": "v"}
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "fresh") is None
    dry = [w for w in fake_kube.writes if w.dry_run]
    assert [(w.verb, w.name) for w in dry] == [("patch", "cfg"), ("patch", "fresh")]
    query = [r.query for r in fake_kube.requests if r.method == "PATCH"][-1]
    assert query["dryRun"] == "All" and query["fieldValidation"] == "Strict"


def test_schema_and_immutable_field_errors_are_the_objects_own(fake_kube, kube_cluster):
    kube_cluster.apply([NS, web()], app="web", revision="r1", default_namespace="shop",
                       owner=owner())
    typo = web()
    typo["spec"]["replica"] = typo["spec"].pop("replicas")
    [unknown] = dry_run(kube_cluster, [typo])
    assert unknown.answer is None and 'unknown field "spec.replica"' in unknown.error
    moved = web(selector={"matchLabels": {"app": "web", "tier": "x"}})
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    [immutable] = dry_run(kube_cluster, [moved])
    assert "field is immutable" in immutable.error


def test_another_owners_object_is_refused_unread(fake_kube, kube_cluster):
    kube_cluster.apply([NS, config_map("shared", "their-value")], app="api", revision="r1",
                       default_namespace="shop", owner=owner("api"))
    [refused] = dry_run(kube_cluster, [config_map("shared", "mine")])
    assert refused.refused and "is owned by" in refused.refused
    assert refused.live is None and refused.answer is None
    assert not [w for w in fake_kube.writes if w.name == "shared" and w.dry_run]


def test_what_the_merge_creates_first_is_skipped_not_failed(fake_kube, kube_cluster):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    results = dry_run(kube_cluster, [{"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": "new-ns"}}, crd, widget,
                                     config_map("c", namespace="new-ns")])
    assert [r.answer is not None for r in results[:2]] == [True, True]
    assert "CustomResourceDefinition is created by this merge" in results[2].skipped
    assert "namespace new-ns is created by this merge" in results[3].skipped
    assert fake_kube.get_object("v1", "Namespace", None, "new-ns") is None


def test_prune_candidates_are_listed_not_deleted(fake_kube, kube_cluster):
    kube_cluster.apply([NS, config_map("a"), config_map("b")], app="web", revision="r1",
                       default_namespace="shop", owner=owner())
    keep = [ObjectRef("v1", "ConfigMap", "shop", "a")]
    doomed = kube_cluster.prune_candidates("web", keep, owner=owner(),
                                           may_delete=lambda ref: ref.kind != "Namespace")
    assert doomed == [ObjectRef("v1", "ConfigMap", "shop", "b")]
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "b") is not None
    assert not [w for w in fake_kube.writes if w.verb == "delete"]
