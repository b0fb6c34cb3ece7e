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
from tests.harness.processes import wait_until

GH_TOKEN = "ghs_e2eTokenForTheBot0123456789"
GL_TOKEN = "glpat-e2eTokenForTheBot987"
GH_SECRET = "gh-e2e-webhook-secret"
GL_SECRET = "gl-e2e-webhook-token"
REPO = "acme/gitops"


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
    project_id: int = 0

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


GH_APP_ID = 4242
GH_INSTALLATION = 77


@pytest.fixture
def github_app_world(tmp_path, redis_url, fake_kube, gitops_remote,
                     github_app_key) -> Iterator[World]:
    """The GitHub world with Coalmine running as a GitHub App (installation tokens, check
    runs with buttons) instead of with a token."""
    private, public = github_app_key
    gh = FakeGitHub()
    gh.start()
    gh.add_repo(REPO)
    gh.add_app(GH_APP_ID, public, slug="coalmine")
    gh.add_installation(GH_INSTALLATION, GH_APP_ID, [REPO])
    # Git over HTTP takes whatever installation token the fake GitHub issued, as GitHub does.
    with GitHttpServer(tmp_path / "repos", username="x-access-token",
                       accepts=lambda token: token in gh.issued_tokens) as http:
        bot = BotHarness(tmp_path, redis_url, {
            "GITHUB_WEBHOOK_SECRET": GH_SECRET,
            "GITHUB_APP_ID": str(GH_APP_ID),
            "GITHUB_PRIVATE_KEY": private,
            "GITHUB_API_URL": gh.url,
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
    project_id = gl.add_project(REPO)
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
            yield World(bot, gitops_remote, http, "gitlab", gitlab=gl, project_id=project_id)
        finally:
            bot.stop()
            gl.stop()


def merge(world: World, files: dict[str, str | None], title: str, base: str = "main",
          delivery: str | None = None) -> tuple[int, str, object]:
    """Merge a PR in the bare repo and deliver the forge's webhook; returns (number, sha, resp)."""
    branch = f"pr-{world.remote.last_pr_number + 1}"
    sha = world.remote.merge_pr(branch, files, title, base=base)
    if world.github:
        number = world.github.add_pull(REPO, head=branch, base=base, title=title, state="merged",
            merge_sha=sha)
    else:
        number = world.gitlab.add_merge_request(REPO, source_branch=branch, target_branch=base,
                                                title=title, state="merged",
            merge_sha=sha)
    if world.forge == "github":
        payload = payloads.github_pr_merged(
            full_name=REPO, clone_url=world.clone_url(), number=number, merge_sha=sha,
            base=base, head=branch, title=title)
        resp = world.bot.github(payload, delivery=delivery)
    else:
        payload = payloads.gitlab_mr_merged(
            path=REPO, clone_url=world.clone_url(), project_id=world.project_id, iid=number,
            merge_sha=sha, target=base, source=branch, title=title)
        resp = world.bot.gitlab(payload, key=delivery)
    return number, sha, resp


_GITLAB_STATES = {"running": "pending", "pending": "pending", "success": "success",
                  "failed": "failure", "canceled": "error"}


def _normalised(status: dict) -> dict:
    """A GitLab commit status in GitHub's terms, so one assertion fits both forges."""
    return {"state": _GITLAB_STATES[status["status"]], "context": status["name"],
            "description": status.get("description") or "", "target_url": status["target_url"]}


def all_statuses(world: World, sha: str) -> list[dict]:
    """Every status posted on `sha`, oldest first, in GitHub's terms."""
    if world.github:
        return world.github.statuses(REPO, sha)
    return [_normalised(s) for s in world.gitlab.statuses(REPO, sha)]


def latest_statuses(world: World, sha: str) -> dict[str, dict]:
    """context → latest status."""
    latest: dict[str, dict] = {}
    for status in all_statuses(world, sha):
        latest[status["context"]] = status
    return latest


def final_status(world: World, sha: str, context: str = "coalmine/web", timeout: float = 60):
    """The first status of `context` on `sha` that is no longer pending."""

    def done():
        status = latest_statuses(world, sha).get(context)
        return status if status and status["state"] not in ("pending", "running") else None

    try:
        return wait_until(done, timeout, 0.1)
    except TimeoutError:
        raise AssertionError(f"no final {context} status on {sha[:7]}: "
                             f"{posted_states(world, sha, context)}; worker log:\n"
                             + world.bot.worker_log()[-5000:]) from None


def comments(world: World, number: int) -> list[dict]:
    if world.github:
        return world.github.comments(REPO, number)
    return world.gitlab.notes(REPO, number)


def redeliver(world: World, number: int, sha: str, delivery: str | None = None,
              new_id: bool = False) -> object:
    """Send the merge webhook of PR `number` again (same id unless `new_id`)."""
    if world.forge == "github":
        payload = payloads.github_pr_merged(
            full_name=REPO, clone_url=world.clone_url(), number=number, merge_sha=sha,
            head=f"pr-{number}")
        return world.bot.github(payload, delivery=None if new_id else delivery)
    payload = payloads.gitlab_mr_merged(
        path=REPO, clone_url=world.clone_url(), project_id=world.project_id, iid=number,
        merge_sha=sha, source=f"pr-{number}")
    return world.bot.gitlab(payload, key=None if new_id else delivery)


def wait_comment(world: World, number: int, needle: str, timeout: float = 60) -> dict:
    """The PR's single Coalmine comment once it contains `needle`."""

    def found():
        ours = [c for c in comments(world, number) if "<!-- coalmine:pr-comment -->" in c["body"]]
        return ours[0] if ours and needle in ours[0]["body"] else None

    try:
        return wait_until(found, timeout, 0.1)
    except TimeoutError:
        bodies = "\n---\n".join(c["body"] for c in comments(world, number))
        raise AssertionError(f"comment on #{number} never contained {needle!r}:\n{bodies}\n"
                             f"worker log:\n{world.bot.worker_log()[-4000:]}") from None


def posted_states(world: World, sha: str, context: str = "coalmine/web") -> list[str]:
    """Every state Coalmine asked for on `sha`/`context`, in order, in GitHub's terms.

    GitLab moves one status record through its states, so its history is read from the calls
    the fake accepted rather than from the records it keeps.
    """
    if world.github:
        return [s["state"] for s in world.github.statuses(REPO, sha) if s["context"] == context]
    posts = world.gitlab.calls_to("POST", rf".*/statuses/{sha}")
    return [_GITLAB_STATES[c.json["state"]] for c in posts
            if c.json.get("name") == context and c.status < 300]


_GITLAB_LEVELS = {"none": 0, "read": 20, "write": 30, "admin": 40}


def allow(world: World, user: str, role: str) -> None:
    """Give `user` a role on the repository: none, read, write or admin."""
    if world.github:
        world.github.set_permission(REPO, user, role)
    elif _GITLAB_LEVELS[role]:
        world.gitlab.set_access(REPO, user, _GITLAB_LEVELS[role])


def command(world: World, number: int, body: str, user: str, action: str = "created") -> object:
    """`user` comments `body` on PR `number` and the forge sends the webhook."""
    if world.github:
        comment_id = world.github.add_comment(REPO, number, body, login=user)
        payload = payloads.github_comment(body, full_name=REPO, clone_url=world.clone_url(),
                                          number=number, comment_id=comment_id, login=user,
                                          action=action)
        resp = world.bot.github(payload, event="issue_comment")
    else:
        note_id = world.gitlab.add_note(REPO, number, body, username=user)
        payload = payloads.gitlab_note(body, path=REPO, clone_url=world.clone_url(),
                                       project_id=world.project_id, iid=number, note_id=note_id,
                                       username=user, user_id=world.gitlab.add_user(user),
                                       action="create" if action == "created" else "update")
        resp = world.bot.gitlab(payload, event="Note Hook")
    assert resp.status_code in (200, 202), resp.get_json()
    return resp


def wait_log(world: World, needle: str, timeout: float = 60) -> None:
    """Wait until the worker's log holds `needle`."""
    try:
        wait_until(lambda: needle in world.bot.worker_log(), timeout, 0.1)
    except TimeoutError:
        raise AssertionError(f"worker never logged {needle!r}:\n"
                             + world.bot.worker_log()[-4000:]) from None


def set_up(world: World, files: dict[str, str | None]) -> None:
    """Start a worker and merge `files` as a first deploy (a plain apply) that must succeed."""
    world.bot.start_worker()
    _, sha, resp = merge(world, files, "Set up canaries")
    assert resp.status_code == 202
    status = final_status(world, sha, timeout=90)
    assert status["state"] == "success", status


def release(world: World, image: str, title: str) -> tuple[int, str]:
    """Merge a new image of the `web` Deployment; returns (PR number, merge sha)."""
    number, sha, resp = merge(world, {"deploy/web/deployment.yaml": deployment("web", image)}, title)
    assert resp.status_code == 202
    return number, sha


def replicas(kube, name: str) -> int | None:
    """The replicas of Deployment shop/`name` in the fake cluster, None when it is absent."""
    obj = kube.get_object("apps/v1", "Deployment", "shop", name)
    return obj["spec"]["replicas"] if obj else None


def image_of(kube, name: str) -> str | None:
    """The first container's image of Deployment shop/`name`, None when it is absent."""
    obj = kube.get_object("apps/v1", "Deployment", "shop", name)
    return obj["spec"]["template"]["spec"]["containers"][0]["image"] if obj else None
