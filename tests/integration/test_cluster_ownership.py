"""Apply refuses to take over objects that belong to another repository, app or nobody.

Server-side apply with forced conflicts hands any object to whoever applies it last; these
tests prove that the check before the writes keeps one repository off another's objects and
off objects Coalmine never made (its own ConfigMap, another team's), and that a refused set
writes nothing at all.
"""

from __future__ import annotations

import pytest

from bot.cluster.model import Owner, OwnershipConflict

GITOPS = Owner("github", 1296269, "acme/gitops", "web")
OTHER = Owner("github", 424242, "acme/other", "web")
SAME_REPO_API = Owner("github", 1296269, "acme/gitops", "api")


def namespace(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def config_map(name, namespace=None, **data):
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(name="web"):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx:1"}]},
            },
        },
    }


def apply(cluster, objects, owner=GITOPS, namespace="shop", **kwargs):
    return cluster.apply(
        objects, app=owner.app, revision="r1", default_namespace=namespace, owner=owner, **kwargs
    )


def patches(fake_kube):
    return [r.path for r in fake_kube.requests if r.method == "PATCH"]


@pytest.fixture
def coalmine_config(fake_kube):
    """Coalmine's own ConfigMap, installed by hand (no Coalmine labels)."""
    fake_kube.put_object(namespace("coalmine"))
    return fake_kube.put_object(config_map("coalmine-config", "coalmine", token_file="/x"))


def test_an_unmanaged_live_object_is_refused_without_adopt(fake_kube, kube_cluster,
                                                           coalmine_config):
    with pytest.raises(OwnershipConflict) as caught:
        apply(kube_cluster, [config_map("coalmine-config", "coalmine", token_file="/evil")])

    assert str(caught.value) == (
        "nothing applied: 1 object belongs to someone else: ConfigMap coalmine/coalmine-config "
        "exists and is not managed by Coalmine (set adopt: true in the repository's policy to "
        "take it over)"
    )
    assert patches(fake_kube) == []
    live = fake_kube.get_object("v1", "ConfigMap", "coalmine", "coalmine-config")
    assert live["data"] == {"token_file": "/x"}


def test_an_unmanaged_live_object_is_taken_over_with_adopt(fake_kube, kube_cluster,
                                                           coalmine_config):
    report = apply(kube_cluster, [config_map("coalmine-config", "coalmine", token_file="/y")],
                   adopt=True)

    assert [str(ref) for ref in report.configured] == ["ConfigMap coalmine/coalmine-config"]
    live = fake_kube.get_object("v1", "ConfigMap", "coalmine", "coalmine-config")
    assert live["data"] == {"token_file": "/y"}
    assert live["metadata"]["labels"]["coalmine.dev/owner"] == "github.1296269"
    with pytest.raises(OwnershipConflict, match="is owned by github:acme/gitops app web"):
        apply(kube_cluster, [config_map("coalmine-config", "coalmine")], owner=OTHER, adopt=True)


def test_another_repositorys_object_is_refused_naming_its_owner(fake_kube, kube_cluster):
    fake_kube.put_object(namespace("shop"))
    apply(kube_cluster, [deployment(), config_map("team-settings", colour="blue")], owner=OTHER)

    with pytest.raises(OwnershipConflict) as caught:
        apply(kube_cluster, [deployment(), config_map("team-settings", colour="red")],
              adopt=True)

    assert [str(conflict) for conflict in caught.value.conflicts] == [
        "Deployment shop/web is owned by github:acme/other app web",
        "ConfigMap shop/team-settings is owned by github:acme/other app web",
    ]
    live = fake_kube.get_object("v1", "ConfigMap", "shop", "team-settings")
    assert live["data"] == {"colour": "blue"}


def test_another_app_of_the_same_repository_is_refused(fake_kube, kube_cluster):
    fake_kube.put_object(namespace("shop"))
    apply(kube_cluster, [config_map("shared")], owner=SAME_REPO_API)

    with pytest.raises(OwnershipConflict,
                       match="ConfigMap shop/shared is owned by github:acme/gitops app api"):
        apply(kube_cluster, [config_map("shared")])


