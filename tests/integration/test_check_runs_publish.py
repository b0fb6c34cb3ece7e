"""Publishing each app's check run from the stored sections (bot.report.check_runs.publish) with
real Redis and the GitHub adapter against the fake: created once, then updated, nothing sent when
nothing changed, the click target recorded, a forge failure left for the outbox to retry."""

from __future__ import annotations

import pytest

from bot.forge.base import ForgeError, RepoRef
from bot.forge.github import GitHubForge
from bot.forge.retry import RetryPolicy
from bot.report import check_runs, comment
from bot.rollout.engine import advance, status
from bot.rollout.model import (
    CanaryStrategy,
    PauseStep,
    Promote,
    SetWeightStep,
    Start,
    WorkloadHealth,
    WorkloadRef,
    new_state,
)
from tests.harness.fixtures_forges import GITHUB_REPO
from tests.harness.github import APP_PERMISSIONS

APP_ID, PR = 4242, 3
SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
REPO = RepoRef("github", GITHUB_REPO, "https://github.example/acme/shop.git", installation_id=77,
               repo_id=501)
PUBLIC = "https://coalmine.test"


@pytest.fixture
def app_forge(fake_github, github_app_key, forge_sleeps) -> GitHubForge:
    private, public = github_app_key
    fake_github.add_app(APP_ID, public, slug="coalmine")
    fake_github.add_installation(77, APP_ID, [GITHUB_REPO])
    return GitHubForge(api_url=fake_github.api_url, app_id=APP_ID, private_key=private,
                       retry=RetryPolicy(sleep=forge_sleeps))


def rollout_section(finished: bool = False) -> dict:
    state = new_state(app="web", revision=SHA, stable_revision="0f0f0f0", pr=PR,
                      strategy=CanaryStrategy(workload=WorkloadRef("Deployment", "web"),
                                              steps=(SetWeightStep(20), PauseStep(None))))
    state, _ = advance(state, Start(), 1000.0)
    state, _ = advance(state, WorkloadHealth(ok=True, weight=state.weight), 1005.0)
    if finished:
        state, _ = advance(state, Promote("alice"), 1010.0)
        state, _ = advance(state, WorkloadHealth(ok=True, weight=state.weight), 1011.0)
    posted = status(state)
    return {"app": "web", "sha": SHA, "state": posted[0], "summary": posted[1],
            "rollout": state.to_dict(), "revert": None, "traffic": []}


def writes(fake_github) -> int:
    return len(fake_github.calls_to("POST", r".*/check-runs$")) + \
        len(fake_github.calls_to("PATCH", r".*/check-runs/\d+$"))


def test_a_run_is_created_once_updated_to_its_end_and_its_target_recorded(
        redis_client, app_forge, fake_github):
    comment.save_section(redis_client, REPO, PR, "web", rollout_section())
    comment.save_section(redis_client, REPO, PR, "(repository)",
                         {"app": "(repository)", "sha": SHA, "state": "success"})
    check_runs.publish(redis_client, app_forge, REPO, PR, PUBLIC)
    [run] = fake_github.check_runs(GITHUB_REPO, SHA)  # none for the "(repository)" row
    assert (run["name"], run["status"], len(run["actions"])) == ("coalmine/web", "in_progress", 3)
    assert run["details_url"] == f"{PUBLIC}/deployments/github/{GITHUB_REPO}/commits/{SHA}/apps/web"
    target = check_runs.load_target(redis_client, "github", run["id"])
    assert target == check_runs.CheckRunTarget(GITHUB_REPO, 501, PR, SHA, "web",
                                               f"coalmine:rollout:github:{GITHUB_REPO}:web")

    before = writes(fake_github)
    check_runs.publish(redis_client, app_forge, REPO, PR, PUBLIC)  # nothing changed
    assert writes(fake_github) == before

    comment.save_section(redis_client, REPO, PR, "web", rollout_section(finished=True))
    check_runs.publish(redis_client, app_forge, REPO, PR, PUBLIC)
    [run] = fake_github.check_runs(GITHUB_REPO, SHA)
    assert (run["status"], run["conclusion"], run["actions"]) == ("completed", "success", [])


def test_a_refused_post_raises_for_the_outbox_and_the_retry_posts_the_newest_state(
        redis_client, app_forge, fake_github):
    comment.save_section(redis_client, REPO, PR, "web", rollout_section())
    app_forge.authenticated_clone_url(REPO)  # the installation token, before the outage
    fake_github.fail_next(5, 502, match="check-runs")
    with pytest.raises(ForgeError):
        check_runs.publish(redis_client, app_forge, REPO, PR, PUBLIC)
    assert fake_github.check_runs(GITHUB_REPO, SHA) == []
    comment.save_section(redis_client, REPO, PR, "web", rollout_section(finished=True))
    check_runs.publish(redis_client, app_forge, REPO, PR, PUBLIC)  # the outbox's flush
    [run] = fake_github.check_runs(GITHUB_REPO, SHA)
    assert (run["status"], run["conclusion"]) == ("completed", "success")


def test_a_token_forge_publishes_no_check_run(redis_client, github_forge, fake_github):
    comment.save_section(redis_client, REPO, PR, "web", rollout_section())
    check_runs.publish(redis_client, github_forge, REPO, PR, PUBLIC)
    assert writes(fake_github) == 0 and redis_client.keys("coalmine:check-run*") == []


def test_an_app_without_the_checks_permission_gets_statuses_only_without_retries(
        redis_client, fake_github, github_app_key, forge_sleeps):
    private, public = github_app_key
    fake_github.add_app(APP_ID, public, slug="coalmine",
                        permissions={k: v for k, v in APP_PERMISSIONS.items() if k != "checks"})
    fake_github.add_installation(77, APP_ID, [GITHUB_REPO])
    forge = GitHubForge(api_url=fake_github.api_url, app_id=APP_ID, private_key=private,
                        retry=RetryPolicy(sleep=forge_sleeps))
    comment.save_section(redis_client, REPO, PR, "web", rollout_section())
    check_runs.publish(redis_client, forge, REPO, PR, PUBLIC)  # no ForgeError: no retry
    refused = len(fake_github.calls_to("POST", r".*/check-runs$"))
    assert refused == 1 and fake_github.check_runs(GITHUB_REPO, SHA) == []
    assert 0 < redis_client.ttl(f"coalmine:check-runs-refused:github:{GITHUB_REPO}") <= 3600

    comment.save_section(redis_client, REPO, PR, "web", rollout_section(finished=True))
    check_runs.publish(redis_client, forge, REPO, PR, PUBLIC)  # the pause: not asked again
    assert len(fake_github.calls_to("POST", r".*/check-runs$")) == refused
