"""The operator CLI on rollouts made by the real flow: `coalmine get` reads them from Redis,
`promote`/`abort`/`retry`/`pause`/`resume` steer them through a worker like PR commands, and
the PR comment and the history name the operator."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from tests.e2e import world as w
from tests.e2e.test_canary import MANUAL_STEPS, first_deploy
from tests.harness.bot import REPO_ROOT
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e


def cli_env(world: w.World) -> dict[str, str]:
    """What an operator's shell holds: the bot's own settings (REDIS_URL, credentials)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(REPO_ROOT),
            "PYTHONPATH": str(REPO_ROOT), **world.bot.env}


def coalmine(world: w.World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120, check=False,
                          env=cli_env(world))


def repo_arg(world: w.World) -> str:
    return f"{world.forge}:{w.REPO}"


def rollout(world: w.World) -> dict:
    done = coalmine(world, "get", "rollout", repo_arg(world), "web", "--output", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def paused_release(world: w.World, image: str) -> tuple[int, str]:
    first_deploy(world, MANUAL_STEPS)
    number, sha = w.release(world, image, f"Release {image}")

    def paused() -> bool:
        # Under load the merge job may not have saved the rollout at the first look: `get`
        # then says there is none, which is "not yet", not a failure.
        done = coalmine(world, "get", "rollout", repo_arg(world), "web", "--output", "json")
        if done.returncode != 0 and "no rollout of 'web'" in done.stderr:
            return False
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        return found["phase"] == "Paused" and found["revision"] == sha

    wait_until(paused, 60, 0.2)
    return number, sha


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    return request.getfixturevalue(f"{request.param}_world")


def test_get_then_promote_from_the_cli_is_recorded_as_the_operator(world, fake_kube):
    number, sha = paused_release(world, "registry.example/web:7.0")

    listed = coalmine(world, "get", "rollouts")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["REPO", "APP", "PR", "PHASE", "STEP", "WEIGHT", "AGE"]
    assert row.split()[:6] == [repo_arg(world), "web", f"#{number}", "Paused", "2/2", "50%"]
    rows = json.loads(coalmine(world, "get", "rollouts", "--output", "json").stdout)
    assert [(r["repo"], r["app"], r["pr"], r["phase"]) for r in rows] == [
        (w.REPO, "web", number, "Paused")]

    shown = coalmine(world, "get", "rollout", repo_arg(world), "web")
    assert "Phase:     Paused" in shown.stdout
    assert " 1. setWeight 50" in shown.stdout and " 2. pause {}" in shown.stdout

    done = coalmine(world, "promote", repo_arg(world), "web", "--as", "alice")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("web: Paused (step 2/2, canary 50%) → ")
    assert "promoted" in done.stdout and "— by alice (CLI)" in done.stdout

    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "success" and status["description"] == "promoted"
    assert w.image_of(fake_kube, "web") == "registry.example/web:7.0"
    body = w.wait_comment(world, number, "CLI")["body"].replace("\\", "")
    assert "by @alice (CLI)" in body
    history = rollout(world)["history"]
    assert any(e["kind"] == "promoted" and e["actor"] == "alice (CLI)" for e in history)
    assert coalmine(world, "get", "rollouts").stdout.strip() == "No active rollouts."


def test_pause_resume_abort_retry_and_a_refusal(github_world, fake_kube):
    world = github_world
    number, sha = paused_release(world, "registry.example/web:8.0")
    repo = w.REPO  # github: is assumed

    # The repository as an operator may type it: github: assumed, any case.
    assert coalmine(world, "pause", "Acme/GitOps", "web", "--as", "carol").returncode == 0
    assert rollout(world)["paused_by"] == "carol (CLI)"
    assert coalmine(world, "resume", repo, "web", "--as", "carol").returncode == 0
    assert rollout(world)["paused_by"] is None
    comments_before = len(w.comments(world, number))
    refused = coalmine(world, "resume", repo, "web", "--as", "carol")
    assert refused.returncode == 1
    assert "resume changed nothing: not paused by a user" in refused.stderr
    assert len(w.comments(world, number)) == comments_before  # told here, not on the PR

    aborted = coalmine(world, "abort", repo, "web", "--as", "bob")
    assert aborted.returncode == 0, aborted.stderr
    status = w.final_status(world, sha, timeout=90)
    assert status["state"] == "failure" and "bob (CLI)" in status["description"]
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"
    assert rollout(world)["phase"] == "Aborted"

    retried = coalmine(world, "retry", repo, "web", "--as", "bob")
    assert retried.returncode == 0, retried.stderr
    wait_until(lambda: w.image_of(fake_kube, "web-canary") == "registry.example/web:8.0", 30,
               0.05)
    info = rollout(world)
    assert info["attempt"] == 2 and info["phase"] in ("Progressing", "Paused")
    assert any(e["kind"] == "retried" and e["actor"] == "bob (CLI)" for e in info["history"])


def test_watch_redraws_on_change_and_stops_on_ctrl_c(github_world):
    world = github_world
    paused_release(world, "registry.example/web:9.0")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "get", "rollout", w.REPO, "web", "--watch",
         "--interval", "0.2", "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env=cli_env(world))
    frames: queue.Queue[dict] = queue.Queue()
    threading.Thread(target=lambda: [frames.put(json.loads(line)) for line in watcher.stdout],
                     daemon=True).start()
    try:
        assert frames.get(timeout=30)["phase"] == "Paused"
        assert coalmine(world, "promote", w.REPO, "web", "--as", "dave").returncode == 0
        last = {}
        while last.get("phase") != "Promoted":  # each save the promotion makes is a frame
            last = frames.get(timeout=60)
        assert any(e["actor"] == "dave (CLI)" for e in last["history"])
    finally:
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(30)
    assert code == 0, watcher.stderr.read()


def test_a_command_no_worker_takes_is_withdrawn(github_world):
    world = github_world
    paused_release(world, "registry.example/web:10.0")
    world.bot.stop()  # every worker gone
    done = coalmine(world, "promote", w.REPO, "web", "--as", "erin", "--wait", "1")
    assert done.returncode == 1
    assert "no worker ran the command within 1 s, so it was withdrawn" in done.stderr
    world.bot.start_worker()
    # The worker is up and the rollout (still paused, waiting for /promote) stays put: the
    # withdrawn job never runs. A later command goes through.
    assert coalmine(world, "pause", w.REPO, "web", "--as", "erin").returncode == 0
    info = rollout(world)
    assert info["phase"] == "Paused" and info["step"] == 2
    assert not any(e["actor"] == "erin (CLI)" and e["kind"] == "promoted"
                   for e in info["history"])


def test_usage_errors(github_world):
    world = github_world
    no_redis = {k: v for k, v in cli_env(world).items() if k != "REDIS_URL"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "get", "rollouts"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
                          check=False, env=no_redis)
    assert done.returncode == 2 and "REDIS_URL is not set" in done.stderr
    bad_user = coalmine(world, "abort", w.REPO, "web", "--as", "@x\nevil")
    assert bad_user.returncode == 2 and "--as" in bad_user.stderr
    missing = coalmine(world, "get", "rollout", w.REPO, "nope")
    assert missing.returncode == 1 and "no rollout of 'nope'" in missing.stderr
    bad_repo = coalmine(world, "get", "rollout", "not-a-repo", "web")
    assert bad_repo.returncode == 2
    for command in ("render", "get", "promote", "abort", "retry", "pause", "resume", "doctor"):
        helped = coalmine(world, command, "--help")
        assert helped.returncode == 0 and "usage: coalmine " + command in helped.stdout
