"""The manifests that run Coalmine itself (deploy/): valid, least-privilege, non-root, no secrets.

Every YAML file under deploy/ is checked, so a new file is covered without touching this test.
Files a kustomization names under `patches:` are fragments, not objects, and are checked
through the rendered output instead (`kubectl kustomize`), which is what a cluster receives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.30"  # the oldest release still widely run; newer ones accept these too
PLACEHOLDER_PREFIX = "REPLACE-WITH-"
NOT_SECRET_KEYS = {"GITHUB_PRIVATE_KEY_PATH"}  # a file path, kept in the Secret beside the App id
KUSTOMIZATION = "kustomization.yaml"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
COALMINE_SA = {"kind": "ServiceAccount", "name": "coalmine", "namespace": "coalmine"}
TENANT = DEPLOY / "tenant"  # namespaced by the directories of deploy/namespaces/
WRITE_VERBS = {"create", "patch", "delete", "update"}

Obj = dict[str, Any]


def patch_files() -> set[Path]:
    found = set()
    for kustomization in DEPLOY.rglob(KUSTOMIZATION):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            found.add((kustomization.parent / patch["path"]).resolve())
    return found


def manifest_files() -> list[Path]:
    patches = patch_files()
    return sorted(p for p in DEPLOY.rglob("*.yaml")
                  if p.name != KUSTOMIZATION and p.resolve() not in patches)


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
BASE_CONFIG = objects_in([DEPLOY / "base" / "config.yaml"])
SECRETS = objects_in([DEPLOY / "secret.example.yaml"])


def of_kind(kind: str, objects: list[tuple[str, Obj]] = ALL) -> list[Obj]:
    return [obj for _, obj in objects if obj["kind"] == kind]


def the(kind: str, wanted: str, objects: list[tuple[str, Obj]] = ALL,
        namespace: str | None = None) -> Obj:
    (obj,) = [o for o in of_kind(kind, objects) if name(o) == wanted and
              (namespace is None or o["metadata"].get("namespace") == namespace)]
    return obj


def pod_specs(objects: list[tuple[str, Obj]] = ALL) -> Iterator[tuple[str, Obj]]:
    for label, obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield label, obj["spec"]["template"]["spec"]


def containers(pod: Obj) -> list[Obj]:
    return pod.get("initContainers", []) + pod["containers"]


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


# --------------------------------------------------------------------------- every object


def test_deploy_has_the_expected_objects():
    labels = {f"{obj['kind']} {name(obj)}" for _, obj in ALL + SECRETS}
    assert {
        "Namespace coalmine",
        "ServiceAccount coalmine",
        "ServiceAccount coalmine-deployer",
        "Role coalmine-deployer",
        "RoleBinding coalmine-deployer",
        "Role coalmine-impersonate",
        "RoleBinding coalmine-impersonate",
        "ClusterRole coalmine-deployer",
        "ClusterRoleBinding coalmine-deployer",
        "ConfigMap coalmine-env",
        "ConfigMap coalmine-config",
        "Deployment coalmine-web",
        "Service coalmine-web",
        "Deployment coalmine-worker",
        "Deployment coalmine-redis",
        "Service coalmine-redis",
        "Secret coalmine",
        "Secret coalmine-github-app",
        "Secret coalmine-redis",
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


def test_every_namespaced_object_outside_the_tenant_is_in_the_coalmine_namespace():
    for label, obj in ALL:
        if obj["kind"] not in CLUSTER_SCOPED and not label.startswith("tenant/"):
            assert obj["metadata"].get("namespace") == "coalmine", label


def test_only_the_opt_in_component_holds_cluster_wide_rights():
    for label, obj in ALL:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert label.startswith("components/cluster-wide/"), label


# --------------------------------------------------------------------------- RBAC


def rules(objects: list[tuple[str, Obj]] = ALL) -> Iterator[tuple[str, Obj]]:
    for kind in ("ClusterRole", "Role"):
        for role in of_kind(kind, objects):
            for rule in role["rules"]:
                yield f"{kind} {name(role)}", rule


def secrets_patch() -> list[Obj]:
    return yaml.safe_load((DEPLOY / "components" / "secret-access" / "secrets-rule.yaml")
                          .read_text())


def assert_least_privilege(role: str, rule: Obj) -> None:
    for field in ("verbs", "resources", "apiGroups"):
        assert "*" not in rule.get(field, []), f"{role}: {field} {rule[field]}"
    assert not {"escalate", "bind", "update", "watch"} & set(rule["verbs"]), role
    assert "nonResourceURLs" not in rule, role
    if "impersonate" in rule["verbs"]:
        # Only named ServiceAccounts, never users or groups at large.
        assert rule["verbs"] == ["impersonate"], role
        assert rule["resources"] == ["serviceaccounts"] and rule["apiGroups"] == [""], role
        assert rule.get("resourceNames"), f"{role}: impersonation without resourceNames"
    else:
        assert "resourceNames" not in rule, role


def test_rbac_has_no_wildcards_no_escalating_verbs_and_only_named_impersonation():
    for role, rule in rules():
        assert_least_privilege(role, rule)
    for patch in secrets_patch():
        assert_least_privilege("components/secret-access", patch["value"])


def test_impersonation_is_granted_on_the_namespace_deployer_only():
    (impersonation,) = [rule for role, rule in rules() if "impersonate" in rule["verbs"]]
    assert impersonation["resourceNames"] == ["coalmine-deployer"]
    assert name(the("ServiceAccount", "coalmine-deployer")) == "coalmine-deployer"


def test_secrets_are_only_in_the_optional_component():
    holders = {role for role, rule in rules() if "secrets" in rule["resources"]}
    assert holders == set()
    (patch,) = secrets_patch()
    assert patch["op"] == "add" and patch["path"] == "/rules/-"
    assert patch["value"]["resources"] == ["secrets"]


def test_namespaces_are_never_deleted_and_only_read_in_the_namespaced_install():
    for role, rule in rules():
        if "namespaces" in rule["resources"]:
            assert "delete" not in rule["verbs"], role
            if role.startswith("Role "):
                assert rule["verbs"] == ["get"], role


@pytest.mark.parametrize("kind", ["Role", "ClusterRole"])
def test_the_deployer_covers_what_the_canary_model_does_to_deployments(kind):
    verbs = {
        resource: set(rule["verbs"])
        for role, rule in rules()
        if role == f"{kind} coalmine-deployer" and "apps" in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert {"get", "create", "patch", "delete"} <= verbs["deployments"]
    assert verbs["deployments/scale"] == {"patch"}


def test_coalmine_itself_gets_no_write_right_in_a_tenant_namespace():
    """What a repository may do there is what the impersonated coalmine-deployer may do."""
    (binding,) = [b for b in of_kind("RoleBinding") if b["subjects"] == [COALMINE_SA]]
    role = the("Role", binding["roleRef"]["name"])
    assert all(not WRITE_VERBS & set(rule["verbs"]) for rule in role["rules"])


def test_cluster_bindings_name_the_coalmine_service_account():
    for binding in of_kind("ClusterRoleBinding"):
        assert binding["subjects"] == [COALMINE_SA]
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


@pytest.mark.parametrize("deployment", ["coalmine-web", "coalmine-worker"])
def test_coalmine_knows_its_own_namespace(deployment):
    """The web pod mounts no token, so the namespace comes from the downward API."""
    (container,) = the("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    source = env_of(container)["COALMINE_NAMESPACE"]["valueFrom"]
    assert source == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_web_serves_port_8000_with_probes_and_no_cluster_token():
    deployment = the("Deployment", "coalmine-web")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    # Readiness asks Redis; liveness must not, or a Redis outage restarts every web pod.
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert pod["automountServiceAccountToken"] is False
    service = the("Service", "coalmine-web")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_runs_the_worker_command_with_the_service_account():
    pod = the("Deployment", "coalmine-worker")["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["coalmine", "worker"]
    assert pod["serviceAccountName"] == "coalmine"
    assert pod.get("automountServiceAccountToken", True) is True


def secret_refs(container: Obj) -> Iterator[tuple[str, str | None]]:
    """(Secret name, key or None for all keys) of every Secret a container reads."""
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            yield source["secretRef"]["name"], None
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            yield ref["name"], ref["key"]


def test_pods_refer_only_to_config_maps_and_secrets_that_exist():
    defined = {(obj["kind"], name(obj)) for _, obj in ALL + SECRETS}
    secrets = {name(s): s["stringData"] for s in of_kind("Secret", SECRETS)}
    for label, pod in rendered_pod_specs():
        for container in containers(pod):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in defined, label
            for secret, key in secret_refs(container):
                assert secret in secrets, label
                assert key is None or key in secrets[secret], f"{label}: {secret}.{key}"
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined, label
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in defined, label


def test_the_private_key_path_points_into_the_mounted_secret():
    path = Path(the("Secret", "coalmine", SECRETS)["stringData"]["GITHUB_PRIVATE_KEY_PATH"])
    key_secret = the("Secret", "coalmine-github-app", SECRETS)
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


def server_config(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(the("ConfigMap", "coalmine-config", BASE_CONFIG)["data"]["config.yaml"])
    env = dict(the("ConfigMap", "coalmine-env", BASE_CONFIG)["data"], COALMINE_CONFIG=str(config),
               COALMINE_NAMESPACE="coalmine")
    return load_settings(env)


def test_the_example_server_config_is_deny_by_default_and_loads(tmp_path):
    settings = server_config(tmp_path)
    assert settings.public_url == "https://coalmine.example.com"
    assert "default" in settings.clusters
    assert settings.own_namespace == "coalmine"
    assert settings.repos
    for policy in settings.repos.values():
        assert policy.namespaces and "*" not in policy.namespaces
        assert not policy.adopt


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


def overlay(tmp_path: Path, *components: str, resources: list[Path] | None = None,
            namespaces: list[str] | None = None) -> list[tuple[str, Obj]]:
    """Renders deploy/ (or `resources`) with extra components, as an operator's overlay would."""
    spec: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(r, tmp_path) for r in resources or [DEPLOY]],
    }
    for namespace in namespaces or []:
        (tmp_path / namespace).mkdir()
        (tmp_path / namespace / KUSTOMIZATION).write_text(yaml.safe_dump({
            "namespace": namespace, "resources": [os.path.relpath(TENANT, tmp_path / namespace)],
        }))
        spec["resources"].append(namespace)
    if components:
        spec["components"] = [os.path.relpath(DEPLOY / "components" / c, tmp_path)
                              for c in components]
    (tmp_path / KUSTOMIZATION).write_text(yaml.safe_dump(spec))
    return kustomize(tmp_path)


