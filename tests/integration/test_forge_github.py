"""GitHubForge against FakeGitHub over real HTTP: every protocol method, auth, limits, retries."""

from __future__ import annotations

import time
import traceback

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.forge.base import ForgeError, RepoRef
from bot.forge.github import GitHubForge
from bot.forge.retry import RetryPolicy
from tests.harness.fixtures_forges import (
    FEATURE_BRANCH,
    GITHUB_BOT,
    GITHUB_REPO,
    GITHUB_TOKEN,
    RecordingSleep,
)
from tests.harness.github import FakeGitHub

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
MARKER = "<!-- coalmine:rollout web -->"
PR = 1  # the pull request the fixture opens


# -- statuses ---------------------------------------------------------------------------------


def test_status_is_set_with_description_cut_to_140(github_forge, github_repo, fake_github):
    github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "step 1 " * 40)
    github_forge.set_status(
        github_repo, SHA, "coalmine/web", "success", "done", target_url="https://ci/1"
    )

    latest = fake_github.latest_statuses(GITHUB_REPO, SHA)["coalmine/web"]
    assert (latest["state"], latest["description"], latest["target_url"]) == (
        "success",
        "done",
        "https://ci/1",
    )
    first = fake_github.statuses(GITHUB_REPO, SHA)[0]
    assert len(first["description"]) == 140 and first["description"].endswith("…")


def test_github_rejects_a_description_over_140_as_the_real_api_does(fake_github):
    reply = requests.post(
        f"{fake_github.url}/repos/{GITHUB_REPO}/statuses/{SHA}",
        json={"state": "success", "description": "x" * 141},
        headers={"Authorization": f"token {GITHUB_TOKEN}"},
        timeout=5,
    )
    assert reply.status_code == 422
    assert "description is too long" in reply.json()["errors"][0]["message"]
    assert fake_github.calls[-1].rejected_by == "rule"


def test_an_unknown_state_is_refused_by_the_openapi_schema(github_forge, github_repo, fake_github):
    with pytest.raises(ForgeError, match="422") as caught:
        github_forge.set_status(github_repo, SHA, "ci", "bogus", "x")  # type: ignore[arg-type]

    assert "bogus" in str(caught.value)
    assert fake_github.calls[-1].rejected_by == "openapi"
    assert fake_github.statuses(GITHUB_REPO, SHA) == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/repos/{GITHUB_REPO}/issues/{PR}/comments", {"text": "no body field"}),
        (f"/repos/{GITHUB_REPO}/issues/{PR}/comments", {"body": 42}),
        (f"/repos/{GITHUB_REPO}/pulls", {"head": "x"}),
        (f"/repos/{GITHUB_REPO}/issues/comments/1/reactions", {"content": "thumbsup"}),
    ],
)
def test_bodies_are_checked_against_the_official_description(fake_github, path, body):
    reply = requests.post(
        fake_github.url + path,
        json=body,
        headers={"Authorization": f"token {GITHUB_TOKEN}"},
        timeout=5,
    )
    assert reply.status_code == 422
    assert reply.json()["message"].startswith("Invalid request.")
    assert fake_github.calls[-1].rejected_by == "openapi"


def test_routes_and_credentials_are_checked_before_state(fake_github):
    auth = {"Authorization": f"token {GITHUB_TOKEN}"}
    base = fake_github.url
    unknown_route = requests.get(f"{base}/repos/{GITHUB_REPO}/nope", headers=auth, timeout=5)
    no_token = requests.get(f"{base}/repos/{GITHUB_REPO}", timeout=5)
    unknown_repo = requests.get(f"{base}/repos/acme/ghost", headers=auth, timeout=5)

    assert [unknown_route.status_code, no_token.status_code, unknown_repo.status_code] == [
        404,
        401,
        404,
    ]
    assert [c.rejected_by for c in fake_github.calls] == ["route", "auth", "state"]


# -- comments ---------------------------------------------------------------------------------


def test_upsert_creates_once_then_edits_the_same_comment(github_forge, github_repo, fake_github):
    fake_github.add_comment(GITHUB_REPO, PR, f"quoting {MARKER} is not enough", login="mallory")

    first = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nstep 1")
    second = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nstep 2")
    third = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nstep 3")

    assert first == second == third
    ours = [c for c in fake_github.comments(GITHUB_REPO, PR) if c["user"]["login"] == GITHUB_BOT]
    assert [(c["id"], c["body"]) for c in ours] == [(first, f"{MARKER}\nstep 3")]
    assert len(fake_github.calls_to("PATCH", r".*/issues/comments/\d+")) == 2


