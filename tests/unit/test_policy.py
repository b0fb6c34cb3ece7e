"""Per-repository deploy policy: parsing (every mistake names its key) and each rule of check()."""

from __future__ import annotations

import pytest

from bot.config import ConfigError
from bot.policy import (
    DEFAULT_POLICY,
    KindPattern,
    Policy,
    Violation,
    check,
    scope_judge,
)
from bot.policy_parse import parse_policy

SOURCE = "/etc/coalmine/config.yaml"
REPO = "acme/gitops"

# What discovery would answer for the kinds these tests use.
CLUSTER_SCOPED = {
    ("v1", "Namespace"): True,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): True,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): True,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): True,
    ("storage.k8s.io/v1", "StorageClass"): True,
    ("v1", "Service"): False,
    ("v1", "ConfigMap"): False,
    ("v1", "Secret"): False,
    ("apps/v1", "Deployment"): False,
    ("rbac.authorization.k8s.io/v1", "Role"): False,
    ("example.com/v1", "Deployment"): False,
}


def cluster_scoped(api_version: str, kind: str) -> bool:
    return CLUSTER_SCOPED[(api_version, kind)]


def obj(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict:
    meta = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def violations(policy: Policy, *objects: dict, cluster: str = "default", ns: str = "shop"):
    return [
        str(v)
        for v in check(
            policy, list(objects), cluster=cluster, default_namespace=ns,
            cluster_scoped=cluster_scoped,
        )
    ]


def policy(**raw) -> Policy:
    raw.setdefault("namespaces", ["*"])
    return parse_policy(raw, SOURCE, REPO)


def parse_error(raw, own_namespace: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_policy(raw, SOURCE, REPO, own_namespace=own_namespace)
    return caught.value


# --------------------------------------------------------------------------- parsing


def test_a_full_entry_parses_into_each_field():
    parsed = policy(
        deployBranch="release",
        clusters=["prod", "staging"],
        namespaces=["team-*", "shared"],
        allowKinds=["apps/*", "core/Service", "ConfigMap"],
        denyKinds=["Secret"],
        clusterScopedKinds=["rbac.authorization.k8s.io/ClusterRole"],
    )
    assert parsed == Policy(
        deploy_branch="release",
        clusters=("prod", "staging"),
        namespaces=("team-*", "shared"),
        allow_kinds=(KindPattern("apps", "*"), KindPattern("", "Service"),
                     KindPattern(None, "ConfigMap")),
        deny_kinds=(KindPattern(None, "Secret"),),
        cluster_scoped_kinds=(KindPattern("rbac.authorization.k8s.io", "ClusterRole"),),
    )


@pytest.mark.parametrize("raw", [None, {}, {"deployBranch": "main"}])
def test_an_entry_must_state_its_namespaces(raw):
    error = parse_error(raw)
    assert error.key == "repos.acme/gitops.namespaces" and "is required" in error.reason


def test_an_entry_with_only_namespaces_takes_the_default_policy_otherwise():
    parsed = policy(namespaces=["*"])
    assert parsed.clusters == DEFAULT_POLICY.clusters
    assert parsed.allow_kinds == DEFAULT_POLICY.allow_kinds
    assert parsed.service_account is None and parsed.adopt is False


def test_service_account_becomes_the_impersonated_user():
    parsed = policy(namespaces=["shop"], serviceAccount="shop/deployer", adopt=True)
    assert parsed.service_account == "shop/deployer"
    assert parsed.impersonate_user == "system:serviceaccount:shop:deployer"
    assert parsed.adopt is True


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ({"namespaces": ["kube-system"]}, "repos.acme/gitops.namespaces[0]", "system namespace"),
        ({"namespaces": ["shop", "kube-public"]}, "repos.acme/gitops.namespaces[1]",
         "system namespace"),
        ({"namespaces": ["coalmine"]}, "repos.acme/gitops.namespaces[0]",
         "Coalmine's own namespace"),
        ({"namespaces": ["shop"], "serviceAccount": "deployer"},
         "repos.acme/gitops.serviceAccount", "namespace/name"),
        ({"namespaces": ["shop"], "serviceAccount": "Shop/deployer"},
         "repos.acme/gitops.serviceAccount", "is not a namespace/name"),
        ({"namespaces": ["shop"], "adopt": "yes"}, "repos.acme/gitops.adopt", "true or false"),
    ],
)
def test_protected_namespaces_and_new_keys_are_checked(raw, key, reason):
    error = parse_error(raw, own_namespace="coalmine")
    assert (error.key, reason in error.reason) == (key, True), error