def rendered_pod_specs() -> Iterator[tuple[str, Obj]]:
    return pod_specs(kustomize(DEPLOY)) if KUBECTL else pod_specs()


@needs_kubectl
def test_the_default_install_is_namespaced():
    rendered = kustomize(DEPLOY)
    kinds = {obj["kind"] for _, obj in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    for label, obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] in ("Role", "RoleBinding", "ServiceAccount") and \
                name(obj).startswith("coalmine-"):
            assert obj["metadata"]["namespace"] == "shop", label
        elif obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "coalmine", label
    # The tenant's deployer binding names the account of its own namespace (kustomize rewrote
    # the placeholder), and the impersonation binding names Coalmine's account as written.
    assert the("RoleBinding", "coalmine-deployer", rendered)["subjects"] == [
        {"kind": "ServiceAccount", "name": "coalmine-deployer", "namespace": "shop"}]
    assert the("RoleBinding", "coalmine-impersonate", rendered)["subjects"] == [COALMINE_SA]
    for role, rule in rules(rendered):
        assert_least_privilege(role, rule)
    assert of_kind("Secret", rendered) == []
    web = the("Deployment", "coalmine-web", rendered)
    assert web["metadata"]["labels"]["app.kubernetes.io/part-of"] == "coalmine"
    assert "app.kubernetes.io/part-of" not in web["spec"]["selector"]["matchLabels"]


