"""Server configuration (environment + optional YAML) and repository configuration (.coalmine.yaml).

Both are validated when loaded, and every mistake names the file (or variable), the key and the
reason, because the person reading the error is usually looking at a PR, not at our source.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot import gate as ci_gate
from bot import repos as repo_entries
from bot.content_rules import NO_RULES, ContentRules, parse_rules, tighten
from bot.drift.ignore import IgnoreRule, parse_ignore
from bot.egress import DENY_ALL, Egress, parse_egress
from bot.errors import ConfigError, ManifestError
from bot.policy import Policy
from bot.rollout import strategy
from bot.yamlload import safe_load_all

REPO_CONFIG_FILE = ".coalmine.yaml"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_GITHUB_LEVELS = ("read", "write", "admin")
_GITLAB_LEVELS = {"guest": 10, "reporter": 20, "developer": 30, "maintainer": 40, "owner": 50}
log = logging.getLogger(__name__)


__all__ = ["ConfigError"]  # re-exported: callers know it as bot.config.ConfigError
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


# --------------------------------------------------------------------------- server config


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    kubeconfig: str | None = None  # None: KUBECONFIG / ~/.kube/config, or in-cluster
    context: str | None = None


RepoPolicy = Policy  # the parsed policy of one `repos:` entry (see bot.policy)


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
    data_dir: str = str(Path("var").resolve())
    github: GitHubSettings = GitHubSettings()
    gitlab: GitLabSettings = GitLabSettings()
    prometheus_url: str | None = None
    clusters: Mapping[str, ClusterConfig] = field(default_factory=dict)
    repos: Mapping[str, Policy] = field(default_factory=dict)  # entry key → policy
    own_namespace: str | None = None  # Coalmine's namespace: never deployable
    view_token: str | None = None  # bearer token of the JSON view; None turns the view off
    # The operator dashboard (bot/dashboard): its login token (None turns it off) and the
    # server secret its session cookies are signed with (derived from the token if unset).
    dashboard_token: str | None = None
    dashboard_secret: str | None = None
    dashboard_proxy_hops: int = 0  # reverse proxies in front: where the login throttle looks
    egress: Egress = DENY_ALL  # where metric providers may connect
    github_min_permission: str = "write"
    gitlab_min_access: int = 30
    health_timeout_s: float = 300.0
    max_body_bytes: int = 25 * 1024 * 1024
    delivery_ttl_s: int = 7 * 24 * 3600
    log_level: str = "INFO"
    extra_git_hosts: tuple[str, ...] = ()
    rules: ContentRules = NO_RULES  # the server's content rules; repositories only add to them
    gate: ci_gate.GateSpec = ci_gate.NO_GATE  # the server's CI gate; repositories only add
    gate_poll_s: float = 15.0  # how often a waiting merge's checks are read again
    drift_interval_s: float = 300.0  # how often deployed apps are compared with the cluster

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
            self.view_token,
            self.dashboard_token,
            self.dashboard_secret,
            urlsplit(self.redis_url).password if self.redis_url else None,
        ]
        return [v for v in values if v]

    def entry_for(self, forge: str, full_name: str) -> repo_entries.RepoEntry | None:
        """The `repos:` entry serving `full_name` on `forge` by name, or None: not served."""
        return repo_entries.match(self.repos, forge, full_name)

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
    own_namespace = _own_namespace(env)
    repos = repo_entries.parse_entries(file_data.get("repos"), src, own_namespace=own_namespace)
    from_env = repo_entries.parse_env_entries(env.get("COALMINE_REPOS") or "", "COALMINE_REPOS",
                                              own_namespace=own_namespace)
    for key in from_env:
        if key in repos:
            raise ConfigError("COALMINE_REPOS", key, f"is also under repos: in {src}")
    repos.update(from_env)
    if not repos:
        log.warning("no repository is served: list them under repos: in COALMINE_CONFIG or in "
                    "COALMINE_REPOS (owner/name=namespace); every webhook is ignored")
    perms = file_data.get("permissions", {}) or {}
    if not isinstance(perms, dict):
        raise ConfigError(src, "permissions", "must be a mapping")
    # An error names where the value came from: the env var when set, else the file's key.
    gh_env, gl_env = "COALMINE_GITHUB_MIN_PERMISSION", "COALMINE_GITLAB_MIN_ACCESS"
    gh_min = str(env.get(gh_env) or perms.get("github", "write"))
    if gh_min not in _GITHUB_LEVELS:
        where = (gh_env, "") if env.get(gh_env) else (src, "permissions.github")
        raise ConfigError(*where, f"{gh_min!r} must be one of {', '.join(_GITHUB_LEVELS)}")
    gl_min = str(env.get(gl_env) or perms.get("gitlab", "developer"))
    if gl_min.lower() not in _GITLAB_LEVELS:
        where = (gl_env, "") if env.get(gl_env) else (src, "permissions.gitlab")
        raise ConfigError(*where, f"{gl_min!r} must be one of {', '.join(_GITLAB_LEVELS)}")

    return Settings(
        redis_url=env.get("REDIS_URL") or None,
        public_url=(env.get("COALMINE_PUBLIC_URL") or "http://localhost:8000").rstrip("/"),
        # Absolute, so no later chdir or git discovery can move the mirrors into another tree.
        data_dir=str(Path(env.get("COALMINE_DATA_DIR") or "var").resolve()),
        github=github,
        gitlab=gitlab,
        prometheus_url=env.get("PROMETHEUS_URL") or None,
        clusters=clusters,
        repos=repos,
        own_namespace=own_namespace,
        view_token=_secret(env, "COALMINE_VIEW_TOKEN"),
        dashboard_token=_dashboard_token(env),
        dashboard_secret=_secret(env, "COALMINE_DASHBOARD_SECRET"),
        dashboard_proxy_hops=_proxy_hops(env),
        egress=parse_egress(file_data.get("egress"), src, env,
                            own_hosts=[url for url in (env.get("REDIS_URL"),) if url]),
        github_min_permission=gh_min,
        gitlab_min_access=_GITLAB_LEVELS[gl_min.lower()],
        health_timeout_s=_number(env, "COALMINE_HEALTH_TIMEOUT", 300.0),
        max_body_bytes=int(_number(env, "COALMINE_MAX_BODY_BYTES", 25 * 1024 * 1024)),
        delivery_ttl_s=int(_number(env, "COALMINE_DELIVERY_TTL", 7 * 24 * 3600)),
        log_level=(env.get("COALMINE_LOG_LEVEL") or "INFO").upper(),
        extra_git_hosts=tuple(
            h.strip() for h in (env.get("COALMINE_GIT_HOSTS") or "").split(",") if h.strip()),
        rules=parse_rules(file_data.get("rules"), src),
        gate=ci_gate.parse_gate(file_data.get("gate"), src),
        gate_poll_s=_number(env, "COALMINE_GATE_POLL", 15.0),
        drift_interval_s=_number(env, "COALMINE_DRIFT_INTERVAL", 300.0),
    )


DASHBOARD_TOKEN_MIN_LENGTH = 16


def _dashboard_token(env: Mapping[str, str]) -> str | None:
    """The dashboard's login token: long enough that guessing it is hopeless."""
    token = _secret(env, "COALMINE_DASHBOARD_TOKEN")
    if token and len(token) < DASHBOARD_TOKEN_MIN_LENGTH:
        raise ConfigError("COALMINE_DASHBOARD_TOKEN", "",
                          f"must be at least {DASHBOARD_TOKEN_MIN_LENGTH} characters "
                          "(e.g. `openssl rand -hex 32`)")
    return token


