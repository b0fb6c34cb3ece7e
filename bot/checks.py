"""`coalmine check`: every problem a checkout of a GitOps repository would meet at deploy time,
found without a forge or a cluster, so that CI can fail the PR before anything merges.

The checks run the parsers the bot itself runs (bot.config, bot.manifests, bot.rollout.plan,
bot.policy), so they cannot drift from what a deploy accepts. Those parsers stop at their first
error; to report more than one, `.coalmine.yaml` is parsed one app at a time (the apps already
accepted are parsed with it, so a name defined twice is still seen), and each app is rendered
and planned on its own. Within one app the render and the strategy stop at their first error:
one error per app from those, then the next app.

What cannot be known offline is said as a warning, not an error: whether a kind the table of
built-in kinds below does not know is namespaced (the cluster's discovery answers at deploy
time; a CustomResourceDefinition in the same app is honoured as the bot honours it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.config import REPO_CONFIG_FILE, AppConfig, Settings, load_settings, parse_repo_config
from bot.errors import ConfigError, ManifestError
from bot.manifests import render_sourced
from bot.policy import Policy, Violation, check, scope_judge
from bot.rollout.fields import StrategyError
from bot.rollout.plan import split
from bot.yamlload import safe_load_all

ERROR, WARNING = "error", "warning"

# Built-in API groups: a kind in one of them is namespaced unless it is listed here.
_BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "node.k8s.io", "coordination.k8s.io",
    "discovery.k8s.io", "events.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io",
    "admissionregistration.k8s.io", "certificates.k8s.io", "flowcontrol.apiserver.k8s.io",
})
_CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass",
    "CSIDriver", "CSINode", "VolumeAttachment", "PriorityClass", "RuntimeClass", "IngressClass",
    "CustomResourceDefinition", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "CertificateSigningRequest", "FlowSchema",
    "PriorityLevelConfiguration", "ComponentStatus",
})
_MANIFEST_WHERE = re.compile(
    r"^(?P<file>[^:\n]+): (?:(?P<key>document \d+(?:, item \d+)*): )?(?P<reason>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Finding:
    file: str
    key: str  # a key path, or the object at fault ("Deployment shop/web")
    reason: str
    severity: str = ERROR

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{self.severity}: {where}: {self.reason}"


@dataclass(frozen=True)
class Target:
    """Which repository the server config's `repos:` entry is looked up for."""

    forge: str
    full_name: str

    @classmethod
    def parse(cls, text: str) -> Target:
        """`owner/name` (GitHub) or `github:owner/name` / `gitlab:group/name`."""
        forge, sep, name = text.partition(":")
        if not sep:
            forge, name = "github", text
        if forge not in ("github", "gitlab") or name.count("/") < 1 or not all(name.split("/")):
            raise ValueError(f"{text!r}: expected owner/name, github:owner/name or gitlab:group/name")
        return cls(forge, name)


def load_server(path: str | None, env: Mapping[str, str]) -> tuple[Settings | None, list[Finding]]:
    """The server config as `coalmine serve` would load it (COALMINE_CONFIG overridden by `path`);
    None with the error when it does not load. Without either, there is nothing to check."""
    if path is None and not env.get("COALMINE_CONFIG"):
        return None, []
    merged = dict(env)
    if path is not None:
        merged["COALMINE_CONFIG"] = path
    try:
        return load_settings(merged), []
    except ConfigError as exc:
        return None, [Finding(exc.source, exc.key, exc.reason)]


def check_repo(root: Path, settings: Settings | None = None, target: Target | None = None,
               *, server_source: str = "server config") -> list[Finding]:
    """Every finding of the checkout at `root`, in file order; empty when a deploy would go.
    `server_source` names the server config file in findings about its `repos:` entry."""
    source = REPO_CONFIG_FILE
    try:
        text = (root / source).read_text()
    except OSError as exc:
        return [Finding(source, "", f"cannot read: {exc.strerror}")]
    findings: list[Finding] = []
    policy = None
    if settings is not None and target is not None:
        entry = settings.entry_for(target.forge, target.full_name)
        if entry is None:
            findings.append(Finding(server_source, "repos", f"{target.forge} repository "
                                    f"{target.full_name} is not served: no repos: entry names it"))
        else:
            policy = entry.policy
    elif settings is not None:
        findings.append(Finding(server_source, "repos", "clusters and namespaces were not "
                                "checked against a policy: name the repository with --as",
                                WARNING))
    apps = _parse_apps(text, source, settings, findings)
    for index, app in apps:
        findings.extend(_check_app(root, source, index, app, policy))
    return findings


