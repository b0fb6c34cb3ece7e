"""GitMirrors stay inside their mirrors, and answer the ancestry questions of the merge handler.

The fencing tests start from the reproduced finding of issue 8: with a relative data directory
inside a developer's checkout, git walked up out of the mirror into that checkout, added an
`origin` there and pruned its branches. Everything runs against real repositories on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.gitrepo import GitMirrors
from bot.gitrun import GitError
from bot.redact import Redactor
from tests.harness.gitrepos import BareRemote, checkout_state, git, make_checkout, make_remote

KEY = "github/acme/gitops"
DEPLOYMENT = "deploy/web/deployment.yaml"
V1 = "image: web:1.0\n"
V2 = "image: web:2.0\n"
V3 = "image: web:3.0\n"
BOT = ("Coalmine", "coalmine@example.test")
UNKNOWN = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    return make_remote(tmp_path / "remotes", "gitops", {DEPLOYMENT: V1})


@pytest.fixture
def mirrors(tmp_path: Path) -> GitMirrors:
    return GitMirrors(tmp_path / "mirrors", Redactor())


# --- fencing ----------------------------------------------------------------------------------


def test_relative_data_dir_inside_a_checkout_leaves_the_checkout_alone(
    tmp_path: Path, remote: BareRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    feature = remote.commit({"feature.yaml": "x: 1\n"}, "Feature", branch="feature")
    merge = remote.merge_pr("bump", {DEPLOYMENT: V2}, "Bump web")
    # Branches the remote lacks: a stray `fetch --prune` in this checkout would delete them.
    checkout = make_checkout(tmp_path / "coalmine", ("trunk", "topic", "wip"))
    before = checkout_state(checkout)
    monkeypatch.chdir(checkout)

    mirrors = GitMirrors(Path("var"), Redactor())  # the README's COALMINE_DATA_DIR default
    try:
        mirror = mirrors.fetch(KEY, remote.url)
        with mirrors.checkout(KEY, remote.url, merge) as tree:
            assert (tree / DEPLOYMENT).read_text() == V2
        reverted = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "revert", *BOT)
        assert mirrors.branch_contains(KEY, remote.url, "main", merge)
    finally:  # checked even when the bot failed: the damage is done by then
        assert checkout_state(checkout) == before

    root = checkout.resolve() / "var"
    assert mirrors.root == root and mirror.parent == root
    assert git(mirror, "rev-parse", "--absolute-git-dir") == str(mirror)
    assert git(mirror, "rev-parse", "refs/heads/feature") == feature
    assert reverted.created and remote.file_at(remote.head("revert"), DEPLOYMENT) == V1
    assert not list(root.glob(".init-*"))  # no half-made mirror left behind


def test_a_mirror_path_that_is_not_a_repository_is_refused(
    tmp_path: Path, remote: BareRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = make_checkout(tmp_path / "coalmine")
    before = checkout_state(checkout)
    monkeypatch.chdir(checkout)
    mirrors = GitMirrors(Path("var"), Redactor())
    impostor = mirrors.mirror_path(KEY)
    impostor.mkdir()
    (impostor / "config").write_text("")  # looks like a mirror to a quick check; it is not one

    # "not a git repository": discovery stopped at the mirror and never reached the checkout.
    with pytest.raises(GitError, match="not a git repository"):
        mirrors.fetch(KEY, remote.url)
    assert checkout_state(checkout) == before


def test_a_data_dir_with_spaces_in_its_path(tmp_path: Path, remote: BareRemote) -> None:
    mirrors = GitMirrors(tmp_path / "data dir" / "mir rors", Redactor())
    first = remote.head()
    newer = remote.commit({DEPLOYMENT: V2}, "Bump")
    with mirrors.checkout(KEY, remote.url, newer) as tree:
        assert (tree / DEPLOYMENT).read_text() == V2
    assert mirrors.is_ancestor(KEY, remote.url, first, newer)


@pytest.mark.parametrize(
    "variables",
    [
        {"GIT_DIR": "{decoy}/.git"},
        {"GIT_DIR": "{decoy}/.git", "GIT_WORK_TREE": "{decoy}"},
        {"GIT_INDEX_FILE": "{decoy}/.git/index"},
        {"GIT_CONFIG_PARAMETERS": "'url.{decoy}.insteadOf'='{remote}'"},
        {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.bare", "GIT_CONFIG_VALUE_0": "false"},
        {"GIT_TRACE": "{tmp}/trace.log"},
    ],
    ids=["git-dir", "git-dir+work-tree", "index-file", "config-parameters", "config-env", "trace"],
)
def test_inherited_git_variables_do_not_reach_the_mirrors(
    tmp_path: Path,
    remote: BareRemote,
    mirrors: GitMirrors,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
) -> None:
    merge = remote.merge_pr("bump", {DEPLOYMENT: V2}, "Bump web")
    decoy = make_checkout(tmp_path / "decoy")
    before = checkout_state(decoy)
    values = {"decoy": decoy, "remote": remote.url, "tmp": tmp_path}

    try:
        with monkeypatch.context() as env:  # only around the bot's calls: the harness uses git
            for name, value in variables.items():
                env.setenv(name, value.format(**values))
            mirror = mirrors.fetch(KEY, remote.url)
            with mirrors.checkout(KEY, remote.url, merge) as tree:
                shown = (tree / DEPLOYMENT).read_text()
            result = mirrors.create_revert_branch(KEY, remote.url, "main", merge, "revert", *BOT)
            contained = mirrors.branch_contains(KEY, remote.url, "main", merge)
    finally:  # checked even when the bot failed: the damage is done by then
        assert checkout_state(decoy) == before
        assert not (tmp_path / "trace.log").exists()

    assert shown == V2 and result.created and contained
    assert git(mirror, "rev-parse", "refs/heads/main") == remote.head()
    assert remote.file_at(remote.head("revert"), DEPLOYMENT) == V1


# --- ancestry ---------------------------------------------------------------------------------


def test_is_ancestor(remote: BareRemote, mirrors: GitMirrors) -> None:
    first = remote.head()
    elsewhere = remote.commit({"x.yaml": "x: 1\n"}, "Side work", branch="side")
    second = remote.commit({DEPLOYMENT: V2}, "Bump")

    assert mirrors.is_ancestor(KEY, remote.url, first, second)
    assert mirrors.is_ancestor(KEY, remote.url, second, second)  # a commit counts as its own
    assert not mirrors.is_ancestor(KEY, remote.url, second, first)
    assert not mirrors.is_ancestor(KEY, remote.url, elsewhere, second)
    assert not mirrors.is_ancestor(KEY, remote.url, second, elsewhere)
    assert not mirrors.is_ancestor(KEY, remote.url, UNKNOWN, second)
    assert not mirrors.is_ancestor(KEY, remote.url, first, UNKNOWN)
    with pytest.raises(GitError, match="is not a commit id"):
        mirrors.is_ancestor(KEY, remote.url, "main", second)


def test_is_ancestor_fetches_commits_the_mirror_lacks(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    first = remote.head()
    mirror = mirrors.fetch(KEY, remote.url)
    newer = remote.commit({DEPLOYMENT: V2}, "Bump")
    assert mirrors.is_ancestor(KEY, remote.url, first, newer)
    assert git(mirror, "rev-parse", "refs/heads/main") == newer

    orphan = remote.commit({DEPLOYMENT: V3}, "Pushed, then the branch was deleted", branch="tmp")
    git(remote.path, "branch", "-D", "tmp")
    assert mirrors.is_ancestor(KEY, remote.url, newer, orphan)  # fetched by id


def test_branch_contains(remote: BareRemote, mirrors: GitMirrors) -> None:
    first = remote.head()
    on_feature = remote.commit({"x.yaml": "x: 1\n"}, "Feature", branch="feature")
    merge = remote.merge_pr("bump", {DEPLOYMENT: V2}, "Bump")

    assert mirrors.branch_contains(KEY, remote.url, "main", first)
    assert mirrors.branch_contains(KEY, remote.url, "main", merge)  # the tip itself
    assert mirrors.branch_contains(KEY, remote.url, "feature", first)
    assert mirrors.branch_contains(KEY, remote.url, "feature", on_feature)
    assert not mirrors.branch_contains(KEY, remote.url, "main", on_feature)  # only on feature
    assert not mirrors.branch_contains(KEY, remote.url, "feature", merge)
    assert not mirrors.branch_contains(KEY, remote.url, "main", UNKNOWN)
    assert not mirrors.branch_contains(KEY, remote.url, "no-such-branch", first)
    for bad in ("--upload-pack=x", "a..b", "refs/heads/../x", ""):
        with pytest.raises(GitError, match="is not a valid branch name"):
            mirrors.branch_contains(KEY, remote.url, bad, first)


def test_branch_contains_follows_the_remote_after_the_mirror_was_fetched(
    remote: BareRemote, mirrors: GitMirrors
) -> None:
    base = remote.head()
    mirrors.fetch(KEY, remote.url)
    newer = remote.commit({DEPLOYMENT: V2}, "Bump")  # newer than the mirror's tip
    assert mirrors.branch_contains(KEY, remote.url, "main", newer)

    git(remote.path, "update-ref", "refs/heads/main", base)  # force-pushed away
    assert not mirrors.branch_contains(KEY, remote.url, "main", newer)
    assert mirrors.branch_contains(KEY, remote.url, "main", base)


def test_branch_tip(remote: BareRemote, mirrors: GitMirrors) -> None:
    assert mirrors.branch_tip(KEY, remote.url, "main") == remote.head()
    newer = remote.commit({DEPLOYMENT: V2}, "Bump")
    assert mirrors.branch_tip(KEY, remote.url, "main") == newer
    side = remote.commit({"x.yaml": "x: 1\n"}, "Side", branch="side")
    assert mirrors.branch_tip(KEY, remote.url, "side") == side
    git(remote.path, "branch", "-D", "side")
    assert mirrors.branch_tip(KEY, remote.url, "side") is None
    assert mirrors.branch_tip(KEY, remote.url, "never") is None
    with pytest.raises(GitError, match="is not a valid branch name"):
        mirrors.branch_tip(KEY, remote.url, "-main")


@pytest.mark.parametrize("query", ["is_ancestor", "branch_contains", "branch_tip"])
def test_ancestry_queries_wait_for_the_mirror_lock(
    remote: BareRemote, mirrors: GitMirrors, query: str
) -> None:
    sha = remote.head()
    calls: dict[str, Callable[[], object]] = {
        "is_ancestor": lambda: mirrors.is_ancestor(KEY, remote.url, sha, sha),
        "branch_contains": lambda: mirrors.branch_contains(KEY, remote.url, "main", sha),
        "branch_tip": lambda: mirrors.branch_tip(KEY, remote.url, "main"),
    }
    mirrors.fetch(KEY, remote.url)
    events: list[str] = []

    def run() -> None:
        calls[query]()
        events.append("answered")

    with mirrors.locked(KEY):
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(timeout=0.3)  # an answer takes a few ms when nothing holds the lock
        events.append("released")
    worker.join(timeout=30)
    assert events == ["released", "answered"]
