"""Content rules: what every object a repository deploys must look like, checked before apply.

The policy (bot.policy) says where a repository may deploy; content rules say what its objects
may contain: resource limits on every container, no `:latest` images, images only from named
registries, required labels, no hostPath volumes, no privileged containers. They are the
handful of checks teams otherwise write as Kyverno or Gatekeeper policies, run by Coalmine
itself so that a PR preview shows them, and a merge that breaks one applies nothing.

Rules come from two places, and a repository can only add to the server's:

    rules:                                 # server config (global) and .coalmine.yaml
      requireResourceLimits: true          # every container: resources.limits.cpu and .memory
      forbidImageTags: [latest]            # an image without a tag counts as :latest
      allowedRegistries: [ghcr.io/acme]    # the image must start with one of these
      requireLabels: [app.kubernetes.io/name]
      forbidHostPath: true
      forbidPrivileged: true

`tighten(server, repo)` combines them: booleans are OR-ed (a repository's `false` never turns
a server rule off), lists of forbidden tags and required labels are united, and each
`allowedRegistries` list stays a separate constraint that every image must meet, so a
repository naming a registry the server does not allow gains nothing.

Pure: no I/O. Every violation names the file (or the app's path), the object, the field path
and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError

RULE_KEYS = (
    "requireResourceLimits",
    "forbidImageTags",
    "allowedRegistries",
    "requireLabels",
    "forbidHostPath",
    "forbidPrivileged",
)
_BOOL_KEYS = ("requireResourceLimits", "forbidHostPath", "forbidPrivileged")
_LIST_KEYS = ("forbidImageTags", "allowedRegistries", "requireLabels")
DOCKER_HUB = "docker.io"
LIMITS = ("cpu", "memory")

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Rollout": ("spec", "template", "spec"),
}


@dataclass(frozen=True)
class ContentRules:
    require_resource_limits: bool = False
    forbid_image_tags: tuple[str, ...] = ()
    # One tuple per source (server, repository, app); an image must match one entry of each.
    allowed_registries: tuple[tuple[str, ...], ...] = ()
    require_labels: tuple[str, ...] = ()
    forbid_host_path: bool = False
    forbid_privileged: bool = False

    @property
    def empty(self) -> bool:
        return self == NO_RULES


NO_RULES = ContentRules()


@dataclass(frozen=True)
class RuleViolation:
    file: str  # the manifest file, or the app's path when the renderer does not say
    object: str  # "Deployment shop/web"
    field: str  # "spec.template.spec.containers[0].image"
    rule: str  # "forbidImageTags"
    detail: str  # "tag 'latest' is forbidden"

    def __str__(self) -> str:
        return f"{self.file}: {self.object}: {self.field}: {self.rule} ({self.detail})"


# --------------------------------------------------------------------------- reading


def parse_rules(raw: Any, source: str, key: str = "rules") -> ContentRules:
    """The rules of one `rules:` mapping; ConfigError names the source, the key and the reason."""
    if raw is None:
        return NO_RULES
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, "must be a mapping of rule name to value")
    for name in raw:
        if name not in RULE_KEYS:
            raise ConfigError(source, f"{key}.{name}",
                              f"unknown rule (known: {', '.join(RULE_KEYS)})")
    flags = {}
    for name in _BOOL_KEYS:
        value = raw.get(name, False)
        if not isinstance(value, bool):
            raise ConfigError(source, f"{key}.{name}", "must be true or false")
        flags[name] = value
    lists: dict[str, tuple[str, ...]] = {}
    for name in _LIST_KEYS:
        value = raw.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                   for v in value):
            raise ConfigError(source, f"{key}.{name}", "must be a list of non-empty strings")
        lists[name] = tuple(v.strip() for v in value)
    if "allowedRegistries" in raw and not lists["allowedRegistries"]:
        raise ConfigError(source, f"{key}.allowedRegistries",
                          "an empty list would allow no image; leave the key out instead")
    return ContentRules(
        require_resource_limits=flags["requireResourceLimits"],
        forbid_image_tags=lists["forbidImageTags"],
        allowed_registries=(lists["allowedRegistries"],) if lists["allowedRegistries"] else (),
        require_labels=lists["requireLabels"],
        forbid_host_path=flags["forbidHostPath"],
        forbid_privileged=flags["forbidPrivileged"],
    )


def tighten(base: ContentRules, more: ContentRules) -> ContentRules:
    """`base` with `more` added: never looser than `base`, whatever `more` says."""
    return ContentRules(
        require_resource_limits=base.require_resource_limits or more.require_resource_limits,
        forbid_image_tags=_united(base.forbid_image_tags, more.forbid_image_tags),
        allowed_registries=base.allowed_registries + tuple(
            r for r in more.allowed_registries if r not in base.allowed_registries),
        require_labels=_united(base.require_labels, more.require_labels),
        forbid_host_path=base.forbid_host_path or more.forbid_host_path,
        forbid_privileged=base.forbid_privileged or more.forbid_privileged,
    )


def _united(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return a + tuple(x for x in b if x not in a)


def describe(rules: ContentRules) -> list[str]:
    """The rules in force, in the words of the config, for the preview comment."""
    out = []
    if rules.require_resource_limits:
        out.append("requireResourceLimits")
    if rules.forbid_image_tags:
        out.append("forbidImageTags: " + ", ".join(rules.forbid_image_tags))
    for allowed in rules.allowed_registries:
        out.append("allowedRegistries: " + ", ".join(allowed))
    if rules.require_labels:
        out.append("requireLabels: " + ", ".join(rules.require_labels))
    if rules.forbid_host_path:
        out.append("forbidHostPath")
    if rules.forbid_privileged:
        out.append("forbidPrivileged")
    return out


# --------------------------------------------------------------------------- checking


FileKey = tuple[str, str, str]


def file_index(sourced: Iterable[tuple[Mapping[str, Any], str]]) -> dict[FileKey, str]:
    """(kind, namespace, name) → the file it came from, from bot.manifests.render_sourced."""
    return {_file_key(obj): where for obj, where in sourced}


def _file_key(obj: Mapping[str, Any]) -> FileKey:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def check(rules: ContentRules, objects: Iterable[Mapping[str, Any]], *, source: str,
          default_namespace: str,
          files: Mapping[FileKey, str] | None = None) -> list[RuleViolation]:
    """Every way the objects break the rules, in manifest order; empty when none does. Each
    names its file from `files` (file_index), else `source` (the app's path)."""
    if rules.empty:
        return []
    found: list[RuleViolation] = []
    for obj in objects:
        kind, namespace, name = _file_key(obj)
        # Planning may fill in the app's namespace on a copy of a manifest that set none.
        where = (files or {}).get((kind, namespace, name)) or (files or {}).get(
            (kind, "", name), source)
        found.extend(_check_object(rules, obj, where, default_namespace))
    return found


def _check_object(rules: ContentRules, obj: Mapping[str, Any], source: str,
                  default_namespace: str) -> Iterator[RuleViolation]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    kind = str(obj.get("kind") or "?")
    name = str(meta.get("name") or "?")
    namespace = meta.get("namespace") or default_namespace
    label = f"{kind} {namespace}/{name}" if kind != "Namespace" else f"{kind} {name}"

    def violation(path: str, rule: str, detail: str) -> RuleViolation:
        return RuleViolation(source, label, path, rule, detail)

    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    for required in rules.require_labels:
        if not labels.get(required):
            yield violation(f"metadata.labels.{required}", "requireLabels",
                            f"label {required} is required")
    path = POD_SPEC_PATHS.get(kind)
    pod = _at(obj, path) if path else None
    if not isinstance(pod, Mapping):
        return
    prefix = ".".join(path or ())
    if rules.forbid_host_path:
        for i, volume in enumerate(_list(pod.get("volumes"))):
            if isinstance(volume, Mapping) and volume.get("hostPath") is not None:
                yield violation(f"{prefix}.volumes[{i}].hostPath", "forbidHostPath",
                                "hostPath volumes are forbidden")
    for group in ("initContainers", "containers"):
        for i, container in enumerate(_list(pod.get(group))):
            if isinstance(container, Mapping):
                yield from _check_container(rules, container, f"{prefix}.{group}[{i}]",
                                            violation)


def _check_container(rules: ContentRules, container: Mapping[str, Any], at: str,
                     violation: Any) -> Iterator[RuleViolation]:
    image = container.get("image")
    image = image if isinstance(image, str) else ""
    if rules.forbid_image_tags:
        tag = image_tag(image)
        if tag is not None and tag in rules.forbid_image_tags:
            detail = (f"image {image!r} has no tag, which means :latest" if tag == "latest"
                      and not _has_tag(image) else f"tag {tag!r} is forbidden")
            yield violation(f"{at}.image", "forbidImageTags", detail)
    for allowed in rules.allowed_registries:
        if not any(from_registry(image, prefix) for prefix in allowed):
            yield violation(f"{at}.image", "allowedRegistries",
                            f"image {image!r} is not from {', '.join(allowed)}")
    if rules.require_resource_limits:
        resources = container.get("resources")
        limits = resources.get("limits") if isinstance(resources, Mapping) else None
        for resource in LIMITS:
            if not isinstance(limits, Mapping) or limits.get(resource) in (None, ""):
                yield violation(f"{at}.resources.limits.{resource}", "requireResourceLimits",
                                f"a {resource} limit is required")
    if rules.forbid_privileged:
        security = container.get("securityContext")
        if isinstance(security, Mapping) and security.get("privileged") is True:
            yield violation(f"{at}.securityContext.privileged", "forbidPrivileged",
                            "privileged containers are forbidden")


# --------------------------------------------------------------------------- images


def _split_digest(image: str) -> tuple[str, str | None]:
    name, _, digest = image.partition("@")
    return name, digest or None


def _has_tag(image: str) -> bool:
    name, _ = _split_digest(image)
    return ":" in name.rsplit("/", 1)[-1]


def image_tag(image: str) -> str | None:
    """The image's tag; "latest" when it has neither tag nor digest, None when pinned only by
    digest (`web@sha256:…` runs exactly that image, whatever tags move)."""
    name, digest = _split_digest(image)
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return None if digest else "latest"


def normalise_image(image: str) -> str:
    """The image's full name as a container runtime reads it: `nginx` is
    `docker.io/library/nginx`, `acme/web` is `docker.io/acme/web`."""
    name, _ = _split_digest(image)
    first, slash, _rest = name.partition("/")
    if not slash:
        return f"{DOCKER_HUB}/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"{DOCKER_HUB}/{image}"


def from_registry(image: str, prefix: str) -> bool:
    """Whether `image` lives under `prefix` ("ghcr.io/acme" holds "ghcr.io/acme/web:1" but not
    "ghcr.io/acme-evil/web"), comparing full names so Docker Hub's short forms count."""
    if not image:
        return False
    full = normalise_image(image)
    prefix = prefix.rstrip("/")
    if "/" in prefix or "." in prefix or ":" in prefix or prefix == "localhost":
        wanted = prefix
    else:
        wanted = f"{DOCKER_HUB}/{prefix}"  # "acme" names a Docker Hub organisation
    name, _ = _split_digest(full)
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return repository == wanted or repository.startswith(wanted + "/")


# --------------------------------------------------------------------------- helpers


def _at(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []

