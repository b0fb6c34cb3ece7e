"""GitMirrors against real repositories: bare remotes on disk and a smart-HTTP git server."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bot.forge.base import RepoRef
from bot.gitrepo import GitMirrors, repo_key
from bot.gitrun import GitError
from bot.redact import RedactingFilter, Redactor, strip_url_credentials
from tests.harness.gitrepos import BareRemote, GitHttpServer, git, make_remote

KEY = "github/acme/gitops"
DEPLOYMENT = "deploy/web/deployment.yaml"
V1 = "image: web:1.0\nreplicas: 3\n"
V2 = "image: web:2.0\nreplicas: 3\n"
V3 = "image: web:2.1-hotfix\nreplicas: 3\n"
BOT = ("Coalmine", "coalmine@example.test")
TOKEN = "ghs_FAKEtoken+with=odd~chars"  # "+" and "=" are percent-encoded in some URLs


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    return make_remote(tmp_path / "remotes", "gitops", {DEPLOYMENT: V1, "README.md": "# ops\n"})


@pytest.fixture
def mirrors(tmp_path: Path) -> GitMirrors:
    return GitMirrors(tmp_path / "mirrors", Redactor())


def worktree_count(mirror: Path) -> int:
    listing = git(mirror, "worktree", "list", "--porcelain")
    return sum(line.startswith("worktree ") for line in listing.splitlines())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- mirrors and worktrees --------------------------------------------------------------------


def test_first_use_clones_and_later_uses_fetch_into_the_same_mirror(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    first = remote.head()
    with mirrors.checkout(KEY, remote.url, first) as worktree:
        assert (worktree / DEPLOYMENT).read_text() == V1
    mirror = mirrors.mirror_path(KEY)
    objects_inode = (mirror / "objects").stat().st_ino
    (mirror / "marker-left-by-test").write_text("a re-clone would delete me")

    second = remote.commit({DEPLOYMENT: V2}, "Bump web")
    with mirrors.checkout(KEY, remote.url, second) as worktree:
        assert (worktree / DEPLOYMENT).read_text() == V2

    assert (mirror / "objects").stat().st_ino == objects_inode
    assert (mirror / "marker-left-by-test").exists()
    assert [p for p in mirrors.root.iterdir() if p.suffix == ".git"] == [mirror]
    assert git(mirror, "rev-parse", "refs/heads/main") == second


def test_fetch_brings_new_branches_and_prunes_deleted_ones(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    mirror = mirrors.fetch(KEY, remote.url)
    feature = remote.commit({"x.yaml": "x: 1\n"}, "Feature", branch="feature")
    mirrors.fetch(KEY, remote.url)
    assert git(mirror, "rev-parse", "refs/heads/feature") == feature
    git(remote.path, "branch", "-D", "feature")
    mirrors.fetch(KEY, remote.url)
    assert "feature" not in git(mirror, "branch", "--list")


def test_worktree_is_removed_even_when_the_body_raises(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        mirrors.checkout(KEY, remote.url, remote.head()) as worktree,
    ):
        assert (worktree / DEPLOYMENT).exists()
        raise RuntimeError("boom")
    assert not worktree.exists()
    assert worktree_count(mirrors.mirror_path(KEY)) == 1  # only the bare mirror itself
    assert list((mirrors.root / "worktrees").iterdir()) == []


def test_checkout_of_a_commit_no_branch_reaches(remote: BareRemote, mirrors: GitMirrors) -> None:
    mirrors.fetch(KEY, remote.url)
    orphaned = remote.commit({DEPLOYMENT: V2}, "Pushed then force-removed", branch="tmp")
    git(remote.path, "branch", "-D", "tmp")
    with mirrors.checkout(KEY, remote.url, orphaned) as worktree:
        assert (worktree / DEPLOYMENT).read_text() == V2


def test_unknown_commit_is_a_git_error(remote: BareRemote, mirrors: GitMirrors) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with (
        pytest.raises(GitError, match=f"commit {missing} is not in {remote.url}"),
        mirrors.checkout(KEY, remote.url, missing),
    ):
        pass


@pytest.mark.parametrize("sha", ["--upload-pack=touch /tmp/pwned", "HEAD", "main", "abc"])
def test_only_hex_commit_ids_reach_git(remote: BareRemote, mirrors: GitMirrors, sha: str) -> None:
    with pytest.raises(GitError, match="is not a commit id"):
        mirrors.file_at(KEY, remote.url, sha, DEPLOYMENT)
    assert not mirrors.mirror_path(KEY).exists()


def test_file_at_reads_without_a_worktree(remote: BareRemote, mirrors: GitMirrors) -> None:
    first = remote.head()
    second = remote.commit({DEPLOYMENT: V2, ".coalmine.yaml": "apps: []\n"}, "Config")
    assert mirrors.file_at(KEY, remote.url, first, DEPLOYMENT) == V1
    assert mirrors.file_at(KEY, remote.url, second, DEPLOYMENT) == V2
    assert mirrors.file_at(KEY, remote.url, second, ".coalmine.yaml") == "apps: []\n"
    assert mirrors.file_at(KEY, remote.url, first, ".coalmine.yaml") is None
    assert mirrors.file_at(KEY, remote.url, second, "deploy/web") is None  # a directory
    with pytest.raises(GitError, match="not a relative path"):
        mirrors.file_at(KEY, remote.url, second, "../etc/passwd")
    assert not (mirrors.root / "worktrees").exists()


def test_mirror_directories_are_confined_and_distinct(mirrors: GitMirrors) -> None:
    keys = ["../../etc", "github/a/b", "github/a-b", "gitlab/group/sub/proj", "..", "/abs"]
    paths = [mirrors.mirror_path(key) for key in keys]
    assert all(path.parent == mirrors.root for path in paths)
    assert all(not path.name.startswith(".") for path in paths)
    assert len(set(paths)) == len(keys)
    ref = RepoRef("gitlab", "group/sub/proj", "https://gitlab.example/group/sub/proj.git")
    assert repo_key(ref) == "gitlab/group/sub/proj"


def test_the_mirror_lock_excludes_other_processes_and_threads(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    lock_file = mirrors.mirror_path(KEY).with_suffix(".lock")
    probe = (
        "import fcntl, sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    try:\n"
        "        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except BlockingIOError:\n"
        "        sys.exit(3)\n"
    )
    events: list[str] = []
    with mirrors.locked(KEY):
        held = subprocess.run([sys.executable, "-c", probe, str(lock_file)], check=False)
        assert held.returncode == 3
        started = threading.Event()

        def fetch() -> None:
            started.set()
            mirrors.fetch(KEY, remote.url)
            events.append("fetched")

        worker = threading.Thread(target=fetch)
        worker.start()
        assert started.wait(5)
        worker.join(timeout=0.3)  # a fetch takes ~20 ms when nothing holds the lock
        events.append("released")
    worker.join(timeout=30)
    assert events == ["released", "fetched"]
    free = subprocess.run([sys.executable, "-c", probe, str(lock_file)], check=False)
    assert free.returncode == 0


# --- revert branches --------------------------------------------------------------------------


def test_revert_of_a_merge_commit_is_the_inverse_of_the_pull_request(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2, "deploy/web/hpa.yaml": "max: 5\n"}, "Bump")
    first_parent, _pr_head = remote.parents(merge)
    remote.commit({"docs/notes.md": "later work on main\n"}, "Unrelated")
    base_tip = remote.head()

    result = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "coalmine/revert-1", *BOT)

    assert result.created and result.outcome == "created"
    assert result.sha == remote.head("coalmine/revert-1")
    assert remote.parents(result.sha) == [base_tip]
    assert remote.diff(base_tip, result.sha) == remote.diff(merge, first_parent)
    assert remote.file_at(result.sha, DEPLOYMENT) == V1
    assert remote.file_at(result.sha, "deploy/web/hpa.yaml") is None
    assert remote.file_at(result.sha, "docs/notes.md") == "later work on main\n"
    assert remote.log_format(result.sha, "%an <%ae>|%cn <%ce>") == (
        "Coalmine <coalmine@example.test>|Coalmine <coalmine@example.test>"
    )
    assert remote.log_format(result.sha, "%s") == 'Revert "Merge pull request #1 from bump-web"'
    assert remote.head() == base_tip  # the base branch itself is untouched
    assert worktree_count(mirrors.mirror_path(KEY)) == 1


def test_revert_of_a_squash_merge_commit(remote: BareRemote, mirrors: GitMirrors) -> None:
    squash = remote.squash_merge("bump-web", {DEPLOYMENT: V2, "deploy/web/new.yaml": "n\n"}, "Bump")
    [parent] = remote.parents(squash)

    result = mirrors.create_revert_branch(KEY, remote.url, "main", squash, "revert-squash", *BOT)

    assert result.created
    assert remote.parents(result.sha) == [squash]
    assert remote.diff(squash, result.sha) == remote.diff(squash, parent)
    assert remote.file_at(result.sha, DEPLOYMENT) == V1


def test_conflicting_revert_is_reported_not_raised(remote: BareRemote, mirrors: GitMirrors) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2, "deploy/web/ok.yaml": "ok\n"}, "Bump")
    remote.commit({DEPLOYMENT: V3}, "Hotfix on top")

    result = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "coalmine/revert-2", *BOT)

    assert result.conflict and result.outcome == "conflict"
    assert result.files == (DEPLOYMENT,)
    assert result.sha is None
    assert "coalmine/revert-2" not in remote.branches()
    assert worktree_count(mirrors.mirror_path(KEY)) == 1
    assert list((mirrors.root / "worktrees").iterdir()) == []


def test_revert_twice_reports_the_existing_branch(remote: BareRemote, mirrors: GitMirrors) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2}, "Bump")
    first = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "coalmine/revert-3", *BOT)
    remote.commit({"docs/more.md": "main moved on\n"}, "Later")

    again = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "coalmine/revert-3", *BOT)

    assert first.created
    assert again.exists and again.outcome == "exists"
    assert again.sha == first.sha == remote.head("coalmine/revert-3")


def test_a_branch_someone_else_pushed_is_not_overwritten(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2}, "Bump")
    theirs = remote.commit({"manual.txt": "by hand\n"}, "Manual revert attempt", branch="revert-x")

    result = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "revert-x", *BOT)

    assert result.exists and result.sha == theirs == remote.head("revert-x")


def test_revert_of_changes_already_undone_on_the_base(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2}, "Bump")
    remote.commit({DEPLOYMENT: V1}, "Undo by hand")

    result = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "coalmine/revert-4", *BOT)

    assert result.outcome == "nothing_to_revert"
    assert "coalmine/revert-4" not in remote.branches()


def test_missing_base_branch_and_bad_branch_names_are_errors(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2}, "Bump")
    with pytest.raises(GitError, match="branch 'release' does not exist on the remote"):
        mirrors.create_revert_branch(KEY, remote.url, "release", merge, "revert-5", *BOT)
    for bad in ["-f", "a..b", "x:y", "a b", "refs/../x", "", "tail/", "x.lock"]:
        with pytest.raises(GitError, match="is not a valid branch name"):
            mirrors.create_revert_branch(KEY, remote.url, "main", merge, bad, *BOT)


# --- credentials ------------------------------------------------------------------------------


def test_credentials_travel_over_http_but_are_never_stored(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    merge = remote.merge_pr("bump-web", {DEPLOYMENT: V2}, "Bump")
    with GitHttpServer(remote.path.parent, password=TOKEN) as server:
        url = server.url(remote)
        assert "ghs_FAKEtoken%2Bwith%3Dodd~chars" in url
        with mirrors.checkout(KEY, url, merge) as worktree:
            assert (worktree / DEPLOYMENT).read_text() == V2
        result = mirrors.create_revert_branch(KEY, url, "main", merge, "coalmine/revert-http", *BOT)
    assert result.created and remote.head("coalmine/revert-http") == result.sha
    assert server.requests and all(authorized for _m, _p, authorized in server.requests)
    assert any(path.endswith("git-receive-pack") for _m, path, _a in server.requests)
    mirror = mirrors.mirror_path(KEY)
    config = (mirror / "config").read_text()
    assert f"url = {strip_url_credentials(url)}\n" in config
    assert mirrors.redactor.redact(config) == config  # no secret in any encoding
    assert TOKEN not in git(mirror, "config", "--list")


def test_a_wrong_token_fails_without_revealing_it(
    remote: BareRemote, mirrors: GitMirrors, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "glpat-WRONG-secret-123"
    with (
        GitHttpServer(remote.path.parent, password=TOKEN) as server,
        pytest.raises(GitError) as caught,
    ):
        mirrors.fetch(KEY, server.url(remote, password=wrong))
    assert "git fetch --prune origin failed" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caplog.text
    assert any(not authorized for _m, _p, authorized in server.requests)


@pytest.mark.parametrize("operation", ["fetch", "checkout", "file_at", "revert"])
def test_token_in_clone_url_never_appears_in_errors_or_logs(
    mirrors: GitMirrors, caplog: pytest.LogCaptureFixture, operation: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://x-access-token:{TOKEN}@127.0.0.1:{closed_port()}/acme/gitops.git"
    sha = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(GitError) as caught:
        if operation == "fetch":
            mirrors.fetch(KEY, url)
        elif operation == "checkout":
            with mirrors.checkout(KEY, url, sha):
                pass
        elif operation == "file_at":
            mirrors.file_at(KEY, url, sha, DEPLOYMENT)
        else:
            mirrors.create_revert_branch(KEY, url, "main", sha, "revert", *BOT)
    error = caught.value
    shown = f"{error} {error!r} {error.__cause__!r} {error.__context__!r}"
    assert TOKEN not in shown and "FAKEtoken" not in shown
    # Nothing unredacted hangs off the error: no cause, and no context a traceback would show.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    assert "127.0.0.1" in str(error)  # the error still says which remote failed
    assert "FAKEtoken" not in caplog.text
    assert "FAKEtoken" not in (mirrors.mirror_path(KEY) / "config").read_text()
    # The mirrors taught the shared redactor the token, for every later log line and comment.
    assert mirrors.redactor.redact(f"token={TOKEN}") == "token=***"


# --- the redactor -----------------------------------------------------------------------------


def test_redactor_masks_plain_url_encoded_and_base64_forms() -> None:
    redactor = Redactor(["s3cr3t/+=", "", None])  # type: ignore[list-item]
    redactor.add("hook-secret")
    text = "a s3cr3t/+= b s3cr3t%2F%2B%3D c s3cr3t%2F%2B%3D d czNjcjN0Lys9 e hook-secret"
    assert redactor.redact(text) == "a *** b *** c *** d *** e ***"
    assert redactor.redact("nothing to hide") == "nothing to hide"


def test_redactor_learns_url_credentials() -> None:
    redactor = Redactor()
    redactor.add_url_credentials("https://oauth2:glpat%2Dabc@gitlab.example/g/p.git")
    redactor.add_url_credentials("https://ghp_tokenAsUser@github.example/o/r.git")
    assert redactor.redact("glpat-abc ghp_tokenAsUser oauth2") == "*** *** oauth2"


def test_strip_url_credentials() -> None:
    assert strip_url_credentials("https://x:tok@host:8443/a/b.git") == "https://host:8443/a/b.git"
    assert strip_url_credentials("https://tok@host/a.git") == "https://host/a.git"
    assert strip_url_credentials("/srv/git/a.git") == "/srv/git/a.git"


def test_redacting_filter_masks_message_args_and_exception_text() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter(Redactor(["tok-123"])))
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling %s with tok-123", "https://x:tok-123@h/")
        try:
            raise ValueError("bad token tok-123")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert records[0] == "calling https://x:***@h/ with ***"
    assert records[1].startswith("failed\nTraceback")
    assert "ValueError: bad token ***" in records[1]
    assert all("tok-123" not in r for r in records)


def test_redacting_filter_survives_a_malformed_log_call() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s and %s tok-123", ("one",), None)
    assert RedactingFilter(Redactor(["tok-123"])).filter(record)
    assert "tok-123" not in record.getMessage() and "***" in record.getMessage()
