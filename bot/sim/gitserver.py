"""Real git repositories on disk standing in for a forge's GitOps repository.

`make_remote` builds a bare repository (the "remote" the bot clones and pushes to) plus a scratch
clone used to author commits, branches and pull-request merges the way a forge would record them:
`merge_pr` makes a real two-parent merge commit, `squash_merge` a one-parent commit. Tests then
inspect the remote (`file_at`, `diff`, `branches`) to see what the bot pushed.

`GitHttpServer` serves those bare repositories over smart HTTP (`git http-backend`) behind Basic
authentication on a loopback port, so tests can check that credentials really travel and that
a wrong token is refused, with no network beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import quote, unquote

AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "Dev Eloper",
    "GIT_AUTHOR_EMAIL": "dev@example.test",
    "GIT_COMMITTER_NAME": "Dev Eloper",
    "GIT_COMMITTER_EMAIL": "dev@example.test",
}


def git(cwd: Path, *args: str) -> str:
    """Run git with an argument list; raises with git's stderr on failure."""
    result = subprocess.run(
        ["git", *args],
        check=False,
        cwd=cwd,
        env={**os.environ, **AUTHOR_ENV, "GIT_TERMINAL_PROMPT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass(frozen=True)
class Symlink:
    """A file committed as a symbolic link to `target` (which need not exist)."""

    target: str


@dataclass
class BareRemote:
    path: Path  # the bare repository: what the bot clones from and pushes to
    work: Path  # a scratch clone in which the "developers" author commits
    default_branch: str = "main"
    last_pr_number: int = 0

    @property
    def url(self) -> str:
        """A clone URL git accepts: the bare repository's path."""
        return str(self.path)

    @property
    def file_url(self) -> str:
        return self.path.as_uri()

    def commit(
        self,
        files: dict[str, str | Symlink | None],
        message: str,
        branch: str | None = None,
        start: str | None = None,
    ) -> str:
        """Write (str) or delete (None) `files` on `branch`, commit, push; returns the sha.

        A branch missing on the remote is started from `start` (default: the default branch).
        """
        branch = branch or self.default_branch
        self._switch(branch, start or self.default_branch)
        for name, content in files.items():
            target = self.work / name
            if content is None:
                target.unlink()
            elif isinstance(content, Symlink):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                target.symlink_to(content.target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        git(self.work, "add", "--all")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.work, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD")

    def merge_pr(
        self, branch: str, files: dict[str, str | Symlink | None], title: str, base: str | None = None
    ) -> str:
        """Commit `files` on a new `branch` and merge it into `base` with a merge commit."""
        base = base or self.default_branch
        self.commit(files, title, branch=branch, start=base)
        number = self._next_pr_number()
        self._switch(base, base)
        message = f"Merge pull request #{number} from {branch}\n\n{title}"
        git(self.work, "merge", "--quiet", "--no-ff", "-m", message, f"origin/{branch}")
        git(self.work, "push", "--quiet", "origin", f"HEAD:refs/heads/{base}")
        return git(self.work, "rev-parse", "HEAD")

    def squash_merge(
        self, branch: str, files: dict[str, str | None], title: str, base: str | None = None
    ) -> str:
        """Commit `files` on a new `branch` and squash it into `base` as one-parent commit."""
        base = base or self.default_branch
        self.commit(files, title, branch=branch, start=base)
        number = self._next_pr_number()
        self._switch(base, base)
        git(self.work, "merge", "--quiet", "--squash", f"origin/{branch}")
        git(self.work, "commit", "--quiet", "-m", f"{title} (#{number})")
        git(self.work, "push", "--quiet", "origin", f"HEAD:refs/heads/{base}")
        return git(self.work, "rev-parse", "HEAD")

    def head(self, branch: str | None = None) -> str:
        return git(self.path, "rev-parse", f"refs/heads/{branch or self.default_branch}")

    def parents(self, sha: str) -> list[str]:
        return git(self.path, "rev-list", "--parents", "-n", "1", sha).split()[1:]

    def log_format(self, sha: str, fmt: str) -> str:
        """`git show -s --format=<fmt>`, e.g. "%an <%ae>" or "%s"."""
        return git(self.path, "show", "-s", f"--format={fmt}", sha)

    def file_at(self, sha: str, path: str) -> str | None:
        try:
            git(self.path, "cat-file", "-e", f"{sha}:{path}")
        except RuntimeError:
            return None
        return subprocess.run(
            ["git", "cat-file", "-p", f"{sha}:{path}"],
            cwd=self.path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def diff(self, a: str, b: str) -> str:
        return git(self.path, "diff", "--no-color", "--no-ext-diff", a, b)

    def branches(self) -> list[str]:
        out = git(self.path, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return sorted(out.split())

    def _switch(self, branch: str, start: str) -> None:
        """Put the scratch clone on `branch` as the remote has it (or fresh from `start`)."""
        git(self.work, "fetch", "--quiet", "--prune", "origin")
        remote_branches = git(self.work, "branch", "-r", "--format=%(refname:short)").split()
        source = f"origin/{branch}" if f"origin/{branch}" in remote_branches else f"origin/{start}"
        git(self.work, "checkout", "--quiet", "-B", branch, source)
        git(self.work, "reset", "--quiet", "--hard", source)
        git(self.work, "clean", "--quiet", "-fdx")

    def _next_pr_number(self) -> int:
        self.last_pr_number += 1
        return self.last_pr_number


def make_remote(
    tmp: Path,
    name: str = "gitops",
    files: dict[str, str] | None = None,
    default_branch: str = "main",
) -> BareRemote:
    """A bare repository `<tmp>/<name>.git` whose default branch holds one initial commit."""
    bare = tmp / f"{name}.git"
    work = tmp / f"{name}-work"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(tmp, "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(bare))
    git(tmp, "init", "--quiet", f"--initial-branch={default_branch}", str(work))
    git(work, "remote", "add", "origin", str(bare))
    for rel, content in (files or {"README.md": f"# {name}\n"}).items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", "Initial commit")
    git(work, "push", "--quiet", "origin", f"HEAD:refs/heads/{default_branch}")
    return BareRemote(bare, work, default_branch)


class GitHttpServer:
    """Serves the bare repositories under `project_root` over smart HTTP with Basic auth.

    Use as a context manager. `url(remote)` gives the clone URL carrying the credentials, as a
    forge adapter's `authenticated_clone_url` would; `requests` records (method, path, authorized)
    for every request.
    """

    def __init__(
        self, project_root: Path, username: str = "x-access-token", password: str = "s3cret",
        accepts: Callable[[str], bool] | None = None,
    ) -> None:
        """`accepts` admits other passwords too (a GitHub App's installation tokens, which the
        fake GitHub issues at run time)."""
        self.project_root = Path(project_root)
        self.username = username
        self.password = password
        self.accepts = accepts
        self.requests: list[tuple[str, str, bool]] = []
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._expected = f"Basic {token}"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, remote: BareRemote, credentials: bool = True, password: str | None = None) -> str:
        rel = remote.path.relative_to(self.project_root).as_posix()
        if not credentials:
            return f"{self.base_url}/{rel}"
        secret = password if password is not None else self.password
        userinfo = f"{quote(self.username, safe='')}:{quote(secret, safe='')}"
        return f"{self.base_url.replace('http://', f'http://{userinfo}@')}/{rel}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _authorized(self, header: str) -> bool:
        if header == self._expected:
            return True
        scheme, _, encoded = header.partition(" ")
        if self.accepts is None or scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.username and self.accepts(password)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

            def _serve(self) -> None:
                authorized = server._authorized(self.headers.get("Authorization", ""))
                path, _, query = self.path.partition("?")
                server.requests.append((self.command, path, authorized))
                body = self._read_body()
                if not authorized:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.project_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": unquote(path),
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": server.username,
                    "REMOTE_ADDR": "127.0.0.1",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                cgi = subprocess.run(
                    ["git", "http-backend"],
                    check=False,
                    input=body,
                    env=env,
                    capture_output=True,
                    timeout=60,
                )
                head, payload = _split_cgi_output(cgi.stdout)
                status = 200
                headers: list[tuple[str, str]] = []
                for line in head.splitlines():
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        return Handler


def _split_cgi_output(raw: bytes) -> tuple[str, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, payload = raw.partition(separator)
        if found:
            return head.decode("latin-1"), payload
    return "", raw


def make_checkout(path: Path, branches: tuple[str, ...] = ("main", "topic")) -> Path:
    """A developer's working repository with one commit per branch and no remote.

    It stands for the checkout an operator starts Coalmine from (e.g. with a relative data
    directory), which the bot's git must never touch; compare `checkout_state` before and after.
    The first branch is checked out.
    """
    first, *others = branches
    git(path.parent, "init", "--quiet", f"--initial-branch={first}", str(path))
    (path / "app.txt").write_text("app\n")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "Initial commit")
    for branch in others:
        git(path, "checkout", "--quiet", "-b", branch, first)
        (path / f"{branch}.txt").write_text(f"{branch}\n")
        git(path, "add", "--all")
        git(path, "commit", "--quiet", "-m", f"Work on {branch}")
    git(path, "checkout", "--quiet", first)
    return path


def checkout_state(path: Path) -> dict[str, str]:
    """What a stray git command would change in a checkout: refs, config, HEAD, index, remotes.

    Read without running anything that could itself rewrite the checkout (no `status`).
    """
    index = path / ".git" / "index"
    return {
        "index": hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else "",
        "refs": git(path, "for-each-ref", "--format=%(refname) %(objectname)"),
        "config": (path / ".git" / "config").read_text(),
        "head": (path / ".git" / "HEAD").read_text(),
        "remotes": git(path, "remote", "-v"),
    }