def test_missing_keys_take_their_defaults():
    parsed = policy(deployBranch="main", namespaces=["shop"])
    assert parsed.deploy_branch == "main"
    assert parsed.namespaces == ("shop",)
    assert parsed.clusters == DEFAULT_POLICY.clusters == ("default",)
    assert parsed.allow_kinds == DEFAULT_POLICY.allow_kinds
    assert parsed.cluster_scoped_kinds == ()


def test_kind_patterns_print_back_in_the_config_syntax():
    assert [str(p) for p in policy(allowKinds=["core/Service", "apps/*", "Job", "*"]).allow_kinds] \
        == ["core/Service", "apps/*", "Job", "*"]


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        ("main", "repos.acme/gitops", "must be a mapping"),
        ({"deployBranch": 3}, "repos.acme/gitops.deployBranch", "must be a branch name"),
        ({"deployBranch": " "}, "repos.acme/gitops.deployBranch", "must be a branch name"),
        ({"namespaces": ["*"], "namespace": ["shop"]}, "repos.acme/gitops.namespace",
         "unknown key"),
        ({"clusters": "prod"}, "repos.acme/gitops.clusters", "must be a list"),
        ({"clusters": []}, "repos.acme/gitops.clusters", "must not be empty"),
        ({"clusters": ["prod", 7]}, "repos.acme/gitops.clusters[1]", "non-empty string"),
        ({"clusters": ["prod-*"]}, "repos.acme/gitops.clusters[0]", "named exactly"),
        ({"namespaces": []}, "repos.acme/gitops.namespaces", "must not be empty"),
        ({"namespaces": ["shop", "Team_A"]}, "repos.acme/gitops.namespaces[1]",
         "not a namespace name or pattern"),
        ({"namespaces": ["-shop"]}, "repos.acme/gitops.namespaces[0]", "not a namespace"),
        ({"allowKinds": []}, "repos.acme/gitops.allowKinds", "must not be empty"),
        ({"allowKinds": ["apps/v1/Deployment"]}, "repos.acme/gitops.allowKinds[0]",
         "without the version"),
        ({"allowKinds": ["v1/Service"]}, "repos.acme/gitops.allowKinds[0]",
         "'v1' is a version: write core/Service or Service"),
        ({"denyKinds": ["Secret", "secrets"]}, "repos.acme/gitops.denyKinds[1]",
         "Deployment, not deployments"),
        ({"denyKinds": ["Apps_/Deployment"]}, "repos.acme/gitops.denyKinds[0]",
         "not an API group"),
        ({"clusterScopedKinds": ["rbac.authorization.k8s.io/"]},
         "repos.acme/gitops.clusterScopedKinds[0]", "is not a kind"),
        ({"clusterScopedKinds": {"kind": "ClusterRole"}},
         "repos.acme/gitops.clusterScopedKinds", "must be a list"),
    ],
)
def test_parse_errors_name_the_file_the_key_and_the_reason(raw, key, reason):
    if isinstance(raw, dict):
        raw = {"namespaces": ["*"], **raw}
    error = parse_error(raw)
    assert error.source == SOURCE
    assert error.key == key
    assert reason in error.reason
    assert str(error).startswith(f"{SOURCE}: {key}: ")


