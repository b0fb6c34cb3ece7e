"""The composition root: the process-wide adapters, built once from the settings.

Jobs arrive as plain function calls (RQ pickles only their arguments), so each worker process
needs one place to find its Redis, queue, forges, clusters and git mirrors. This module builds
them, and the ports the use cases receive (`tenants`, `deployed_markers`, `merge_locks`,
`bot_name`): a use case declares the narrow Protocols it needs next to itself and gets these
adapters as arguments, so it can be tested with in-memory fakes.

Only the thin RQ entry points of `handlers/` (the functions enqueued by dotted path, such as
`handlers.commands.run` and `handlers.merged.run`), the edge's start-up and the command line may
call `current()`; a use case below an entry point receives ports instead. (handlers/rollout.py,
handlers/deploy.py and handlers/outbox.py still pass `Services` to their reporting and
rendering steps; the rollout shell and the revert PR take ports.) Nothing here imports
`handlers`: the use cases import this module, so the ports that wrap use cases (the rollouts a
command reaches) are assembled by the entry points from these adapters.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis

from bot import keys, tenancy
from bot.config import Settings, load_settings
from bot.logs import PROCESS_REDACTOR
from bot.queue import EmbeddedJobQueue, JobQueue, RQJobQueue
from bot.rollout.store import RolloutStore

if TYPE_CHECKING:
    from bot.cluster.client import Cluster
    from bot.forge.base import Forge, RepoRef
    from bot.gitrepo import GitMirrors

log = logging.getLogger(__name__)
MERGE_LOCK_WAIT_S = 3600.0  # merges of one branch queue behind each other; each is bounded


def _deployed_key(forge: str, repo_id: int, branch: str) -> str:
    """The newest merge commit of the branch that a merge job processed, per repository id."""
    return keys.deployed(forge, repo_id, branch)


def _merge_lock_key(forge: str, repo_id: int, branch: str) -> str:
    return keys.merge_lock(forge, repo_id, branch)


@dataclass(frozen=True)
class Tenancy:
    """`bot.tenancy.resolve` bound to the settings and Redis (the merge's TenantResolver)."""

    settings: Settings
    redis: Redis

    def resolve(self, forge: str, repo_id: int, full_name: str) -> tenancy.Tenant | str:
        return tenancy.resolve(self.settings, self.redis, forge, repo_id, full_name)


@dataclass(frozen=True)
class RedisDeployedMarkers:
    """The merge's DeployedMarkers in Redis: "<sha>" once complete, "<sha> incomplete" when a
    deploy of it failed (so a redelivery of the same commit may try again)."""

    redis: Redis

    def last(self, forge: str, repo_id: int, branch: str) -> tuple[str, bool] | None:
        raw = self.redis.get(_deployed_key(forge, repo_id, branch))
        if raw is None:
            return None
        sha, _, incomplete = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(" ")
        return sha, not incomplete

    def record(self, forge: str, repo_id: int, branch: str, sha: str, *,
               complete: bool) -> None:
        self.redis.set(_deployed_key(forge, repo_id, branch),
                       sha if complete else f"{sha} incomplete")


@dataclass(frozen=True)
class RedisMergeLocks:
    """The merge's BranchLock: a renewed Redis lock per repository id and deploy branch."""

    redis: Redis

    def locked(self, forge: str, repo_id: int, branch: str) -> AbstractContextManager[object]:
        return RolloutStore(self.redis).locked(_merge_lock_key(forge, repo_id, branch),
                                               MERGE_LOCK_WAIT_S)


@dataclass
class Services:
    settings: Settings
    redis: Redis
    queue: JobQueue
    embedded: bool = False
    _forges: dict[str, Any] = field(default_factory=dict)
    _clusters: dict[str, Any] = field(default_factory=dict)
    _mirrors: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def forge(self, repo: RepoRef) -> Forge:
        return self.forge_of(repo.forge)

    def forge_of(self, kind: str) -> Any:
        """The adapter of forge `kind` ("github", "gitlab"), built on first use."""
        with self._lock:
            if kind not in self._forges:
                self._forges[kind] = _build_forge(self.settings, kind)
            return self._forges[kind]

    def cluster(self, name: str | None, *, impersonate: str | None = None) -> Cluster:
        """The named cluster; with `impersonate`, a view whose every call is made as that user
        (a repository's ServiceAccount), so the cluster's RBAC enforces its boundary too."""
        from bot.cluster.client import Cluster

        config = self.settings.cluster(name)
        with self._lock:
            if config.name not in self._clusters:
                self._clusters[config.name] = Cluster.from_config(config.kubeconfig, config.context)
            base = self._clusters[config.name]
            if impersonate is None:
                return base
            view_key = f"{config.name}\0{impersonate}"
            if view_key not in self._clusters:
                self._clusters[view_key] = base.impersonating(impersonate)
            return self._clusters[view_key]

    def bot_name(self, repo: RepoRef) -> str | None:
        """The account Coalmine comments as on the repository's forge (looked up once if not
        configured), so its own comments are never taken for commands."""
        forge = self.forge(repo)
        return getattr(forge, "bot_login" if repo.forge == "github" else "bot_username", None)

    @property
    def tenants(self) -> Tenancy:
        return Tenancy(self.settings, self.redis)

    @property
    def deployed_markers(self) -> RedisDeployedMarkers:
        return RedisDeployedMarkers(self.redis)

    @property
    def merge_locks(self) -> RedisMergeLocks:
        return RedisMergeLocks(self.redis)

    @property
    def mirrors(self) -> GitMirrors:
        from bot.gitrepo import GitMirrors

        with self._lock:
            if self._mirrors is None:
                root = Path(self.settings.data_dir).resolve() / "mirrors"
                self._mirrors = GitMirrors(root, redactor())
            return self._mirrors


def _build_forge(settings: Settings, kind: str) -> Any:
    if kind == "github":
        from bot.forge.github import GitHubForge

        gh = settings.github
        return GitHubForge(
            api_url=gh.api_url,
            token=gh.token,
            app_id=gh.app_id,
            private_key=gh.private_key,
            bot_login=gh.bot_login,
        )
    from bot.forge.gitlab import GitLabForge

    gl = settings.gitlab
    return GitLabForge(url=gl.url, token=gl.token, bot_username=gl.bot_username)


def build(settings: Settings) -> Services:
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        return Services(settings, redis, RQJobQueue(redis))
    import fakeredis

    log.warning(
        "REDIS_URL is not set: using the embedded in-process queue and store; "
        "jobs run in this process and nothing survives a restart"
    )
    return Services(settings, fakeredis.FakeRedis(), EmbeddedJobQueue(), embedded=True)


_current: Services | None = None
_current_lock = threading.Lock()


def install(services: Services) -> Services:
    global _current
    with _current_lock:
        _current = services
    return services


def uninstall() -> None:
    """Forget the installed services: the next `current()` builds them from the environment.

    For whoever installed them for a while (a test, a command that runs the bot in-process)."""
    global _current
    with _current_lock:
        _current = None


def current() -> Services:
    """The installed services, or ones built from the environment on first use (RQ workers)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = build(load_settings())
        return _current


def redactor() -> Any:
    """The process-wide redactor, knowing the settings' secrets and every token seen since."""
    if _current is not None:
        PROCESS_REDACTOR.add(*_current.settings.secrets())
    return PROCESS_REDACTOR
