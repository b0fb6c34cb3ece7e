"""Content rules (bot.content_rules): reading them, tightening only, and every check."""

from __future__ import annotations

import pytest

from bot.config import Settings, load_settings, parse_repo_config
from bot.content_rules import (
    NO_RULES,
    ContentRules,
    check,
    from_registry,
    image_tag,
    parse_rules,
    tighten,
)
from bot.errors import ConfigError


def deployment(*containers: dict, labels: dict | None = None, volumes: list | None = None,
               kind: str = "Deployment") -> dict:
    pod: dict = {"containers": list(containers)}
    if volumes is not None:
        pod["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": "web", "labels": labels or {}},
            "spec": {"template": {"spec": pod}}}


def container(image: str = "ghcr.io/acme/web:1.0", limits: dict | None = None,
              **extra: object) -> dict:
    out: dict = {"name": "web", "image": image, **extra}
    if limits is not None:
        out["resources"] = {"limits": limits}
    return out


LIMITS = {"cpu": "500m", "memory": "256Mi"}


def found(rules: ContentRules, *objects: dict) -> list[tuple[str, str]]:
    return [(v.field, v.rule) for v in check(rules, objects, source="deploy/web",
                                             default_namespace="shop")]


# --------------------------------------------------------------------------- checks

CASES = {
    "no rules: nothing is checked": (NO_RULES, deployment(container("nginx")), []),
    "limits required and missing": (
        ContentRules(require_resource_limits=True), deployment(container(limits={"cpu": "1"})),
        [("spec.template.spec.containers[0].resources.limits.memory",
          "requireResourceLimits")]),
    "limits required and present": (
        ContentRules(require_resource_limits=True), deployment(container(limits=LIMITS)), []),
    "init containers count too": (
        ContentRules(require_resource_limits=True),
        {**deployment(container(limits=LIMITS)), "spec": {"template": {"spec": {
            "initContainers": [container()], "containers": [container(limits=LIMITS)]}}}},
        [("spec.template.spec.initContainers[0].resources.limits.cpu", "requireResourceLimits"),
         ("spec.template.spec.initContainers[0].resources.limits.memory",
          "requireResourceLimits")]),
    "forbidden tag": (ContentRules(forbid_image_tags=("latest",)),
                      deployment(container("ghcr.io/acme/web:latest")),
                      [("spec.template.spec.containers[0].image", "forbidImageTags")]),
    "no tag means latest": (ContentRules(forbid_image_tags=("latest",)),
                            deployment(container("ghcr.io/acme/web")),
                            [("spec.template.spec.containers[0].image", "forbidImageTags")]),
    "a registry port is not a tag": (ContentRules(forbid_image_tags=("latest",)),
                                     deployment(container("localhost:5000/web")),
                                     [("spec.template.spec.containers[0].image",
                                       "forbidImageTags")]),
    "pinned by digest only is fine": (ContentRules(forbid_image_tags=("latest",)),
                                      deployment(container("ghcr.io/acme/web@sha256:" + "a" * 64)),
                                      []),
    "registry allowed": (ContentRules(allowed_registries=(("ghcr.io/acme",),)),
                         deployment(container("ghcr.io/acme/web:1")), []),
    "lookalike registry refused": (ContentRules(allowed_registries=(("ghcr.io/acme",),)),
                                   deployment(container("ghcr.io/acme-evil/web:1")),
                                   [("spec.template.spec.containers[0].image",
                                     "allowedRegistries")]),
    "Docker Hub short names are read in full": (
        ContentRules(allowed_registries=(("docker.io/library",),)),
        deployment(container("nginx:1.27")), []),
    "required label missing": (ContentRules(require_labels=("app.kubernetes.io/name",)),
                               deployment(container()),
                               [("metadata.labels.app.kubernetes.io/name", "requireLabels")]),
    "hostPath forbidden": (ContentRules(forbid_host_path=True),
                           deployment(container(), volumes=[{"name": "ok", "emptyDir": {}},
                                                            {"name": "h", "hostPath": {"path": "/"}}]),
                           [("spec.template.spec.volumes[1].hostPath", "forbidHostPath")]),
    "privileged forbidden": (ContentRules(forbid_privileged=True),
                             deployment(container(securityContext={"privileged": True})),
                             [("spec.template.spec.containers[0].securityContext.privileged",
                               "forbidPrivileged")]),
    "CronJob pod specs are found": (
        ContentRules(forbid_privileged=True),
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "job"},
         "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
             container(securityContext={"privileged": True})]}}}}}},
        [("spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged",
          "forbidPrivileged")]),
}


