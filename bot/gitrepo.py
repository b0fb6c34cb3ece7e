"""Cached git mirrors of the GitOps repositories, throwaway worktrees and revert branches.

Each repository gets one bare mirror under `root`, cloned once and fetched afterwards, so a busy
repository costs one incremental fetch per job. The mirror's config stores the remote URL without
credentials; the bot's token travels per command as an HTTP header in the environment of that git
process (never on its command line, where `ps`, GitPython's errors and our logs would show it).
A file lock per mirror serialises the jobs of all worker processes that touch the same mirror.

All git calls pass argument lists, and every caller-supplied value that reaches git's argv is
validated first (commit ids, branch names, paths) so it can never be read as an option.

Git is fenced to the mirror. A relative data directory once made git walk up out of a half-made
mirror into the checkout the bot was started from, add an `origin` there and prune its branches.
So `root` is made absolute, every command names its repository explicitly (`--git-dir`, plus
`--work-tree` in a worktree), repository discovery may not climb out of `root`, the environment
is rebuilt without any inherited `GIT_*` variable (a parent's GIT_DIR, GIT_WORK_TREE, GIT_CONFIG_*
or GIT_SSH_COMMAND would otherwise redirect or reconfigure us), and a new mirror is used only once
git itself confirms that it is a bare repository at exactly the path we created.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

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
        # Absolute now: a relative root would follow every later chdir, and git's own cwd.
        self.root = Path(root).resolve()
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

    def is_ancestor(self, repo_key: str, clone_url: str, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is `descendant` or one of its ancestors.

        Commits the mirror lacks are fetched first; a commit the remote does not have either
        makes the answer False, since nothing can be said to precede it.
        """
        ancestor = _checked_commit_id(ancestor)
        descendant = _checked_commit_id(descendant)
        with self.locked(repo_key):
            mirror, missing = self._ensure_commits(repo_key, clone_url, (ancestor, descendant))
            if missing:
                return False
            return self._is_ancestor(mirror, ancestor, descendant)

    def branch_contains(self, repo_key: str, clone_url: str, branch: str, sha: str) -> bool:
        """Whether `sha` is the tip of the remote's `branch` or reachable from it, freshly fetched.

        This is how a merge is tied to the deploy branch: a commit only on another branch, or
        one the branch dropped by a force-push, is not contained.
        """
        sha = _checked_commit_id(sha)
        _check_branch_name(branch)
        with self.locked(repo_key):
            mirror = self._update(repo_key, clone_url)
            tip = self._ref_sha(mirror, f"refs/heads/{branch}")
            # After a full fetch, a commit the branch reaches is in the mirror; no fetch by id.
            if tip is None or not self._has_commit(mirror, sha):
                return False
            return self._is_ancestor(mirror, sha, tip)

    def branch_tip(self, repo_key: str, clone_url: str, branch: str) -> str | None:
        """The commit the remote's `branch` points at after a fetch; None when there is none."""
        _check_branch_name(branch)
        with self.locked(repo_key):
            mirror = self._update(repo_key, clone_url)
            return self._ref_sha(mirror, f"refs/heads/{branch}")

    # --- mirror maintenance (callers hold the lock) -----------------------------------------

    def _update(self, repo_key: str, clone_url: str) -> Path:
        mirror = self.mirror_path(repo_key)
        remote = strip_url_credentials(clone_url)
        if remote.startswith("-"):
            raise GitError(f"{remote!r} is not a clone URL")
        if not (mirror / "config").exists():
            self._init_mirror(mirror, remote)
        self._verify_mirror(mirror)
        if self._git(mirror, "config", "--get", "remote.origin.url") != remote:
            self._git(mirror, "remote", "set-url", "origin", remote)
        self._git(mirror, "worktree", "prune")
        self._git(mirror, "fetch", "--prune", "origin", **self._network(clone_url))
        return mirror

    def _init_mirror(self, mirror: Path, remote: str) -> None:
        """Builds the empty mirror aside and renames it in, so a crash leaves no half mirror."""
        staging = Path(tempfile.mkdtemp(prefix=".init-", dir=self.root))
        try:
            self._git(staging, "init", "--quiet", "--bare")
            self._verify_mirror(staging)
            self._git(staging, "remote", "add", "origin", remote)
            self._git(staging, "config", "--unset-all", "remote.origin.fetch")
            for refspec in _FETCH_REFSPECS:
                self._git(staging, "config", "--add", "remote.origin.fetch", refspec)
            os.rename(staging, mirror)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _verify_mirror(self, mirror: Path) -> None:
        """Refuses a mirror unless git, discovering on its own, finds a bare repository right there.

        Every command names its git directory anyway; this catches the case that made git
        operate on an enclosing checkout: a path that is not (yet) the repository we meant.
        """
        probe = self._run(
            ["git", "rev-parse", "--absolute-git-dir", "--is-bare-repository"],
            cwd=mirror,
            env=self._fenced_env(),
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
                    self._git(mirror, "fetch", "origin", sha, **self._network(clone_url))
                except GitError as exc:
                    log.info("fetching commit %s by id failed: %s", sha, exc)
        return mirror, self._missing_commits(mirror, missing)

    def _missing_commits(self, mirror: Path, shas: list[str]) -> list[str]:
        return [sha for sha in shas if not self._has_commit(mirror, sha)]

    def _has_commit(self, mirror: Path, sha: str) -> bool:
        try:
            self._git(mirror, "cat-file", "-e", f"{sha}^{{commit}}")
        except GitError:
            return False
        return True

    def _is_ancestor(self, mirror: Path, ancestor: str, descendant: str) -> bool:
        """`git merge-base --is-ancestor`: exit 0 yes, 1 no, anything else is a failure."""
        args = ("merge-base", "--is-ancestor", ancestor, descendant)
        result = self._run(*self._command(mirror, args, None, None))
        if result.returncode in (0, 1):
            return result.returncode == 0
        raise GitError(self._describe(args, result))

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
        in_tree = partial(self._git, self._worktree_git_dir(mirror, worktree), work_tree=worktree)
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
            in_tree("push", "origin", f"HEAD:refs/heads/{branch_name}", **self._network(clone_url))
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
        git_dir: Path,
        *args: str,
        work_tree: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Runs git on exactly `git_dir` (and `work_tree`); its output without the final newline."""
        data = self._git_bytes(git_dir, *args, work_tree=work_tree, env=env, timeout=timeout)
        return data.decode("utf-8", errors="replace").removesuffix("\n")

    def _git_bytes(
        self,
        git_dir: Path,
        *args: str,
        work_tree: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        try:
            result = self._run(*self._command(git_dir, args, work_tree, env), timeout=timeout)
        except subprocess.TimeoutExpired:
            message = f"git {' '.join(args)} timed out after {timeout} s"
            raise GitError(self.redactor.redact(message)) from None
        if result.returncode != 0:
            raise GitError(self._describe(args, result))
        return result.stdout

    def _command(
        self,
        git_dir: Path,
        args: tuple[str, ...],
        work_tree: Path | None,
        env: dict[str, str] | None,
    ) -> tuple[list[str], Path, dict[str, str]]:
        """argv, cwd and environment of a command fenced to one repository."""
        argv = ["git", f"--git-dir={git_dir}"]
        fence = {"GIT_DIR": str(git_dir)}
        if work_tree is not None:
            argv.append(f"--work-tree={work_tree}")
            fence["GIT_WORK_TREE"] = str(work_tree)
        return [*argv, *args], work_tree or git_dir, {**self._fenced_env(), **fence, **(env or {})}

    def _fenced_env(self) -> dict[str, str]:
        """Our process environment minus every GIT_* variable, plus the fences git should obey.

        The ceiling stops repository discovery from entering `root` or anything above it, so
        even a command that lost its explicit repository cannot reach an enclosing checkout.
        """
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        env.update(
            {
                "GIT_CEILING_DIRECTORIES": str(self.root),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C",
                "LANGUAGE": "C",
            }
        )
        return env

    def _run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Runs git in its own process group, so a timeout also ends its helpers (remote-http).

        Raises `subprocess.TimeoutExpired` after killing them when `timeout` runs out.
        """
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise GitError(f"cannot run git in {cwd}: {exc.strerror}") from None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            _kill_group(process)
            raise
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    def _describe(self, args: tuple[str, ...], result: subprocess.CompletedProcess[bytes]) -> str:
        stderr = result.stderr.decode("utf-8", errors="replace").strip()
        return self.redactor.redact(
            f"git {' '.join(args)} failed (exit {result.returncode}): {stderr}"
        )

    @staticmethod
    def _worktree_git_dir(mirror: Path, worktree: Path) -> Path:
        """The private git directory git made for `worktree`, which must lie in `mirror`."""
        pointer = (worktree / ".git").read_text().strip()
        if not pointer.startswith("gitdir: "):
            raise GitError(f"{worktree} is not a worktree of {mirror}")
        git_dir = Path(pointer.removeprefix("gitdir: ")).resolve()
        if git_dir.parent != (mirror / "worktrees").resolve():
            raise GitError(f"{worktree} belongs to {git_dir}, not to the mirror {mirror}")
        return git_dir


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kills git and every helper it started; they share the group `_run` gave git."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


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
