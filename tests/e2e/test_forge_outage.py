"""A forge that refuses for a while: statuses and the comment still arrive once it answers."""

from __future__ import annotations

import pytest

from tests.e2e import world as w
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e


def test_statuses_and_comment_posted_after_github_outage(github_world, fake_kube):
    world = github_world
    # More 502s than the adapter's own retries (5 attempts): the first reports fail for real.
    world.github.fail_next(6, 502, match="/statuses/")
    world.github.fail_next(6, 502, match="/comments")
    world.bot.start_worker()
    number, sha, resp = w.merge(world, {"deploy/web/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: x\n"
    )}, "During an outage")
    assert resp.status_code == 202

    def final():
        status = w.latest_statuses(world, sha).get("coalmine/web")
        return status if status and status["state"] == "success" else None

    wait_until(final, 90, 0.2)
    w.wait_comment(world, number, "Health: ✅", timeout=90)
    refused = [c for c in world.github.calls if c.rejected_by == "fault"]
    assert len(refused) == 12
    assert "retrying in" in world.bot.worker_log()