def test_upsert_stops_listing_once_its_comment_is_found(github_forge, github_repo, fake_github):
    comment_id = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nv1")
    for i in range(130):
        fake_github.add_comment(GITHUB_REPO, PR, f"chatter {i}")
    fake_github.calls.clear()

    again = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nv2")

    assert again == comment_id
    listed = fake_github.calls_to("GET", r".*/issues/1/comments")
    assert [(c.query["per_page"], c.query.get("page", "1")) for c in listed] == [("100", "1")]
    assert len(fake_github.comments(GITHUB_REPO, PR)) == 131


def test_upsert_walks_pages_when_its_comment_is_late(github_forge, github_repo, fake_github):
    for i in range(150):
        fake_github.add_comment(GITHUB_REPO, PR, f"chatter {i}")

    created = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nv1")
    edited = github_forge.upsert_comment(github_repo, PR, MARKER, f"{MARKER}\nv2")

    assert created == edited
    pages = [c.query.get("page", "1") for c in fake_github.calls_to("GET", r".*/issues/1/comments")]
    assert pages == ["1", "2", "1", "2"]


def test_over_long_bodies_keep_the_marker_and_the_tail(github_forge, github_repo, fake_github):
    body = MARKER + "\n" + "".join(f"line {i}\n" for i in range(12000)) + "FINAL VERDICT"
    assert len(body) > 65536

    comment_id = github_forge.upsert_comment(github_repo, PR, MARKER, body)
    again = github_forge.upsert_comment(github_repo, PR, MARKER, body + "!")

    stored = fake_github.comments(GITHUB_REPO, PR)[-1]
    assert again == comment_id
    assert len(stored["body"]) <= 65536
    assert stored["body"].startswith(MARKER)
    assert "removed to fit" in stored["body"]
    assert stored["body"].endswith("FINAL VERDICT!")
    assert "\nline 11999\n" in stored["body"] and "line 0\n" not in stored["body"]


def test_comment_posts_a_new_comment_each_time(github_forge, github_repo, fake_github):
    first = github_forge.comment(github_repo, PR, "Promoted by @alice")
    second = github_forge.comment(github_repo, PR, "Promoted by @alice")

    assert first != second
    assert [c["body"] for c in fake_github.comments(GITHUB_REPO, PR)] == ["Promoted by @alice"] * 2


def test_acknowledge_reacts_once_however_often_called(github_forge, github_repo, fake_github):
    command = fake_github.add_comment(GITHUB_REPO, PR, "/promote", login="alice")

    github_forge.acknowledge(github_repo, PR, command)
    github_forge.acknowledge(github_repo, PR, command)

    reactions = fake_github.reactions(GITHUB_REPO, command)
    assert [(r["content"], r["user"]["login"]) for r in reactions] == [("+1", GITHUB_BOT)]


# -- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
        ("none", "none"),
    ],
)
def test_permission_folds_roles_into_four_levels(
    github_forge, github_repo, fake_github, role, expected
):
    fake_github.set_permission(GITHUB_REPO, "alice", role)
    assert github_forge.permission(github_repo, "alice") == expected


def test_an_unknown_user_has_no_permission(github_forge, github_repo):
    assert github_forge.permission(github_repo, "ghost") == "none"


# -- pull requests ----------------------------------------------------------------------------


def test_find_pull_request_returns_the_newest_for_the_head(github_forge, github_repo, fake_github):
    bot = {"author": GITHUB_BOT}
    fake_github.add_pull(GITHUB_REPO, head="revert-abc", state="merged", title="old revert", **bot)
    fake_github.add_pull(GITHUB_REPO, head="revert-abc", state="closed", title="newer revert",
                         **bot)
    fake_github.add_pull(GITHUB_REPO, head="other", title="unrelated", **bot)
    mine = fake_github.add_pull(GITHUB_REPO, head="mine", base="release", **bot)

    found = github_forge.find_pull_request(github_repo, "revert-abc")
    own = github_forge.find_pull_request(github_repo, "mine")

    assert found is not None and (found.title, found.state) == ("newer revert", "closed")
    assert own is not None and (own.number, own.head, own.base) == (mine, "mine", "release")
    # The fixture's PR was opened by a person: never taken for one of the bot's.
    assert github_forge.find_pull_request(github_repo, FEATURE_BRANCH) is None
    assert github_forge.find_pull_request(github_repo, "nothing-here") is None
    head_filter = fake_github.calls_to("GET", r".*/pulls")[0].query["head"]
    assert head_filter == "acme:revert-abc"