@needs_kubectl
def test_every_service_account_the_config_impersonates_exists_with_its_roles(tmp_path):
    rendered = kustomize(DEPLOY)
    for key, policy in server_config(tmp_path).repos.items():
        if policy.service_account is None:
            continue
        namespace, account = policy.service_account.split("/")
        the("ServiceAccount", account, rendered, namespace=namespace)
        impersonation = the("Role", "coalmine-impersonate", rendered, namespace=namespace)
        assert impersonation["rules"][0]["resourceNames"] == [account], key
        for pattern in policy.namespaces:
            the("Role", "coalmine-deployer", rendered, namespace=pattern)


@needs_kubectl
def test_one_tenant_directory_per_namespace_keeps_each_in_its_namespace(tmp_path):
    rendered = overlay(tmp_path, resources=[DEPLOY / "base"], namespaces=["team-a", "team-b"])
    for namespace in ("team-a", "team-b"):
        binding = the("RoleBinding", "coalmine-deployer", rendered, namespace=namespace)
        assert binding["subjects"][0]["namespace"] == namespace
        the("Role", "coalmine-impersonate", rendered, namespace=namespace)


@needs_kubectl
def test_redis_requires_a_password_that_web_and_worker_send():
    rendered = kustomize(DEPLOY)
    (redis,) = the("Deployment", "coalmine-redis", rendered)["spec"]["template"]["spec"][
        "containers"]
    args = redis["command"] + redis.get("args", [])
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    password = env_of(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert env_of(redis)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == password
    assert "REDIS_URL" not in the("ConfigMap", "coalmine-env", rendered)["data"]
    service = the("Service", "coalmine-redis", rendered)
    for deployment in ("coalmine-web", "coalmine-worker"):
        (container,) = the("Deployment", deployment, rendered)["spec"]["template"]["spec"][
            "containers"]
        names = [e["name"] for e in container["env"]]
        # Kubernetes expands $(VAR) only from variables defined before.
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), deployment
        assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == password
        url = env_of(container)["REDIS_URL"]["value"]
        assert re.fullmatch(rf"redis://:\$\(REDIS_PASSWORD\)@{name(service)}\.coalmine\.svc"
                            rf"\.cluster\.local:{service['spec']['ports'][0]['port']}/0", url)


