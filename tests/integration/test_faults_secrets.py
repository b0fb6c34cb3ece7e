"""Secrets stay out of everything Coalmine writes: one merge through the real bot (Flask app, RQ
worker subprocess, git over HTTP with the token, fake GitHub and Kubernetes), then the worker
log and every status and comment the forge recorded are searched for the credentials."""

from __future__ import annotations

import base64

import pytest

from tests.e2e import world as w
from tests.e2e.world import github_world, gitops_remote  # noqa: F401 - fixtures
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

CONFIG_CHANGE = {
    "deploy/web/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: green\n"
    )
}


def _forms(secret: str) -> list[str]:
    """The secret as written, and as it would look in a Basic auth header."""
    return [secret, base64.b64encode(f"x-access-token:{secret}".encode()).decode()]


def test_no_secret_in_worker_log_statuses_or_comments(github_world, fake_kube):  # noqa: F811
    world = github_world
    world.bot.start_worker()

    number, sha, resp = w.merge(world, CONFIG_CHANGE, "Switch web to green")
    assert resp.status_code == 202, resp.get_json()

    def finished():
        status = w.latest_statuses(world, sha).get("coalmine/web")
        return status if status and status["state"] != "pending" else None

    status = wait_until(finished, 60, 0.1, message="no final coalmine/web status")
    assert status["state"] == "success", (status, world.bot.worker_log()[-3000:])
    w.wait_comment(world, number, "Health: ✅")  # the comment is the last thing the job writes
    comments = w.comments(world, number)

    log = world.bot.worker_log()
    assert sha[:7] in log, "the worker log does not cover this merge"
    written = {
        "worker log": log,
        "statuses": repr(w.all_statuses(world, sha)),
        "comments": "\n".join(c["body"] for c in comments),
    }
    for secret in (w.GH_TOKEN, w.GH_SECRET, fake_kube.token):
        for form in _forms(secret):
            for where, text in written.items():
                assert form not in text, f"a secret ({form[:6]}…) appears in the {where}"
