"""The PR preview (`handlers.preview.verify`, `preview`, `publish`) against in-memory ports.

`verify` believes the forge API, never the payload: the repository must be served (by its
forge id), the PR open, into the deploy branch, with the payload's head as its head, and the
clone URL on the forge's host. Each refusal below is one defence; removing it makes its row
fail. `preview` only reads and dry-runs (the fake cluster has no way to write), checks the
policy before it reads anything, and the content rules of server and repository together.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from bot.cluster.model import ObjectRef
from bot.config import GitHubSettings, Settings
from bot.content_rules import NO_RULES, ContentRules
from bot.events import PullRequestUpdated
from bot.forge.base import PullRequestFacts, RepoFacts
from bot.policy import Policy
from bot.preview.model import AppPreview, Preview
from bot.refs import RepoRef
from bot.rollout.traffic import as_stable
from bot.tenancy import Tenant
from handlers.preview import Verified, preview, publish, verify
from tests.fakes import (
    FakeClusters,
    FakeForge,
    FakePreviewCluster,
    FakeReport,
    FakeSources,
    FakeTenants,
    FakeTree,
)

REPO_ID, PR = 42, 7
HEAD, OTHER = "a" * 40, "b" * 40
POLICY = Policy(namespaces=("shop",), service_account="shop/deployer")
TENANT = Tenant("github", REPO_ID, "org/app", "org/app", POLICY)
PAYLOAD_REPO = RepoRef("github", "org/old-name", "https://github.com/org/app.git")
SETTINGS = Settings(github=GitHubSettings(api_url="https://api.github.com"))


def event(head: str = HEAD, repo: RepoRef = PAYLOAD_REPO) -> PullRequestUpdated:
    return PullRequestUpdated(repo=repo, number=PR, head_sha=head, base_branch="main",
                              head_branch="payload-head", action="synchronize",
                              delivery="delivery-1")


def pull(**changes: object) -> PullRequestFacts:
    facts = PullRequestFacts(number=PR, state="open", merged=False, merge_sha=None, base="main",
                             head="feature", title="Bump", url="https://github.com/pr/7",
                             head_repo_id=REPO_ID, head_sha=HEAD)
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def forge_with(facts: PullRequestFacts | None = None) -> FakeForge:
    return FakeForge(repo=RepoFacts(REPO_ID, "org/app", "main"), pulls={PR: facts or pull()})


# --------------------------------------------------------------------------- verify

REFUSED = {
    "a payload lying about the head commit": (
        event(head=OTHER), pull(), TENANT, f"head is {HEAD[:12]}, not {OTHER[:12]}"),
    "the forge knows no head commit": (event(), pull(head_sha=None), TENANT, "head is unknown"),
    "the PR is closed": (event(), pull(state="closed"), TENANT, "is closed, not open"),
    "the PR is merged already": (event(), pull(state="merged", merged=True), TENANT,
                                 "is merged, not open"),
    "the PR targets another branch": (event(), pull(base="develop"), TENANT,
                                      "targets 'develop', not the deploy branch 'main'"),
    "the policy's deploy branch counts": (
        event(), pull(), dataclasses.replace(TENANT, policy=Policy(deploy_branch="release")),
        "not the deploy branch 'release'"),
    "a payload naming a repository that is not served (by id)": (
        event(), pull(), "github repository org/app is not served", "org/app is not served"),
    "a clone URL on another host": (
        event(repo=dataclasses.replace(PAYLOAD_REPO, clone_url="https://evil.example/x.git")),
        pull(), TENANT, "is not the forge's"),
}


@pytest.mark.parametrize(("ev", "facts", "tenant", "logged"), REFUSED.values(),
                         ids=REFUSED.keys())
def test_verify_refuses(ev: PullRequestUpdated, facts: PullRequestFacts, tenant: Tenant | str,
                        logged: str, caplog) -> None:
    forge = forge_with(facts)
    with caplog.at_level(logging.WARNING, logger="handlers.preview"):
        assert verify(ev, forge=forge, tenants=FakeTenants({REPO_ID: tenant}),
                      settings=SETTINGS) is None
    assert logged in caplog.text and "delivery-1" in caplog.text
    assert forge.calls == []


def test_verify_refuses_a_repository_the_forge_does_not_know(caplog) -> None:
    forge = FakeForge(repo=None)
    with caplog.at_level(logging.WARNING, logger="handlers.preview"):
        assert verify(event(), forge=forge, tenants=FakeTenants({REPO_ID: TENANT}),
                      settings=SETTINGS) is None
    assert "does not confirm the repository" in caplog.text


def test_verify_takes_the_repository_and_branches_from_the_api() -> None:
    verified = verify(event(), forge=forge_with(), tenants=FakeTenants({REPO_ID: TENANT}),
                      settings=SETTINGS)
    assert verified is not None and not verified.fork
    assert (verified.event.repo.full_name, verified.event.repo.repo_id) == ("org/app", REPO_ID)
    assert (verified.event.head_sha, verified.event.head_branch) == (HEAD, "feature")
    assert verified.tenant is TENANT


def test_a_fork_pr_is_verified_as_a_fork() -> None:
    verified = verify(event(), forge=forge_with(pull(head_repo_id=999)),
                      tenants=FakeTenants({REPO_ID: TENANT}), settings=SETTINGS)
    assert verified is not None and verified.fork


# --------------------------------------------------------------------------- preview

CONFIG = """rules:
  requireLabels: [team]
