"""A Cluster view impersonating a repository's ServiceAccount: the cluster's RBAC decides.

The fake API server records whom each write was made as and enforces a minimal RBAC, so these
tests see the headers on the wire, not a mock of the client.
"""

from __future__ import annotations

import pytest

from bot.cluster.model import ClusterError, ObjectRef, Owner

SA = "system:serviceaccount:team-a:deployer"
GROUPS = ("system:serviceaccounts", "system:serviceaccounts:team-a")
OWNER = Owner("github", 1296269, "acme/gitops", "web")


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
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx:1"}]},
            },
        },
    }


def apply(cluster, objects, namespace="team-a"):
    return cluster.apply(
        objects, app="web", revision="r1", default_namespace=namespace, owner=OWNER
    )


@pytest.fixture
def namespaces(fake_kube):
    for name in ("team-a", "team-b"):
        fake_kube.put_object(namespace(name))


def test_every_request_of_the_view_is_made_as_the_user(fake_kube, kube_cluster, namespaces):
    view = kube_cluster.impersonating(SA, GROUPS)
    first = len(fake_kube.requests)

    apply(view, [deployment(), config_map("a"), config_map("b")])
    apply(view, [deployment(), config_map("a", colour="red")])  # configured, unchanged
    view.scale("team-a", "web", 3)
    assert view.get("v1", "ConfigMap", "team-a", "a")["data"] == {"colour": "red"}
    assert len(view.list("v1", "ConfigMap", "team-a")) == 2
    view.delete("v1", "ConfigMap", "team-a", "a")
    pruned = view.prune("web", [ObjectRef("apps/v1", "Deployment", "team-a", "web")],
                        owner=OWNER, may_delete=lambda ref: ref.namespace == "team-a")

    assert [str(ref) for ref in pruned] == ["ConfigMap team-a/b"]
    verbs = {(w.verb, w.resource) for w in fake_kube.writes}
    assert verbs == {("patch", "deployments"), ("patch", "configmaps"),
                     ("patch", "deployments/scale"), ("delete", "configmaps")}
    assert {(w.user, w.groups) for w in fake_kube.writes} == {(SA, GROUPS)}
    assert {(r.user, r.groups) for r in fake_kube.requests[first:]} == {(SA, GROUPS)}


def test_the_parent_cluster_still_acts_as_the_bot(fake_kube, kube_cluster, namespaces):
    view = kube_cluster.impersonating(SA)
    apply(view, [config_map("as-sa")])

    apply(kube_cluster, [config_map("as-bot")], namespace="team-b")

    assert [(w.target, w.user, w.groups) for w in fake_kube.writes] == [
        ("configmaps team-a/as-sa", SA, ()),
        ("configmaps team-b/as-bot", None, ()),
    ]
    assert view.api_client is not kube_cluster.api_client
    assert view.api_client.configuration is not kube_cluster.api_client.configuration
    assert view.identity.user == SA and kube_cluster.identity is None


def test_a_restricted_user_gets_a_clear_forbidden_error(fake_kube, kube_cluster, namespaces):
    fake_kube.restrict(SA, namespaces={"team-a"})
    view = kube_cluster.impersonating(SA)
    apply(view, [config_map("fine")])

    with pytest.raises(ClusterError) as caught:
        apply(view, [config_map("settings")], namespace="team-b")

    message = str(caught.value)
    assert message.startswith("apply ConfigMap team-b/settings: ")
    assert 'configmaps "settings" is forbidden: User "system:serviceaccount:team-a:deployer" ' \
        'cannot patch resource "configmaps" in API group "" in the namespace "team-b"' in message
    assert "(Forbidden, HTTP 403)" in message
    assert caught.value.status == 403
    assert fake_kube.get_object("v1", "ConfigMap", "team-b", "settings") is None
    denied = [w for w in fake_kube.writes if not w.allowed]
    assert [(w.target, w.user) for w in denied] == [("configmaps team-b/settings", SA)]
    assert len(denied) == 1  # a 403 is not retried


def test_a_restricted_user_may_not_write_cluster_scoped_objects(fake_kube, kube_cluster,
                                                                namespaces):
    fake_kube.restrict(SA, namespaces={"team-a"})
    view = kube_cluster.impersonating(SA)

    with pytest.raises(ClusterError, match=r'apply Namespace team-c: namespaces "team-c" is '
                                           r"forbidden: .* at the cluster scope"):
        apply(view, [namespace("team-c")])
    with pytest.raises(ClusterError, match="cannot delete resource"):
        view.delete("v1", "Namespace", None, "team-a")

    assert fake_kube.get_object("v1", "Namespace", None, "team-a") is not None


def test_scale_and_delete_of_a_restricted_user_are_refused_too(fake_kube, kube_cluster,
                                                               namespaces):
    apply(kube_cluster, [deployment()], namespace="team-b")
    fake_kube.restrict(SA, namespaces={"team-a"})
    view = kube_cluster.impersonating(SA)

    with pytest.raises(ClusterError, match=r'cannot patch resource "deployments/scale" in API '
                                           r'group "apps" in the namespace "team-b"'):
        view.scale("team-b", "web", 0)
    with pytest.raises(ClusterError, match="forbidden"):
        view.delete("apps/v1", "Deployment", "team-b", "web")

    assert fake_kube.get_object("apps/v1", "Deployment", "team-b", "web")["spec"]["replicas"] == 2


@pytest.mark.parametrize("name", ["", "evil\r\nImpersonate-User: system:admin", "\tx"])
def test_names_that_could_forge_headers_are_refused(kube_cluster, name):
    with pytest.raises(ValueError, match="cannot impersonate"):
        kube_cluster.impersonating(name)
    with pytest.raises(ValueError, match="cannot impersonate"):
        kube_cluster.impersonating(SA, (name,))
