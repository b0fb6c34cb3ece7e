"""Server configuration (environment + optional YAML) and repository configuration (.coalmine.yaml).

Both are validated when loaded, and every mistake names the file (or variable), the key and the
reason, because the person reading the error is usually looking at a PR, not at our source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO_CONFIG_FILE = ".coalmine.yaml"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_GITHUB_LEVELS = ("read", "write", "admin")
_GITLAB_LEVELS = {"guest": 10, "reporter": 20, "developer": 30, "maintainer": 40, "owner": 50}


class ConfigError(ValueError):
    """A configuration mistake, phrased for the person who has to fix it."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")


# --------------------------------------------------------------------------- server config


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    kubeconfig: str | None = None  # None: KUBECONFIG / ~/.kube/config, or in-cluster
    context: str | None = None


@dataclass(frozen=True)
class RepoPolicy:
    """One repository's entry in the server config; `raw` is checked by bot.policy at load."""

    deploy_branch: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GitHubSettings:
    webhook_secret: str | None = None
    api_url: str = "https://api.github.com"
    token: str | None = None
    app_id: str | None = None
    private_key: str | None = None
    bot_login: str | None = None


@dataclass(frozen=True)
class GitLabSettings:
    webhook_token: str | None = None
    url: str = "https://gitlab.com"
    token: str | None = None
    bot_username: str | None = None


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    public_url: str = "http://localhost:8000"
    data_dir: str = "var"
    github: GitHubSettings = GitHubSettings()
    gitlab: GitLabSettings = GitLabSettings()
    prometheus_url: str | None = None
    clusters: Mapping[str, ClusterConfig] = field(default_factory=dict)
    repos: Mapping[str, RepoPolicy] = field(default_factory=dict)
    github_min_permission: str = "write"
    gitlab_min_access: int = 30
    health_timeout_s: float = 300.0
    max_body_bytes: int = 25 * 1024 * 1024
    delivery_ttl_s: int = 7 * 24 * 3600
    log_level: str = "INFO"
    extra_git_hosts: tuple[str, ...] = ()

    @property
    def github_enabled(self) -> bool:
        return bool(self.github.webhook_secret)

    @property
    def gitlab_enabled(self) -> bool:
        return bool(self.gitlab.webhook_token)

    def secrets(self) -> list[str]:
        """Every credential in the settings, for the log redactor."""
        values = [
            self.github.webhook_secret,
            self.github.token,
            self.github.private_key,
            self.gitlab.webhook_token,
            self.gitlab.token,
        ]
        return [v for v in values if v]

    def repo_settings(self, full_name: str) -> RepoPolicy:
        """The repository's entry, matched case-insensitively as the forges match names."""
        wanted = full_name.casefold()
        return next((p for name, p in self.repos.items() if name.casefold() == wanted),
                    RepoPolicy())

    def clone_host_allowed(self, forge: str, clone_url: str) -> bool:
        """Only the forge's own host gets the bot's token: a webhook payload names the clone
        URL, and anyone holding the webhook secret could otherwise point it elsewhere."""
        parts = urlsplit(clone_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        if forge == "github":
            api_host = urlsplit(self.github.api_url).hostname or ""
            allowed = {api_host.removeprefix("api.")}
        else:
            allowed = {urlsplit(self.gitlab.url).hostname or ""}
        return parts.hostname in allowed | set(self.extra_git_hosts)

    def cluster(self, name: str | None) -> ClusterConfig:
        if name is None:
            return self.clusters.get("default", ClusterConfig("default"))
        return self.clusters[name]


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME, or from the file NAME_FILE points at (Kubernetes secret volumes)."""
    value = env.get(name)
    path = env.get(f"{name}_FILE") or (env.get(f"{name}_PATH") if name.endswith("KEY") else None)
    if value:
        return value.strip() if not name.endswith("KEY") else value
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE", "", f"cannot read {path}: {exc.strerror}") from None
        return text if name.endswith("KEY") else text.strip()
    return None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, overlaid on the YAML file named by COALMINE_CONFIG."""
    env = os.environ if env is None else env
    file_data: dict[str, Any] = {}
    source = env.get("COALMINE_CONFIG")
    if source:
        file_data = _load_yaml_file(source)

    github = GitHubSettings(
        webhook_secret=_secret(env, "GITHUB_WEBHOOK_SECRET"),
        api_url=(env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
        token=_secret(env, "GITHUB_TOKEN"),
        app_id=env.get("GITHUB_APP_ID") or None,
        private_key=_secret(env, "GITHUB_PRIVATE_KEY"),
        bot_login=env.get("GITHUB_BOT_LOGIN") or None,
    )
    if github.app_id and not github.private_key:
        raise ConfigError("GITHUB_APP_ID", "", "is set but GITHUB_PRIVATE_KEY(_PATH) is not")
    gitlab = GitLabSettings(
        webhook_token=_secret(env, "GITLAB_WEBHOOK_TOKEN"),
        url=(env.get("GITLAB_URL") or "https://gitlab.com").rstrip("/"),
        token=_secret(env, "GITLAB_TOKEN"),
        bot_username=env.get("GITLAB_BOT_USERNAME") or None,
    )
    src = source or "COALMINE_CONFIG"
    clusters = _parse_clusters(file_data.get("clusters", {}), src)
    clusters.setdefault("default", ClusterConfig(
        "default", env.get("KUBECONFIG") or None, env.get("COALMINE_KUBE_CONTEXT") or None))
    repos = _parse_repos(file_data.get("repos", {}), src)
    perms = file_data.get("permissions", {}) or {}
    if not isinstance(perms, dict):
        raise ConfigError(src, "permissions", "must be a mapping")
    gh_min = str(env.get("COALMINE_GITHUB_MIN_PERMISSION") or perms.get("github", "write"))
    if gh_min not in _GITHUB_LEVELS:
        raise ConfigError(src, "permissions.github", f"must be one of {', '.join(_GITHUB_LEVELS)}")
    gl_min = str(env.get("COALMINE_GITLAB_MIN_ACCESS") or perms.get("gitlab", "developer"))
    if gl_min.lower() not in _GITLAB_LEVELS:
        raise ConfigError(src, "permissions.gitlab", f"must be one of {', '.join(_GITLAB_LEVELS)}")

    return Settings(
        redis_url=env.get("REDIS_URL") or None,
        public_url=(env.get("COALMINE_PUBLIC_URL") or "http://localhost:8000").rstrip("/"),
        data_dir=env.get("COALMINE_DATA_DIR") or "var",
        github=github,
        gitlab=gitlab,
        prometheus_url=env.get("PROMETHEUS_URL") or None,
        clusters=clusters,
        repos=repos,
        github_min_permission=gh_min,
        gitlab_min_access=_GITLAB_LEVELS[gl_min.lower()],
        health_timeout_s=_number(env, "COALMINE_HEALTH_TIMEOUT", 300.0),
        max_body_bytes=int(_number(env, "COALMINE_MAX_BODY_BYTES", 25 * 1024 * 1024)),
        delivery_ttl_s=int(_number(env, "COALMINE_DELIVERY_TTL", 7 * 24 * 3600)),
        log_level=(env.get("COALMINE_LOG_LEVEL") or "INFO").upper(),
        extra_git_hosts=tuple(
            h.strip() for h in (env.get("COALMINE_GIT_HOSTS") or "").split(",") if h.strip()),
    )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, "", f"{raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(name, "", "must be greater than 0")
    return value


def _load_yaml_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(path, "", f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "the top level must be a mapping")
    return data


def _parse_clusters(raw: Any, src: str) -> dict[str, ClusterConfig]:
    if not isinstance(raw, dict):
        raise ConfigError(src, "clusters", "must be a mapping of name to {kubeconfig, context}")
    clusters = {}
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(src, f"clusters.{name}", "must be a mapping")
        clusters[str(name)] = ClusterConfig(
            str(name), spec.get("kubeconfig") or None, spec.get("context") or None
        )
    return clusters


def _parse_repos(raw: Any, src: str) -> dict[str, RepoPolicy]:
    from bot.policy import parse_policy  # the policy module builds on this one

    if not isinstance(raw, dict):
        raise ConfigError(src, "repos", "must be a mapping of repository name to settings")
    repos = {}
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(src, f"repos.{name}", "must be a mapping")
        branch = spec.get("deployBranch")
        if branch is not None and not isinstance(branch, str):
            raise ConfigError(src, f"repos.{name}.deployBranch", "must be a branch name")
        parse_policy(spec, src, str(name))  # fail at start-up, not at the first merge
        repos[str(name)] = RepoPolicy(deploy_branch=branch, raw=spec)
    return repos


# --------------------------------------------------------------------------- repo config


@dataclass(frozen=True)
class AppConfig:
    name: str
    path: str
    namespace: str
    cluster: str | None = None
    prune: bool = False
    health_timeout_s: float | None = None
    canary: Any = None  # bot.rollout.model strategy, parsed by bot.rollout.strategy


@dataclass(frozen=True)
class RepoConfig:
    apps: tuple[AppConfig, ...]

    def app(self, name: str) -> AppConfig | None:
        return next((a for a in self.apps if a.name == name), None)


_APP_KEYS = {"name", "path", "namespace", "cluster", "prune", "healthTimeoutSeconds", "canary"}


def parse_repo_config(
    text: str, settings: Settings | None = None, source: str = REPO_CONFIG_FILE
) -> RepoConfig:
    """Parse `.coalmine.yaml`; raises ConfigError naming the key at fault."""
    from bot.manifests import ManifestError, safe_load_all  # one YAML loader for untrusted input

    try:
        docs = safe_load_all(text, source)
    except ManifestError as exc:
        raise ConfigError(source, "", str(exc).removeprefix(f"{source}: ")) from None
    data = docs[0] if docs else None
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the top level must be a mapping with an `apps` list")
    unknown = set(data) - {"apps"}
    if unknown:
        raise ConfigError(source, str(min(unknown, key=str)), "unknown key (expected `apps`)")
    apps_raw = data.get("apps")
    if not isinstance(apps_raw, list) or not apps_raw:
        raise ConfigError(source, "apps", "must be a non-empty list of apps")
    apps: list[AppConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(apps_raw):
        key = f"apps[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(source, key, "must be a mapping with name, path and namespace")
        for k in raw:
            if k not in _APP_KEYS:
                raise ConfigError(source, f"{key}.{k}", f"unknown key (allowed: {', '.join(sorted(_APP_KEYS))})")
        name = _required_str(raw, "name", source, key)
        if not _DNS_LABEL.match(name):
            raise ConfigError(source, f"{key}.name", f"{name!r} must be a DNS label (a-z, 0-9, -)")
        if name in seen:
            raise ConfigError(source, f"{key}.name", f"app {name!r} is defined twice")
        seen.add(name)
        path = _required_str(raw, "path", source, key)
        if path.startswith("/") or ".." in Path(path).parts:
            raise ConfigError(source, f"{key}.path", f"{path!r} must be relative, inside the repository")
        namespace = _required_str(raw, "namespace", source, key)
        if not _DNS_LABEL.match(namespace):
            raise ConfigError(source, f"{key}.namespace", f"{namespace!r} is not a valid namespace")
        cluster = raw.get("cluster")
        if cluster is not None:
            if not isinstance(cluster, str):
                raise ConfigError(source, f"{key}.cluster", "must be a cluster name")
            if settings is not None and cluster != "default" and cluster not in settings.clusters:
                known = ", ".join(sorted(settings.clusters)) or "none configured"
                raise ConfigError(source, f"{key}.cluster", f"unknown cluster {cluster!r} (known: {known})")
        prune = raw.get("prune", False)
        if not isinstance(prune, bool):
            raise ConfigError(source, f"{key}.prune", "must be true or false")
        timeout = raw.get("healthTimeoutSeconds")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
            raise ConfigError(source, f"{key}.healthTimeoutSeconds", "must be a positive number")
        canary = None
        if raw.get("canary") is not None:
            canary = _parse_canary(raw["canary"], source, f"{key}.canary")
        apps.append(AppConfig(name, path.strip("/") or ".", namespace, cluster, prune, timeout, canary))
    return RepoConfig(tuple(apps))


def _parse_canary(raw: Any, source: str, key: str) -> Any:
    from bot.rollout import strategy

    try:
        return strategy.parse_canary_config(raw, source=source, key=key)
    except strategy.StrategyError as exc:
        raise ConfigError(exc.file, exc.key_path, exc.reason) from None


def _required_str(raw: dict[str, Any], name: str, source: str, key: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, f"{key}.{name}", "is required and must be a non-empty string")
    return value.strip()
