"""One long-lived HTTP client per forge adapter: many calls, one TCP connection.

A worker makes a forge call for almost every tick (statuses, comment edits), so building a client
per call costs a TCP (and on github.com a TLS) handshake each time. Here a loopback relay in front
of the fake forge counts the connections the real adapters open while they make many calls.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from bot.forge.base import ForgeError, RepoRef
from bot.forge.github import GitHubForge
from bot.forge.gitlab import GitLabForge
from bot.forge.retry import RetryPolicy
from tests.harness.fixtures_forges import (
    GITHUB_BOT,
    GITHUB_REPO,
    GITHUB_TOKEN,
    GITLAB_PROJECT,
    GITLAB_TOKEN,
    RecordingSleep,
)

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
CALLS = 12
PR = 1  # the pull request / merge request each fake fixture opens


class ConnectionCounter:
    """A loopback TCP relay to `target_url` that counts the connections made through it."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname, parts.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self.connections += 1
            upstream = socket.create_connection(self._target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def github_relay(fake_github):
    relay = ConnectionCounter(fake_github.url)
    yield relay
    relay.close()


@pytest.fixture
def gitlab_relay(fake_gitlab):
    relay = ConnectionCounter(fake_gitlab.url)
    yield relay
    relay.close()


def github_through(relay: ConnectionCounter, fake_github, **kw) -> GitHubForge:
    api_url = fake_github.api_url.replace(fake_github.url, relay.url)
    return GitHubForge(api_url=api_url, token=GITHUB_TOKEN,
                       retry=RetryPolicy(sleep=RecordingSleep()), **kw)


def test_github_calls_share_one_connection(fake_github, github_relay, github_repo):
    forge = github_through(github_relay, fake_github)
    for i in range(CALLS):
        forge.set_status(github_repo, SHA, "coalmine/web", "pending", f"step {i}")
    forge.upsert_comment(github_repo, PR, "<!-- m -->", "<!-- m --> first")
    forge.upsert_comment(github_repo, PR, "<!-- m -->", "<!-- m --> second")
    assert forge.permission(github_repo, GITHUB_BOT) in ("admin", "write", "read", "none")
    assert len(fake_github.calls) >= CALLS + 4  # statuses, /user, list + post + list + patch
    assert github_relay.connections == 1
    assert fake_github.comments(GITHUB_REPO, PR)[-1]["body"] == "<!-- m --> second"


def test_github_calls_from_threads_share_the_pool(fake_github, github_relay, github_repo):
    forge = github_through(github_relay, fake_github, bot_login=GITHUB_BOT)

    def status(i: int) -> None:
        forge.set_status(github_repo, SHA, f"coalmine/app-{i}", "success", "done")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(status, range(4 * CALLS)))
    assert len(fake_github.latest_statuses(GITHUB_REPO, SHA)) == 4 * CALLS
    assert github_relay.connections <= 4


def test_github_errors_still_name_the_call_without_the_token(fake_github, github_relay,
                                                             github_repo):
    forge = github_through(github_relay, fake_github)
    fake_github.fail_next(1, 422, body={"message": f"bad {GITHUB_TOKEN}"})
    with pytest.raises(ForgeError) as failure:
        forge.set_status(github_repo, SHA, "coalmine/web", "pending", "x")
    assert "setting status" in str(failure.value) and GITHUB_TOKEN not in str(failure.value)
    forge.set_status(github_repo, SHA, "coalmine/web", "pending", "again")  # client still usable
    assert github_relay.connections == 1


def test_gitlab_calls_share_one_session(fake_gitlab, gitlab_relay):
    forge = GitLabForge(gitlab_relay.url, GITLAB_TOKEN)
    repo = RepoRef(forge="gitlab", full_name=GITLAB_PROJECT,
                   clone_url=f"https://gitlab.example/{GITLAB_PROJECT}.git")
    for i in range(CALLS):
        forge.set_status(repo, SHA, "coalmine/web", "pending", f"step {i}")
    forge.upsert_comment(repo, PR, "<!-- m -->", "<!-- m --> first")
    forge.upsert_comment(repo, PR, "<!-- m -->", "<!-- m --> second")
    assert len(fake_gitlab.calls) >= CALLS + 3
    assert gitlab_relay.connections == 1
