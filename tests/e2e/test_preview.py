"""PR previews and content rules end to end, on GitHub and on GitLab.

A PR is opened (or pushed to) in the served repository, the forge's webhook reaches the bot, a
real worker renders the head, checks the policy and the content rules, dry-runs every object
against the fake cluster and diffs it, and reports `coalmine/preview` and one preview comment.
The cluster must be left exactly as it was: every write the preview makes is a dry run.
"""

from __future__ import annotations

import pytest

from tests.e2e import world as w
from tests.harness import payloads
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

PREVIEW = "coalmine/preview"
PREVIEW_MARKER = "<!-- coalmine:pr-preview -->"
OLD_PASSWORD, NEW_PASSWORD = "hunter2-old-value", "hunter2-new-value"

CONFIG = """apps:
  - name: web
    path: deploy/web
    namespace: shop
    prune: true
    healthTimeoutSeconds: 20
    canary:
      workload: Deployment/web
      steps:
        - setWeight: 50
        - pause: {duration: 30s}
        - analysis:
            templates: [{templateName: success-rate}]
"""

ANALYSIS = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  metrics:
    - name: success-rate
      successCondition: result[0] >= 0.95
      provider:
        prometheus:
          address: http://prometheus.invalid:9090
          query: vector(1)
"""


def secret(password: str) -> str:
    return f"""apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: {password}
  user: web
"""


SET_UP = {".coalmine.yaml": CONFIG, "deploy/web/analysis.yaml": ANALYSIS,
          "deploy/web/secret.yaml": secret(OLD_PASSWORD)}


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    return request.getfixturevalue(f"{request.param}_world")


def deliver(world: w.World, number: int, sha: str, branch: str, action: str,
            head_sha: str | None = None) -> None:
    """The forge's webhook for an open PR; `head_sha` lets a payload lie about its head."""
    claimed = head_sha or sha
    if world.github:
        payload = payloads.github_pr_updated(action=action, head_sha=claimed, number=number,
                                             clone_url=world.clone_url(), head=branch)
        resp = world.bot.github(payload)
    else:
        gitlab_action = {"opened": "open", "synchronize": "update"}[action]
        payload = payloads.gitlab_mr_updated(
            action=gitlab_action, head_sha=claimed, iid=number, clone_url=world.clone_url(),
            project_id=world.project_id, source=branch,
            oldrev="0" * 40 if gitlab_action == "update" else None)
        resp = world.bot.gitlab(payload)
    assert resp.status_code == 202, resp.get_json()


def open_pr(world: w.World, files: dict[str, str | None], title: str,
            branch: str = "change") -> tuple[int, str]:
    """Push `branch` with `files`, open its PR/MR into main and send the webhook."""
    sha = world.remote.commit(files, title, branch=branch)
    if world.github:
        number = world.github.add_pull(w.REPO, head=branch, title=title, head_sha=sha)
    else:
        number = world.gitlab.add_merge_request(w.REPO, source_branch=branch, title=title,
                                                head_sha=sha)
    deliver(world, number, sha, branch, "opened")
    return number, sha


def push(world: w.World, number: int, files: dict[str, str | None], title: str,
         branch: str = "change") -> str:
    sha = world.remote.commit(files, title, branch=branch)
    if world.github:
        world.github.set_head_sha(w.REPO, number, sha)
    else:
        world.gitlab.set_head_sha(w.REPO, number, sha)
    deliver(world, number, sha, branch, "synchronize")
    return sha


def preview_comments(world: w.World, number: int) -> list[dict]:
    return [c for c in w.comments(world, number) if PREVIEW_MARKER in c["body"]]


def wait_preview(world: w.World, number: int, sha: str) -> str:
    """The PR's preview comment once it shows `sha`; its body."""
    def found():
        ours = preview_comments(world, number)
        return ours[0]["body"] if ours and sha[:7] in ours[0]["body"] else None

    try:
        return wait_until(found, 60, 0.1).replace("\\", "")
    except TimeoutError:
        raise AssertionError(f"no preview of {sha[:7]} on #{number}: "
                             f"{[c['body'] for c in w.comments(world, number)]}\nworker log:\n"
                             + world.bot.worker_log()[-5000:]) from None


def real_writes(fake_kube) -> list:
    return [write for write in fake_kube.writes if not write.dry_run]


