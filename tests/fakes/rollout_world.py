"""Driving one rollout through the real engine and shell with in-memory ports, for use-case tests.

A test's world sets `cluster` (a FakeCluster), `store` (a FakeRecordStore), `record` and `now`;
`RolloutDriver` feeds events as `handlers.rollout_shell.run` does in a job and keeps the saved
record, so each test reads the cluster and the state after every event.
"""

from __future__ import annotations

from bot.refs import RepoRef
from bot.rollout import model as m
from bot.rollout.store import RolloutRecord
from handlers.rollout_shell import Shell, run
from tests.fakes.cluster import FakeCluster, FakeRecordStore

KEY = "coalmine:rollout:github:acme/gitops:web"
REPO = RepoRef("github", "acme/gitops", "https://github.example/acme/gitops.git", repo_id=7)


class RolloutDriver:
    cluster: FakeCluster
    store: FakeRecordStore
    record: RolloutRecord
    now: float

    def send(self, event: m.Event) -> Shell:
        shell = run(self.cluster, self.store, KEY, self.record, event, clock=lambda: self.now)
        assert shell.record is not None
        self.record = shell.record
        return shell

    @property
    def state(self) -> m.RolloutState:
        return self.record.state
