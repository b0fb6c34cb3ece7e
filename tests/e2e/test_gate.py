"""The CI gate end to end, on GitHub and GitLab: a merge waits for its CI checks (a pending
`coalmine/gate` status and a comment line naming them), deploys once they pass, stops when one
fails (naming it with its link), and `/deploy` by a permitted user overrides the gate."""

from __future__ import annotations

import pytest

from bot.report.markdown import escape
from tests.e2e import world as w
from tests.e2e.world import REPO, final_status, latest_statuses
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

GATED = w.PLAIN_CONFIG + """gate:
  require: [ci/build, CHECK]
  timeoutSeconds: 300
"""
GREEN = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: green\n"


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    world = request.getfixturevalue(f"{request.param}_world")
    world.bot.env["COALMINE_GATE_POLL"] = "0.3"  # re-read the checks often
    return world


class CI:
    """The repository's CI reporting on a commit, as each forge's CI does: on GitHub a commit
    status (ci/build) and an Actions check run ("test (3.11)"); on GitLab a job's status
    (ci/build) and the pipeline."""

    def __init__(self, world: w.World, sha: str) -> None:
        self.world, self.sha = world, sha
        self.second = "test (3.11)" if world.github else "pipeline"
        if world.github:
            world.github.add_status(REPO, sha, "ci/build", "pending",
                                    target_url="https://ci.example/build/1")
            self.run_id = world.github.add_check_run(REPO, sha, "test (3.11)",
                                                     status="in_progress")
        else:
            world.gitlab.add_job_status(REPO, sha, "ci/build", "running")
            self.pipeline = world.gitlab.add_pipeline(REPO, sha, "running")

    def build(self, state: str) -> None:
        if self.world.github:
            self.world.github.add_status(REPO, self.sha, "ci/build", state,
                                         target_url="https://ci.example/build/1")
        else:
            self.world.gitlab.add_job_status(REPO, self.sha, "ci/build",
                                             {"failure": "failed"}.get(state, state))

    def second_check(self, ok: bool) -> None:
        if self.world.github:
            self.world.github.set_check_run(REPO, self.run_id, status="completed",
                                            conclusion="success" if ok else "failure")
        else:
            self.world.gitlab.set_pipeline_status(REPO, self.pipeline,
                                                  "success" if ok else "failed")


def gated_merge(world: w.World, title: str) -> tuple[int, str, CI]:
    second = "test (3.11)" if world.github else "pipeline"
    number, sha, resp = w.merge(world, {
        ".coalmine.yaml": GATED.replace("CHECK", f'"{second}"'),
        "deploy/web/config.yaml": GREEN}, title)
    assert resp.status_code == 202
    return number, sha, CI(world, sha)


def wait_gate(world: w.World, sha: str, state: str, needle: str = "") -> dict:
    def found():
        status = latest_statuses(world, sha).get("coalmine/gate")
        return status if status and status["state"] == state and \
            needle in status["description"] else None

    try:
        return wait_until(found, 60, 0.1)
    except TimeoutError:
        raise AssertionError(f"no {state} coalmine/gate with {needle!r}: "
                             f"{latest_statuses(world, sha)}\n"
                             + world.bot.worker_log()[-4000:]) from None


def mode(fake_kube) -> str:
    return fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")["data"]["mode"]


def test_a_merge_waits_for_its_ci_checks_then_deploys(world, fake_kube):
    w.set_up(world, {})
    number, sha, ci = gated_merge(world, "Go green once CI passes")

    status = wait_gate(world, sha, "pending", "ci/build")
    assert ci.second in status["description"]
    body = w.wait_comment(world, number, "waiting for CI")["body"]
    assert "ci/build" in body and escape(ci.second) in body  # the comment's Markdown
    assert mode(fake_kube) == "blue"  # nothing applied while CI runs

    ci.build("success")
    wait_gate(world, sha, "pending", ci.second)  # the line now names only what is left
    assert mode(fake_kube) == "blue"
    ci.second_check(ok=True)

    assert wait_gate(world, sha, "success")["description"].startswith("CI gate passed")
    assert final_status(world, sha)["state"] == "success"
    assert mode(fake_kube) == "green"
    # Coalmine's own statuses never count: its pending coalmine/gate did not hold itself.
    assert w.wait_comment(world, number, "CI gate passed")


def test_a_failed_check_blocks_the_merge_and_deploy_overrides_it(world, fake_kube):
    w.set_up(world, {})
    number, sha, ci = gated_merge(world, "Go green despite CI")
    wait_gate(world, sha, "pending")
    ci.second_check(ok=True)
    ci.build("failure")

    status = wait_gate(world, sha, "failure", "ci/build")
    assert "nothing deployed" in status["description"]
    body = w.wait_comment(world, number, "CI gate failed")["body"]
    if world.github:
        assert escape("https://ci.example/build/1") in body  # the failed check, its link
    else:
        assert escape(f"{world.gitlab.url}/{REPO}/-/jobs/") in body
    assert "/deploy" in body
    assert mode(fake_kube) == "blue"
    assert "coalmine/web" not in latest_statuses(world, sha)

    # Someone without the permission /promote needs is refused; a writer overrides.
    w.allow(world, "mallory", "read")
    w.command(world, number, "/deploy", "mallory")
    wait_until(lambda: any("your command was not run" in c["body"]
                           for c in w.comments(world, number)), 30, 0.1)
    assert mode(fake_kube) == "blue"
    w.allow(world, "alice", "write")
    w.command(world, number, "/deploy", "alice")

    assert final_status(world, sha)["state"] == "success"
    assert mode(fake_kube) == "green"
    body = w.wait_comment(world, number, "overrode the CI gate")["body"]
    assert "@alice" in body and "UTC" in body
    assert wait_gate(world, sha, "success", "overridden by @alice")
    w.wait_log(world, "overridden by @alice with /deploy")