def test_merged_pull_requests_report_merged(github_forge, github_repo, fake_github):
    fake_github.add_pull(GITHUB_REPO, head="done", state="merged", author=GITHUB_BOT)
    found = github_forge.find_pull_request(github_repo, "done")
    assert found is not None and found.state == "merged"


def test_open_pull_request_with_labels_is_idempotent(github_forge, github_repo, fake_github):
    opened = github_forge.open_pull_request(
        github_repo, "revert-3f78", "main", "Revert web", "Analysis failed", ["coalmine", "revert"]
    )
    again = github_forge.open_pull_request(
        github_repo, "revert-3f78", "main", "Revert web", "Analysis failed", ["coalmine", "revert"]
    )

    assert again == opened
    assert (opened.head, opened.base, opened.state, opened.title) == (
        "revert-3f78",
        "main",
        "open",
        "Revert web",
    )
    assert opened.url.endswith(f"/{GITHUB_REPO}/pull/{opened.number}")
    assert [p["number"] for p in fake_github.pulls(GITHUB_REPO)] == [PR, opened.number]
    assert fake_github.issue_labels(GITHUB_REPO, opened.number) == ["coalmine", "revert"]


# -- credentials ------------------------------------------------------------------------------


def test_clone_url_carries_the_token(github_forge, github_repo):
    url = github_forge.authenticated_clone_url(github_repo)
    assert url == f"https://x-access-token:{GITHUB_TOKEN}@github.example/{GITHUB_REPO}.git"
    assert github_forge.secrets() == [GITHUB_TOKEN]


def test_bot_login_is_discovered_from_the_token(github_forge):
    assert github_forge.bot_login == GITHUB_BOT


def test_a_bad_token_fails_without_leaking_it(fake_github, github_repo):
    forge = GitHubForge(api_url=fake_github.api_url, token="ghp_wrong_secret", bot_login="x")

    with pytest.raises(ForgeError, match="401") as caught:
        forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")

    rendered = "".join(traceback.format_exception(caught.value))
    assert "ghp_wrong_secret" not in rendered


def test_enterprise_base_url_with_a_path(github_repo, forge_sleeps):
    fake = FakeGitHub(path_prefix="/api/v3").start()
    try:
        fake.add_repo(GITHUB_REPO)
        fake.add_token(GITHUB_TOKEN, GITHUB_BOT)
        pr = fake.add_pull(GITHUB_REPO, head="x")
        forge = GitHubForge(api_url=f"{fake.url}/api/v3", token=GITHUB_TOKEN)

        comment_id = forge.upsert_comment(github_repo, pr, MARKER, f"{MARKER}\nhello")

        assert fake.comments(GITHUB_REPO, pr)[0]["id"] == comment_id
        assert all(c.path.startswith("/api/v3/") for c in fake.calls)
    finally:
        fake.stop()


# -- GitHub App -------------------------------------------------------------------------------


@pytest.fixture
def app_forge(fake_github, github_app_key):
    private, public = github_app_key
    fake_github.add_app(4242, public, slug="coalmine")
    fake_github.add_installation(77, 4242, [GITHUB_REPO])
    clock = FakeClock()
    forge = GitHubForge(api_url=fake_github.api_url, app_id=4242, private_key=private, clock=clock)
    return forge, clock


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_app_installation_token_is_fetched_once_and_reused(app_forge, fake_github):
    forge, _ = app_forge
    repo = RepoRef(
        "github", GITHUB_REPO, "https://github.example/acme/shop.git", installation_id=77
    )

    forge.set_status(repo, SHA, "coalmine/web", "pending", "starting")
    forge.set_status(repo, SHA, "coalmine/web", "success", "done")
    comment_id = forge.upsert_comment(repo, PR, MARKER, f"{MARKER}\nrolled out")

    assert len(fake_github.calls_to("POST", r"/app/installations/77/access_tokens")) == 1
    token = fake_github.issued_tokens[0]
    assert forge.bot_login == "coalmine[bot]"
    assert fake_github.comments(GITHUB_REPO, PR)[0]["user"]["login"] == "coalmine[bot]"
    assert forge.upsert_comment(repo, PR, MARKER, f"{MARKER}\nagain") == comment_id
    assert forge.authenticated_clone_url(repo) == (
        f"https://x-access-token:{token}@github.example/{GITHUB_REPO}.git"
    )
    assert token in forge.secrets()


