"""The trust boundary end to end: only what the forge confirms is merged deploys, in order.

Each test reproduces one finding of the trust-boundary review against the real Flask edge, real
RQ workers, git over HTTP and the forge and Kubernetes fakes.
"""

from __future__ import annotations

import dataclasses

import pytest

from bot.forge.base import RepoRef
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from handlers import merged, rollout
from tests.e2e import world as w
from tests.e2e.world import final_status
from tests.harness import payloads
from tests.harness.gitrepos import Symlink, checkout_state, make_checkout
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    return request.getfixturevalue(f"{request.param}_world")


def config_map(mode: str) -> dict[str, str]:
    return {"deploy/web/config.yaml": (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: {mode}\n")}


def mode(fake_kube) -> str | None:
    found = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
    return found["data"]["mode"] if found else None


def send_merge(world: w.World, number: int, sha: str, head: str, delivery: str) -> object:
    """A correctly signed "merged" webhook whose content the sender chose."""
    if world.forge == "github":
        payload = payloads.github_pr_merged(full_name=w.REPO, clone_url=world.clone_url(),
                                            number=number, merge_sha=sha, head=head)
        return world.bot.github(payload, delivery=delivery)
    payload = payloads.gitlab_mr_merged(path=w.REPO, clone_url=world.clone_url(),
                                        project_id=world.project_id, iid=number, merge_sha=sha,
                                        source=head)
    return world.bot.gitlab(payload, key=delivery)


def test_a_forged_merge_of_an_unreviewed_branch_deploys_nothing(world, fake_kube):
    world.bot.start_worker()
    _, first, _ = w.merge(world, config_map("reviewed"), "Reviewed change")
    assert final_status(world, first)["state"] == "success"
    # Someone holding the (shared) webhook secret signs a "merged" event naming an open PR and
    # the tip of a branch nobody reviewed.
    unreviewed = world.remote.commit(config_map("evil"), "Unreviewed", branch="evil")
    if world.github:
        number = world.github.add_pull(w.REPO, head="evil", title="Not merged", state="open")
    else:
        number = world.gitlab.add_merge_request(w.REPO, source_branch="evil", title="Not merged",
                                                state="opened")
    resp = send_merge(world, number, unreviewed, "evil", "forged-1")
    assert resp.status_code == 202
    w.wait_log(world, "delivery forged-1")
    assert "refused" in world.bot.worker_log()
    assert mode(fake_kube) == "reviewed"
    assert w.latest_statuses(world, unreviewed) == {}


def test_a_merged_pr_cannot_be_paired_with_another_commit(world, fake_kube):
    world.bot.start_worker()
    number, sha, _ = w.merge(world, config_map("reviewed"), "Reviewed change")
    assert final_status(world, sha)["state"] == "success"
    unreviewed = world.remote.commit(config_map("evil"), "Unreviewed", branch="evil")
    resp = send_merge(world, number, unreviewed, f"pr-{number}", "forged-2")
    assert resp.status_code == 202
    w.wait_log(world, "delivery forged-2")
    assert mode(fake_kube) == "reviewed"
    assert w.latest_statuses(world, unreviewed) == {}


def test_a_replayed_older_merge_never_moves_the_cluster_back(world, fake_kube):
    world.bot.start_worker()
    old_number, old, _ = w.merge(world, config_map("old"), "Old")
    assert final_status(world, old)["state"] == "success"
    _, new, _ = w.merge(world, config_map("new"), "New")
    assert final_status(world, new)["state"] == "success"
    statuses_before = len(w.posted_states(world, old))
    # A captured delivery sent again under a fresh delivery id (not covered by the signature).
    resp = w.redeliver(world, old_number, old, new_id=True)
    assert resp.status_code == 202

    def superseded():
        status = w.latest_statuses(world, old).get("coalmine/web")
        return status if status and "superseded" in status["description"] else None

    wait_until(superseded, 60, 0.1)
    assert new[:7] in w.latest_statuses(world, old)["coalmine/web"]["description"]
    assert len(w.posted_states(world, old)) > statuses_before
    assert mode(fake_kube) == "new"
    labels = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")["metadata"]["labels"]
    assert labels["coalmine.dev/revision"] == new


def test_racing_workers_and_redeliveries_end_on_the_newest_commit(world, fake_kube):
    world.bot.start_worker()
    world.bot.start_worker()
    first_number, first, _ = w.merge(world, config_map("first"), "First")
    _, second, _ = w.merge(world, config_map("second"), "Second")
    w.redeliver(world, first_number, first, new_id=True)
    assert final_status(world, second)["state"] == "success"
    final_status(world, first)
    # Whatever order the workers took them in, the branch's newest commit is what runs.
    wait_until(lambda: not world.bot.redis.llen("rq:queue:coalmine"), 60, 0.1)
    assert mode(fake_kube) == "second"


def test_a_lease_rerun_of_an_old_merge_is_skipped(world, fake_kube):
    """A job lease re-runs a merge whose worker died; by then a newer merge has deployed."""
    world.bot.start_worker()
    old_number, old, _ = w.merge(world, config_map("old"), "Old")
    assert final_status(world, old)["state"] == "success"
    _, new, _ = w.merge(world, config_map("new"), "New")
    assert final_status(world, new)["state"] == "success"
    repo = RepoRef(world.forge, w.REPO, world.clone_url(),  # type: ignore[arg-type]
                   project_id=world.project_id or None)
    event = payloads_event(world, repo, old_number, old)
    world.bot.services.queue.enqueue(merged.run, event)
    wait_until(lambda: "superseded" in w.latest_statuses(world, old)["coalmine/web"]
               ["description"], 60, 0.1)
    assert mode(fake_kube) == "new"


def test_a_commit_that_failed_to_deploy_is_tried_again_when_redelivered(world, fake_kube):
    """Skipping is for commits that deployed: a failed attempt may be delivered again."""
    world.bot.start_worker()
    fake_kube.fail_next(1, status=403, method="PATCH", path_contains="configmaps/web-config")
    number, sha, _ = w.merge(world, config_map("retried"), "Retried")
    assert final_status(world, sha)["state"] == "failure"
    assert mode(fake_kube) is None
    resp = w.redeliver(world, number, sha, new_id=True)
    assert resp.status_code == 202
    wait_until(lambda: mode(fake_kube) == "retried", 60, 0.1)
    assert final_status(world, sha)["state"] == "success"


def payloads_event(world: w.World, repo: RepoRef, number: int, sha: str):
    from bot.events import MergedPullRequest

    return MergedPullRequest(repo=repo, number=number, title="Old", url="", merge_sha=sha,
                             base_branch="main", head_branch=f"pr-{number}", author="alice",
                             merged_by="alice", delivery="lease-rerun")


def test_an_unlisted_repository_is_ignored_at_the_edge(world, fake_kube):
    world.bot.start_worker()
    if world.forge == "github":
        payload = payloads.github_pr_merged(full_name="evil/gitops", clone_url=world.clone_url(),
                                            number=1, merge_sha=world.remote.head())
        resp = world.bot.github(payload)
    else:
        payload = payloads.gitlab_mr_merged(path="evil/gitops", clone_url=world.clone_url(),
                                            project_id=999, iid=1, merge_sha=world.remote.head())
        resp = world.bot.gitlab(payload)
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "ignored"
    assert "not served" in resp.get_json()["reason"]
    assert world.bot.redis.llen("rq:queue:coalmine") == 0


def test_a_symlinked_repo_config_is_refused(world, fake_kube):
    world.bot.start_worker()
    number, sha, _ = w.merge(world, {".coalmine.yaml": Symlink("/etc/hostname")},
                             "Point the config elsewhere")
    status = final_status(world, sha, "coalmine/config")
    assert status["state"] == "failure" and "symbolic link" in status["description"]
    body = w.wait_comment(world, number, "symbolic link")["body"]
    assert "/etc/hostname" not in body


def test_a_command_never_acts_on_the_rollout_of_another_pr(github_world, fake_kube):
    """Under the lock, the rollout found for PR 1 now belongs to PR 2: /promote changes nothing."""
    world = github_world
    key = rollout_key("github", w.REPO, "web")
    strategy = m.CanaryStrategy(workload=m.WorkloadRef("Deployment", "web"),
                                steps=(m.PauseStep(None),))
    state = dataclasses.replace(
        m.new_state(app="web", revision="b" * 40, stable_revision="a" * 40, pr=2,
                    strategy=strategy), phase="Paused")
    repo = RepoRef("github", w.REPO, world.clone_url(), repo_id=1)
    context = RolloutContext(repo=repo, number=2, app="web", namespace="shop", deployment={},
                             stable={}, replicas=1, template_hash="h")
    RolloutStore(world.bot.redis).save(key, RolloutRecord(state, context), None)
    world.github.add_pull(w.REPO, head="one", title="One")
    world.github.add_pull(w.REPO, head="two", title="Two")
    assert rollout.dispatch(key, m.Promote("alice"), pr=1) is None
    after = RolloutStore(world.bot.redis).load(key)
    assert after is not None and after.state == state
    replies = [c["body"] for c in world.github.comments(w.REPO, 1)]
    assert any("now belongs to #2" in body for body in replies), replies


DEPLOYER = "system:serviceaccount:shop:deployer"
IMPERSONATED_CONFIG = """repos:
  acme/gitops:
    namespaces: [shop]
    clusterScopedKinds: []
    serviceAccount: shop/deployer
"""


def serve_with_service_account(world: w.World, tmp_path) -> None:
    """Workers started after this deploy the world's repository as shop/deployer."""
    config = tmp_path / "server.yaml"
    config.write_text(IMPERSONATED_CONFIG)
    world.bot.env.update({"COALMINE_CONFIG": str(config), "COALMINE_REPOS": ""})


def test_every_write_of_a_repository_with_a_service_account_is_made_as_it(
        github_world, fake_kube, tmp_path):
    world = github_world
    serve_with_service_account(world, tmp_path)
    fake_kube.restrict(DEPLOYER, {"shop"}, cluster_scoped=True)
    world.bot.start_worker()
    _, sha, _ = w.merge(world, config_map("as-deployer"), "As the deployer")
    assert final_status(world, sha)["state"] == "success"
    assert mode(fake_kube) == "as-deployer"
    assert fake_kube.writes and all(write.user == DEPLOYER for write in fake_kube.writes)


def test_the_clusters_rbac_stops_what_the_service_account_may_not_do(
        github_world, fake_kube, tmp_path):
    """The second wall: the ServiceAccount may not create Namespaces, so nothing is applied."""
    world = github_world
    serve_with_service_account(world, tmp_path)
    fake_kube.restrict(DEPLOYER, {"shop"}, cluster_scoped=False)
    world.bot.start_worker()
    number, sha, _ = w.merge(world, config_map("denied"), "Denied by RBAC")
    status = final_status(world, sha)
    assert status["state"] == "failure"
    assert "forbidden" in w.wait_comment(world, number, "Apply failed")["body"].lower()
    assert mode(fake_kube) is None
    assert fake_kube.writes_by(None) == []


def test_a_worker_with_a_relative_data_dir_inside_a_checkout_leaves_it_alone(
        github_world, fake_kube, tmp_path):
    """The quick start's `COALMINE_DATA_DIR=var`, started from inside a git checkout."""
    world = github_world
    checkout = make_checkout(tmp_path / "operator-checkout")
    before = checkout_state(checkout)
    world.bot.env["COALMINE_DATA_DIR"] = "var"
    world.bot.start_worker(cwd=checkout)
    _, sha, _ = w.merge(world, config_map("relative"), "Relative data dir")
    assert final_status(world, sha)["state"] == "success"
    assert mode(fake_kube) == "relative"
    assert checkout_state(checkout) == before
    assert any((checkout / "var").iterdir())