def _parse_apps(text: str, source: str, settings: Settings | None,
                findings: list[Finding]) -> list[tuple[int, AppConfig]]:
    """(index in `apps`, app) of every app that parses; each app's error into `findings`."""
    try:
        return list(enumerate(parse_repo_config(text, settings, source).apps))
    except ConfigError as exc:
        first = exc
    raws = _raw_apps(text, source)
    if raws is None or not first.key.startswith("apps["):
        findings.append(Finding(first.source, first.key, first.reason))
        return []
    accepted: list[tuple[int, Any]] = []
    for index, raw in enumerate(raws):
        trial = yaml.safe_dump({"apps": [r for _i, r in accepted] + [raw]}, sort_keys=False)
        try:
            parse_repo_config(trial, settings, source)
        except ConfigError as exc:
            key = re.sub(r"^apps\[\d+\]", f"apps[{index}]", exc.key)
            findings.append(Finding(exc.source, key, exc.reason))
            continue
        accepted.append((index, raw))
    if not accepted:
        return []
    parsed = parse_repo_config(yaml.safe_dump({"apps": [r for _i, r in accepted]},
                                              sort_keys=False), settings, source).apps
    return [(index, _renumbered(app, index)) for (index, _raw), app in zip(accepted, parsed,
                                                                           strict=True)]


def _raw_apps(text: str, source: str) -> list[Any] | None:
    """The `apps` list as YAML data, or None when the file is not even that far right."""
    try:
        docs = safe_load_all(text, source)
    except ManifestError:
        return None
    data = docs[0] if docs else None
    apps = data.get("apps") if isinstance(data, dict) else None
    return apps if isinstance(apps, list) else None


def _renumbered(app: AppConfig, index: int) -> AppConfig:
    """The app with its canary's key path pointing at its place in the real file."""
    if app.canary is None:
        return app
    canary = dataclasses.replace(app.canary, source_key=f"apps[{index}].canary")
    return dataclasses.replace(app, canary=canary)


def _check_app(root: Path, source: str, index: int, app: AppConfig,
               policy: Policy | None) -> list[Finding]:
    key = f"apps[{index}]"
    findings = [] if policy is None else _app_policy(source, key, app, policy)
    try:
        sourced = render_sourced(root, app.path)
    except ManifestError as exc:
        if not (root / app.path).exists():
            return [*findings, Finding(source, f"{key}.path",
                                       f"{app.path!r} does not exist in this checkout")]
        return [*findings, _manifest_finding(str(exc), app.path)]
    try:
        rest, plan = split([o for o, _ in sourced], app, [f for _, f in sourced])
    except StrategyError as exc:
        return [*findings, Finding(exc.file, exc.key_path, exc.reason)]
    if policy is not None:
        findings.extend(_object_policy(app, policy, rest + ([plan.deployment] if plan else [])))
    return findings


def _manifest_finding(message: str, app_path: str) -> Finding:
    match = _MANIFEST_WHERE.match(message)
    if match is None:
        return Finding(app_path, "", message)
    return Finding(match["file"], match["key"] or "", match["reason"])


def _app_policy(source: str, key: str, app: AppConfig, policy: Policy) -> list[Finding]:
    """The app's own cluster and namespace against the policy, said once at the key to change
    (its objects repeat neither: see _object_policy)."""
    cluster = app.cluster or "default"
    found = [Finding(source, f"{key}.cluster", v.rule)
             for v in check(policy, [], cluster=cluster, default_namespace=app.namespace,
                            cluster_scoped=lambda _api, _kind: False)]
    rule = _namespace_rule(policy, app)
    if rule is not None:
        found.append(Finding(source, f"{key}.namespace", rule))
    return found


def _namespace_rule(policy: Policy, app: AppConfig) -> str | None:
    """The policy's own words for refusing the app's namespace, or None when it is allowed."""
    if policy.allows_namespace(app.namespace):
        return None
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}
    rules = [v.rule for v in check(policy, [probe], cluster=app.cluster or "default",
                                   default_namespace=app.namespace,
                                   cluster_scoped=lambda _api, _kind: False)
             if not v.object.startswith("cluster ")]
    return rules[-1] if rules else None


def _object_policy(app: AppConfig, policy: Policy, objects: list[dict[str, Any]]) -> list[Finding]:
    unknown: set[str] = set()

    def discovered(api_version: str, kind: str) -> bool | None:
        if api_version.rpartition("/")[0] in _BUILTIN_GROUPS:
            return kind in _CLUSTER_SCOPED
        unknown.add(kind)
        return None

    said = {_namespace_rule(policy, app)}
    violations: list[Violation] = check(
        policy, objects, cluster=app.cluster or "default", default_namespace=app.namespace,
        cluster_scoped=scope_judge(discovered, objects))
    found = []
    for v in violations:
        if v.object.startswith("cluster ") or v.rule in said:
            continue  # said once at the app's key
        kind = v.object.split(" ", 1)[0]
        if kind in unknown and "cluster-scoped" in v.rule:
            found.append(Finding(app.path, v.object, f"{v.rule} (the kind is not built in, so "
                                 "its scope is known only to the cluster; without one it is "
                                 "judged cluster-scoped, as the bot does for a kind the cluster "
                                 "does not serve)", WARNING))
        else:
            found.append(Finding(app.path, v.object, v.rule))
    return found