def test_preview_shows_the_rollout_plan_field_diff_prune_and_secret_keys(world, fake_kube):
    w.set_up(world, SET_UP)
    writes_before = len(real_writes(fake_kube))
    number, sha = open_pr(world, {
        "deploy/web/deployment.yaml": w.deployment("web", "registry.example/web:2.0"),
        "deploy/web/config.yaml": None,  # web-config leaves Git: prune would delete it
        "deploy/web/secret.yaml": secret(NEW_PASSWORD),
    }, "Web 2.0")

    status = w.final_status(world, sha, PREVIEW)
    assert status["state"] == "success", status
    body = wait_preview(world, number, sha)
    assert "rollout of Deployment shop/web in 3 step(s)" in body
    assert "setWeight 50" in body and "pause 30s" in body and "analysis success-rate" in body
    assert '- spec.template.spec.containers[name=web].image: "registry.example/web:1.0"' in body
    assert '+ spec.template.spec.containers[name=web].image: "registry.example/web:2.0"' in body
    assert "would be pruned `ConfigMap shop/web-config`" in body
    assert "! data.password: changed (Secret value hidden)" in body
    assert "data.user" not in body  # unchanged keys are not listed
    for leaked in (OLD_PASSWORD, NEW_PASSWORD):
        assert leaked not in body and leaked not in world.bot.worker_log()

    # Nothing was applied, scaled or deleted: every write of the preview was a dry run.
    assert real_writes(fake_kube)[writes_before:] == []
    assert any(write.dry_run for write in fake_kube.writes)
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "web-config") is not None
    assert w.latest_statuses(world, sha).keys() == {PREVIEW}  # no deploy status on the head


def test_policy_content_rule_and_schema_violations_fail_the_preview(world, fake_kube):
    w.set_up(world, SET_UP)
    config = CONFIG.replace("apps:\n", "rules:\n  forbidImageTags: [latest]\napps:\n") + """
  - name: ops
    path: deploy/ops
    namespace: shop
"""
    typo = w.deployment("web", "registry.example/web").replace("  replicas: 3", "  replica: 3")
    number, sha = open_pr(world, {
        ".coalmine.yaml": config,
        "deploy/web/deployment.yaml": typo,
        "deploy/ops/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ops\n"
                              "  namespace: kube-system\ndata: {a: b}\n",
    }, "Untagged image, a typo and a system namespace")

    status = w.final_status(world, sha, PREVIEW)
    assert status["state"] == "failure", status
    assert "content rule" in status["description"] and "policy" in status["description"]
    body = wait_preview(world, number, sha)
    assert "The merge would fail" in body
    assert "forbidImageTags" in body and "spec.template.spec.containers[0].image" in body
    assert "deploy/web/deployment.yaml" in body and "Deployment shop/web" in body
    assert 'unknown field "spec.replica"' in body
    assert "Refused by the repository's policy" in body and "kube-system" in body
    assert fake_kube.get_object("v1", "ConfigMap", "kube-system", "ops") is None
    assert not [wr for wr in fake_kube.writes if wr.namespace == "kube-system"]


def test_preview_comment_is_edited_in_place_on_a_new_push(world, fake_kube):
    w.set_up(world, SET_UP)
    number, first = open_pr(world, {
        "deploy/web/deployment.yaml": w.deployment("web", "registry.example/web:2.0")}, "v2")
    wait_preview(world, number, first)
    comment_id = preview_comments(world, number)[0]["id"]

    second = push(world, number, {
        "deploy/web/deployment.yaml": w.deployment("web", "registry.example/web:3.0")}, "v3")
    body = wait_preview(world, number, second)
    assert '"registry.example/web:3.0"' in body and '"registry.example/web:2.0"' not in body
    ours = preview_comments(world, number)
    assert [c["id"] for c in ours] == [comment_id]
    assert w.final_status(world, second, PREVIEW)["state"] == "success"
    assert w.final_status(world, first, PREVIEW)["state"] == "success"


def test_a_payload_lying_about_the_head_is_not_previewed(world, fake_kube):
    w.set_up(world, SET_UP)
    sha = world.remote.commit({"deploy/web/deployment.yaml":
                               w.deployment("web", "registry.example/web:2.0")}, "v2",
                              branch="real")
    if world.github:
        number = world.github.add_pull(w.REPO, head="real", title="v2", head_sha=sha)
    else:
        number = world.gitlab.add_merge_request(w.REPO, source_branch="real", title="v2",
                                                head_sha=sha)
    forged = world.remote.commit({"deploy/web/deployment.yaml":
                                  w.deployment("web", "registry.example/web:evil")}, "evil",
                                 branch="not-the-pr")
    deliver(world, number, sha, "real", "opened", head_sha=forged)
    w.wait_log(world, "preview of acme/gitops #")
    assert "not " + forged[:12] in world.bot.worker_log()
    assert w.all_statuses(world, forged) == [] and preview_comments(world, number) == []


def test_a_content_rule_blocks_the_apply_on_merge(world, fake_kube):
    w.set_up(world, {".coalmine.yaml": w.PLAIN_CONFIG})
    config = "rules:\n  requireResourceLimits: true\n" + w.PLAIN_CONFIG
    _, sha, resp = w.merge(world, {
        ".coalmine.yaml": config,
        "deploy/web/deployment.yaml": w.deployment("web", "registry.example/web:2.0"),
    }, "v2 without limits")
    assert resp.status_code == 202
    status = w.final_status(world, sha)
    assert status["state"] == "failure", status
    assert "content rules" in status["description"]
    assert "requireResourceLimits" in status["description"]
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