def test_app_token_is_renewed_a_minute_before_it_expires(app_forge, fake_github):
    forge, clock = app_forge
    repo = RepoRef(
        "github", GITHUB_REPO, "https://github.example/acme/shop.git", installation_id=77
    )

    forge.set_status(repo, SHA, "coalmine/web", "pending", "one")
    clock.offset = 3600 - 90  # still more than a minute left
    forge.set_status(repo, SHA, "coalmine/web", "pending", "two")
    clock.offset = 3600 - 30  # inside the last minute
    forge.set_status(repo, SHA, "coalmine/web", "pending", "three")

    assert len(fake_github.issued_tokens) == 2
    creators = [s["creator"]["login"] for s in fake_github.statuses(GITHUB_REPO, SHA)]
    assert creators == ["coalmine[bot]"] * 3


def test_app_finds_its_installation_when_the_event_had_none(app_forge, fake_github):
    forge, _ = app_forge
    repo = RepoRef("github", GITHUB_REPO, "https://github.example/acme/shop.git")

    forge.set_status(repo, SHA, "coalmine/web", "pending", "x")
    forge.set_status(repo, SHA, "coalmine/web", "success", "y")

    assert len(fake_github.calls_to("GET", rf"/repos/{GITHUB_REPO}/installation")) == 1
    assert len(fake_github.calls_to("POST", r"/app/installations/77/access_tokens")) == 1


def test_app_jwt_signed_with_another_key_is_refused(fake_github, github_app_key):
    _, public = github_app_key
    fake_github.add_app(4242, public)
    fake_github.add_installation(77, 4242, [GITHUB_REPO])
    other_key = _other_private_key()
    forge = GitHubForge(api_url=fake_github.api_url, app_id=4242, private_key=other_key)
    repo = RepoRef(
        "github", GITHUB_REPO, "https://github.example/acme/shop.git", installation_id=77
    )

    with pytest.raises(ForgeError, match="401"):
        forge.set_status(repo, SHA, "coalmine/web", "pending", "x")
    assert fake_github.calls[-1].rejected_by == "auth"


def _other_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# -- retries ----------------------------------------------------------------------------------


def test_a_502_is_retried_with_backoff(github_forge, github_repo, fake_github, forge_sleeps):
    fake_github.fail_next(2, 502)

    github_forge.set_status(github_repo, SHA, "coalmine/web", "success", "done")

    assert forge_sleeps.waits == [0.5, 1.0]
    assert [c.status for c in fake_github.calls] == [502, 502, 201]
    assert len(fake_github.statuses(GITHUB_REPO, SHA)) == 1


def test_a_429_waits_as_long_as_retry_after_says(
    github_forge, github_repo, fake_github, forge_sleeps
):
    fake_github.fail_next(1, 429, headers={"Retry-After": "7"})

    assert github_forge.comment(github_repo, PR, "hello") > 0

    assert forge_sleeps.waits == [7.0]


def test_a_403_rate_limit_waits_for_the_reset(github_forge, github_repo, fake_github, forge_sleeps):
    reset = int(time.time()) + 20
    fake_github.fail_next(
        1,
        403,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )

    github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")

    assert len(forge_sleeps.waits) == 1 and 15 <= forge_sleeps.waits[0] <= 20
    assert fake_github.calls[-1].status == 201


def test_a_plain_403_is_not_retried(github_forge, github_repo, fake_github, forge_sleeps):
    fake_github.fail_next(1, 403, body={"message": "Resource not accessible by integration"})

    with pytest.raises(ForgeError, match="403"):
        github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")
    assert forge_sleeps.waits == [] and len(fake_github.calls) == 1


def test_a_wait_beyond_the_cap_gives_up_at_once(github_forge, github_repo, fake_github):
    fake_github.fail_next(1, 429, headers={"Retry-After": "3600"})

    with pytest.raises(ForgeError, match="429"):
        github_forge.comment(github_repo, PR, "hello")
    assert len(fake_github.calls) == 1


def test_persistent_failures_end_in_a_scrubbed_forge_error(fake_github, github_repo):
    sleeps = RecordingSleep()
    forge = GitHubForge(
        api_url=fake_github.api_url,
        token=GITHUB_TOKEN,
        retry=RetryPolicy(max_attempts=3, sleep=sleeps),
    )
    fake_github.fail_next(10, 503, body={"message": f"echoing {GITHUB_TOKEN} back"})

    with pytest.raises(ForgeError, match="503") as caught:
        forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")

    assert len(fake_github.calls) == 3 and sleeps.waits == [0.5, 1.0]
    assert GITHUB_TOKEN not in str(caught.value)
    assert "***" in str(caught.value)


def test_a_dropped_connection_is_retried(github_forge, github_repo, fake_github, forge_sleeps):
    fake_github.drop_next(1)

    github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")

    assert forge_sleeps.waits == [0.5]
    assert [c.rejected_by for c in fake_github.calls] == ["fault", None]
