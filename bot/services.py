"""The process-wide set of adapters that jobs use, built once from the settings.

Jobs arrive as plain function calls (RQ pickles only their arguments), so each worker process
needs one place to find its Redis, queue, forges, clusters and git mirrors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis

from bot.config import Settings, load_settings
from bot.queue import EmbeddedJobQueue, JobQueue, RQJobQueue

if TYPE_CHECKING:
    from bot.cluster.client import Cluster
    from bot.forge.base import Forge, RepoRef
    from bot.gitrepo import GitMirrors

log = logging.getLogger(__name__)


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
        with self._lock:
            if repo.forge not in self._forges:
                self._forges[repo.forge] = _build_forge(self.settings, repo.forge)
            return self._forges[repo.forge]

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


def current() -> Services:
    """The installed services, or ones built from the environment on first use (RQ workers)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = build(load_settings())
        return _current


def redactor() -> Any:
    """The process-wide redactor, knowing the settings' secrets and every token seen since."""
    from bot.logs import PROCESS_REDACTOR

    if _current is not None:
        PROCESS_REDACTOR.add(*_current.settings.secrets())
    return PROCESS_REDACTOR
