"""The worker's probes, as deploy/base/worker.yaml runs them, read RQ's heartbeat key of this host's worker in a real Redis, next to a real `coalmine worker`: healthy
while it runs, unhealthy once it has stopped or when only a dead process's key is left; with
Redis unreachable, liveness passes (a restart cannot fix Redis) and readiness fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from redis import Redis
from rq import Worker

from bot import probes
from tests.harness.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
COALMINE = str(Path(sys.executable).with_name("coalmine"))
(WORKER,) = yaml.safe_load((ROOT / "deploy" / "base" / "worker.yaml").read_text())["spec"][
    "template"]["spec"]["containers"]


def probe(redis_url: str, *args: str, command: list[str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """`command` is a probe's from the manifest; the default, `python -m bot.probes worker`."""
    python, *rest = command or ["python", "-m", "bot.probes", "worker"]
    assert python == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_")}
    env.update({"REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, *rest, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def registered(redis: Redis) -> list[Worker]:
    return [w for w in Worker.all(connection=redis) if w.hostname == socket.gethostname()]


@pytest.fixture
def worker(tmp_path, redis_url, redis_client):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COALMINE_", "GITHUB_"))}
    env.update({"REDIS_URL": redis_url, "COALMINE_DATA_DIR": str(tmp_path / "data"),
                "COALMINE_REPOS": "acme/gitops=shop", "COALMINE_WORKER_METRICS_PORT": "0",
                "PYTHONPATH": str(ROOT)})
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen([COALMINE, "worker"], env=env, cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: registered(redis_client), 60, 0.1, "the worker did not register")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(60)
        log.close()


def test_a_running_worker_is_alive_and_ready_and_a_stopped_one_is_neither(worker, redis_url,
                                                                           redis_client):
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        done = probe(redis_url, command=WORKER[name]["exec"]["command"])
        assert done.returncode == 0, done.stderr
        assert f"(pid {worker.pid}) is idle" in done.stdout
    worker.terminate()  # a warm shutdown: RQ deletes its key
    worker.wait(60)
    assert registered(redis_client) == []
    done = probe(redis_url)
    assert done.returncode == 1
    assert f"no RQ worker of host {socket.gethostname()} holds a live heartbeat key" \
        in done.stderr


def test_the_key_of_a_killed_worker_is_not_a_heartbeat(worker, redis_url, redis_client):
    worker.kill()  # SIGKILL: RQ's key stays until its TTL runs out
    worker.wait(60)
    assert [w.pid for w in registered(redis_client)] == [worker.pid]
    done = probe(redis_url)
    assert done.returncode == 1
    assert "(1 registered here without a live process)" in done.stderr


def test_redis_unreachable_fails_readiness_but_not_liveness():
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    alive = probe(nowhere)
    assert alive.returncode == 0
    assert "Redis unreachable" in alive.stdout and "would not bring Redis back" in alive.stdout
    ready = probe(nowhere, "--ready")
    assert ready.returncode == 1
    assert ready.stderr.startswith("worker: Redis unreachable")


@pytest.mark.parametrize(("cmdline", "role"), [
    (["/usr/local/bin/python", "/usr/local/bin/coalmine", "worker"], "worker"),
    (["coalmine", "worker", "--burst"], "worker"),
    (["python", "-m", "bot.cli", "worker"], "worker"),
    (["/usr/local/bin/python", "/usr/local/bin/coalmine", "serve"], "web"),
    (["gunicorn: master [bot.wsgi:create_app()]"], "web"),
    (["/sbin/init"], "web"),
    ([], "web"),
])
def test_the_image_healthcheck_probes_the_process_the_container_runs(cmdline, role):
    assert probes.role_of(cmdline) == role
