"""The revert PR opened after an abort, so that Git describes what runs again.

After an abort the cluster runs the stable version while the deploy branch describes the new
one; the revert PR is how Git catches up. It is opened once per aborted revision (an open PR of
the same branch is reused, a closed one is not), retried with growing delays while the forge or
git is away, and its outcome is shown in the rollout's section of the PR comment.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from bot import services
from bot.forge.base import ForgeError, PullRequest
from bot.gitrepo import GitError, RevertResult, repo_key
from bot.leases import GivenUp, leased
from bot.logs import revision_job
from bot.refs import RepoRef
from bot.report.markdown import escape
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord, RolloutStore
from handlers.rollout_report import report

log = logging.getLogger(__name__)
REVERT_RETRY_S = 30.0
REVERT_ATTEMPTS = 8
REVERT_LABEL = "coalmine-revert"


class RevertForge(Protocol):
    """The forge calls a revert PR needs (`bot.forge.base.Forge` has them all)."""

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None: ...

    def authenticated_clone_url(self, repo: RepoRef) -> str: ...

    def comment(self, repo: RepoRef, number: int, body: str) -> int: ...

    def open_pull_request(self, repo: RepoRef, head: str, base: str, title: str, body: str,
                          labels: list[str]) -> PullRequest: ...


class RevertBranches(Protocol):
    """Pushes the revert branch (`bot.gitrepo.GitMirrors`)."""

    def create_revert_branch(self, repo_key: str, clone_url: str, base_branch: str,
                             merge_sha: str, branch_name: str, author_name: str,
                             author_email: str) -> RevertResult: ...


@revision_job
def open_revert(key: str, revision: str, attempt: int = 0) -> None:
    """RQ job: push `coalmine/revert-<sha>` reverting the merge and open a PR for it, once.

    Failures (forge or git away) are retried with growing delays and shown in the comment;
    an earlier revert PR that was closed unmerged does not count as opened.
    """
    svc = services.current()
    store = RolloutStore(svc.redis)
    record = store.load(key)
    if record is None or record.state.revision != revision:
        return
    try:
        with leased(svc.redis, open_revert, key, revision, attempt):
            outcome = revert_pr(svc.forge(record.context.repo), svc.mirrors, record)
    except GivenUp as exc:  # its worker died each time: shown, not tried again
        outcome = {"state": "failed", "reason": str(exc)[:300]}
    except (ForgeError, GitError, OSError) as exc:  # report it and try again later
        reason = services.redactor().redact(f"{type(exc).__name__}: {exc}")
        log.warning("revert PR for %s failed (attempt %d): %s", revision[:7], attempt + 1, reason)
        outcome = {"state": "failed", "reason": reason[:300]}
        if attempt + 1 < REVERT_ATTEMPTS:
            svc.queue.enqueue_at(time.time() + REVERT_RETRY_S * 2**attempt, open_revert, key,
                                 revision, attempt + 1)
    with store.locked(key):
        record = store.load(key)
        if record is None or record.state.revision != revision:
            return
        record.context.revert = outcome
        store.save(key, record, engine.next_wakeup(record.state))
    report(svc, key, record, post_status=False)  # the forge is told after the lock


def revert_pr(forge: RevertForge, mirrors: RevertBranches,
              record: RolloutRecord) -> dict[str, Any]:
    """Open the revert PR of `record`'s aborted revision (or find the one already open); the
    outcome as the PR comment shows it."""
    ctx, state = record.context, record.state
    revision = state.revision
    repo = ctx.repo
    branch = f"coalmine/revert-{revision[:7]}"
    existing = forge.find_pull_request(repo, branch)
    if existing is not None and existing.state != "closed":
        return {"state": "opened", "url": existing.url, "number": existing.number}
    result = mirrors.create_revert_branch(
        repo_key(repo), forge.authenticated_clone_url(repo), ctx.base_branch, revision,
        branch, "Coalmine", "coalmine@users.noreply.github.com")
    if result.conflict:
        files = ", ".join(f"`{f}`" for f in result.files) or "unknown files"
        forge.comment(repo, ctx.number, (
            f"Coalmine could not open a revert PR for {revision[:7]}: reverting it conflicts "
            f"with later changes on `{ctx.base_branch}` in {files}. The cluster runs the "
            "stable version; please revert the change by hand so Git matches it again."))
        return {"state": "conflict", "files": list(result.files)}
    if result.outcome == "nothing_to_revert":
        return {"state": "not needed", "reason": "the change is already undone"}
    title = f'Revert "{ctx.title or revision[:7]}"'
    pr = forge.open_pull_request(repo, branch, ctx.base_branch, title[:250],
                                 _revert_body(ctx, state), [REVERT_LABEL])
    return {"state": "opened", "url": pr.url, "number": pr.number}


def _revert_body(ctx: RolloutContext, state: m.RolloutState) -> str:
    lines = [
        (f"Coalmine aborted the rollout of `{ctx.app}` at {state.revision[:7]} from "
         f"{ctx.url or '#' + str(ctx.number)} and restored the stable version."),
        "",
        f"**Reason:** {escape(state.aborted_reason or 'aborted')}",
        "",
        ("Merging this PR makes Git describe what runs again (it deploys the stable version "
         "without a canary). To try the change again instead, comment `/retry` on the original "
         "PR and close this one."),
    ]
    if state.evidence:
        lines += ["", "**Failing measurements:**", ""]
        lines += [f"> {escape(line, 1000)}" for line in state.evidence]
    return "\n".join(lines)
