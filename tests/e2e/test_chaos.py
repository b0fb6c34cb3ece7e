"""Chaos: merges, commands and ticks across two repositories while workers die and Redis restarts.

A seeded schedule drives three workers through a stream of merges into two repositories (one with
canary rollouts paused on timers, one with plain applies), `/promote` and `/status` commands,
SIGKILLs of random workers and one Redis restart. Whatever the interleaving, the end state must be
the one Git describes: each app runs its deploy branch's last merged commit, every PR has a final
status, and nothing was applied twice to a different effect.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e import world as w
from tests.harness import payloads
from tests.harness.bot import BotHarness
from tests.harness.github import FakeGitHub
from tests.harness.gitrepos import BareRemote, GitHttpServer, make_remote
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

SEEDS = (20261202, 7)
WEB, LEDGER = "acme/gitops", "acme/payments"
WEB_CONFIG = """apps:
  - name: web
    path: deploy/web
    namespace: shop
    healthTimeoutSeconds: 20
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: 60
      steps:
        - setWeight: 50
        - pause: {duration: 1}
"""
LEDGER_CONFIG = """apps:
  - name: ledger
    path: deploy/ledger
    namespace: pay
    healthTimeoutSeconds: 20
"""


def ledger_config_map(version: int) -> str:
    return ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ledger-config\n"
            f"data:\n  version: \"{version}\"\n")


@dataclass
class Repo:
    name: str
    remote: BareRemote
    merged: list[tuple[int, str]] = field(default_factory=list)  # (PR number, merge sha)


@dataclass
class Chaos:
    bot: BotHarness
    github: FakeGitHub
    http: GitHttpServer
    web: Repo
    ledger: Repo

    def merge(self, repo: Repo, files: dict[str, str], title: str) -> None:
        branch = f"pr-{repo.remote.last_pr_number + 1}"
        sha = repo.remote.merge_pr(branch, files, title)
        number = self.github.add_pull(repo.name, head=branch, title=title, state="merged",
                                      merge_sha=sha)
        payload = payloads.github_pr_merged(
            full_name=repo.name, clone_url=self.http.url(repo.remote, credentials=False),
            number=number, merge_sha=sha, head=branch, title=title)
        assert self.bot.github(payload).status_code == 202
        repo.merged.append((number, sha))

    def command(self, repo: Repo, number: int, body: str) -> None:
        comment_id = self.github.add_comment(repo.name, number, body, login="alice")
        payload = payloads.github_comment(
            body, full_name=repo.name, clone_url=self.http.url(repo.remote, credentials=False),
            number=number, comment_id=comment_id, login="alice")
        assert self.bot.github(payload, event="issue_comment").status_code in (200, 202)


@pytest.fixture
def chaos(tmp_path, redis_url, fake_kube) -> Iterator[Chaos]:
    gh = FakeGitHub()
    gh.start()
    for name in (WEB, LEDGER):
        gh.add_repo(name)
        gh.set_permission(name, "alice", "write")
    gh.add_token(w.GH_TOKEN, "coalmine-bot")
    web = make_remote(tmp_path / "repos", "gitops", {**w.INITIAL_FILES,
                                                     ".coalmine.yaml": WEB_CONFIG})
    ledger = make_remote(tmp_path / "repos", "payments", {
        ".coalmine.yaml": LEDGER_CONFIG,
        "deploy/ledger/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pay\n",
        "deploy/ledger/config.yaml": ledger_config_map(0),
    })
    with GitHttpServer(tmp_path / "repos", username="x-access-token",
                       password=w.GH_TOKEN) as http:
        bot = BotHarness(tmp_path, redis_url, {
            "GITHUB_WEBHOOK_SECRET": w.GH_SECRET,
            "GITHUB_TOKEN": w.GH_TOKEN,
            "GITHUB_API_URL": gh.url,
            "GITHUB_BOT_LOGIN": "coalmine-bot",
            "KUBECONFIG": str(fake_kube.kubeconfig),
            "COALMINE_REPOS": f"{WEB}=shop; {LEDGER}=pay",
            "COALMINE_LOG_LEVEL": "INFO",
        })
        try:
            yield Chaos(bot, gh, http, Repo(WEB, web), Repo(LEDGER, ledger))
        finally:
            bot.stop()
            gh.stop()


def _log_lines_about(log: str, needles: tuple[str, ...]) -> str:
    """The worker log's lines naming any of `needles`: when the cluster does not settle, the
    story of the app that did not is what tells why, not the last lines of the other."""
    return "\n".join(line for line in log.splitlines() if any(n in line for n in needles))


def supervise(bot: BotHarness, workers: int = 3) -> None:
    """Start workers in place of dead ones, as Kubernetes restarts a crashed pod.

    An RQ worker may exit on its own when Redis goes away under it; that is a restart for the
    supervisor, not a lost job, which is what this test is about.
    """
    alive = sum(proc.poll() is None for proc in bot.workers)
    for _ in range(workers - alive):
        bot.start_worker()


def final_state(chaos: Chaos, repo: Repo, sha: str, app: str) -> str | None:
    status = chaos.github.latest_statuses(repo.name, sha).get(f"coalmine/{app}")
    return status["state"] if status and status["state"] != "pending" else None


@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", SEEDS)
def test_the_cluster_ends_where_git_says_whatever_dies_on_the_way(chaos, fake_kube, redis_server,
                                                                  seed):
    rng = random.Random(seed)
    for _ in range(3):
        chaos.bot.start_worker()
    # First deploys: both repositories' stable versions.
    chaos.merge(chaos.web, {"deploy/web/deployment.yaml": w.deployment("web", "web:1")}, "web 1")
    chaos.merge(chaos.ledger, {"deploy/ledger/config.yaml": ledger_config_map(1)}, "ledger 1")
    wait_until(lambda: w.image_of(fake_kube, "web") == "web:1", 60, 0.1)

    web_version, ledger_version, restarted = 1, 1, False
    done: list[str] = []
    for step in range(16):
        action = rng.choice(["web", "web", "ledger", "ledger", "promote", "status", "kill"])
        done.append(action)
        if action == "web":
            web_version += 1
            chaos.merge(chaos.web, {"deploy/web/deployment.yaml":
                                    w.deployment("web", f"web:{web_version}")}, f"web {web_version}")
        elif action == "ledger":
            ledger_version += 1
            chaos.merge(chaos.ledger, {"deploy/ledger/config.yaml":
                                       ledger_config_map(ledger_version)}, f"ledger {ledger_version}")
        elif action in ("promote", "status"):
            number, _ = rng.choice(chaos.web.merged)
            chaos.command(chaos.web, number, f"/{action}")
        else:
            supervise(chaos.bot)  # workers that exited with the Redis restart are back first
            victim = rng.choice([p for p in chaos.bot.workers if p.poll() is None])
            chaos.bot.kill_worker(victim)
        supervise(chaos.bot)
        if step == 8 and not restarted:
            redis_server.restart()
            restarted = True
        # Let the queue drain a little before the next event (bounded; the order is seeded).
        try:
            wait_until(lambda: not chaos.bot.redis.llen("rq:queue:coalmine"), 2, 0.05)
        except TimeoutError:
            pass

    assert restarted and {"web", "ledger", "kill"} <= set(done), done
    last_web, last_ledger = chaos.web.merged[-1][1], chaos.ledger.merged[-1][1]

    def settled() -> bool:
        supervise(chaos.bot)
        config = fake_kube.get_object("v1", "ConfigMap", "pay", "ledger-config")
        return (w.image_of(fake_kube, "web") == f"web:{web_version}"
                and fake_kube.get_object("apps/v1", "Deployment", "shop", "web-canary") is None
                and config is not None and config["data"]["version"] == str(ledger_version))

    try:
        wait_until(settled, 120, 0.2)
    except TimeoutError:
        config = fake_kube.get_object("v1", "ConfigMap", "pay", "ledger-config")
        raise AssertionError(
            f"the cluster did not reach the last merged commits: web {w.image_of(fake_kube, 'web')}"
            f" (want web:{web_version}), canary {w.image_of(fake_kube, 'web-canary')}, ledger "
            f"{config and config['data']} (want {ledger_version})\n"
            + "\n".join(f"{repo.name}#{n} {s[:7]} "
                        f"{[st['description'] for st in chaos.github.statuses(repo.name, s)]}"
                        for repo in (chaos.web, chaos.ledger) for n, s in repo.merged) + "\n"
            + _log_lines_about(chaos.bot.worker_log(), ("payments", "lease", "given up",
                                                        "Traceback", "ERROR"))[-12000:]
            + "\n" + chaos.bot.worker_log()[-6000:]) from None

    # Nothing older was applied after something newer: the ledger's config only moved forward.
    versions = [int(obj["data"]["version"])
                for obj in fake_kube.versions("ConfigMap", "pay", "ledger-config")]
    assert versions[-1] == ledger_version and versions == sorted(versions), versions
    images = [obj["spec"]["template"]["spec"]["containers"][0]["image"]
              for obj in fake_kube.versions("Deployment", "shop", "web")]
    numbers = [int(image.removeprefix("web:")) for image in images if image.startswith("web:")]
    assert numbers == sorted(numbers), images
    labels = fake_kube.get_object("v1", "ConfigMap", "pay", "ledger-config")["metadata"]["labels"]
    assert labels["coalmine.dev/revision"] == last_ledger

    # Every PR ends with a final status: promoted, applied, superseded or skipped as older.
    missing = []
    for repo, app in ((chaos.web, "web"), (chaos.ledger, "ledger")):
        for number, sha in repo.merged:
            try:
                wait_until(lambda r=repo, s=sha, a=app: supervise(chaos.bot)
                           or final_state(chaos, r, s, a), 60, 0.2)
            except TimeoutError:
                missing.append(f"{repo.name}#{number} ({sha[:7]}): "
                               f"{[st['description'] for st in chaos.github.statuses(repo.name, sha)]}")
    # A final status lost with its job (the Redis restart) is posted by the workers' sweep.
    assert missing == [], ("PRs without a final status: " + "; ".join(missing) + "\n"
                           + chaos.bot.worker_log()[-12000:])
    assert final_state(chaos, chaos.web, last_web, "web") == "success"
    assert final_state(chaos, chaos.ledger, last_ledger, "ledger") == "success"