@pytest.mark.parametrize(("rules", "obj", "expected"), CASES.values(), ids=CASES.keys())
def test_checks(rules: ContentRules, obj: dict, expected: list) -> None:
    assert found(rules, obj) == expected


def test_a_violation_names_file_object_field_and_rule() -> None:
    [violation] = check(ContentRules(forbid_image_tags=("latest",)),
                        [deployment(container("web"))], source="deploy/web",
                        default_namespace="shop")
    assert str(violation) == ("deploy/web: Deployment shop/web: "
                              "spec.template.spec.containers[0].image: forbidImageTags "
                              "(image 'web' has no tag, which means :latest)")


def test_images_and_registries() -> None:
    assert image_tag("ghcr.io/acme/web:1.2") == "1.2"
    assert image_tag("localhost:5000/web") == "latest"
    assert image_tag("web@sha256:" + "b" * 64) is None
    assert from_registry("acme/web:1", "acme") and not from_registry("acmex/web", "acme")
    assert not from_registry("", "ghcr.io")


# --------------------------------------------------------------------------- reading, tightening


def test_parse_reads_every_rule() -> None:
    rules = parse_rules({"requireResourceLimits": True, "forbidImageTags": ["latest", "dev"],
                         "allowedRegistries": ["ghcr.io/acme"], "requireLabels": ["team"],
                         "forbidHostPath": True, "forbidPrivileged": False}, "server.yaml")
    assert rules == ContentRules(True, ("latest", "dev"), (("ghcr.io/acme",),), ("team",), True,
                                 False)


@pytest.mark.parametrize(("raw", "key", "reason"), [
    ({"forbidLatest": True}, "rules.forbidLatest", "unknown rule"),
    ({"forbidHostPath": "yes"}, "rules.forbidHostPath", "true or false"),
    ({"forbidImageTags": "latest"}, "rules.forbidImageTags", "list of non-empty strings"),
    ({"allowedRegistries": []}, "rules.allowedRegistries", "would allow no image"),
    (["requireResourceLimits"], "rules", "must be a mapping"),
])
def test_parse_errors_name_the_key(raw: object, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(raw, "server.yaml")
    assert err.value.source == "server.yaml" and err.value.key == key
    assert reason in err.value.reason


SERVER = ContentRules(require_resource_limits=True, forbid_image_tags=("latest",),
                      allowed_registries=(("ghcr.io/acme",),), require_labels=("team",),
                      forbid_host_path=True, forbid_privileged=True)


def test_a_repository_cannot_loosen_the_server_rules() -> None:
    loosest = parse_rules({"requireResourceLimits": False, "forbidImageTags": [],
                           "allowedRegistries": ["docker.io"], "requireLabels": [],
                           "forbidHostPath": False, "forbidPrivileged": False}, ".coalmine.yaml")
    combined = tighten(SERVER, loosest)
    # Every server rule still holds, and the repository's registry list is one more constraint.
    assert combined.require_resource_limits and combined.forbid_host_path
    assert combined.forbid_privileged and combined.forbid_image_tags == ("latest",)
    assert combined.require_labels == ("team",)
    assert combined.allowed_registries == (("ghcr.io/acme",), ("docker.io",))
    refused = found(combined, deployment(container("docker.io/acme/web:1", limits=LIMITS),
                                         labels={"team": "a"}))
    assert refused == [("spec.template.spec.containers[0].image", "allowedRegistries")]


def test_a_repository_may_tighten() -> None:
    more = tighten(NO_RULES, ContentRules(forbid_image_tags=("dev",), require_labels=("x",)))
    assert tighten(SERVER, more).forbid_image_tags == ("latest", "dev")
    assert tighten(SERVER, more).require_labels == ("team", "x")


def test_config_files_carry_the_rules(tmp_path) -> None:
    server = tmp_path / "server.yaml"
    server.write_text("rules:\n  forbidPrivileged: true\n")
    settings = load_settings({"COALMINE_CONFIG": str(server), "COALMINE_REPOS": "a/b=shop"})
    assert settings.rules == ContentRules(forbid_privileged=True)
    config = parse_repo_config("""rules:
  forbidImageTags: [latest]
apps:
  - name: web
    path: deploy/web
    namespace: shop
    rules: {requireLabels: [team]}
  - name: api
    path: deploy/api
    namespace: shop
""", Settings())
    assert config.rules == ContentRules(forbid_image_tags=("latest",))
    assert config.apps[0].rules == ContentRules(forbid_image_tags=("latest",),
                                                require_labels=("team",))
    assert config.apps[1].rules == config.rules
    with pytest.raises(ConfigError) as err:
        parse_repo_config("apps:\n  - {name: web, path: p, namespace: shop, rules: {x: 1}}\n")
    assert err.value.key == "apps[0].rules.x"
