"""Every Redis key Coalmine writes, in one place (RQ's own `rq:*` keys aside).

The adapters that read and write these keys (the rollout store, the outbox, the comment, leases,
tenancy pins, the queue, the deployed markers) import their names from here, so the whole key
space can be read, audited and migrated from one page (docs/contracts.md describes each value).
A use case or the edge never spells a key (tests/unit/test_layers.py checks that nothing outside
this module does). Pure: names only, no Redis.
"""

from __future__ import annotations

import hashlib

from bot.refs import RepoRef

PREFIX = "coalmine:"

# -- rollouts (bot/rollout/store.py) ------------------------------------------------------------
ROLLOUT_PREFIX = f"{PREFIX}rollout:"
ROLLOUTS_DUE = f"{PREFIX}rollouts:due"  # zset: rollout key → when it needs a tick
ROLLOUTS_ACTIVE = f"{PREFIX}rollouts:active"  # set of unfinished rollout keys
ROLLOUTS_UNREPORTED = f"{PREFIX}rollouts:unreported"  # zset: "key\nrevision\nseq" → saved at
ROLLOUTS_RECENT = f"{PREFIX}rollouts:recent"  # zset: rollout key → last saved at (dashboard)


def rollout(forge: str, repo: str, app: str) -> str:
    """An app's rollout record; the keys below hang off it."""
    return f"{ROLLOUT_PREFIX}{forge}:{repo}:{app}"


def parse_rollout(key: str) -> tuple[str, str, str] | None:
    """(forge, repository, app) of a `rollout` key, for the log lines of jobs that are handed
    only the key; None for anything else. App names are DNS labels, so the last colon ends the
    repository."""
    if not key.startswith(ROLLOUT_PREFIX):
        return None
    forge, _, rest = key.removeprefix(ROLLOUT_PREFIX).partition(":")
    repo, _, app = rest.rpartition(":")
    return (forge, repo, app) if forge and repo and app else None


def rollout_lock(key: str) -> str:
    return f"{key}:lock"


def rollout_seq(key: str) -> str:
    return f"{key}:seq"


def rollout_final(key: str, revision: str) -> str:
    return f"{key}:final:{revision}"


def rollout_reported(key: str, revision: str) -> str:
    return f"{key}:reported:{revision}"


def aborted_template(key: str) -> str:
    return f"{key}:aborted-template"


def aborted_by(key: str) -> str:
    return f"{key}:aborted-by"


def held(key: str) -> str:
    return f"{key}:held"


def held_prs(key: str) -> str:
    return f"{key}:held-prs"


def report_lock(forge: str, repo: str, number: int) -> str:
    return f"{PREFIX}report:{forge}:{repo}:{number}"


def pr_rollouts(forge: str, repo: str, number: int) -> str:
    return f"{PREFIX}pr-rollouts:{forge}:{repo}:{number}"


# -- the PR comment (bot/report/comment.py) and the outbox (bot/report/outbox_store.py) --------


def pr_sections(repo: RepoRef, number: int) -> str:
    return f"{PREFIX}pr:{repo.forge}:{repo.full_name}:{number}:sections"


def pr_posted_comments(repo: RepoRef, number: int) -> str:
    return f"{PREFIX}pr:{repo.forge}:{repo.full_name}:{number}:posted"


def pr_lock(repo: RepoRef, number: int) -> str:
    return f"{PREFIX}pr-lock:{repo.forge}:{repo.full_name}:{number}"


def desired_status(repo: RepoRef, sha: str) -> str:
    return f"{PREFIX}desired-status:{repo.forge}:{repo.full_name}:{sha}"


def posted_status(repo: RepoRef, sha: str) -> str:
    return f"{PREFIX}posted-status:{repo.forge}:{repo.full_name}:{sha}"


def status_lock(repo: RepoRef, sha: str) -> str:
    return f"{PREFIX}status-lock:{repo.forge}:{repo.full_name}:{sha}"


def comment_at(repo: RepoRef, number: int) -> str:
    return f"{PREFIX}comment-at:{repo.forge}:{repo.full_name}:{number}"


# -- check runs with buttons (bot/report/check_runs.py; GitHub App mode) -----------------------


def pr_check_runs(repo: RepoRef, number: int) -> str:
    """Hash: app → the PR's check run of that app (id, commit, digest of what was posted)."""
    return f"{PREFIX}pr:{repo.forge}:{repo.full_name}:{number}:check-runs"


def pr_check_runs_lock(repo: RepoRef, number: int) -> str:
    return f"{PREFIX}check-runs-lock:{repo.forge}:{repo.full_name}:{number}"


