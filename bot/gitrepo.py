"""Cached git mirrors of the GitOps repositories, throwaway worktrees and revert branches.

Each repository gets one bare mirror under `root`, cloned once and fetched afterwards, so a busy
repository costs one incremental fetch per job. The mirror's config stores the remote URL without
credentials; the bot's token travels per command as an HTTP header in the environment of that git
process (never on its command line, where `ps`, GitPython's errors and our logs would show it).
A file lock per mirror serialises the jobs of all worker processes that touch the same mirror.

All git calls pass argument lists, and every caller-supplied value that reaches git's argv is
validated first (commit ids, branch names, paths) so it can never be read as an option.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import git

from bot.forge.base import RepoRef
from bot.redact import Redactor, strip_url_credentials, url_credentials

log = logging.getLogger(__name__)

_COMMIT_ID = re.compile(r"^[0-9a-f]{7,64}$")
_FULL_COMMIT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


class GitError(Exception):
    """A git operation failed. The message is redacted: it never holds a credential."""


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


def repo_key(repo: RepoRef) -> str:
    """The mirror key of a repository: unique per forge, stable across URL changes."""
    return f"{repo.forge}/{repo.full_name}"


class GitMirrors:
    """One bare mirror per repository under `root`, shared by every job on this machine."""

    def __init__(self, root: Path, redactor: Redactor, *, network_timeout_s: float = 300.0) -> None:
        self.root = Path(root)
        self.redactor = redactor
        self.network_timeout_s = network_timeout_s
        self.root.mkdir(parents=True, exist_ok=True)

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
        sha = _checked_commit_id(sha)
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
        sha = _checked_commit_id(sha)
        rel = _checked_repo_path(path)
        with self.locked(repo_key):
            mirror = self._ensure_commit(repo_key, clone_url, sha)
        listing = self._git(mirror, "ls-tree", "-z", sha, "--", rel)
        for entry in filter(None, listing.split("\0")):
            meta, _, name = entry.partition("\t")
            _mode, kind, object_id = meta.split()
            if name == rel and kind == "blob":
                data = self._git_bytes(mirror, "cat-file", "blob", object_id)
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
        merge_sha = _checked_commit_id(merge_sha)
        _check_branch_name(base_branch)
        _check_branch_name(branch_name)
        with self.locked(repo_key):
            mirror = self._update(repo_key, clone_url)
            existing = self._ref_sha(mirror, f"refs/heads/{branch_name}")
            if existing:
                return RevertResult(branch_name, "exists", sha=existing)
            base_tip = self._ref_sha(mirror, f"refs/heads/{base_branch}")
            if base_tip is None:
                raise GitError(f"branch {base_branch!r} does not exist on the remote")
            self._ensure_commit(repo_key, clone_url, merge_sha, fetched=True)
            worktree = self._add_worktree(mirror, base_tip)
            try:
                return self._revert_and_push(
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

    # --- mirror maintenance (callers hold the lock) -----------------------------------------

    def _update(self, repo_key: str, clone_url: str) -> Path:
        mirror = self.mirror_path(repo_key)
        remote = strip_url_credentials(clone_url)
        if remote.startswith("-"):
            raise GitError(f"{remote!r} is not a clone URL")
        if not (mirror / "config").exists():
            self._init_mirror(mirror, remote)
        elif self._git(mirror, "config", "--get", "remote.origin.url") != remote:
            self._git(mirror, "remote", "set-url", "origin", remote)
        self._git(mirror, "worktree", "prune")
        self._git(mirror, "fetch", "--prune", "origin", **self._network(clone_url))
        return mirror

    def _init_mirror(self, mirror: Path, remote: str) -> None:
        """Builds the empty mirror aside and renames it in, so a crash leaves no half mirror."""
        staging = Path(tempfile.mkdtemp(prefix=".init-", dir=self.root))
        try:
            self._git(staging, "init", "--quiet", "--bare", str(staging))
            self._git(staging, "remote", "add", "origin", remote)
            self._git(staging, "config", "--unset-all", "remote.origin.fetch")
            for refspec in _FETCH_REFSPECS:
                self._git(staging, "config", "--add", "remote.origin.fetch", refspec)
            os.rename(staging, mirror)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _ensure_commit(
        self, repo_key: str, clone_url: str, sha: str, *, fetched: bool = False
    ) -> Path:
        """The mirror holding commit `sha`: fetch the branches, then the commit itself."""
        mirror = self.mirror_path(repo_key)
        if (mirror / "config").exists() and self._has_commit(mirror, sha):
            return mirror
        if not fetched:
            self._update(repo_key, clone_url)
            if self._has_commit(mirror, sha):
                return mirror
        if _FULL_COMMIT_ID.match(sha):
            # Commits no branch reaches any more (a force-pushed PR head) are still served.
            try:
                self._git(mirror, "fetch", "origin", sha, **self._network(clone_url))
            except GitError as exc:
                log.info("fetching commit %s by id failed: %s", sha, exc)
        if not self._has_commit(mirror, sha):
            raise GitError(f"commit {sha} is not in {strip_url_credentials(clone_url)}")
        return mirror

    def _has_commit(self, mirror: Path, sha: str) -> bool:
        try:
            self._git(mirror, "cat-file", "-e", f"{sha}^{{commit}}")
        except GitError:
            return False
        return True

    def _ref_sha(self, mirror: Path, ref: str) -> str | None:
        try:
            return self._git(mirror, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except GitError:
            return None

    def _add_worktree(self, mirror: Path, sha: str) -> Path:
        parent = self.root / "worktrees"
        parent.mkdir(exist_ok=True)
        worktree = Path(tempfile.mkdtemp(prefix="wt-", dir=parent))
        try:
            self._git(mirror, "worktree", "add", "--detach", str(worktree), sha)
        except GitError:
            shutil.rmtree(worktree, ignore_errors=True)
            raise
        return worktree

    def _remove_worktree(self, mirror: Path, worktree: Path) -> None:
        """Best effort: a failed clean-up is logged, never allowed to mask the caller's error."""
        try:
            self._git(mirror, "worktree", "remove", "--force", str(worktree))
        except GitError as exc:
            log.warning("git worktree remove failed, deleting the directory: %s", exc)
        shutil.rmtree(worktree, ignore_errors=True)
        try:
            self._git(mirror, "worktree", "prune")
        except GitError as exc:
            log.warning("git worktree prune failed: %s", exc)

    def _revert_and_push(
        self,
        mirror: Path,
        worktree: Path,
        clone_url: str,
        base_tip: str,
        merge_sha: str,
        branch_name: str,
        author_name: str,
        author_email: str,
    ) -> RevertResult:
        parents = self._git(mirror, "rev-list", "--parents", "-n", "1", merge_sha).split()[1:]
        identity = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        mainline = ["-m", "1"] if len(parents) >= 2 else []
        try:
            self._git(worktree, "revert", "--no-edit", *mainline, merge_sha, env=identity)
        except GitError:
            listing = self._git(worktree, "diff", "--name-only", "--diff-filter=U", "-z")
            conflicted = tuple(sorted(filter(None, listing.split("\0"))))
            if conflicted:
                self._git(worktree, "revert", "--abort")
                return RevertResult(branch_name, "conflict", files=conflicted)
            unchanged = self._git(worktree, "rev-parse", "HEAD") == base_tip
            if unchanged and not self._git(worktree, "status", "--porcelain"):
                return RevertResult(branch_name, "nothing_to_revert")
            raise
        head = self._git(worktree, "rev-parse", "HEAD")
        try:
            self._git(
                worktree,
                "push",
                "origin",
                f"HEAD:refs/heads/{branch_name}",
                **self._network(clone_url),
            )
        except GitError:
            # Another worker may have pushed the same branch between our fetch and push.
            self._git(mirror, "fetch", "--prune", "origin", **self._network(clone_url))
            existing = self._ref_sha(mirror, f"refs/heads/{branch_name}")
            if existing:
                return RevertResult(branch_name, "exists", sha=existing)
            raise
        return RevertResult(branch_name, "created", sha=head)

    # --- running git ------------------------------------------------------------------------

    def _network(self, clone_url: str) -> dict[str, Any]:
        """Execute options for a command that talks to the remote: credentials and a timeout.

        The credentials become an `http.<origin>.extraHeader` set through GIT_CONFIG_* variables,
        so they are scoped to the remote's host and never appear in an argv.
        """
        self.redactor.add_url_credentials(clone_url)
        config = [("credential.helper", "")]
        user, password = url_credentials(clone_url)
        parts = urlsplit(clone_url)
        if (user or password) and parts.scheme in ("http", "https"):
            basic = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            self.redactor.add(basic)
            origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/"
            config.append((f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"))
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_COUNT": str(len(config))}
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return {"env": env, "timeout": self.network_timeout_s}

    def _git(
        self,
        cwd: Path,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        return cast(str, self._execute(cwd, args, env, timeout, as_text=True))

    def _git_bytes(self, cwd: Path, *args: str) -> bytes:
        return cast(bytes, self._execute(cwd, args, None, None, as_text=False))

    def _execute(
        self,
        cwd: Path,
        args: tuple[str, ...],
        env: dict[str, str] | None,
        timeout: float | None,
        *,
        as_text: bool,
    ) -> str | bytes:
        try:
            return git.Git(str(cwd)).execute(
                ["git", *args],
                env=env,
                kill_after_timeout=timeout,
                stdout_as_string=as_text,
                strip_newline_in_stdout=as_text,
            )
        except git.GitCommandNotFound:
            raise GitError("git is not installed") from None
        except git.GitCommandError as exc:
            # `from None`: the original exception's text is not redacted and must not be chained.
            raise GitError(self._describe(args, exc)) from None

    def _describe(self, args: tuple[str, ...], exc: git.GitCommandError) -> str:
        stderr = str(exc.stderr or "").strip()
        stderr = stderr.removeprefix("stderr: '").removesuffix("'").strip()
        status = f" (exit {exc.status})" if exc.status not in (None, "") else ""
        return self.redactor.redact(f"git {' '.join(args)} failed{status}: {stderr}")


def _checked_commit_id(sha: str) -> str:
    sha = sha.strip().lower()
    if not _COMMIT_ID.match(sha):
        raise GitError(f"{sha!r} is not a commit id (7 to 64 hexadecimal digits)")
    return sha


def _check_branch_name(name: str) -> None:
    problem = (
        not name
        or name.startswith(("-", "/"))
        or name.endswith(("/", ".", ".lock"))
        or name == "@"
        or ".." in name
        or "//" in name
        or "@{" in name
        or any(c in name for c in " ~^:?*[\\\x7f")
        or any(ord(c) < 32 for c in name)
        or any(part.startswith(".") for part in name.split("/"))
    )
    if problem:
        raise GitError(f"{name!r} is not a valid branch name")


def _checked_repo_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) in ("", "."):
        raise GitError(f"{path!r} is not a relative path inside the repository")
    return str(pure)
