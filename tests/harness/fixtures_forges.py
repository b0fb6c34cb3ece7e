"""Fixtures for the GitHub and GitLab fakes and adapters pointed at them.

Each fake is started per test (port 0 on 127.0.0.1) with one repository, one bot token and one
open pull request, so most tests only add what makes them special. The adapters' retry waits go
to `forge_sleeps` instead of the clock, so retry tests run instantly and can assert the waits.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.forge.base import RepoRef
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.retry import RetryPolicy
from tests.harness.github import FakeGitHub
from tests.harness.gitlab import FakeGitLab

GITHUB_REPO = "acme/shop"
GITHUB_TOKEN = "ghp_fixture_token_do_not_leak"
GITHUB_BOT = "coalmine-bot"
GITLAB_PROJECT = "acme/platform/shop"
GITLAB_TOKEN = "glpat-fixture-token-do-not-leak"
GITLAB_BOT = "coalmine-bot"
FEATURE_BRANCH = "feature/faster-checkout"


class RecordingSleep:
    """A `sleep` that returns at once and remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def forge_sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.add_repo(GITHUB_REPO)
    fake.add_token(GITHUB_TOKEN, GITHUB_BOT)
    fake.add_pull(GITHUB_REPO, head=FEATURE_BRANCH, title="Faster checkout")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def github_repo(fake_github: FakeGitHub) -> RepoRef:
    return RepoRef(
        forge="github",
        full_name=GITHUB_REPO,
        clone_url=f"https://github.example/{GITHUB_REPO}.git",
    )


@pytest.fixture
def github_forge(fake_github: FakeGitHub, forge_sleeps: RecordingSleep) -> GitHubForge:
    return GitHubForge(
        api_url=fake_github.api_url, token=GITHUB_TOKEN, retry=RetryPolicy(sleep=forge_sleeps)
    )


@pytest.fixture(scope="session")
def github_app_key() -> tuple[str, str]:
    """(private PEM, public PEM) of an RSA key for a test GitHub App."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    fake = FakeGitLab().start()
    fake.add_project(GITLAB_PROJECT)
    fake.add_token(GITLAB_TOKEN, GITLAB_BOT)
    fake.add_merge_request(GITLAB_PROJECT, source_branch=FEATURE_BRANCH, title="Faster checkout")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gitlab_repo(fake_gitlab: FakeGitLab) -> RepoRef:
    return RepoRef(
        forge="gitlab",
        full_name=GITLAB_PROJECT,
        clone_url=f"https://gitlab.example/{GITLAB_PROJECT}.git",
    )


@pytest.fixture
def gitlab_forge(fake_gitlab: FakeGitLab) -> GitLabForge:
    return GitLabForge(fake_gitlab.api_url, GITLAB_TOKEN)