def _proxy_hops(env: Mapping[str, str]) -> int:
    """How many reverse proxies stand in front (0: the peer is the client)."""
    raw = (env.get("COALMINE_DASHBOARD_PROXY_HOPS") or "0").strip()
    if not raw.isdigit() or int(raw) > 10:
        raise ConfigError("COALMINE_DASHBOARD_PROXY_HOPS", "",
                          f"{raw!r} is not a count of proxies from 0 to 10")
    return int(raw)


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
        docs = safe_load_all(text, path)  # the repository loader: duplicate keys refused
    except ManifestError as exc:
        raise ConfigError(path, "", str(exc).removeprefix(f"{path}: ")) from None
    data = (docs[0] if docs else None) or {}
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


def _own_namespace(env: Mapping[str, str]) -> str | None:
    """COALMINE_NAMESPACE, else the namespace of the pod Coalmine runs in (when it does)."""
    named = (env.get("COALMINE_NAMESPACE") or "").strip()
    if named:
        if not _DNS_LABEL.match(named):
            raise ConfigError("COALMINE_NAMESPACE", "", f"{named!r} is not a namespace name")
        return named
    try:
        return Path(IN_CLUSTER_NAMESPACE_FILE).read_text().strip() or None
    except OSError:
        return None


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
    rules: ContentRules = NO_RULES  # the repository's `rules:` tightened by the app's own
    ignore_differences: tuple[IgnoreRule, ...] = ()  # fields drift detection leaves out
    self_heal: bool = False  # re-apply the deployed commit when the cluster drifts from it


