"""Shared plumbing for the benchmarks: the machine, statistics, and a bot world built from the
test harness (FakeKube, FakeGitHub, git over HTTP, a private redis-server, real RQ workers).

Benchmarks print figures; they never assert on time. Every process they start listens on
127.0.0.1 only and is stopped when the benchmark ends.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.processes import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO = "acme/gitops"
GH_TOKEN = "ghs_benchTokenForTheBot0123456789"
GH_SECRET = "bench-webhook-secret"


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, str]:
    """What the figures were measured on (for bench/README.md)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    total = next((ln.split()[1] for ln in mem.splitlines() if ln.startswith("Mem:")), "?")
    return {
        "nproc": str(os.cpu_count()),
        "memory": total,
        "cpu": cpu,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def header(title: str) -> None:
    info = machine()
    print(f"== {title}")
    print(f"   machine: {info['nproc']} CPU ({info['cpu']}), {info['memory']} RAM, "
          f"Python {info['python']}, {info['date']}")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 100 samples is the 99th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[list[str]]) -> str:
    """A left-aligned plain-text table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("   " + line for line in lines)


def verdict(met: bool) -> str:
    return "target met" if met else "TARGET MISSED"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01):
    """Poll `predicate` until truthy (the test harness's wait_until), naming `what` if it isn't."""
    return wait_until(predicate, timeout, interval, f"{what} not within {timeout:g} s")


# --------------------------------------------------------------------------- processes


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"coalmine-bench-{name}-") as tmp:
        yield Path(tmp)


@contextmanager
def redis_server(tmp: Path) -> Iterator[Any]:
    """A private redis-server on a free loopback port (tests.harness.processes.RedisServer)."""
    from tests.harness.processes import RedisServer

    (tmp / "redis").mkdir(exist_ok=True)
    server = RedisServer(tmp / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a bot child process: ours minus any ambient bot config, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "COALMINE_", "KUBECONFIG", "REDIS_URL"))}
    env.update(extra)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def python() -> str:
    return sys.executable


# --------------------------------------------------------------------------- the bot world


def deployment_yaml(name: str, image: str, replicas: int = 3) -> str:
    from tests.e2e.world import deployment

    return deployment(name, image, replicas)


@dataclass
class BotWorld:
    """A GitOps repository behind fake GitHub, a FakeKube, Redis and the bot (see tests/e2e)."""

    world: Any  # tests.e2e.world.World
    kube: Any  # tests.harness.kube.FakeKube
    tmp: Path

    @property
    def bot(self) -> Any:
        return self.world.bot

    def merge(self, files: dict[str, str | None], title: str) -> tuple[int, str, float, Any]:
        """Merge a PR and POST its webhook; returns (number, sha, time the POST began, answer)."""
        from tests.harness import payloads

        branch = f"pr-{self.world.remote.last_pr_number + 1}"
        sha = self.world.remote.merge_pr(branch, files, title)
        number = self.world.github.add_pull(REPO, head=branch, title=title, state="merged",
                                             merge_sha=sha)
        payload = payloads.github_pr_merged(
            full_name=REPO, clone_url=self.world.clone_url(), number=number, merge_sha=sha,
            head=branch, title=title)
        body = payloads.dumps(payload)
        headers = payloads.github_headers(body, GH_SECRET, "pull_request")
        sent = time.time()
        answer = self.bot.client.post("/webhooks/github", data=body, headers=headers)
        if answer.status_code != 202:
            raise RuntimeError(f"webhook answered {answer.status_code}: {answer.get_json()}")
        return number, sha, sent, answer

    def deployment(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self.kube.get_object("apps/v1", "Deployment", namespace, name)

    def wait_kube(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        """Block on the fake's change notifications until `predicate` holds; returns the time."""
        if not self.kube.wait_for(predicate, timeout):
            raise TimeoutError(f"{what} not within {timeout:g} s\n{self.bot.worker_log()[-3000:]}")
        return time.time()

    def idle(self, timeout: float = 60) -> None:
        """Wait until the worker has no queued or running job (scheduled ones may remain)."""
        from rq import Queue
        from rq.registry import StartedJobRegistry

        from bot.queue import QUEUE_NAME

        queue = Queue(QUEUE_NAME, connection=self.bot.redis)
        started = StartedJobRegistry(queue=queue)
        wait_for(lambda: queue.count == 0 and started.count == 0, timeout, "an idle worker", 0.02)


@contextmanager
def bot_world(tmp: Path, redis_url: str, files: dict[str, str], *,
              kube_ready_delay: float = 0.2, env: dict[str, str] | None = None) -> Iterator[BotWorld]:
    """Start the fakes and the in-process webhook app; the caller starts workers."""
    from tests.e2e.world import World
    from tests.harness.bot import BotHarness
    from tests.harness.github import FakeGitHub
    from tests.harness.gitrepos import GitHttpServer, make_remote
    from tests.harness.kube import FakeKube

    with ExitStack() as stack:
        kube = FakeKube(ready_delay=kube_ready_delay).start()
        stack.callback(kube.stop)
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
        # Jobs run in this process too (scale): the cluster adapter reads $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(kubeconfig)
        gh = FakeGitHub().start()
        stack.callback(gh.stop)
        gh.add_repo(REPO)
        gh.add_token(GH_TOKEN, "coalmine-bot")
        remote = make_remote(tmp / "repos", "gitops", files)
        http = stack.enter_context(
            GitHttpServer(tmp / "repos", username="x-access-token", password=GH_TOKEN))
        bot = BotHarness(tmp, redis_url, {
            "GITHUB_WEBHOOK_SECRET": GH_SECRET,
            "GITHUB_TOKEN": GH_TOKEN,
            "GITHUB_API_URL": gh.url,
            "GITHUB_BOT_LOGIN": "coalmine-bot",
            "KUBECONFIG": str(kubeconfig),
            "COALMINE_LOG_LEVEL": "INFO",
            **(env or {}),
        })
        stack.callback(bot.stop)
        yield BotWorld(World(bot, remote, http, "github", github=gh), kube, tmp)
