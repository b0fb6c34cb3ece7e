"""Check runs with buttons, end to end (issue 12, item 7): Coalmine as a GitHub App shows each
app's rollout as a check run on the merge commit, a click on Promote promotes as the comment
command does, forged or unpermitted clicks change nothing, and a token set-up writes none."""

from __future__ import annotations

import pytest

from bot.rollout.store import RolloutStore, rollout_key
from tests.e2e import world as w
from tests.harness import payloads
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

MANUAL_STEPS = "        - setWeight: 50\n        - pause: {}\n"
CANARY_CONFIG = f"""apps:
  - name: web
    path: deploy/web
    namespace: shop
    healthTimeoutSeconds: 20
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: 30
      steps:
{MANUAL_STEPS}"""


def own_run(world: w.World, sha: str) -> dict | None:
    runs = [r for r in world.github.check_runs(w.REPO, sha)
            if r["name"] == "coalmine/web" and r["app"]["id"] == w.GH_APP_ID]
    assert len(runs) <= 1, runs  # created once, then updated
    return runs[0] if runs else None


def paused_release(world: w.World) -> tuple[int, str, dict]:
    """Set up the canary, merge a new image; returns (PR, sha, the check run with buttons)."""
    w.set_up(world, {".coalmine.yaml": CANARY_CONFIG})
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")

    def with_buttons():
        run = own_run(world, sha)
        return run if run and len(run["actions"]) == 3 else None

    try:
        run = wait_until(with_buttons, 90, 0.1)
    except TimeoutError:
        raise AssertionError(f"no check run with buttons on {sha[:7]}: "
                             f"{world.github.check_runs(w.REPO, sha)}\n"
                             + world.bot.worker_log()[-4000:]) from None
    return number, sha, run


def click(world: w.World, run_id: int, identifier: str, login: str, sha: str,
          delivery: str, full_name: str = w.REPO) -> None:
    payload = payloads.github_check_run_action(
        run_id, identifier, full_name=full_name, clone_url=world.clone_url(), login=login,
        head_sha=sha, installation_id=w.GH_INSTALLATION)
    resp = world.bot.github(payload, event="check_run", delivery=delivery)
    assert resp.status_code == 202, resp.get_json()


def test_a_click_on_promote_promotes_and_the_run_completes_without_buttons(github_app_world):
    world = github_app_world
    number, sha, run = paused_release(world)
    assert run["status"] == "in_progress" and run["head_sha"] == sha
    assert [a["label"] for a in run["actions"]] == ["Promote", "Promote fully", "Abort"]
    assert "50%" in run["output"]["summary"]  # the rollout's steps and weights
    assert w.latest_statuses(world, sha)["coalmine/web"]["state"] == "pending"  # statuses stay

    w.allow(world, "alice", "write")
    click(world, run["id"], "promote", "alice", sha, "click-1")
    status = w.final_status(world, sha, timeout=90)
    assert (status["state"], status["description"]) == ("success", "promoted")
    body = w.wait_comment(world, number, "alice")["body"]  # history names who promoted
    assert "promoted" in body

    def completed():
        found = own_run(world, sha)
        return found if found and found["status"] == "completed" else None

    done = wait_until(completed, 60, 0.1)
    assert (done["conclusion"], done["actions"]) == ("success", [])
    assert "alice" in done["output"]["summary"]


def test_unpermitted_and_forged_clicks_change_nothing(github_app_world, fake_kube):
    world = github_app_world
    gh = world.github
    number, sha, run = paused_release(world)
    w.allow(world, "rita", "read")
    w.allow(world, "alice", "write")

    click(world, run["id"], "abort", "rita", sha, "click-read-only")
    denial = "@rita commands need write permission on this repository (you have read)"
    wait_until(lambda: any(denial in c["body"] for c in w.comments(world, number)), 60, 0.1)

    # A run of another repository, named by id in a payload about this one.
    gh.add_repo("acme/other")
    elsewhere = gh.add_check_run("acme/other", sha, "coalmine/web", status="in_progress")
    click(world, elsewhere, "promote", "alice", sha, "forged-repo")
    # Another App's run on the very commit, under Coalmine's name.
    impostor = gh.add_check_run(w.REPO, sha, "coalmine/web", status="in_progress", app="evil")
    click(world, impostor, "promote-full", "alice", sha, "forged-app")
    # Coalmine's own run, with a button Coalmine never offered.
    click(world, run["id"], "retry", "alice", sha, "forged-identifier")
    for delivery in ("forged-repo", "forged-app", "forged-identifier"):
        w.wait_log(world, f"(delivery {delivery})")

    record = RolloutStore(world.bot.redis).load(rollout_key("github", w.REPO, "web"))
    assert record is not None and record.state.phase == "Paused" and record.state.weight == 50
    assert [h.kind for h in record.state.history if h.actor] == []  # nobody steered it
    assert w.image_of(fake_kube, "web-canary") == "registry.example/web:2.0"
    assert w.latest_statuses(world, sha)["coalmine/web"]["state"] == "pending"
    ours = next(r for r in gh.check_runs(w.REPO, sha) if r["id"] == run["id"])
    assert ours["status"] == "in_progress" and len(ours["actions"]) == 3


def test_a_token_set_up_writes_no_check_runs_and_refuses_clicks(github_world):
    world = github_world
    w.set_up(world, {".coalmine.yaml": CANARY_CONFIG})
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")
    w.wait_comment(world, number, "50%")  # the rollout runs and is paused, reported
    assert world.github.check_runs(w.REPO, sha) == []

    payload = payloads.github_check_run_action(123, "promote", clone_url=world.clone_url(),
                                               head_sha=sha)
    resp = world.bot.github(payload, event="check_run", delivery="token-mode-click")
    assert resp.status_code == 200 and "GitHub App" in resp.get_json()["reason"]