@dataclass(frozen=True)
class RepoConfig:
    apps: tuple[AppConfig, ...]
    rules: ContentRules = NO_RULES  # the file's top-level `rules:` (each app holds its own too)
    gate: ci_gate.GateSpec = ci_gate.NO_GATE  # the file's `gate:` (before the server's is added)

    def app(self, name: str) -> AppConfig | None:
        return next((a for a in self.apps if a.name == name), None)


_APP_KEYS = {"name", "path", "namespace", "cluster", "prune", "healthTimeoutSeconds", "canary",
             "blueGreen", "rules", "ignoreDifferences", "selfHeal"}


def parse_repo_config(
    text: str, settings: Settings | None = None, source: str = REPO_CONFIG_FILE
) -> RepoConfig:
    """Parse `.coalmine.yaml`; raises ConfigError naming the key at fault."""
    try:
        docs = safe_load_all(text, source)  # the one YAML loader for untrusted input
    except ManifestError as exc:
        reason = str(exc).removeprefix(f"{source}: ").removeprefix(f"{source}:")
        raise ConfigError(source, "", reason) from None
    data = docs[0] if docs else None
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the top level must be a mapping with an `apps` list")
    unknown = set(data) - {"apps", "rules", "gate"}
    if unknown:
        raise ConfigError(source, str(min(unknown, key=str)),
                          "unknown key (expected `apps`, `rules`, `gate`)")
    repo_rules = parse_rules(data.get("rules"), source)
    gate = ci_gate.parse_gate(data.get("gate"), source)
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
        if raw.get("canary") is not None and raw.get("blueGreen") is not None:
            raise ConfigError(source, f"{key}.blueGreen", "an app has one strategy: canary or "
                              "blueGreen, not both")
        if raw.get("canary") is not None:
            canary = _parse_canary(raw["canary"], source, f"{key}.canary")
        elif raw.get("blueGreen") is not None:
            canary = _parse_canary(raw["blueGreen"], source, f"{key}.blueGreen", blue_green=True)
        rules = tighten(repo_rules, parse_rules(raw.get("rules"), source, f"{key}.rules"))
        self_heal = raw.get("selfHeal", False)
        if not isinstance(self_heal, bool):
            raise ConfigError(source, f"{key}.selfHeal", "must be true or false")
        ignore = parse_ignore(raw.get("ignoreDifferences"), source, f"{key}.ignoreDifferences")
        apps.append(AppConfig(name, path.strip("/") or ".", namespace, cluster, prune, timeout,
                              canary, rules, ignore, self_heal))
    return RepoConfig(tuple(apps), repo_rules, gate)


def _parse_canary(raw: Any, source: str, key: str, *, blue_green: bool = False) -> Any:
    parse = strategy.parse_blue_green_config if blue_green else strategy.parse_canary_config
    try:
        return parse(raw, source=source, key=key)
    except strategy.StrategyError as exc:
        raise ConfigError(exc.file, exc.key_path, exc.reason) from None


def _required_str(raw: dict[str, Any], name: str, source: str, key: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, f"{key}.{name}", "is required and must be a non-empty string")
    return value.strip()
