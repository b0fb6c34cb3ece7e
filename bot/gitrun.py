"""Running git on exactly one repository, with credentials kept out of argv, errors and logs.

Git is fenced to the repository it is meant to act on. A relative data directory once made git
walk up out of a half-made mirror into the checkout the bot was started from, add an `origin`
there and prune its branches. So every command names its repository explicitly (`--git-dir`,
plus `--work-tree` in a worktree), repository discovery may not climb out of the mirrors' root,
and the environment is rebuilt without any inherited `GIT_*` variable (a parent's GIT_DIR,
GIT_WORK_TREE, GIT_CONFIG_* or GIT_SSH_COMMAND would otherwise redirect or reconfigure us).

All git calls pass argument lists, and every caller-supplied value that reaches git's argv is
validated first (`checked_commit_id`, `check_branch_name`, `checked_repo_path`) so it can never be
read as an option. The bot's token travels per command as an HTTP header in the environment of
that git process (never on its command line, where `ps`, errors and our logs would show it).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from bot.redact import Redactor, url_credentials

_COMMIT_ID = re.compile(r"^[0-9a-f]{7,64}$")


class GitError(Exception):
    """A git operation failed. The message is redacted: it never holds a credential."""


class FencedGit:
    """Runs git commands that cannot leave `root` (the mirrors' directory) nor leak a secret."""

    def __init__(self, root: Path, redactor: Redactor, network_timeout_s: float) -> None:
        self.root = root
        self.redactor = redactor
        self.network_timeout_s = network_timeout_s

    def network(self, clone_url: str) -> dict[str, Any]:
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

    def git(
        self,
        git_dir: Path,
        *args: str,
        work_tree: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Runs git on exactly `git_dir` (and `work_tree`); its output without the final newline."""
        data = self.git_bytes(git_dir, *args, work_tree=work_tree, env=env, timeout=timeout)
        return data.decode("utf-8", errors="replace").removesuffix("\n")

    def git_bytes(
        self,
        git_dir: Path,
        *args: str,
        work_tree: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        try:
            result = self.run(*self._command(git_dir, args, work_tree, env), timeout=timeout)
        except subprocess.TimeoutExpired:
            message = f"git {' '.join(args)} timed out after {timeout} s"
            raise GitError(self.redactor.redact(message)) from None
        if result.returncode != 0:
            raise GitError(self._describe(args, result))
        return result.stdout

    def is_ancestor(self, git_dir: Path, ancestor: str, descendant: str) -> bool:
        """`git merge-base --is-ancestor`: exit 0 yes, 1 no, anything else is a failure."""
        args = ("merge-base", "--is-ancestor", ancestor, descendant)
        result = self.run(*self._command(git_dir, args, None, None))
        if result.returncode in (0, 1):
            return result.returncode == 0
        raise GitError(self._describe(args, result))

    def ref_sha(self, git_dir: Path, ref: str) -> str | None:
        """The commit `ref` points at, None when there is no such ref."""
        try:
            return self.git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except GitError:
            return None

    def fenced_env(self) -> dict[str, str]:
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

    def run(
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
        return [*argv, *args], work_tree or git_dir, {**self.fenced_env(), **fence, **(env or {})}

    def _describe(self, args: tuple[str, ...], result: subprocess.CompletedProcess[bytes]) -> str:
        stderr = result.stderr.decode("utf-8", errors="replace").strip()
        return self.redactor.redact(
            f"git {' '.join(args)} failed (exit {result.returncode}): {stderr}"
        )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kills git and every helper it started; they share the group `run` gave git."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def checked_commit_id(sha: str) -> str:
    sha = sha.strip().lower()
    if not _COMMIT_ID.match(sha):
        raise GitError(f"{sha!r} is not a commit id (7 to 64 hexadecimal digits)")
    return sha


def check_branch_name(name: str) -> None:
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


def checked_repo_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) in ("", "."):
        raise GitError(f"{path!r} is not a relative path inside the repository")
    return str(pure)