apps:
  - name: web
    path: deploy/web
    namespace: shop
    prune: true
    canary:
      workload: Deployment/web
      steps: [{setWeight: 50}, {pause: {}}]
"""


def deployment(image: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"team": "a"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}}


CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "cfg", "labels": {"team": "a"}}, "data": {"mode": "blue"}}
WEB = ObjectRef("apps/v1", "Deployment", "shop", "web")
CFG = ObjectRef("v1", "ConfigMap", "shop", "cfg")
OLD = ObjectRef("v1", "ConfigMap", "shop", "old")
CANARY = ObjectRef("apps/v1", "Deployment", "shop", "web-canary")


def live_web(image: str) -> dict:
    obj = as_stable(deployment(image))
    obj["metadata"]["namespace"] = "shop"
    return obj


def run_preview(objects: list[dict], *, config: str = CONFIG, cluster: FakePreviewCluster,
                fork: bool = False, server_rules: ContentRules = NO_RULES):
    verified = verify(event(), forge=forge_with(pull(head_repo_id=999 if fork else REPO_ID)),
                      tenants=FakeTenants({REPO_ID: TENANT}), settings=SETTINGS)
    assert verified is not None
    sources = FakeSources({HEAD: FakeTree(config, {"deploy/web": objects})})
    clusters = FakeClusters(cluster)
    found = preview(verified, forge=forge_with(), sources=sources, clusters=clusters,
                    settings=dataclasses.replace(SETTINGS, rules=server_rules))
    return found, sources, clusters


def test_a_preview_diffs_plans_and_lists_prune_as_the_repositorys_account() -> None:
    cfg_live = {**CONFIG_MAP, "metadata": {"name": "cfg", "namespace": "shop",
                                           "labels": {"team": "a"}},
                "data": {"mode": "green"}}
    cluster = FakePreviewCluster(live={WEB: live_web("web:1"), CFG: cfg_live},
                                 owned=[WEB, CFG, OLD, CANARY])
    found, sources, clusters = run_preview([deployment("web:2"), CONFIG_MAP], cluster=cluster)

    [app] = found.apps
    assert found.state == "success" and not app.failed
    assert app.plan[0].startswith("rollout of Deployment shop/web in 2 step(s)")
    assert app.plan[1:] == ("1. setWeight 50", "2. pause {}")
    actions = {c.ref: c.action for c in app.changes}
    assert actions == {"ConfigMap shop/cfg": "change", "Deployment shop/web": "change",
                       "ConfigMap shop/old": "prune"}  # the running canary is not prune's
    [cfg] = [c for c in app.changes if c.ref == "ConfigMap shop/cfg"]
    assert [(f.path, f.before, f.after) for f in cfg.fields] == [("data.mode", "green", "blue")]
    # The head, checked out with the bot's credentials; every view is the ServiceAccount.
    assert sources.checked_out == [(HEAD, "https://x-access-token:secret@github.com/org/app.git")]
    assert clusters.views == [(None, "system:serviceaccount:shop:deployer")]
    assert {call[0] for call in cluster.calls} <= {"discovered", "get", "dry_run",
                                                   "prune_candidates"}


def test_the_policy_is_checked_before_anything_is_read_or_dry_run() -> None:
    cluster = FakePreviewCluster()
    elsewhere = {**CONFIG_MAP, "metadata": {"name": "x", "namespace": "kube-system"}}
    found, _, _ = run_preview([deployment("web:2"), elsewhere], cluster=cluster)
    [app] = found.apps
    assert found.state == "failure"
    assert app.policy == (("ConfigMap kube-system/x: namespace 'kube-system' is a system "
                           "namespace: no repository may deploy there"),)
    assert [call[0] for call in cluster.calls if call[0] != "discovered"] == []


def test_content_rules_of_server_and_repository_both_hold() -> None:
    unlabelled = {**CONFIG_MAP, "metadata": {"name": "cfg"}}
    found, _, _ = run_preview([deployment("web:latest"), unlabelled],
                              cluster=FakePreviewCluster(),
                              server_rules=ContentRules(forbid_image_tags=("latest",)))
    [app] = found.apps
    assert [(v.file, v.object, v.field, v.rule) for v in app.rules] == [
        ("deploy/web/cfg.yaml", "ConfigMap shop/cfg", "metadata.labels.team", "requireLabels"),
        ("deploy/web/web.yaml", "Deployment shop/web", "spec.template.spec.containers[0].image",
         "forbidImageTags"),
    ]
    assert app.rules_in_force == ("forbidImageTags: latest", "requireLabels: team")
    assert found.state == "failure"
    assert {c.action for c in app.changes} == {"create"}  # still validated and diffed


def test_refused_and_invalid_objects_fail_and_a_secrets_values_stay_hidden() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "labels":
                                                                  {"team": "a"}},
              "stringData": {"password": "pa55word"}}
    db = ObjectRef("v1", "Secret", "shop", "db")
    cluster = FakePreviewCluster(errors={db: 'Secret "db" is invalid: "pa55word" is too short'},
                                 refused={WEB})
    found, _, _ = run_preview([deployment("web:2"), secret], cluster=cluster)
    [app] = found.apps
    notes = {c.ref: (c.action, c.note) for c in app.changes}
    assert notes["Deployment shop/web"] == ("refused",
                                            "Deployment shop/web is owned by someone else")
    assert notes["Secret shop/db"] == ("invalid", 'Secret "db" is invalid: "***" is too short')
    assert found.state == "failure"


def test_a_fork_is_only_rendered_and_dry_run() -> None:
    cluster = FakePreviewCluster(live={WEB: live_web("web:1")}, owned=[OLD])
    found, _, clusters = run_preview([deployment("web:2")], cluster=cluster, fork=True)
    assert found.apps[0].count("change") == 1 and found.apps[0].count("prune") == 1
    assert {call[0] for call in cluster.calls} <= {"discovered", "get", "dry_run",
                                                   "prune_candidates"}
    assert not hasattr(cluster, "apply") and not hasattr(cluster, "delete")
    assert clusters.views == [(None, "system:serviceaccount:shop:deployer")]


def test_without_config_or_with_a_broken_one() -> None:
    found, _, _ = run_preview([], config=None, cluster=FakePreviewCluster())  # type: ignore[arg-type]
    assert found.no_config and found.state == "success"
    found, _, _ = run_preview([], config="apps: 3\n", cluster=FakePreviewCluster())
    assert "apps" in found.config_error and found.state == "failure"
    bad_path = CONFIG.replace("deploy/web", "deploy/nothing")
    found, _, _ = run_preview([], config=bad_path, cluster=FakePreviewCluster())
    assert found.apps[0].error_title == "Invalid manifests" and found.state == "failure"


# --------------------------------------------------------------------------- publish


def verified_event() -> Verified:
    verified = verify(event(), forge=forge_with(), tenants=FakeTenants({REPO_ID: TENANT}),
                      settings=SETTINGS)
    assert verified is not None
    return verified


def test_publish_sets_the_status_and_the_comment() -> None:

    report = FakeReport()
    found = Preview(HEAD, (AppPreview("web", policy=("x",)),))
    publish(verified_event(), found, forge=forge_with(), report=report)
    assert report.statuses == [(HEAD, "failure",
                                "the merge would fail: web: 1 policy violation(s)")]
    [(number, body)] = report.comments
    assert number == PR and body.startswith("<!-- coalmine:pr-preview -->")


def test_publish_leaves_the_comment_to_a_newer_push() -> None:

    report = FakeReport()
    publish(verified_event(), Preview(HEAD), forge=forge_with(pull(head_sha=OTHER)),
            report=report)
    assert [s[0] for s in report.statuses] == [HEAD]
    assert report.comments == []