@needs_kubectl
def test_the_base_renders_without_redis_or_cluster_rights():
    rendered = kustomize(DEPLOY / "base")
    assert "REDIS_URL" not in the("ConfigMap", "coalmine-env", rendered)["data"]
    assert not [obj for _, obj in rendered if "redis" in name(obj)]
    assert {"coalmine-web", "coalmine-worker"} == {
        name(d) for d in of_kind("Deployment", rendered)
    }
    assert not [obj for _, obj in rendered if "Role" in obj["kind"]]


@needs_kubectl
def test_the_cluster_wide_component_adds_the_cluster_role(tmp_path):
    rendered = overlay(tmp_path, "cluster-wide")
    role = the("ClusterRole", "coalmine-deployer", rendered)
    for rule in role["rules"]:
        assert_least_privilege("ClusterRole coalmine-deployer", rule)
    binding = the("ClusterRoleBinding", "coalmine-deployer", rendered)
    assert binding["subjects"] == [COALMINE_SA]
    assert binding["roleRef"]["name"] == name(role)


@needs_kubectl
def test_the_secret_access_component_adds_secrets_where_the_deployer_roles_are(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    namespaced = overlay(tmp_path / "a", "secret-access")
    role = the("Role", "coalmine-deployer", namespaced, namespace="shop")
    assert role["rules"][-1]["resources"] == ["secrets"]
    assert not of_kind("ClusterRole", namespaced)
    wide = overlay(tmp_path / "b", "cluster-wide", "secret-access")
    assert the("ClusterRole", "coalmine-deployer", wide)["rules"][-1]["resources"] == ["secrets"]
    assert the("Role", "coalmine-deployer", wide)["rules"][-1]["resources"] == ["secrets"]