def test_empty_deny_and_cluster_scoped_lists_are_allowed():
    parsed = policy(denyKinds=[], clusterScopedKinds=[])
    assert parsed.deny_kinds == () and parsed.cluster_scoped_kinds == ()


# --------------------------------------------------------------------------- default policy


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ([obj("apps/v1", "Deployment", "web")], []),
        ([obj("v1", "Service", "web", "anything-else")], []),
        ([obj("v1", "Namespace", "shop")], []),
        ([obj("v1", "ConfigMap", "cfg", "kube-system")],
         [("ConfigMap kube-system/cfg: namespace 'kube-system' is a system namespace: "
          "no repository may deploy there")]),
        ([obj("v1", "Namespace", "kube-node-lease")],
         [("Namespace kube-node-lease: namespace 'kube-node-lease' is a system namespace: "
          "no repository may deploy there")]),
        ([obj("rbac.authorization.k8s.io/v1", "ClusterRole", "admin-all")],
         [("ClusterRole admin-all: cluster-scoped kind rbac.authorization.k8s.io/ClusterRole "
          "is not in clusterScopedKinds")]),
        ([obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "root")],
         [("ClusterRoleBinding root: cluster-scoped kind "
          "rbac.authorization.k8s.io/ClusterRoleBinding is not in clusterScopedKinds")]),
        ([obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com")],
         [("CustomResourceDefinition widgets.example.com: cluster-scoped kind "
          "apiextensions.k8s.io/CustomResourceDefinition is not in clusterScopedKinds")]),
    ],
    ids=[
        "namespaced kind in the app namespace",
        "any ordinary namespace",
        "the Namespace of an allowed namespace",
        "kube-system is protected",
        "system Namespace objects too",
        "no ClusterRoles",
        "no ClusterRoleBindings",
        "no CRDs",
    ],
)
def test_default_policy(objects, expected):
    assert violations(DEFAULT_POLICY, *objects) == expected


def test_default_policy_allows_only_the_default_cluster():
    assert violations(DEFAULT_POLICY, cluster="prod") == [
        "cluster prod: cluster 'prod' is not in clusters (default)"
    ]


# --------------------------------------------------------------------------- each rule


@pytest.mark.parametrize(
    ("clusters", "cluster", "allowed"),
    [
        (["prod"], "prod", True),
        (["prod"], "staging", False),
        (["prod"], "default", False),
        (["*"], "anywhere", True),
    ],
)
def test_cluster_rule(clusters, cluster, allowed):
    found = check(policy(clusters=clusters), [], cluster=cluster, default_namespace="shop",
                  cluster_scoped=cluster_scoped)
    assert (found == []) is allowed
    if not allowed:
        assert found == [Violation(f"cluster {cluster}",
                                   f"cluster {cluster!r} is not in clusters (prod)")]


@pytest.mark.parametrize(
    ("patterns", "namespace", "allowed"),
    [
        (["shop"], "shop", True),
        (["shop"], "shop-2", False),
        (["team-*"], "team-a", True),
        (["team-*"], "team-", True),
        (["team-*"], "teams", False),
        (["team-*"], "my-team-a", False),
        (["*-prod"], "shop-prod", True),
        (["*"], "default", True),
        (["*"], "kube-system", False),
        (["kube-*"], "kube-public", False),
        (["kube-*"], "kube-system", False),
    ],
)
def test_namespace_globs(patterns, namespace, allowed):
    found = violations(policy(namespaces=patterns), obj("v1", "ConfigMap", "c", namespace))
    assert (found == []) is allowed, found


def test_objects_without_a_namespace_are_judged_in_the_app_namespace():
    assert violations(policy(namespaces=["shop"]), obj("v1", "ConfigMap", "c"), ns="shop") == []
    assert violations(policy(namespaces=["shop"]), obj("v1", "ConfigMap", "c"), ns="other") == [
        "ConfigMap other/c: namespace 'other' is not in namespaces (shop)"
    ]


