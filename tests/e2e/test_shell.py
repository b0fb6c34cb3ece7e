"""The rollout shell under concurrency, end to end (issue 9): a metric that never answers holds
neither the rollout nor the worker, health re-polls are never lost, and an aborted template
that lands again can be retried from a PR."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.e2e import world as w
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

HANG_S = 30  # the longest a provider may wait (bot.analysis.providers.MAX_TIMEOUT_S)
MANUAL_STEPS = "        - setWeight: 50\n        - pause: {}\n"


class SilentServer:
    """Accepts TCP connections on loopback and never answers: a metric endpoint that hangs."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def canary_config(steps: str, deadline: int = 30) -> str:
    return f"""apps:
  - name: web
    path: deploy/web
    namespace: shop
    healthTimeoutSeconds: 20
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: {deadline}
      steps:
{steps}"""


def web_template(port: int) -> str:
    return f"""apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: hanging
spec:
  metrics:
    - name: hanging
      interval: 1s
      count: 3
      successCondition: result == true
      provider:
        web:
          url: http://127.0.0.1:{port}/ok
          timeoutSeconds: {HANG_S}
"""


def test_abort_takes_effect_while_a_metric_hangs(github_world, fake_kube, silent):
    world = github_world
    world.bot.env["COALMINE_EGRESS_ALLOW"] = f"http://127.0.0.1:{silent.port}"
    steps = ("        - setWeight: 34\n        - analysis:\n"
             "            templates: [{templateName: hanging}]\n")
    w.set_up(world, {".coalmine.yaml": canary_config(steps),
                     "deploy/web/analysis.yaml": web_template(silent.port)})
    number, sha = w.release(world, "registry.example/web:2.0", "Web 2.0")
    wait_until(lambda: silent.connections, 60, 0.05)  # a measurement is now in flight

    w.allow(world, "alice", "write")
    w.command(world, number, "/abort", "alice")
    # The metric would hang for HANG_S s: the abort must not wait for it.
    wait_until(lambda: w.image_of(fake_kube, "web-canary") is None, 5, 0.05,
               "the canary still runs 5 s after /abort")
    # The status is posted after the rollout's lock is released, so it may follow a moment later.
    status = w.final_status(world, sha, timeout=30)
    assert status["state"] == "failure" and "alice" in status["description"]
    assert w.image_of(fake_kube, "web") == "registry.example/web:1.0"


def test_canary_ready_after_seconds_moves_on_without_waiting_for_the_recheck(
        github_world, fake_kube):
    world = github_world
    fake_kube.ready_delay = 3.0  # pods become ready ~3 s after each change
    steps = "        - setWeight: 34\n        - setWeight: 67\n"
    w.set_up(world, {".coalmine.yaml": canary_config(steps, deadline=30)})
    _number, sha = w.release(world, "registry.example/web:3.0", "Web 3.0")
    # Each of the three waits for health (two steps, then completion) ends ~3 s after the
    # change; a lost re-poll would leave it to the 60 s re-check, past the 30 s deadline.
    status = w.final_status(world, sha, timeout=50)
    assert status["state"] == "success" and status["description"] == "promoted", status
    assert w.image_of(fake_kube, "web") == "registry.example/web:3.0"


def test_retry_on_a_later_pr_starts_the_re_landed_aborted_template(github_world, fake_kube):
    world = github_world
    w.set_up(world, {".coalmine.yaml": canary_config(MANUAL_STEPS)})
    w.allow(world, "alice", "write")
    aborted, aborted_sha = w.release(world, "registry.example/web:4.0", "Web 4.0")
    w.wait_comment(world, aborted, "**Paused**")
    w.command(world, aborted, "/abort", "alice")
    assert w.final_status(world, aborted_sha)["state"] == "failure"

    other, other_sha = w.release(world, "registry.example/web:5.0", "Web 5.0")
    w.wait_comment(world, other, "**Paused**")
    w.command(world, other, "/promote", "alice")
    assert w.final_status(world, other_sha)["description"] == "promoted"

    again, again_sha = w.release(world, "registry.example/web:4.0", "Web 4.0 again")
    held = w.final_status(world, again_sha)
    assert held["state"] == "success" and "held back" in held["description"], held
    assert w.image_of(fake_kube, "web-canary") is None

    w.command(world, again, "/retry", "alice")
    wait_until(lambda: w.image_of(fake_kube, "web-canary") == "registry.example/web:4.0", 30, 0.05)
    w.wait_comment(world, again, "**Paused**")
    w.command(world, again, "/promote", "alice")
    wait_until(lambda: w.latest_statuses(world, again_sha)["coalmine/web"]["description"]
               == "promoted", 60, 0.1)
    assert w.image_of(fake_kube, "web") == "registry.example/web:4.0"


def test_retry_on_the_aborting_pr_clears_the_hold(github_world, fake_kube):
    world = github_world
    w.set_up(world, {".coalmine.yaml": canary_config(MANUAL_STEPS)})
    w.allow(world, "alice", "write")
    aborted, aborted_sha = w.release(world, "registry.example/web:6.0", "Web 6.0")
    w.wait_comment(world, aborted, "**Paused**")
    w.command(world, aborted, "/abort", "alice")
    assert w.final_status(world, aborted_sha)["state"] == "failure"
    other, other_sha = w.release(world, "registry.example/web:7.0", "Web 7.0")
    w.wait_comment(world, other, "**Paused**")
    w.command(world, other, "/promote", "alice")
    assert w.final_status(world, other_sha)["description"] == "promoted"

    w.command(world, aborted, "/retry", "alice")
    wait_until(lambda: any("hold on the aborted version is cleared" in c["body"]
                           for c in w.comments(world, aborted)), 30, 0.1)
    # The next merge of that template runs its canary instead of being held back.
    _again, again_sha = w.release(world, "registry.example/web:6.0", "Web 6.0 again")
    wait_until(lambda: w.image_of(fake_kube, "web-canary") == "registry.example/web:6.0", 30, 0.05)
    assert w.latest_statuses(world, again_sha)["coalmine/web"]["state"] == "pending"


def test_merge_whose_worker_keeps_dying_is_given_up_and_the_pr_told(github_world, fake_kube):
    world = github_world
    world.bot.start_worker()
    # The ConfigMap's apply hangs, so each run of the merge job is still deploying when its
    # worker is killed (as an out-of-memory kill would).
    fake_kube.delay_next(20, 60.0, "PATCH", "configmaps/web-config")
    _number, sha, _ = w.merge(world, {"deploy/web/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: x\n")},
        "Poison")

    def starts() -> int:  # each run of the merge reaches the hanging apply of the ConfigMap
        return sum(r.method == "PATCH" and r.path.endswith("/configmaps/web-config")
                   for r in list(fake_kube.requests))

    for attempt in range(1, 4):
        wait_until(lambda attempt=attempt: starts() >= attempt, 60, 0.1,
                   f"run {attempt} of the merge never started")
        for proc in list(world.bot.workers):
            if proc.poll() is None:
                world.bot.kill_worker(proc)
        world.bot.start_worker()

    status = w.final_status(world, sha, context="coalmine/deploy", timeout=60)
    assert status["state"] == "failure"
    assert "given up after 3 attempts" in status["description"], status
    assert starts() == 3  # not a fourth time
    body = w.wait_comment(world, _number, "Merge given up")["body"]
    assert "worker" in body
