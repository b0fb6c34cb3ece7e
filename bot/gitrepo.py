"""Cached git mirrors of the GitOps repositories, and throwaway worktrees of them.

Each repository gets one bare mirror under `root`, cloned once and fetched afterwards, so a busy
repository costs one incremental fetch per job. The mirror's config stores the remote URL without
credentials; the bot's token travels per command (bot.gitrun, which also fences every git
command to its repository and checks every value that reaches git's argv). A file lock per
mirror serialises the jobs of all worker processes that touch the same mirror. Revert branches
are made in a worktree of the mirror (bot.gitrevert).

`root` is made absolute, and a new mirror is used only once git itself confirms that it is a
bare repository at exactly the path we created: a half-made mirror must never let git find an
enclosing checkout instead.

GitError is listed in `__all__`: the use cases catch it from here, as the error every method
of GitMirrors raises.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.forge.base import RepoRef
from bot.gitrevert import RevertResult, revert_and_push
from bot.gitrun import (
    FencedGit,
    GitError,
    check_branch_name,
    checked_commit_id,
    checked_repo_path,
)
from bot.redact import Redactor, strip_url_credentials

__all__ = ["GitError", "GitMirrors", "RevertResult", "repo_key"]

log = logging.getLogger(__name__)

_FULL_COMMIT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


def repo_key(repo: RepoRef) -> str:
    """The mirror key of a repository: unique per forge, stable across URL changes."""
    return f"{repo.forge}/{repo.full_name}"


class GitMirrors:
    """One bare mirror per repository under `root`, shared by every job on this machine."""

    def __init__(self, root: Path, redactor: Redactor, *, network_timeout_s: float = 300.0) -> None:
        # Absolute now: a relative root would follow every later chdir, and git's own cwd.
        self.root = Path(root).resolve()
        self.redactor = redactor
        self.network_timeout_s = network_timeout_s
        self.root.mkdir(parents=True, exist_ok=True)
        self._runner = FencedGit(self.root, redactor, network_timeout_s)

    # --- public API -------------------------------------------------------------------------

    def mirror_path(self, repo_key: str) -> Path:
        """A directory name that is readable, yet unique and free of path tricks, per key."""
        readable = re.sub(r"[^A-Za-z0-9_-]+", "-", repo_key).strip("-")[:64] or "repo"
        digest = hashlib.sha256(repo_key.encode()).hexdigest()[:16]
        return self.root / f"{readable}-{digest}.git"

    @contextmanager
    def locked(self, repo_key: str) -> Iterator[None]:
        """Holds the mirror's lock, across threads and processes. Not re-entrant."""
        lock_path = self.mirror_path(repo_key).with_suffix(".lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def fetch(self, repo_key: str, clone_url: str) -> Path:
        """Clone the mirror on first use, else fetch it; returns the mirror's git directory."""
        with self.locked(repo_key):
            return self._update(repo_key, clone_url)

    @contextmanager
    def checkout(self, repo_key: str, clone_url: str, sha: str) -> Iterator[Path]:
        """A detached worktree at `sha`, removed on exit even when the body raises."""
        sha = checked_commit_id(sha)
        with self.locked(repo_key):
            mirror = self._ensure_commit(repo_key, clone_url, sha)
            worktree = self._add_worktree(mirror, sha)
        try:
            yield worktree
        finally:
            with self.locked(repo_key):
                self._remove_worktree(mirror, worktree)

    def file_at(self, repo_key: str, clone_url: str, sha: str, path: str) -> str | None:
        """The text of `path` at `sha` without a worktree; None when it is not a file there."""
        sha = checked_commit_id(sha)
        rel = checked_repo_path(path)
        with self.locked(repo_key):
            mirror = self._ensure_commit(repo_key, clone_url, sha)
        listing = self._runner.git(mirror, "ls-tree", "-z", sha, "--", rel)
        for entry in filter(None, listing.split("\0")):
            meta, _, name = entry.partition("\t")
            _mode, kind, object_id = meta.split()
            if name == rel and kind == "blob":
                data = self._runner.git_bytes(mirror, "cat-file", "blob", object_id)
                return data.decode("utf-8", errors="replace")
        return None

    def create_revert_branch(
        self,
        repo_key: str,
        clone_url: str,
        base_branch: str,
        merge_sha: str,
        branch_name: str,
        author_name: str,
        author_email: str,
    ) -> RevertResult:
        """Push `branch_name`: the tip of `base_branch` plus a commit reverting `merge_sha`.

        Safe to call twice: an existing remote branch is reported, not overwritten. A merge
        commit is reverted against its first parent (the base branch); a squash or rebase
        merge commit has one parent and is reverted as is.
        """
        merge_sha = checked_commit_id(merge_sha)
        check_branch_name(base_branch)
        check_branch_name(branch_name)
        with self.locked(repo_key):
            mirror = self._update(repo_key, clone_url)
            existing = self._runner.ref_sha(mirror, f"refs/heads/{branch_name}")
            if existing:
                return RevertResult(branch_name, "exists", sha=existing)
            base_tip = self._runner.ref_sha(mirror, f"refs/heads/{base_branch}")
            if base_tip is None:
                raise GitError(f"branch {base_branch!r} does not exist on the remote")
            self._ensure_commit(repo_key, clone_url, merge_sha, fetched=True)
            worktree = self._add_worktree(mirror, base_tip)
            try:
                return revert_and_push(
                    self._runner,
                    mirror,
                    worktree,
                    clone_url,
                    base_tip,
                    merge_sha,
                    branch_name,
                    author_name,
                    author_email,
                )
            finally:
                self._remove_worktree(mirror, worktree)

    def is_ancestor(self, repo_key: str, clone_url: str, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is `descendant` or one of its ancestors.

        Commits the mirror lacks are fetched first; a commit the remote does not have either
        makes the answer False, since nothing can be said to precede it.
        """
        ancestor = checked_commit_id(ancestor)
        descendant = checked_commit_id(descendant)
        with self.locked(repo_key):
            mirror, missing = self._ensure_commits(repo_key, clone_url, (ancestor, descendant))
            if missing:
                return False
            return self._runner.is_ancestor(mirror, ancestor, descendant)

    def branch_contains(self, repo_key: str, clone_url: str, branch: str, sha: str) -> bool:
        """Whether `sha` is the tip of the remote's `branch` or reachable from it, freshly fetched.

        This is how a merge is tied to the deploy branch: a commit only on another branch, or
        one the branch dropped by a force-push, is not contained.
        """
        sha = checked_commit_id(sha)
        check_branch_name(branch)
        with self.locked(repo_key):
            mirror = self._update(repo_key, clone_url)
            tip = self._runner.ref_sha(mirror, f"refs/heads/{branch}")
            # After a full fetch, a commit the branch reaches is in the mirror; no fetch by id.
            if tip is None or not self._has_commit(mirror, sha):
                return False
            return self._runner.is_ancestor(mirror, sha, tip)

    def branch_tip(self, repo_key: str, clone_url: str, branch: str) -> str | None:
        """The commit the remote's `branch` points at after a fetch; None when there is none."""
        check_branch_name(branch)
        with self.locked(repo_key):
            mirror = self._update(repo_key, clone_url)
            return self._runner.ref_sha(mirror, f"refs/heads/{branch}")

    # --- mirror maintenance (callers hold the lock) -----------------------------------------

    def _update(self, repo_key: str, clone_url: str) -> Path:
        mirror = self.mirror_path(repo_key)
        remote = strip_url_credentials(clone_url)
        if remote.startswith("-"):
            raise GitError(f"{remote!r} is not a clone URL")
        if not (mirror / "config").exists():
            self._init_mirror(mirror, remote)
        self._verify_mirror(mirror)
        if self._runner.git(mirror, "config", "--get", "remote.origin.url") != remote:
            self._runner.git(mirror, "remote", "set-url", "origin", remote)
        self._runner.git(mirror, "worktree", "prune")
        self._runner.git(mirror, "fetch", "--prune", "origin", **self._runner.network(clone_url))
        return mirror

    def _init_mirror(self, mirror: Path, remote: str) -> None:
        """Builds the empty mirror aside and renames it in, so a crash leaves no half mirror."""
        staging = Path(tempfile.mkdtemp(prefix=".init-", dir=self.root))
        try:
            self._runner.git(staging, "init", "--quiet", "--bare")
            self._verify_mirror(staging)
            self._runner.git(staging, "remote", "add", "origin", remote)
            self._runner.git(staging, "config", "--unset-all", "remote.origin.fetch")
            for refspec in _FETCH_REFSPECS:
                self._runner.git(staging, "config", "--add", "remote.origin.fetch", refspec)
            os.rename(staging, mirror)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _verify_mirror(self, mirror: Path) -> None:
        """Refuses a mirror unless git, discovering on its own, finds a bare repository right there.

        Every command names its git directory anyway; this catches the case that made git
        operate on an enclosing checkout: a path that is not (yet) the repository we meant.
        """
        probe = self._runner.run(
            ["git", "rev-parse", "--absolute-git-dir", "--is-bare-repository"],
            cwd=mirror,
            env=self._runner.fenced_env(),
            timeout=None,
        )
        lines = probe.stdout.decode(errors="replace").splitlines()  # paths may hold spaces
        if probe.returncode != 0 or len(lines) != 2:
            raise GitError(f"{mirror} is not a git repository; refusing to use it")
        found, bare = Path(lines[0]), lines[1]
        if found.resolve() != mirror.resolve() or bare != "true":
            raise GitError(f"git found {found} (bare: {bare}) instead of the mirror {mirror}")

    def _ensure_commit(
        self, repo_key: str, clone_url: str, sha: str, *, fetched: bool = False
    ) -> Path:
        """The mirror holding commit `sha`: fetch the branches, then the commit itself."""
        mirror, missing = self._ensure_commits(repo_key, clone_url, (sha,), fetched=fetched)
        if missing:
            raise GitError(f"commit {sha} is not in {strip_url_credentials(clone_url)}")
        return mirror

    def _ensure_commits(
        self, repo_key: str, clone_url: str, shas: tuple[str, ...], *, fetched: bool = False
    ) -> tuple[Path, list[str]]:
        """The mirror after fetching what it lacks of `shas`, and those the remote lacks too.

        The branches are fetched first (one fetch serves every missing commit), then each
        commit still missing by id: commits no branch reaches any more (a force-pushed PR
        head) are still served by most forges.
        """
        mirror = self.mirror_path(repo_key)
        missing = list(shas)
        if (mirror / "config").exists():
            missing = self._missing_commits(mirror, missing)
        if missing and not fetched:
            self._update(repo_key, clone_url)
            missing = self._missing_commits(mirror, missing)
        for sha in missing:
            if _FULL_COMMIT_ID.match(sha):
                try:
                    network = self._runner.network(clone_url)
                    self._runner.git(mirror, "fetch", "origin", sha, **network)
                except GitError as exc:
                    log.info("fetching commit %s by id failed: %s", sha, exc)
        return mirror, self._missing_commits(mirror, missing)

    def _missing_commits(self, mirror: Path, shas: list[str]) -> list[str]:
        return [sha for sha in shas if not self._has_commit(mirror, sha)]

    def _has_commit(self, mirror: Path, sha: str) -> bool:
        try:
            self._runner.git(mirror, "cat-file", "-e", f"{sha}^{{commit}}")
        except GitError:
            return False
        return True

    def _add_worktree(self, mirror: Path, sha: str) -> Path:
        parent = self.root / "worktrees"
        parent.mkdir(exist_ok=True)
        worktree = Path(tempfile.mkdtemp(prefix="wt-", dir=parent))
        try:
            self._runner.git(mirror, "worktree", "add", "--detach", str(worktree), sha)
        except GitError:
            shutil.rmtree(worktree, ignore_errors=True)
            raise
        return worktree

    def _remove_worktree(self, mirror: Path, worktree: Path) -> None:
        """Best effort: a failed clean-up is logged, never allowed to mask the caller's error."""
        try:
            self._runner.git(mirror, "worktree", "remove", "--force", str(worktree))
        except GitError as exc:
            log.warning("git worktree remove failed, deleting the directory: %s", exc)
        shutil.rmtree(worktree, ignore_errors=True)
        try:
            self._runner.git(mirror, "worktree", "prune")
        except GitError as exc:
            log.warning("git worktree prune failed: %s", exc)
