"""Git fixtures: a GitOps remote on disk, and the same remotes served over authenticated HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.gitrepos import BareRemote, GitHttpServer, make_remote


@pytest.fixture
def git_remote(tmp_path: Path) -> BareRemote:
    """A bare `gitops` repository whose `main` holds a README; clone it with `.url`."""
    return make_remote(tmp_path / "remotes", "gitops")


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    """Serves every remote under `tmp_path/remotes` (e.g. `git_remote`) over smart HTTP.

    `git_http.url(git_remote)` is a clone URL with the credentials the server requires.
    """
    root = tmp_path / "remotes"
    root.mkdir(exist_ok=True)
    with GitHttpServer(root) as server:
        yield server
