"""End-to-end world: a GitOps repository served over git-HTTP, the fakes, and the bot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import payloads
from tests.harness.bot import BotHarness
from tests.harness.github import FakeGitHub
from tests.harness.gitlab import FakeGitLab
from tests.harness.gitrepos import BareRemote, GitHttpServer, make_remote

GH_TOKEN = "ghs_e2eTokenForTheBot0123456789"
GL_TOKEN = "glpat-e2eTokenForTheBot987"
GH_SECRET = "gh-e2e-webhook-secret"
GL_SECRET = "gl-e2e-webhook-token"
REPO = "acme/gitops"
GL_PROJECT_ID = 15


def deployment(name: str, image: str, replicas: int = 3, **extra: str) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: {extra.get("deadline", "600")}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: {name}
          image: {image}
          ports: [{{containerPort: 8080}}]
"""


def service(name: str) -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


PLAIN_CONFIG = """apps:
  - name: web
    path: deploy/web
    namespace: shop
    prune: true
    healthTimeoutSeconds: 20
"""

INITIAL_FILES = {
    ".coalmine.yaml": PLAIN_CONFIG,
    "deploy/web/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    "deploy/web/deployment.yaml": deployment("web", "registry.example/web:1.0"),
    "deploy/web/service.yaml": service("web"),
    "deploy/web/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: blue\n"
    ),
}


@dataclass
class World:
    bot: BotHarness
    remote: BareRemote
    git_http: GitHttpServer
    forge: str  # "github" | "gitlab"
    github: FakeGitHub | None = None
    gitlab: FakeGitLab | None = None

    def clone_url(self) -> str:
        return self.git_http.url(self.remote, credentials=False)


@pytest.fixture
def gitops_remote(tmp_path: Path) -> BareRemote:
    return make_remote(tmp_path / "repos", "gitops", INITIAL_FILES)


@pytest.fixture
def github_world(tmp_path, redis_url, fake_kube, gitops_remote) -> Iterator[World]:
    gh = FakeGitHub()
    gh.start()
    gh.add_repo(REPO)
    gh.add_token(GH_TOKEN, "coalmine-bot")
    with GitHttpServer(tmp_path / "repos", username="x-access-token", password=GH_TOKEN) as http:
        bot = BotHarness(tmp_path, redis_url, {
            "GITHUB_WEBHOOK_SECRET": GH_SECRET,
            "GITHUB_TOKEN": GH_TOKEN,
            "GITHUB_API_URL": gh.url,
            "GITHUB_BOT_LOGIN": "coalmine-bot",
            "KUBECONFIG": str(fake_kube.kubeconfig),
        })
        try:
            yield World(bot, gitops_remote, http, "github", github=gh)
        finally:
            bot.stop()
            gh.stop()


@pytest.fixture
def gitlab_world(tmp_path, redis_url, fake_kube, gitops_remote) -> Iterator[World]:
    gl = FakeGitLab()
    gl.start()
    gl.add_project(GL_PROJECT_ID, REPO)
    gl.add_token(GL_TOKEN, "coalmine-bot")
    with GitHttpServer(tmp_path / "repos", username="oauth2", password=GL_TOKEN) as http:
        bot = BotHarness(tmp_path, redis_url, {
            "GITLAB_WEBHOOK_TOKEN": GL_SECRET,
            "GITLAB_TOKEN": GL_TOKEN,
            "GITLAB_URL": gl.url,
            "GITLAB_BOT_USERNAME": "coalmine-bot",
            "KUBECONFIG": str(fake_kube.kubeconfig),
        })
        try:
            yield World(bot, gitops_remote, http, "gitlab", gitlab=gl)
        finally:
            bot.stop()
            gl.stop()


def merge(world: World, files: dict[str, str | None], title: str, base: str = "main",
          delivery: str | None = None) -> tuple[int, str, object]:
    """Merge a PR in the bare repo and deliver the forge's webhook; returns (number, sha, resp)."""
    branch = f"pr-{world.remote.last_pr_number + 1}"
    sha = world.remote.merge_pr(branch, files, title, base=base)
    number = world.remote.last_pr_number
    if world.forge == "github":
        payload = payloads.github_pr_merged(
            full_name=REPO, clone_url=world.clone_url(), number=number, merge_sha=sha,
            base=base, head=branch, title=title)
        resp = world.bot.github(payload, delivery=delivery)
    else:
        payload = payloads.gitlab_mr_merged(
            path=REPO, clone_url=world.clone_url(), project_id=GL_PROJECT_ID, iid=number,
            merge_sha=sha, target=base, source=branch, title=title)
        resp = world.bot.gitlab(payload, key=delivery)
    return number, sha, resp


def latest_statuses(world: World, sha: str) -> dict[str, dict]:
    """context → latest status, normalised to GitHub's state names."""
    if world.github:
        return world.github.latest_statuses(REPO, sha)
    return world.gitlab.latest_statuses(GL_PROJECT_ID, sha)


def all_statuses(world: World, sha: str) -> list[dict]:
    if world.github:
        return world.github.statuses(REPO, sha)
    return world.gitlab.statuses(GL_PROJECT_ID, sha)


def comments(world: World, number: int) -> list[dict]:
    if world.github:
        return world.github.comments(REPO, number)
    return world.gitlab.notes(GL_PROJECT_ID, number)


def redeliver(world: World, number: int, sha: str, delivery: str | None = None,
              new_id: bool = False) -> object:
    """Send the merge webhook of PR `number` again (same id unless `new_id`)."""
    if world.forge == "github":
        payload = payloads.github_pr_merged(
            full_name=REPO, clone_url=world.clone_url(), number=number, merge_sha=sha,
            head=f"pr-{number}")
        return world.bot.github(payload, delivery=None if new_id else delivery)
    payload = payloads.gitlab_mr_merged(
        path=REPO, clone_url=world.clone_url(), project_id=GL_PROJECT_ID, iid=number,
        merge_sha=sha, source=f"pr-{number}")
    return world.bot.gitlab(payload, key=None if new_id else delivery)
