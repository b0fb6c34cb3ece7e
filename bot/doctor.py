"""`coalmine doctor`: can this configuration do its job? One line per check, ok or fail with
the reason, and an exit status for CI or a start-up probe.

Every check goes through the adapters the bot itself uses (`bot.services` builds them from the
settings), so it fails exactly where a merge would: Redis answers; the forge credential is
valid and holds what the bot needs (a classic GitHub token's scopes, a GitHub App's
permissions, a GitLab token's scopes, as far as each API tells); every configured cluster
answers and grants, through SelfSubjectAccessReview, the verbs Coalmine uses (create, patch,
delete Deployments and get Pods in each namespace a `repos:` entry names exactly, as the
entry's ServiceAccount when it names one, and the bot's right to impersonate that account);
PROMETHEUS_URL answers a query through the egress policy the metric providers use; the data
directory is writable. A check that does not apply (no Redis configured, no GitLab) is skipped.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import RedisError

from bot.analysis.providers import ProviderError
from bot.analysis.providers.prometheus import query_prometheus
from bot.cluster.model import ClusterError
from bot.config import Settings
from bot.forge.base import ForgeError
from bot.policy import ANY, DEFAULT_CLUSTER, Policy

OK, FAIL, SKIP = "ok", "fail", "skip"
# What the bot does on GitHub: statuses, PR comments and reactions, labels, revert branches
# and PRs, and as an App a check run per app with buttons. A classic token needs `repo` (or
# `public_repo` for public repositories only).
GITHUB_APP_PERMISSIONS = {"contents": "write", "pull_requests": "write", "issues": "write",
                          "statuses": "write", "checks": "write"}
GITHUB_SCOPES = ("repo", "public_repo")
GITLAB_SCOPES = ("api",)  # statuses, notes, merge requests; also Git over HTTP (the push)
EXPIRY_WARNING_S = 7 * 86400
# Verbs Coalmine uses on workloads, as (verb, group, resource).
WORKLOAD_VERBS = (("create", "apps", "deployments"), ("patch", "apps", "deployments"),
                  ("delete", "apps", "deployments"), ("get", "", "pods"))


class ClusterAccess(Protocol):
    """What the checks ask of a cluster (`bot.cluster.client.Cluster` has it)."""

    def server_version(self) -> str: ...

    def can_i(self, verb: str, resource: str, *, group: str = "", namespace: str | None = None,
              name: str | None = None) -> tuple[bool, str]: ...


class Services(Protocol):
    """The adapters checked (`bot.services.Services` is one)."""

    settings: Settings
    redis: Redis

    def forge_of(self, kind: str) -> Any: ...

    def cluster(self, name: str | None, *, impersonate: str | None = None) -> ClusterAccess: ...


@dataclass(frozen=True)
class Check:
    name: str
    result: str  # OK, FAIL or SKIP
    detail: str

    def __str__(self) -> str:
        return f"{self.result:<4}  {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def run(svc: Services) -> list[Check]:
    """Every check, in the order a deploy needs them."""
    settings = svc.settings
    checks = [data_dir(settings.data_dir), redis(svc)]
    checks += [github(svc), gitlab(svc)]
    for name in cluster_names(settings):
        checks += list(cluster(svc, name))
    checks.append(prometheus(settings))
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.result == FAIL for c in checks)


def data_dir(path: str) -> Check:
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("data dir", FAIL, f"{root} is not writable: {exc.strerror or exc}")
    return Check("data dir", OK, f"{root} is writable")


def redis(svc: Services) -> Check:
    if not svc.settings.redis_url:
        return Check("redis", SKIP, "REDIS_URL is not set: the embedded queue and store (one "
                                    "process; nothing survives a restart)")
    try:
        svc.redis.ping()
        version = svc.redis.info("server").get("redis_version", "?")
    except RedisError as exc:
        return Check("redis", FAIL, f"unreachable: {exc}")
    return Check("redis", OK, f"answers (Redis {version})")


def github(svc: Services) -> Check:
    gh = svc.settings.github
    if not (gh.token or gh.app_id):
        return _no_credential("github", bool(gh.webhook_secret), "GITHUB_TOKEN or GITHUB_APP_ID")
    try:
        grants = svc.forge_of("github").credential_grants()
    except (ForgeError, ValueError) as exc:
        return Check("github", FAIL, f"credential refused: {exc}")
    who = grants["login"]
    if grants["kind"] == "app":
        have = grants["permissions"]
        missing = [f"{k}: {v}" for k, v in GITHUB_APP_PERMISSIONS.items()
                   if have.get(k) not in (v, "admin")]
        if missing:
            return Check("github", FAIL, f"App {who} lacks permissions: {', '.join(missing)}")
        return Check("github", OK, f"App {who} has " + ", ".join(
            f"{k}: {have[k]}" for k in GITHUB_APP_PERMISSIONS))
    scopes = grants["scopes"]
    if scopes is None:
        return Check("github", OK, f"token of {who} is valid; GitHub does not list a "
                     "fine-grained token's permissions: it needs Contents, Pull requests, "
                     "Issues and Commit statuses (read and write) on the served repositories")
    if "repo" in scopes:
        return Check("github", OK, f"token of {who} has scope repo")
    if "public_repo" in scopes:
        return Check("github", OK, f"token of {who} has scope public_repo: public "
                     "repositories only")
    return Check("github", FAIL, f"token of {who} lacks scope repo (it has: "
                 f"{', '.join(scopes) or 'none'})")


def gitlab(svc: Services) -> Check:
    gl = svc.settings.gitlab
    if not gl.token:
        return _no_credential("gitlab", bool(gl.webhook_token), "GITLAB_TOKEN")
    try:
        facts = svc.forge_of("gitlab").token_facts()
    except ForgeError as exc:
        return Check("gitlab", FAIL, f"token refused: {exc}")
    name, scopes = facts.get("name") or "token", list(facts.get("scopes") or [])
    if facts.get("active") is False or facts.get("revoked"):
        return Check("gitlab", FAIL, f"{name} is not active (revoked or expired)")
    missing = [s for s in GITLAB_SCOPES if s not in scopes]
    if missing:
        return Check("gitlab", FAIL, f"{name} lacks scope {', '.join(missing)} (it has: "
                     f"{', '.join(scopes) or 'none'})")
    detail = f"{name} has scopes {', '.join(scopes)}"
    expires = _expiry(facts.get("expires_at"))
    if expires is not None and expires - time.time() < EXPIRY_WARNING_S:
        detail += f"; it expires on {facts['expires_at']}"
    return Check("gitlab", OK, detail)


def _no_credential(forge: str, webhooks_on: bool, variables: str) -> Check:
    if webhooks_on:
        return Check(forge, FAIL, f"webhooks are accepted but no API credential is set "
                     f"({variables}): merges could not be verified or reported")
    return Check(forge, SKIP, "not configured")


def _expiry(value: Any) -> float | None:
    if not value:
        return None
    try:
        return time.mktime(time.strptime(str(value)[:10], "%Y-%m-%d"))
    except ValueError:
        return None


def cluster_names(settings: Settings) -> list[str]:
    """The clusters configured, or the default one when none is."""
    return sorted(settings.clusters) or [DEFAULT_CLUSTER]


def cluster(svc: Services, name: str) -> Iterator[Check]:
    """Reachability, then one check per `repos:` entry allowed on this cluster."""
    title = f"cluster {name}"
    try:
        version = svc.cluster(name).server_version()
    except (ClusterError, KeyError) as exc:
        yield Check(title, FAIL, f"unreachable: {exc}")
        return
    yield Check(title, OK, f"reachable (Kubernetes {version})")
    for key, policy in sorted(svc.settings.repos.items()):
        if policy.allows_cluster(name):
            yield rbac(svc, name, key, policy)


def rbac(svc: Services, name: str, key: str, policy: Policy) -> Check:
    """The verbs Coalmine uses, in each namespace the entry names exactly, as the identity a
    merge of that repository writes as."""
    title = f"cluster {name} rbac {key}"
    namespaces = [n for n in policy.namespaces if not _is_glob(n)]
    scopes: list[str | None] = [None] if ANY in policy.namespaces else list(namespaces)
    if not scopes:
        return Check(title, SKIP, "its namespaces are patterns only "
                     f"({', '.join(policy.namespaces)}): checked when a merge deploys")
    denied: list[str] = []
    who = "the bot's own credential"
    try:
        if policy.service_account is not None:
            sa_namespace, sa_name = policy.service_account.split("/", 1)
            allowed, why = svc.cluster(name).can_i("impersonate", "serviceaccounts",
                                                   namespace=sa_namespace, name=sa_name)
            if not allowed:
                denied.append(f"the bot may not impersonate {policy.service_account}"
                              + (f" ({why})" if why else ""))
            who = f"ServiceAccount {policy.service_account}"
        view = svc.cluster(name, impersonate=policy.impersonate_user)
        for namespace in scopes:
            denied += [f"{verb} {resource}" + (f" in {namespace}" if namespace else "")
                       for verb, group, resource in WORKLOAD_VERBS
                       if not view.can_i(verb, resource, group=group, namespace=namespace)[0]]
    except ClusterError as exc:
        return Check(title, FAIL, f"access review failed: {exc}")
    where = ", ".join(n or "all namespaces" for n in scopes)
    if denied:
        return Check(title, FAIL, f"{who} is denied: {'; '.join(denied)}")
    return Check(title, OK, f"{who} may create, patch, delete deployments and get pods in "
                 f"{where}")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def prometheus(settings: Settings,
               query: Callable[..., Any] = query_prometheus) -> Check:
    if not settings.prometheus_url:
        return Check("prometheus", SKIP, "PROMETHEUS_URL is not set (templates must name "
                     "their address)")
    try:
        value = query({"query": "vector(1)", "timeout": 10},
                      default_address=settings.prometheus_url, egress=settings.egress)
    except ProviderError as exc:
        return Check("prometheus", FAIL, str(exc))
    return Check("prometheus", OK, f"{settings.prometheus_url} answers a query "
                 f"(vector(1) = {value})")
