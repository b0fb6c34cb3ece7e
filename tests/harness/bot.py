"""The bot under test: the real Flask app in-process and real RQ workers as subprocesses.

Workers are separate `coalmine worker` processes configured only through the environment, as in
production, so a test can SIGKILL one mid-rollout and start another. Their output goes to a log
file the tests can search (for secrets, say).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis import Redis

from bot import services
from bot.config import load_settings
from bot.queue import RQJobQueue
from bot.wsgi import app_for
from tests.harness import payloads

REPO_ROOT = Path(__file__).resolve().parents[2]


class BotHarness:
    def __init__(self, tmp_path: Path, redis_url: str, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = {
            "REDIS_URL": redis_url,
            "COALMINE_DATA_DIR": str(tmp_path / "data"),
            "COALMINE_PUBLIC_URL": "https://coalmine.test",
            "COALMINE_LOG_LEVEL": "DEBUG",
            # Deny by default: the one repository the e2e world serves, into its namespace.
            "COALMINE_REPOS": "acme/gitops=shop",
            # Several workers (and test runs) share the host: no fixed metrics port.
            "COALMINE_WORKER_METRICS_PORT": "0",
            **env,
        }
        self.settings = load_settings(self.env)
        self.redis = Redis.from_url(redis_url)
        self.services = services.install(
            services.Services(self.settings, self.redis, RQJobQueue(self.redis))
        )
        self.client = app_for(self.services).test_client()
        self.log_path = tmp_path / "worker.log"
        self.workers: list[subprocess.Popen] = []

    # -- webhooks ----------------------------------------------------------------------------
    def github(
        self, payload: dict[str, Any], event: str = "pull_request", delivery: str | None = None
    ) -> Any:
        body = payloads.dumps(payload)
        headers = payloads.github_headers(body, self.env["GITHUB_WEBHOOK_SECRET"], event, delivery)
        return self.client.post("/webhooks/github", data=body, headers=headers)

    def gitlab(
        self, payload: dict[str, Any], event: str = "Merge Request Hook", key: str | None = None
    ) -> Any:
        body = payloads.dumps(payload)
        headers = payloads.gitlab_headers(self.env["GITLAB_WEBHOOK_TOKEN"], event, key)
        return self.client.post("/webhooks/gitlab", data=body, headers=headers)

    # -- workers -----------------------------------------------------------------------------
    def start_worker(self, cwd: Path = REPO_ROOT) -> subprocess.Popen:
        """A `coalmine worker` process; `cwd` is where an operator would have started it."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "GITLAB_", "COALMINE_", "KUBECONFIG"))
        }
        env.update(self.env)
        env["PYTHONPATH"] = str(REPO_ROOT)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    def worker_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