def test_nothing_is_written_when_one_object_of_the_set_conflicts(fake_kube, kube_cluster):
    fake_kube.put_object(namespace("shop"))
    fake_kube.put_object(config_map("hand-made", "shop", owner="ops"))
    before = len(patches(fake_kube))

    with pytest.raises(OwnershipConflict) as caught:
        apply(kube_cluster, [namespace("fresh"), config_map("new"), config_map("hand-made")])

    assert [str(c.ref) for c in caught.value.conflicts] == ["ConfigMap shop/hand-made"]
    assert len(patches(fake_kube)) == before
    assert fake_kube.get_object("v1", "Namespace", None, "fresh") is None
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "new") is None


def test_many_objects_are_judged_from_the_listing_and_every_conflict_is_named(
    fake_kube, kube_cluster
):
    """Past the list threshold the check reuses the LIST snapshot: no GET per object."""
    fake_kube.put_object(namespace("shop"))
    apply(kube_cluster, [config_map("theirs-1"), config_map("theirs-2")], owner=OTHER)
    maps = [config_map(f"cm-{i:02}") for i in range(22)]
    single_gets_before = sum(1 for r in fake_kube.requests
                             if r.method == "GET" and "/configmaps/" in r.path)

    with pytest.raises(OwnershipConflict) as caught:
        apply(kube_cluster, [*maps, config_map("theirs-1"), config_map("theirs-2")])

    assert [str(c.ref) for c in caught.value.conflicts] == [
        "ConfigMap shop/theirs-1", "ConfigMap shop/theirs-2"]
    assert "2 objects belong to someone else" in str(caught.value)
    single_gets = sum(1 for r in fake_kube.requests
                      if r.method == "GET" and "/configmaps/" in r.path) - single_gets_before
    assert single_gets == 0
    names = {o["metadata"]["name"] for o in fake_kube.objects(kind="ConfigMap", namespace="shop")}
    assert names == {"theirs-1", "theirs-2"}


def test_objects_of_an_older_coalmine_are_migrated_by_their_app_only(fake_kube, kube_cluster):
    """Labelled managed-by coalmine and app `web` but with no owner: written before owner
    labels existed. The app of that name takes it over; another app may not."""
    fake_kube.put_object(namespace("shop"))
    legacy = {"app.kubernetes.io/managed-by": "coalmine", "coalmine.dev/app": "web"}
    fake_kube.put_object({**config_map("legacy", "shop"),
                          "metadata": {"name": "legacy", "namespace": "shop", "labels": legacy}})

    with pytest.raises(OwnershipConflict,
                       match="ConfigMap shop/legacy is managed by Coalmine for app web with no "
                             "owning repository recorded"):
        apply(kube_cluster, [config_map("legacy")], owner=SAME_REPO_API)
    report = apply(kube_cluster, [config_map("legacy", colour="green")])

    assert [str(ref) for ref in report.configured] == ["ConfigMap shop/legacy"]
    live = fake_kube.get_object("v1", "ConfigMap", "shop", "legacy")
    assert live["metadata"]["labels"]["coalmine.dev/owner"] == "github.1296269"
    assert live["metadata"]["annotations"]["coalmine.dev/repository"] == "github:acme/gitops"


def test_a_manifest_cannot_name_another_owner(fake_kube, kube_cluster):
    fake_kube.put_object(namespace("shop"))
    spoofed = config_map("spoof")
    spoofed["metadata"]["labels"] = {"coalmine.dev/owner": OTHER.label_value,
                                     "coalmine.dev/app": "api"}
    spoofed["metadata"]["annotations"] = {"coalmine.dev/repository": "github:acme/other"}

    apply(kube_cluster, [spoofed])

    meta = fake_kube.get_object("v1", "ConfigMap", "shop", "spoof")["metadata"]
    assert meta["labels"]["coalmine.dev/owner"] == "github.1296269"
    assert meta["labels"]["coalmine.dev/app"] == "web"
    assert meta["annotations"]["coalmine.dev/repository"] == "github:acme/gitops"


def test_owner_label_value_is_a_valid_label_value():
    assert GITOPS.label_value == "github.1296269"
    assert Owner("gitlab", 7, "group/sub/project", "web").label_value == "gitlab.7"
    with pytest.raises(ValueError, match="forge"):
        Owner("bitbucket", 1, "a/b", "web")
    with pytest.raises(ValueError, match="repo_id"):
        Owner("github", 0, "a/b", "web")