def test_namespace_of_a_cluster_scoped_object_is_ignored():
    found = violations(
        policy(namespaces=["shop"], clusterScopedKinds=["StorageClass"]),
        obj("storage.k8s.io/v1", "StorageClass", "fast", "kube-system"),
    )
    assert found == []


@pytest.mark.parametrize(
    ("allow", "manifest", "allowed"),
    [
        (["apps/Deployment"], obj("apps/v1", "Deployment", "web"), True),
        (["apps/Deployment"], obj("example.com/v1", "Deployment", "web"), False),
        (["Deployment"], obj("example.com/v1", "Deployment", "web"), True),
        (["apps/*"], obj("apps/v1", "Deployment", "web"), True),
        (["apps/*"], obj("v1", "Service", "web"), False),
        (["core/Service"], obj("v1", "Service", "web"), True),
        (["core/*"], obj("apps/v1", "Deployment", "web"), False),
        (["*/Deployment"], obj("apps/v1", "Deployment", "web"), True),
        (["Config*"], obj("v1", "ConfigMap", "c"), True),
        (["*.example.com/*", "example.com/*"], obj("example.com/v1", "Deployment", "w"), True),
    ],
)
def test_allow_kinds(allow, manifest, allowed):
    found = violations(policy(allowKinds=allow), manifest)
    assert (found == []) is allowed, found
    if not allowed:
        assert found[0].endswith("is not in allowKinds")


def test_deny_kinds_win_over_allow_kinds_and_name_the_entry():
    found = violations(
        policy(allowKinds=["*"], denyKinds=["core/Secret"]),
        obj("v1", "Secret", "token"),
        obj("v1", "ConfigMap", "cfg"),
    )
    assert found == ["Secret shop/token: kind core/Secret matches denyKinds entry core/Secret"]


def test_deny_kinds_apply_to_cluster_scoped_objects_and_namespaces_too():
    found = violations(
        policy(denyKinds=["Namespace", "rbac.authorization.k8s.io/*"],
               clusterScopedKinds=["rbac.authorization.k8s.io/ClusterRole"]),
        obj("v1", "Namespace", "shop"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader"),
        obj("rbac.authorization.k8s.io/v1", "Role", "reader"),
    )
    assert found == [
        "Namespace shop: kind core/Namespace matches denyKinds entry Namespace",
        ("ClusterRole reader: kind rbac.authorization.k8s.io/ClusterRole matches denyKinds entry "
        "rbac.authorization.k8s.io/*"),
        ("Role shop/reader: kind rbac.authorization.k8s.io/Role matches denyKinds entry "
        "rbac.authorization.k8s.io/*"),
    ]


@pytest.mark.parametrize(
    ("scoped", "manifest", "allowed"),
    [
        ([], obj("rbac.authorization.k8s.io/v1", "ClusterRole", "r"), False),
        (["ClusterRole"], obj("rbac.authorization.k8s.io/v1", "ClusterRole", "r"), True),
        (["ClusterRole"], obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "r"), False),
        (["rbac.authorization.k8s.io/Cluster*"],
         obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "r"), True),
        (["*"], obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "w.example.com"), True),
    ],
)
def test_cluster_scoped_kinds(scoped, manifest, allowed):
    found = violations(policy(clusterScopedKinds=scoped), manifest)
    assert (found == []) is allowed, found


def test_allow_kinds_do_not_grant_cluster_scoped_kinds():
    found = violations(policy(allowKinds=["*"]), obj("storage.k8s.io/v1", "StorageClass", "fast"))
    assert found == [
        ("StorageClass fast: cluster-scoped kind storage.k8s.io/StorageClass is not in "
        "clusterScopedKinds")
    ]


def test_cluster_scoped_kinds_do_not_grant_namespaced_kinds():
    found = violations(policy(allowKinds=["apps/*"], clusterScopedKinds=["*"]),
                       obj("v1", "ConfigMap", "c"))
    assert found == ["ConfigMap shop/c: kind core/ConfigMap is not in allowKinds"]


