"""GitHubForge's check runs against FakeGitHub over real HTTP: App mode only, create, update,
read back, GitHub's limits (from the OpenAPI subset), and the CI gate ignoring them."""

from __future__ import annotations

import pytest
import requests

from bot.forge.base import CheckRunSpec, ForgeError, NotFound, RepoRef, check_runs_of
from bot.forge.github import GitHubForge
from bot.gate import GateSpec, judge
from bot.report.check_runs import ACTIONS
from tests.harness.fixtures_forges import GITHUB_REPO
from tests.harness.github import FakeGitHub

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
APP_ID, OTHER_APP = 4242, 5151
REPO = RepoRef("github", GITHUB_REPO, "https://github.example/acme/shop.git", installation_id=77)
RUNNING = CheckRunSpec("coalmine/web", "in_progress", "step 2/3 · canary 20%", "## steps",
                       actions=ACTIONS, details_url="https://coalmine.test/d/web")


@pytest.fixture
def app_forge(fake_github: FakeGitHub, github_app_key) -> GitHubForge:
    private, public = github_app_key
    fake_github.add_app(APP_ID, public, slug="coalmine")
    fake_github.add_installation(77, APP_ID, [GITHUB_REPO])
    return GitHubForge(api_url=fake_github.api_url, app_id=APP_ID, private_key=private)


def test_a_check_run_is_created_with_buttons_then_completed_without(app_forge, fake_github):
    run_id = app_forge.create_check_run(REPO, SHA, RUNNING)
    [run] = fake_github.check_runs(GITHUB_REPO, SHA)
    assert (run["id"], run["name"], run["status"], run["app"]["id"]) == \
        (run_id, "coalmine/web", "in_progress", APP_ID)
    assert [a["identifier"] for a in run["actions"]] == ["promote", "promote-full", "abort"]
    assert run["output"] == {"title": "step 2/3 · canary 20%", "summary": "## steps"}

    done = CheckRunSpec("coalmine/web", "completed", "promoted", "## all steps done",
                        conclusion="success")
    app_forge.update_check_run(REPO, run_id, done)
    [run] = fake_github.check_runs(GITHUB_REPO, SHA)  # updated, not a second run
    assert (run["status"], run["conclusion"], run["actions"]) == ("completed", "success", [])

    facts = app_forge.check_run_facts(REPO, run_id)
    assert (facts.id, facts.app_id, facts.head_sha, facts.name, facts.status,
            facts.conclusion) == (run_id, APP_ID, SHA, "coalmine/web", "completed", "success")


def test_a_summary_over_githubs_limit_is_cut_keeping_its_tail(app_forge, fake_github):
    long = CheckRunSpec("coalmine/web", "in_progress", "t", "x\n" * 40_000 + "newest step")
    app_forge.create_check_run(REPO, SHA, long)
    summary = fake_github.check_runs(GITHUB_REPO, SHA)[0]["output"]["summary"]
    assert len(summary) <= 65535 and summary.endswith("newest step")


@pytest.mark.parametrize(("action", "field"), [
    ({"label": "L" * 21, "description": "d", "identifier": "i"}, "label"),
    ({"label": "l", "description": "D" * 41, "identifier": "i"}, "description"),
    ({"label": "l", "description": "d", "identifier": "I" * 21}, "identifier"),
])
def test_the_fake_refuses_what_github_refuses(app_forge, fake_github, action, field):
    """The limits the adapter keeps are GitHub's own (the OpenAPI subset), not the fake's."""
    app_forge.authenticated_clone_url(REPO)  # an installation token, as the adapter holds
    token = fake_github.issued_tokens[-1]
    url = f"{fake_github.api_url}/repos/{GITHUB_REPO}/check-runs"
    headers = {"Authorization": f"token {token}"}
    ok = requests.post(url, json={"name": "x", "head_sha": SHA, "actions": [
        {"label": "l", "description": "d", "identifier": "i"}]}, headers=headers, timeout=10)
    assert ok.status_code == 201
    bad = requests.post(url, json={"name": "x", "head_sha": SHA, "actions": [action]},
                        headers=headers, timeout=10)
    assert bad.status_code == 422 and field in bad.text
    long = requests.post(url, json={"name": "x", "head_sha": SHA,
                                    "output": {"title": "t", "summary": "s" * 65536}},
                         headers=headers, timeout=10)
    assert long.status_code == 422
    unconcluded = requests.post(url, json={"name": "x", "head_sha": SHA, "status": "completed"},
                                headers=headers, timeout=10)
    assert unconcluded.status_code == 422


def test_token_mode_writes_no_check_runs_and_github_would_refuse_them(github_forge, github_repo,
                                                                      fake_github):
    assert github_forge.check_runs_app() is None and check_runs_of(github_forge) is None
    with pytest.raises(ForgeError, match="403"):  # GitHub: only an App may create check runs
        github_forge.create_check_run(github_repo, SHA, RUNNING)
    assert fake_github.check_runs(GITHUB_REPO, SHA) == []


def test_another_apps_run_is_read_as_theirs_and_cannot_be_changed(app_forge, fake_github):
    theirs = fake_github.add_check_run(GITHUB_REPO, SHA, "build")
    facts = app_forge.check_run_facts(REPO, theirs)
    assert facts.app_id != APP_ID
    with pytest.raises(ForgeError, match="403"):
        app_forge.update_check_run(REPO, theirs, RUNNING)


def test_a_run_is_found_only_in_its_own_repository(app_forge, fake_github):
    fake_github.add_repo("acme/other")
    elsewhere = fake_github.add_check_run("acme/other", SHA, "coalmine/web")
    with pytest.raises(NotFound):
        app_forge.check_run_facts(REPO, elsewhere)
    with pytest.raises(NotFound):
        app_forge.check_run_facts(REPO, 987654)


def test_the_ci_gate_never_waits_on_or_fails_by_coalmines_own_check_runs(app_forge, fake_github):
    own = app_forge.create_check_run(REPO, SHA, RUNNING)
    fake_github.add_check_run(GITHUB_REPO, SHA, "build", status="completed", conclusion="success")
    checks = app_forge.commit_checks(REPO, SHA)
    assert {c.name for c in checks} == {"coalmine/web", "build"}  # listed like any run
    assert judge(GateSpec(all=True), checks, waited_s=0).verdict == "pass"  # pending: ignored
    app_forge.update_check_run(REPO, own, CheckRunSpec(
        "coalmine/web", "completed", "aborted", "s", conclusion="failure"))
    checks = app_forge.commit_checks(REPO, SHA)
    assert judge(GateSpec(all=True), checks, waited_s=0).verdict == "pass"  # failed: ignored
