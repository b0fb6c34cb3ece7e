"""Revert branches: the commit that undoes a merge, pushed as a branch for a revert PR.

An aborted canary leaves Git saying what the cluster no longer runs; the bot proposes the revert
as a branch. `GitMirrors.create_revert_branch` (bot.gitrepo) holds the mirror's lock, makes a
worktree at the base branch's tip and calls `revert_and_push` here, which commits the revert
and pushes it, telling a conflict or an empty revert apart from a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from bot.gitrun import FencedGit, GitError


@dataclass(frozen=True)
class RevertResult:
    """What `create_revert_branch` did; only unexpected failures raise."""

    branch: str
    outcome: Literal["created", "exists", "conflict", "nothing_to_revert"]
    sha: str | None = None  # the branch tip on the remote when created or already there
    files: tuple[str, ...] = ()  # the conflicting paths when outcome is "conflict"

    @property
    def created(self) -> bool:
        return self.outcome == "created"

    @property
    def exists(self) -> bool:
        return self.outcome == "exists"

    @property
    def conflict(self) -> bool:
        return self.outcome == "conflict"


def revert_and_push(
    git: FencedGit,
    mirror: Path,
    worktree: Path,
    clone_url: str,
    base_tip: str,
    merge_sha: str,
    branch_name: str,
    author_name: str,
    author_email: str,
) -> RevertResult:
    """In `worktree` (at `base_tip`), revert `merge_sha` and push it as `branch_name`.

    A merge commit is reverted against its first parent (the base branch); a squash or rebase
    merge commit has one parent and is reverted as is. A branch another worker pushed first is
    reported as existing, not overwritten.
    """
    parents = git.git(mirror, "rev-list", "--parents", "-n", "1", merge_sha).split()[1:]
    in_tree = partial(git.git, _worktree_git_dir(mirror, worktree), work_tree=worktree)
    identity = {
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": author_name,
        "GIT_COMMITTER_EMAIL": author_email,
    }
    mainline = ["-m", "1"] if len(parents) >= 2 else []
    try:
        in_tree("revert", "--no-edit", *mainline, merge_sha, env=identity)
    except GitError:
        listing = in_tree("diff", "--name-only", "--diff-filter=U", "-z")
        conflicted = tuple(sorted(filter(None, listing.split("\0"))))
        if conflicted:
            in_tree("revert", "--abort")
            return RevertResult(branch_name, "conflict", files=conflicted)
        unchanged = in_tree("rev-parse", "HEAD") == base_tip
        if unchanged and not in_tree("status", "--porcelain"):
            return RevertResult(branch_name, "nothing_to_revert")
        raise
    head = in_tree("rev-parse", "HEAD")
    try:
        in_tree("push", "origin", f"HEAD:refs/heads/{branch_name}", **git.network(clone_url))
    except GitError:
        # Another worker may have pushed the same branch between our fetch and push.
        git.git(mirror, "fetch", "--prune", "origin", **git.network(clone_url))
        existing = git.ref_sha(mirror, f"refs/heads/{branch_name}")
        if existing:
            return RevertResult(branch_name, "exists", sha=existing)
        raise
    return RevertResult(branch_name, "created", sha=head)


def _worktree_git_dir(mirror: Path, worktree: Path) -> Path:
    """The private git directory git made for `worktree`, which must lie in `mirror`."""
    pointer = (worktree / ".git").read_text().strip()
    if not pointer.startswith("gitdir: "):
        raise GitError(f"{worktree} is not a worktree of {mirror}")
    git_dir = Path(pointer.removeprefix("gitdir: ")).resolve()
    if git_dir.parent != (mirror / "worktrees").resolve():
        raise GitError(f"{worktree} belongs to {git_dir}, not to the mirror {mirror}")
    return git_dir