def check_runs_refused(repo: RepoRef) -> str:
    """Set while the forge refuses (403) Coalmine's check runs in the repository, e.g. an App
    installed without the Checks permission: statuses only until it expires."""
    return f"{PREFIX}check-runs-refused:{repo.forge}:{repo.full_name}"


def check_run_target(forge: str, run_id: int) -> str:
    """What a check run's buttons steer (repository, PR, commit, rollout key), by its id: the
    click's payload names only the id, and nothing else in it is believed."""
    return f"{PREFIX}check-run:{forge}:{run_id}"


# -- merges (bot/services.py ports, bot/deployments.py) ----------------------------------------


def deployed(forge: str, repo_id: int, branch: str) -> str:
    """The newest merge commit of the branch that a merge job processed, per repository id."""
    return f"{PREFIX}deployed:{forge}:{repo_id}:{branch}"


def merge_lock(forge: str, repo_id: int, branch: str) -> str:
    return f"{PREFIX}merge:{forge}:{repo_id}:{branch}"


def deployment(forge: str, repo: str, sha: str, app: str) -> str:
    return f"{PREFIX}deployment:{forge}:{repo}:{sha}:{app}"


DEPLOYMENTS_RECENT = f"{PREFIX}deployments:recent"  # zset: deployment key → saved at


# -- tenancy pins (bot/tenancy.py) ---------------------------------------------------------------


def repo_pins(forge: str) -> str:
    return f"{PREFIX}repo-pins:{forge}"  # hash: repository id → entry key


def repo_names(forge: str) -> str:
    return f"{PREFIX}repo-names:{forge}"  # hash: casefolded name of an exact entry → id


# -- jobs (bot/queue.py, bot/leases.py) ----------------------------------------------------------
SCHEDULED = f"{PREFIX}scheduled"  # zset: job (function and arguments) → due time
LEASES = f"{PREFIX}leases"  # hash: lease id → the leased job


def delivery(forge: str, delivery_id: str) -> str:
    """The claim of a webhook delivery id (dedupe)."""
    return f"{PREFIX}delivery:{forge}:{delivery_id[:200]}"


def lease_alive(lease_id: str) -> str:
    return f"{PREFIX}lease-alive:{lease_id}"


def lease_attempts(payload: str) -> str:
    return f"{PREFIX}lease-attempts:{hashlib.sha256(payload.encode()).hexdigest()}"


# -- the CI gate (handlers/gate.py) --------------------------------------------------------------
GATES_WAITING = f"{PREFIX}gates:waiting"  # hash: gate_slot key → the waiting merge (JSON)


def gate_slot(forge: str, repo_id: int, branch: str) -> str:
    """The one merge of a deploy branch waiting for its CI checks (a newer one replaces it)."""
    return f"{PREFIX}gate:{forge}:{repo_id}:{branch}"


def gate_pr(forge: str, repo: str, number: int) -> str:
    """The gated merge of a PR (waiting, failed or timed out), for `/deploy`."""
    return f"{PREFIX}gate-pr:{forge}:{repo}:{number}"


def gate_override(forge: str, repo_id: int, sha: str) -> str:
    """Who overrode the gate of a merge commit with `/deploy`, and when."""
    return f"{PREFIX}gate-override:{forge}:{repo_id}:{sha}"


# -- drift detection (handlers/drift.py) ---------------------------------------------------------
DRIFT_WATCH = f"{PREFIX}drift:watch"  # hash: "forge:repo id:branch" → the last deployed merge
DRIFT_SWEEP = f"{PREFIX}drift:sweep"  # claim: one worker starts the periodic checks


def drift_state(forge: str, repo: str, app: str) -> str:
    """The app's last drift result and its selfHeal backoff."""
    return f"{PREFIX}drift:{forge}:{repo}:{app}"


DRIFT_COUNTS = f"{PREFIX}drift:counts"  # hash: "repo\napp" → drifted objects (the gauge)


# -- the dashboard's login (bot/dashboard/throttle.py) -------------------------------------------
def login_failures(client: str) -> str:
    """Wrong tokens given from one client address in the current window. The address is hashed:
    it may come from a header, and a key's length must not be the client's choice."""
    return f"{PREFIX}dashboard:login-failures:{hashlib.sha256(client.encode()).hexdigest()[:32]}"


# -- PR comment commands (handlers/commands.py) ---------------------------------------------------
def command_claim(forge: str, comment_id: int) -> str:
    """Taken when a comment's commands run: the same comment delivered again under another
    delivery id (a repository and an organisation hook both pointing here, a replayed signed
    body) is not run twice. Comment and note ids are unique across a forge."""
    return f"{PREFIX}command:{forge}:{comment_id}"
