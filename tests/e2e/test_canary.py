"""Canary rollouts steered from the PR, judged by a real Prometheus, on GitHub and on GitLab."""

from __future__ import annotations

import pytest

from tests.e2e import world as w
from tests.harness.bot import REPO_ROOT
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

ANALYSIS_TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
    - name: track
  metrics:
    - name: success-rate
      interval: 1s
      count: 2
      successCondition: result[0] >= 0.95
      failureCondition: result[0] < 0.90
      provider:
        prometheus:
          query: >-
            sum(rate(http_requests_total{track="{{args.track}}",code!~"5.."}[30s]))
            / sum(rate(http_requests_total{track="{{args.track}}"}[30s]))
"""


def canary_config(steps: str) -> str:
    return f"""apps:
  - name: web
    path: deploy/web
    namespace: shop
    healthTimeoutSeconds: 20
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: 30
      steps:
{steps}"""


def analysis_steps(track: str) -> str:
    return f"""        - setWeight: 34
        - analysis:
            templates: [{{templateName: success-rate}}]
            args: [{{name: track, value: {track}}}]
        - setWeight: 67
        - pause: {{duration: 1}}
"""


MANUAL_STEPS = """        - setWeight: 50
        - pause: {}
"""


@pytest.fixture(params=["github", "gitlab"])
def world(request, prometheus) -> w.World:
    world = request.getfixturevalue(f"{request.param}_world")
    world.bot.env["PROMETHEUS_URL"] = prometheus.url
    return world


def traffic(prometheus, name: str, error_ratio: float) -> str:
    """A fresh exporter track with steady traffic, once Prometheus can compute its ratio."""
    track = prometheus.exporter.fresh_track(name)
    prometheus.exporter.set_traffic(track, requests_per_second=50, error_ratio=error_ratio)
    query = (f'sum(rate(http_requests_total{{track="{track}",code!~"5.."}}[30s])) / '
             f'sum(rate(http_requests_total{{track="{track}"}}[30s]))')
    prometheus.wait_for_value(query, lambda r: isinstance(r, list) and len(r) == 1, 60)
    return track


def first_deploy(world: w.World, steps: str) -> None:
    """Put the canary config and a stable v1 in place (a first deploy is a plain apply)."""
    w.set_up(world, {
        ".coalmine.yaml": canary_config(steps),
        "deploy/web/analysis.yaml": ANALYSIS_TEMPLATE,
    })


def test_good_release_is_promoted_and_canary_removed(world, fake_kube, prometheus):
    track = traffic(prometheus, "good", 0.0)
    first_deploy(world, analysis_steps(track))
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")

    # 34% of 3 replicas: one canary pod, two stable ones.
    wait_until(lambda: (w.replicas(fake_kube, "web"), w.replicas(fake_kube, "web-canary")) == (2, 1),
               30, 0.05)
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"

    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "success" and status["description"] == "promoted"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None
    assert w.image_of(fake_kube, "web") == "registry.example/web:2.0"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["replicas"] == 3
    body = w.wait_comment(world, number, "```mermaid")["body"]
    assert "success-rate" in body.replace("\\", "")
    posted = w.posted_states(world, sha)
    assert posted[0] == "pending" and posted[-1] == "success"


def test_bad_release_is_aborted_and_reverted(world, fake_kube, prometheus):
    track = traffic(prometheus, "bad", 0.5)
    first_deploy(world, analysis_steps(track))
    before = world.remote.head()
    number, sha = w.release(world, "registry.example/web:bad", "Web bad")

    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "failure", status
    assert "aborted" in status["description"]
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None
    stable = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")
    assert stable["spec"]["replicas"] == 3
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"

    branch = f"coalmine/revert-{sha[:7]}"
    wait_until(lambda: branch in world.remote.branches(), 60, 0.1)
    revert_tip = world.remote.head(branch)
    # The revert branch's tree equals the tree before the merge: exactly the inverse diff.
    assert world.remote.diff(before, revert_tip) == ""
    assert world.remote.diff(revert_tip, sha) == world.remote.diff(before, sha)
    pr = wait_until(lambda: _revert_pr(world, branch), 60, 0.1)
    assert pr["title"] == 'Revert "Web bad"'
    body = w.wait_comment(world, number, "Revert PR opened")["body"]
    assert "success-rate" in body.replace("\\", "")


def _revert_pr(world: w.World, branch: str) -> dict | None:
    """The revert PR from `branch` once it carries its label (GitHub adds labels separately)."""
    if world.github:
        found = [p for p in world.github.pulls(w.REPO) if p["head"]["ref"] == branch
                 and "coalmine-revert" in world.github.issue_labels(w.REPO, p["number"])]
    else:
        found = [mr for mr in world.gitlab.merge_requests(w.REPO)
                 if mr["source_branch"] == branch and "coalmine-revert" in mr["labels"]]
    return found[0] if found else None


def test_promote_through_manual_pause(world, fake_kube):
    first_deploy(world, MANUAL_STEPS)
    number, sha = w.release(world, "registry.example/web:3.0", "Web 3.0")
    # GitLab keeps a running status's first description, so the comment tells the progress.
    w.wait_comment(world, number, "**Paused**")
    w.allow(world, "alice", "write")
    w.command(world, number, "/promote", "alice")
    status = w.final_status(world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert w.image_of(fake_kube, "web") == "registry.example/web:3.0"
    body = w.wait_comment(world, number, "alice")["body"]
    assert "promote" in body.lower()


def test_abort_command_restores_stable(world, fake_kube):
    first_deploy(world, MANUAL_STEPS)
    number, sha = w.release(world, "registry.example/web:4.0", "Web 4.0")
    wait_until(lambda: fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary"),
               30, 0.05)
    w.allow(world, "alice", "write")
    w.command(world, number, "/abort", "alice")
    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "failure" and "alice" in status["description"]
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"

    # /retry starts the aborted revision again from its first step.
    w.command(world, number, "/retry", "alice")
    wait_until(lambda: w.image_of(fake_kube, "web-canary") == "registry.example/web:4.0", 30, 0.05)
    w.wait_comment(world, number, "back to step 1")


def test_denied_command_changes_nothing(world, fake_kube):
    first_deploy(world, MANUAL_STEPS)
    number, sha = w.release(world, "registry.example/web:5.0", "Web 5.0")
    # GitLab keeps a running status's first description, so the comment tells the progress.
    w.wait_comment(world, number, "**Paused**")
    w.allow(world, "mallory", "read")
    w.command(world, number, "/promote", "mallory")
    wait_until(lambda: any("not run" in c["body"] for c in w.comments(world, number)), 30, 0.1)
    assert w.latest_statuses(world, sha)["coalmine/web"]["state"] == "pending"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is not None


def test_worker_killed_mid_rollout_finishes_after_restart(world, fake_kube, prometheus):
    track = traffic(prometheus, "kill", 0.0)
    first_deploy(world, analysis_steps(track))
    _number, sha = w.release(world, "registry.example/web:6.0", "Web 6.0")
    wait_until(lambda: fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary"),
               30, 0.05)
    for proc in list(world.bot.workers):
        world.bot.kill_worker(proc)
    world.bot.start_worker()
    status = w.final_status(world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None


def test_second_merge_supersedes_the_first(world, fake_kube):
    first_deploy(world, MANUAL_STEPS)
    number1, sha1 = w.release(world, "registry.example/web:7.0", "Web 7.0")
    # GitLab keeps a running status's first description, so the comment tells the progress.
    w.wait_comment(world, number1, "**Paused**")
    number2, _sha2 = w.release(world, "registry.example/web:7.1", "Web 7.1")
    old = w.final_status(world, sha1, timeout=90)
    assert old["state"] in ("failure", "error") and f"#{number2}" in old["description"]
    w.wait_comment(world, number1, "uperseded")
    wait_until(lambda: w.image_of(fake_kube, "web-canary") == "registry.example/web:7.1", 30, 0.05)
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"


ARGO_DOC_EXAMPLE = (REPO_ROOT / "tests/unit/data/argo/canary-basic-rollout.yaml").read_text()


def test_argo_rollout_from_the_docs_runs_unchanged(github_world, fake_kube):
    """The basic canary example of the Argo Rollouts docs, as is, steered with /promote --full."""
    world = github_world
    world.bot.start_worker()
    _, sha, _ = w.merge(world, {
        ".coalmine.yaml": "apps:\n  - name: shop\n    path: deploy/shop\n    namespace: shop\n",
        "deploy/shop/rollout.yaml": ARGO_DOC_EXAMPLE,
        "deploy/shop/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    }, "Adopt the Argo Rollout")
    status = w.final_status(world, sha, "coalmine/shop", timeout=90)
    assert status["state"] == "success", status
    assert fake_kube.get_object("argoproj.io/v1alpha1", "Rollout", "shop", "example-rollout") \
        is None  # read, never applied
    assert w.replicas(fake_kube, "example-rollout") == 10

    number, sha = w.merge(world, {"deploy/shop/rollout.yaml": ARGO_DOC_EXAMPLE.replace(
        "nginx:1.15.4", "nginx:1.16.1")}, "nginx 1.16.1")[:2]
    # setWeight 10 of 10 replicas: one canary pod, nine stable; then the 1h pause.
    wait_until(lambda: (w.replicas(fake_kube, "example-rollout"),
                        w.replicas(fake_kube, "example-rollout-canary")) == (9, 1), 30, 0.05)
    w.wait_comment(world, number, "**Paused**")
    w.allow(world, "alice", "write")
    w.command(world, number, "/promote nope", "alice")
    wait_until(lambda: any("valid apps" in c["body"] for c in w.comments(world, number)), 30, 0.1)
    w.command(world, number, "/promote --full", "alice")
    assert w.final_status(world, sha, "coalmine/shop", timeout=90)["description"] == "promoted"
    obj = fake_kube.get_object("apps/v1", "Deployment", "shop", "example-rollout")
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.16.1"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "example-rollout-canary") is None
    (full,) = [c for c in w.comments(world, number) if c["body"] == "/promote --full"]
    assert world.github.reactions(w.REPO, full["id"]), "accepted command not acknowledged"


def test_redis_restart_mid_rollout_loses_nothing(github_world, fake_kube, redis_server):
    """Redis restarts (with its append-only file) during a timed pause; the rollout finishes."""
    world = github_world
    first_deploy(world, "        - setWeight: 50\n        - pause: {duration: 4}\n")
    number, sha = w.release(world, "registry.example/web:8.0", "Web 8.0")
    w.wait_comment(world, number, "**Paused**")
    redis_server.restart()
    status = w.final_status(world, sha, timeout=90)
    assert status["description"] == "promoted"
    assert w.image_of(fake_kube, "web") == "registry.example/web:8.0"
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None


def test_unrelated_merge_leaves_a_running_canary_alone(github_world, fake_kube):
    """A later merge that doesn't touch the workload neither restarts nor steals the rollout."""
    world = github_world
    first_deploy(world, MANUAL_STEPS)
    number, sha = w.release(world, "registry.example/web:9.0", "Web 9.0")
    w.wait_comment(world, number, "**Paused**")
    other_number, other_sha, _ = w.merge(world, {"deploy/web/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  m: other\n")},
        "Only a ConfigMap")
    wait_until(lambda: fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
               ["data"] == {"m": "other"}, 30, 0.05)
    assert w.latest_statuses(world, sha)["coalmine/web"]["state"] == "pending"
    other = w.final_status(world, other_sha, timeout=90)
    assert other["state"] == "success" and f"#{number}" in other["description"]
    w.allow(world, "alice", "write")
    w.command(world, number, "/promote", "alice")
    assert w.final_status(world, sha, timeout=90)["description"] == "promoted"
    assert w.image_of(fake_kube, "web") == "registry.example/web:9.0"
    assert w.comments(world, other_number)
