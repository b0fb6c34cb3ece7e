"""The Redis key formats are data: a key that changed between versions would orphan what an
earlier version stored (rollouts in flight, pins, dedupe claims). They are pinned here."""

from __future__ import annotations

from bot import keys
from bot.refs import RepoRef

REPO = RepoRef("github", "acme/gitops", "https://github.example/acme/gitops.git")
ROLLOUT = "coalmine:rollout:github:acme/gitops:web"


def test_key_formats_are_unchanged():
    assert keys.rollout("github", "acme/gitops", "web") == ROLLOUT
    assert [keys.rollout_lock(ROLLOUT), keys.rollout_seq(ROLLOUT), keys.held(ROLLOUT),
            keys.held_prs(ROLLOUT), keys.aborted_template(ROLLOUT),
            keys.aborted_by(ROLLOUT)] == [
        f"{ROLLOUT}:lock", f"{ROLLOUT}:seq", f"{ROLLOUT}:held", f"{ROLLOUT}:held-prs",
        f"{ROLLOUT}:aborted-template", f"{ROLLOUT}:aborted-by"]
    assert keys.rollout_final(ROLLOUT, "abc") == f"{ROLLOUT}:final:abc"
    assert keys.rollout_reported(ROLLOUT, "abc") == f"{ROLLOUT}:reported:abc"
    assert (keys.ROLLOUTS_DUE, keys.ROLLOUTS_ACTIVE, keys.ROLLOUTS_UNREPORTED) == (
        "coalmine:rollouts:due", "coalmine:rollouts:active", "coalmine:rollouts:unreported")
    assert (keys.ROLLOUTS_RECENT, keys.DEPLOYMENTS_RECENT) == (
        "coalmine:rollouts:recent", "coalmine:deployments:recent")
    assert keys.report_lock("github", "acme/gitops", 7) == "coalmine:report:github:acme/gitops:7"
    assert keys.pr_rollouts("github", "acme/gitops", 7) == \
        "coalmine:pr-rollouts:github:acme/gitops:7"
    assert keys.pr_sections(REPO, 7) == "coalmine:pr:github:acme/gitops:7:sections"
    assert keys.pr_posted_comments(REPO, 7) == "coalmine:pr:github:acme/gitops:7:posted"
    assert keys.pr_lock(REPO, 7) == "coalmine:pr-lock:github:acme/gitops:7"
    assert keys.desired_status(REPO, "abc") == "coalmine:desired-status:github:acme/gitops:abc"
    assert keys.posted_status(REPO, "abc") == "coalmine:posted-status:github:acme/gitops:abc"
    assert keys.status_lock(REPO, "abc") == "coalmine:status-lock:github:acme/gitops:abc"
    assert keys.comment_at(REPO, 7) == "coalmine:comment-at:github:acme/gitops:7"
    assert keys.pr_check_runs(REPO, 7) == "coalmine:pr:github:acme/gitops:7:check-runs"
    assert keys.pr_check_runs_lock(REPO, 7) == "coalmine:check-runs-lock:github:acme/gitops:7"
    assert keys.check_run_target("github", 42) == "coalmine:check-run:github:42"
    assert keys.check_runs_refused(REPO) == "coalmine:check-runs-refused:github:acme/gitops"
    assert keys.command_claim("gitlab", 4711) == "coalmine:command:gitlab:4711"
    assert keys.deployed("github", 9, "main") == "coalmine:deployed:github:9:main"
    assert keys.merge_lock("github", 9, "main") == "coalmine:merge:github:9:main"
    assert keys.deployment("github", "acme/gitops", "abc", "web") == \
        "coalmine:deployment:github:acme/gitops:abc:web"
    assert keys.repo_pins("gitlab") == "coalmine:repo-pins:gitlab"
    assert keys.GATES_WAITING == "coalmine:gates:waiting"
    assert keys.gate_slot("github", 9, "main") == "coalmine:gate:github:9:main"
    assert keys.gate_pr("github", "acme/gitops", 7) == "coalmine:gate-pr:github:acme/gitops:7"
    assert keys.gate_override("github", 9, "abc") == "coalmine:gate-override:github:9:abc"
    assert (keys.DRIFT_WATCH, keys.DRIFT_SWEEP, keys.DRIFT_COUNTS) == (
        "coalmine:drift:watch", "coalmine:drift:sweep", "coalmine:drift:counts")
    assert keys.drift_state("github", "acme/gitops", "web") == \
        "coalmine:drift:github:acme/gitops:web"
    assert keys.repo_names("gitlab") == "coalmine:repo-names:gitlab"
    assert (keys.SCHEDULED, keys.LEASES) == ("coalmine:scheduled", "coalmine:leases")
    assert keys.delivery("github", "d" * 300) == "coalmine:delivery:github:" + "d" * 200
    assert keys.lease_alive("l1") == "coalmine:lease-alive:l1"
    assert keys.lease_attempts("p").startswith("coalmine:lease-attempts:")
    assert keys.login_failures("203.0.113.7") == \
        "coalmine:dashboard:login-failures:" + "fec52565aa0cf18f57d7cf5b3ac72850"


def test_a_rollout_key_is_read_back_into_forge_repository_and_app():
    assert keys.parse_rollout(ROLLOUT) == ("github", "acme/gitops", "web")
    nested = keys.rollout("gitlab", "group/sub/ops", "api")
    assert keys.parse_rollout(nested) == ("gitlab", "group/sub/ops", "api")
    assert keys.parse_rollout("coalmine:rollouts:due") is None
    assert keys.parse_rollout("coalmine:rollout:github:") is None