@pytest.mark.parametrize(
    ("namespaces", "name", "allowed"),
    [(["team-*"], "team-a", True), (["team-*"], "shop", False), (["*"], "kube-system", False)],
)
def test_namespace_objects_follow_the_namespaces_rule(namespaces, name, allowed):
    found = violations(policy(namespaces=namespaces), obj("v1", "Namespace", name))
    assert (found == []) is allowed, found


def test_every_broken_rule_of_every_object_is_reported():
    found = check(
        policy(clusters=["prod"], namespaces=["shop"], allowKinds=["apps/*"]),
        [obj("v1", "Service", "web", "other"), obj("apps/v1", "Deployment", "web")],
        cluster="staging",
        default_namespace="shop",
        cluster_scoped=cluster_scoped,
    )
    assert [(v.object, v.rule) for v in found] == [
        ("cluster staging", "cluster 'staging' is not in clusters (prod)"),
        ("Service other/web", "kind core/Service is not in allowKinds"),
        ("Service other/web", "namespace 'other' is not in namespaces (shop)"),
    ]


@pytest.mark.parametrize(
    "manifest",
    [{"kind": "Deployment", "metadata": {"name": "web"}}, {"apiVersion": "v1", "metadata": {}}],
)
def test_objects_without_apiversion_or_kind_are_refused(manifest):
    (found,) = check(DEFAULT_POLICY, [manifest], cluster="default", default_namespace="shop",
                     cluster_scoped=cluster_scoped)
    assert found.rule == "has no apiVersion or kind, so it cannot be judged"


def test_a_discovery_failure_propagates_rather_than_passing():
    with pytest.raises(KeyError):
        check(DEFAULT_POLICY, [obj("example.com/v1", "Widget", "w")], cluster="default",
              default_namespace="shop", cluster_scoped=cluster_scoped)


# --------------------------------------------------------------------------- scope of kinds


def crd(group: str, kind: str, scope: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{kind.lower()}s.{group}"},
            "spec": {"group": group, "scope": scope, "names": {"kind": kind},
                     "versions": [{"name": "v1"}]}}


def test_a_crd_in_the_merge_cannot_make_a_built_in_kind_look_namespaced():
    """The finding: a CRD declaring rbac's ClusterRoleBinding as namespaced hid it."""
    binding = obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "root", "shop")
    objects = [crd("rbac.authorization.k8s.io", "ClusterRoleBinding", "Namespaced"), binding]
    judge = scope_judge(lambda api_version, kind: CLUSTER_SCOPED.get((api_version, kind)),
                        objects)
    found = [str(v) for v in check(policy(namespaces=["shop"]), [binding], cluster="default",
                                    default_namespace="shop", cluster_scoped=judge)]
    expected = ("ClusterRoleBinding root: cluster-scoped kind "
                "rbac.authorization.k8s.io/ClusterRoleBinding is not in clusterScopedKinds")
    assert found == [expected]


@pytest.mark.parametrize(
    ("group", "scope", "cluster_scoped"),
    [
        ("example.com", "Namespaced", False),  # a CRD of the merge, not served yet
        ("example.com", "Cluster", True),
        ("apps.k8s.io", "Namespaced", True),  # reserved groups are never taken from a CRD
        ("widgets", "Namespaced", True),  # no dot: reserved for Kubernetes' own groups
    ],
)
def test_unknown_kinds_are_cluster_scoped_unless_a_crd_of_an_open_group_says_otherwise(
        group, scope, cluster_scoped):
    judge = scope_judge(lambda api_version, kind: None, [crd(group, "Widget", scope)])
    assert judge(f"{group}/v1", "Widget") is cluster_scoped
    assert judge("other.example.com/v1", "Gadget") is True


def test_discovery_wins_over_a_crd_of_the_merge():
    judge = scope_judge(lambda api_version, kind: False,
                        [crd("example.com", "Widget", "Cluster")])
    assert judge("example.com/v1", "Widget") is False
