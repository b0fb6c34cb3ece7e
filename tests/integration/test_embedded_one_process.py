"""Without REDIS_URL, no way of starting the web app splits the embedded queue across
processes (issue 12: two gunicorn workers made two queues, and one delivery id was accepted
twice). Real gunicorn and `coalmine serve` processes: gunicorn asked for two workers, directly
or through WEB_CONCURRENCY, or preloading the app into forked workers, stops with one line
saying why; `coalmine serve` asked for three runs one worker and says so; a second server on
the same data directory is refused while the first keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
COALMINE = str(Path(sys.executable).with_name("coalmine"))
ONE_PROCESS = "the embedded queue (no REDIS_URL) runs in one process"


def env_for(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COALMINE_", "GITHUB_", "GITLAB_", "PROMETHEUS_MULTIPROC"))
           and k not in ("REDIS_URL", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")}
    env.update({"COALMINE_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), **extra})
    return env


def gunicorn(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GUNICORN, "--bind", f"127.0.0.1:{free_port()}", *args,
                           "bot.wsgi:create_app()"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60, check=False)


@pytest.mark.parametrize(("args", "extra"), [
    (["--workers", "2"], {}),
    ([], {"WEB_CONCURRENCY": "2"}),
], ids=["workers-flag", "web-concurrency"])
def test_gunicorn_with_two_workers_stops_with_one_line(tmp_path, args, extra):
    done = gunicorn(args, env_for(tmp_path / "data", **extra))
    assert done.returncode == 3  # the arbiter halts on a worker that cannot boot
    (line,) = [line for line in done.stderr.splitlines() if ONE_PROCESS in line]
    assert line.startswith("coalmine web: ")
    assert "`coalmine serve` does" in line and "set REDIS_URL" in line
    assert "Traceback" not in done.stderr


def test_gunicorn_preloading_the_embedded_app_stops_with_one_line(tmp_path):
    done = gunicorn(["--workers", "1", "--preload"], env_for(tmp_path / "data"))
    assert done.returncode == 3
    assert ("coalmine web: the embedded queue (no REDIS_URL) cannot be copied into a forked "
            "process (gunicorn --preload)") in done.stderr
    assert "Traceback" not in done.stderr


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_coalmine_serve_runs_one_worker_and_a_second_server_is_refused(tmp_path):
    port = free_port()
    env = env_for(tmp_path / "data", WEB_CONCURRENCY="3")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([COALMINE, "serve", "--bind", f"127.0.0.1:{port}"], env=env,
                                 cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(url), 60, 0.1, "coalmine serve did not start")
        assert len(workers_of(serve.pid)) == 1  # `serve` became the gunicorn arbiter
        second = subprocess.run([COALMINE, "serve", "--bind", f"127.0.0.1:{free_port()}"],
                                env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=90, check=False)
        assert second.returncode == 3
        assert f"{ONE_PROCESS}, and process {workers_of(serve.pid)[0]} already runs it" \
            in second.stderr
        assert answers(url)  # the first one still serves
        probe = subprocess.run([sys.executable, "-m", "bot.probes", "web"], env={
            **env, "PORT": str(port)}, capture_output=True, text=True, timeout=30, check=False)
        assert (probe.returncode, probe.stdout) == (0, f"web: {url}/livez answered 200\n")
    finally:
        serve.terminate()
        serve.wait(30)
    assert ("coalmine serve: starting 1 worker, not 3 (WEB_CONCURRENCY): without REDIS_URL "
            "the embedded queue lives in one process") in log.read_text()
