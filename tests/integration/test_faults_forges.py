"""Forge throttling and outages beyond test_forge_github.py / test_forge_gitlab.py: every 5xx
flavour, rate limits signalled by Retry-After (seconds or HTTP date) or by a reset time, on
both adapters, over real HTTP to the fakes."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from bot.forge.base import ForgeError
from tests.harness.fixtures_forges import GITHUB_REPO, GITLAB_PROJECT

SHA = "0123456789abcdef0123456789abcdef01234567"
PR = 1


# -- GitHub -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 504])
def test_github_server_errors_are_retried(github_forge, github_repo, fake_github, forge_sleeps,
                                          status):
    fake_github.fail_next(2, status)

    github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "rolling out")

    assert [c.status for c in fake_github.calls] == [status, status, 201]
    assert forge_sleeps.waits == [0.5, 1.0]
    assert len(fake_github.statuses(GITHUB_REPO, SHA)) == 1


def test_github_secondary_rate_limit_403_waits_for_retry_after(
    github_forge, github_repo, fake_github, forge_sleeps
):
    fake_github.fail_next(
        1, 403, headers={"Retry-After": "12"},
        body={"message": "You have exceeded a secondary rate limit."},
    )

    assert github_forge.comment(github_repo, PR, "hello") > 0

    assert forge_sleeps.waits == [12.0]


def test_github_429_honours_x_ratelimit_reset(github_forge, github_repo, fake_github,
                                              forge_sleeps):
    reset = int(time.time()) + 30
    fake_github.fail_next(
        1, 429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    )

    github_forge.set_status(github_repo, SHA, "coalmine/web", "success", "done")

    assert len(forge_sleeps.waits) == 1 and 25 <= forge_sleeps.waits[0] <= 30
    assert fake_github.calls[-1].status == 201


def test_github_retry_after_as_an_http_date(github_forge, github_repo, fake_github,
                                            forge_sleeps):
    fake_github.fail_next(1, 503, headers={"Retry-After": formatdate(time.time() + 20,
                                                                     usegmt=True)})

    github_forge.comment(github_repo, PR, "hello")

    assert len(forge_sleeps.waits) == 1 and 15 <= forge_sleeps.waits[0] <= 21


def test_github_reset_in_the_past_retries_at_once(github_forge, github_repo, fake_github,
                                                  forge_sleeps):
    past = int(time.time()) - 100
    fake_github.fail_next(
        1, 403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(past)}
    )

    github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")

    assert forge_sleeps.waits == [0.0]


# -- GitLab -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 504])
def test_gitlab_server_errors_are_retried(gitlab_forge, gitlab_repo, fake_gitlab, status):
    fake_gitlab.fail_next(2, status)

    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "success", "done")

    assert [c.status for c in fake_gitlab.calls] == [status, status, 201]


def test_gitlab_429_honours_ratelimit_reset(gitlab_forge, gitlab_repo, fake_gitlab):
    # GitLab names its reset header without the X- prefix.
    fake_gitlab.fail_next(1, 429, headers={"RateLimit-Reset": str(int(time.time()) + 1)})

    note = gitlab_forge.comment(gitlab_repo, 1, "hello")

    throttled, retried = fake_gitlab.calls
    assert (throttled.status, retried.status) == (429, 201)
    assert retried.at > throttled.at
    assert fake_gitlab.notes(GITLAB_PROJECT, 1)[0]["id"] == note


@pytest.mark.timeout(2)
@pytest.mark.parametrize("status", [429, 503])
def test_gitlab_wait_beyond_the_cap_gives_up_at_once(gitlab_forge, gitlab_repo, fake_gitlab,
                                                     status):
    """python-gitlab would sleep the hour, holding the worker; the job's retry comes back."""
    fake_gitlab.fail_next(1, status, headers={"Retry-After": "3600"})

    with pytest.raises(ForgeError, match=str(status)):
        gitlab_forge.comment(gitlab_repo, 1, "hello")
    assert [c.status for c in fake_gitlab.calls] == [status]
