"""The manifests that run Coalmine itself (deploy/): valid, least-privilege, non-root, no secrets.

Every YAML file under deploy/ is checked, so a new file is covered without touching this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.config import load_settings
from bot.policy import parse_policy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.30"  # the oldest release still widely run; newer ones accept these too
PLACEHOLDER_PREFIX = "REPLACE-WITH-"
NOT_SECRET_KEYS = {"GITHUB_PRIVATE_KEY_PATH"}  # a file path, kept in the Secret beside the App id
KUSTOMIZATION = "kustomization.yaml"

Obj = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != KUSTOMIZATION)


def objects_in(paths: list[Path]) -> list[tuple[str, Obj]]:
    found = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((f"{path.relative_to(DEPLOY)}: {doc['kind']} {name(doc)}", doc))
    return found


def name(obj: Obj) -> str:
    return obj["metadata"]["name"]


ALL = objects_in(manifest_files())
BASE_CONFIG = objects_in([DEPLOY / "base" / "config.yaml"])  # components/redis patches it


def of_kind(kind: str, objects: list[tuple[str, Obj]] = ALL) -> list[Obj]:
    return [obj for _, obj in objects if obj["kind"] == kind]


def the(kind: str, wanted: str, objects: list[tuple[str, Obj]] = ALL) -> Obj:
    (obj,) = [o for o in of_kind(kind, objects) if name(o) == wanted]
    return obj


def pod_specs(objects: list[tuple[str, Obj]] = ALL) -> Iterator[tuple[str, Obj]]:
    for label, obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield label, obj["spec"]["template"]["spec"]


def containers(pod: Obj) -> list[Obj]:
    return pod.get("initContainers", []) + pod["containers"]


# --------------------------------------------------------------------------- every object


def test_deploy_has_the_expected_objects():
    labels = {f"{obj['kind']} {name(obj)}" for _, obj in ALL}
    assert {
        "Namespace coalmine",
        "ServiceAccount coalmine",
        "ClusterRole coalmine-deployer",
        "ClusterRoleBinding coalmine-deployer",
        "ClusterRole coalmine-secrets",
        "ConfigMap coalmine-env",
        "ConfigMap coalmine-config",
        "Deployment coalmine-web",
        "Service coalmine-web",
        "Deployment coalmine-worker",
        "Deployment coalmine-redis",
        "Service coalmine-redis",
        "Secret coalmine",
        "Secret coalmine-github-app",
    } <= labels


@pytest.mark.parametrize(("label", "obj"), ALL, ids=[label for label, _ in ALL])
def test_every_object_is_valid_kubernetes(label, obj):
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field():
    """Guards the test above: strict validation must catch what a typo would break."""
    web = yaml.safe_load(yaml.safe_dump(the("Deployment", "coalmine-web")))
    web["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


def test_every_namespaced_object_is_in_the_coalmine_namespace():
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for label, obj in ALL:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == "coalmine", label


# --------------------------------------------------------------------------- RBAC


def rules() -> Iterator[tuple[str, Obj]]:
    for kind in ("ClusterRole", "Role"):
        for role in of_kind(kind):
            for rule in role["rules"]:
                yield name(role), rule


def test_rbac_has_no_wildcards_and_no_escalating_verbs():
    for role, rule in rules():
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule.get(field, []), f"{role}: {field} {rule[field]}"
        assert not {"escalate", "bind", "impersonate", "update", "watch"} & set(rule["verbs"]), role
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, role


def test_secrets_are_only_in_the_optional_component():
    holders = {role for role, rule in rules() if "secrets" in rule["resources"]}
    assert holders == {"coalmine-secrets"}
    (label,) = [label for label, obj in ALL if obj["kind"] == "ClusterRole" and
                name(obj) == "coalmine-secrets"]
    assert label.startswith("components/secret-access/")


def test_namespaces_can_be_created_but_not_deleted():
    namespace_verbs = [
        set(rule["verbs"]) for _, rule in rules() if "namespaces" in rule["resources"]
    ]
    assert namespace_verbs == [{"get", "list", "create", "patch"}]


def test_the_deployer_covers_what_the_canary_model_does_to_deployments():
    verbs = {
        resource: set(rule["verbs"])
        for role, rule in rules()
        if role == "coalmine-deployer" and "apps" in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert {"get", "create", "patch", "delete"} <= verbs["deployments"]
    assert verbs["deployments/scale"] == {"patch"}


def test_bindings_name_the_coalmine_service_account():
    for binding in of_kind("ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "coalmine", "namespace": "coalmine"}
        ]
        assert binding["roleRef"]["name"] in {name(r) for r in of_kind("ClusterRole")}


# --------------------------------------------------------------------------- pods


def effective(pod: Obj, container: Obj, field: str) -> Any:
    """A container's security setting, falling back to the pod's as Kubernetes does."""
    own = container.get("securityContext", {})
    return own[field] if field in own else pod.get("securityContext", {}).get(field)


def test_every_container_runs_locked_down():
    seen = 0
    for label, pod in pod_specs():
        for container in containers(pod):
            seen += 1
            where = f"{label} container {container['name']}"
            assert effective(pod, container, "runAsNonRoot") is True, where
            assert effective(pod, container, "runAsUser") not in (None, 0), where
            assert effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, where
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert "limits" in container["resources"] and "requests" in container["resources"]
    assert seen == 3


@pytest.mark.parametrize("deployment", ["coalmine-web", "coalmine-worker"])
def test_coalmine_runs_as_its_image_user_with_writable_data_and_tmp(deployment):
    pod = the("Deployment", deployment)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert effective(pod, container, "runAsUser") == 10001
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/home/coalmine/data"]
    assert "emptyDir" in mounts["/tmp"]
    assert container["image"] == "coalmine"  # set by `images:` in base/kustomization.yaml


def test_web_serves_port_8000_with_health_probes_and_no_cluster_token():
    deployment = the("Deployment", "coalmine-web")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["automountServiceAccountToken"] is False
    service = the("Service", "coalmine-web")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_runs_the_worker_command_with_the_service_account():
    pod = the("Deployment", "coalmine-worker")["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["coalmine", "worker"]
    assert pod["serviceAccountName"] == "coalmine"
    assert pod.get("automountServiceAccountToken", True) is True


def test_pods_refer_only_to_config_maps_and_secrets_that_exist():
    defined = {(obj["kind"], name(obj)) for _, obj in ALL}
    for label, pod in pod_specs():
        for container in containers(pod):
            for source in container.get("envFrom", []):
                for ref_field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref_field in source:
                        assert (kind, source[ref_field]["name"]) in defined, label
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined, label
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in defined, label


def test_the_private_key_path_points_into_the_mounted_secret():
    path = Path(the("Secret", "coalmine")["stringData"]["GITHUB_PRIVATE_KEY_PATH"])
    key_secret = the("Secret", "coalmine-github-app")
    assert path.name in key_secret["stringData"]
    for deployment in ("coalmine-web", "coalmine-worker"):
        pod = the("Deployment", deployment)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"]
                    if m["mountPath"] == str(path.parent)]
        assert volumes[mount["name"]]["secret"]["secretName"] == "coalmine-github-app"


# --------------------------------------------------------------------------- secrets and config


def test_secrets_hold_only_placeholders():
    secrets = of_kind("Secret")
    assert secrets
    for secret in secrets:
        assert "data" not in secret, f"{name(secret)}: base64 data hides what it holds"
        for key, value in secret["stringData"].items():
            if key in NOT_SECRET_KEYS:
                assert value.startswith("/"), key
            else:
                assert value.startswith(PLACEHOLDER_PREFIX), f"{name(secret)}.{key}"


def test_the_secret_template_is_not_part_of_any_kustomization():
    """`kubectl apply -k` must never overwrite real credentials with the placeholders."""
    for kustomization in DEPLOY.rglob(KUSTOMIZATION):
        text = kustomization.read_text()
        assert "secret.example.yaml" not in yaml.safe_dump(yaml.safe_load(text)), kustomization


def test_the_example_server_config_loads_with_valid_policies(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(the("ConfigMap", "coalmine-config", BASE_CONFIG)["data"]["config.yaml"])
    env = dict(the("ConfigMap", "coalmine-env", BASE_CONFIG)["data"], COALMINE_CONFIG=str(config))
    settings = load_settings(env)
    assert settings.public_url == "https://coalmine.example.com"
    assert "default" in settings.clusters
    for repo, entry in settings.repos.items():
        policy = parse_policy(entry.raw, str(config), repo)
        assert policy.namespaces


# --------------------------------------------------------------------------- kustomize

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kustomize(directory: Path) -> list[tuple[str, Obj]]:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [(f"{o['kind']} {name(o)}", o) for o in yaml.safe_load_all(done.stdout) if o]


@needs_kubectl
def test_the_default_kustomization_renders_with_redis():
    rendered = kustomize(DEPLOY)
    for label, obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "coalmine", label
    env = the("ConfigMap", "coalmine-env", rendered)["data"]
    redis = the("Service", "coalmine-redis", rendered)
    assert env["REDIS_URL"].startswith(f"redis://{name(redis)}.coalmine.svc")
    assert redis["spec"]["ports"][0]["port"] == 6379
    assert of_kind("Secret", rendered) == []
    web = the("Deployment", "coalmine-web", rendered)
    assert web["metadata"]["labels"]["app.kubernetes.io/part-of"] == "coalmine"
    assert "app.kubernetes.io/part-of" not in web["spec"]["selector"]["matchLabels"]


@needs_kubectl
def test_the_base_renders_without_redis():
    rendered = kustomize(DEPLOY / "base")
    assert "REDIS_URL" not in the("ConfigMap", "coalmine-env", rendered)["data"]
    assert not [obj for _, obj in rendered if "redis" in name(obj)]
    assert {"coalmine-web", "coalmine-worker"} == {
        name(d) for d in of_kind("Deployment", rendered)
    }


@needs_kubectl
def test_the_secret_access_component_adds_its_role(tmp_path):
    (tmp_path / KUSTOMIZATION).write_text(
        yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(DEPLOY, tmp_path)],
            "components": [os.path.relpath(DEPLOY / "components" / "secret-access", tmp_path)],
        })
    )
    rendered = kustomize(tmp_path)
    role = the("ClusterRole", "coalmine-secrets", rendered)
    assert role["rules"][0]["resources"] == ["secrets"]
    assert the("ClusterRoleBinding", "coalmine-secrets", rendered)["subjects"][0]["name"] == (
        "coalmine"
    )
