"""The fake API server is faithful enough for the real kubectl.

If kubectl accepts the fake's discovery, apply, patch, list and error answers, the Python
client (which is far less demanding) can trust them too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
"""

APP = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          env: [{name: MODE, value: blue}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {tier: front}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
  labels: {tier: config}
data:
  greeting: hello
"""


def kubectl(kube, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs kubectl against the fake; discovery is cached beside the kubeconfig, not in $HOME."""
    cache = kube.kubeconfig.parent / "kubectl-cache"
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "00-namespace.yaml").write_text(NAMESPACE)
    (folder / "10-app.yaml").write_text(APP)
    return folder


def test_server_side_apply_get_and_delete(fake_kube, manifests):
    applied = kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))

    assert applied.stdout.splitlines() == [
        "namespace/shop serverside-applied",
        "deployment.apps/web serverside-applied",
        "service/web serverside-applied",
        "configmap/web-config serverside-applied",
    ]
    patches = [r for r in fake_kube.requests if r.method == "PATCH"]
    assert {r.content_type for r in patches} == {"application/apply-patch+yaml"}
    assert {r.query["fieldManager"] for r in patches} == {"kubectl"}
    deployment = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert deployment["metadata"]["managedFields"][0]["manager"] == "kubectl"

    listed = json.loads(kubectl(fake_kube, "get", "-f", str(manifests), "-o", "json").stdout)
    assert [item["kind"] for item in listed["items"]] == [
        "Namespace",
        "Deployment",
        "Service",
        "ConfigMap",
    ]
    assert listed["items"][3]["data"] == {"greeting": "hello"}

    deleted = kubectl(fake_kube, "delete", "-f", str(manifests / "10-app.yaml"))
    assert 'deployment.apps "web" deleted' in deleted.stdout
    assert fake_kube.objects(namespace="shop") == []
    kubectl(fake_kube, "delete", "namespace", "shop")
    assert fake_kube.get_object("v1", "Namespace", None, "shop") is None


def test_reapplying_the_same_manifests_changes_nothing(fake_kube, manifests):
    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))
    config_map = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")

    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))

    again = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
    assert again["metadata"]["resourceVersion"] == config_map["metadata"]["resourceVersion"]
    assert again["metadata"]["managedFields"] == config_map["metadata"]["managedFields"]
    deployment = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")
    assert deployment["metadata"]["generation"] == 1


def test_removed_fields_leave_on_reapply(fake_kube, manifests):
    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))
    (manifests / "10-app.yaml").write_text(
        APP.replace("  labels: {tier: config}\n", "").replace(
            "env: [{name: MODE, value: blue}]", "env: []"
        )
    )

    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))

    config_map = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
    assert "labels" not in config_map["metadata"]
    container = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container.get("env") == []
    assert (
        fake_kube.get_object("apps/v1", "Deployment", "shop", "web")["metadata"]["generation"] == 2
    )


def test_label_selectors(fake_kube, manifests):
    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))

    def names(selector: str) -> list[str]:
        out = kubectl(fake_kube, "get", "deploy,svc,cm", "-A", "-l", selector, "-o", "json")
        return sorted(
            f"{i['kind']}/{i['metadata']['name']}" for i in json.loads(out.stdout)["items"]
        )

    assert names("tier=front") == ["Deployment/web", "Service/web"]
    assert names("tier!=front") == ["ConfigMap/web-config"]
    assert names("tier in (config, other)") == ["ConfigMap/web-config"]
    assert names("tier notin (front),tier") == ["ConfigMap/web-config"]
    assert names("!tier") == []


def test_patch_flavours_and_scale(fake_kube, manifests):
    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))

    kubectl(
        fake_kube,
        "-n",
        "shop",
        "patch",
        "cm",
        "web-config",
        "--type",
        "merge",
        "-p",
        '{"data": {"greeting": null, "extra": "1"}}',
    )
    kubectl(
        fake_kube,
        "-n",
        "shop",
        "patch",
        "deploy",
        "web",
        "-p",
        '{"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}',
    )
    kubectl(
        fake_kube,
        "-n",
        "shop",
        "patch",
        "svc",
        "web",
        "--type",
        "json",
        "-p",
        '[{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]',
    )
    kubectl(fake_kube, "-n", "shop", "scale", "deploy", "web", "--replicas", "5")

    assert fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")["data"] == {"extra": "1"}
    deployment = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:2"
    assert container["env"] == [{"name": "MODE", "value": "blue"}], "strategic merge keeps env"
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["generation"] == 3
    assert fake_kube.get_object("v1", "Service", "shop", "web")["spec"]["ports"][0]["port"] == 81


def test_errors_come_back_as_kubernetes_statuses(fake_kube, manifests):
    missing = kubectl(fake_kube, "-n", "shop", "get", "deploy", "nope", check=False)
    assert missing.returncode == 1
    assert 'namespaces "shop" not found' in missing.stderr or "NotFound" in missing.stderr

    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests))
    created = kubectl(fake_kube, "create", "-f", str(manifests / "10-app.yaml"), check=False)
    assert 'configmaps "web-config" already exists' in created.stderr

    gone = kubectl(fake_kube, "-n", "shop", "get", "deploy", "nope", check=False)
    assert 'deployments.apps "nope" not found' in gone.stderr

    stale = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
    stale["metadata"]["resourceVersion"] = "1"
    stale_file = manifests.parent / "stale.json"
    stale_file.write_text(json.dumps(stale))
    replaced = kubectl(fake_kube, "replace", "-f", str(stale_file), check=False)
    assert "the object has been modified" in replaced.stderr


def test_custom_resource_definitions_join_discovery(fake_kube, tmp_path):
    crd = tmp_path / "crd.yaml"
    crd.write_text(
        """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
    )
    widget = tmp_path / "widget.yaml"
    widget.write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\n"
        "spec: {size: 3}\n"
    )
    kubectl(fake_kube, "apply", "--server-side", "-f", str(crd))
    kubectl(fake_kube, "apply", "--server-side", "-f", str(widget))

    out = json.loads(kubectl(fake_kube, "get", "wd", "w1", "-o", "json").stdout)
    assert out["spec"] == {"size": 3}
    kubectl(fake_kube, "delete", "crd", "widgets.example.com")
    assert fake_kube.objects(kind="Widget") == []


def test_impersonation_is_recorded_and_rbac_refusals_read_as_kubectl_expects(
    fake_kube, manifests
):
    """kubectl --as sends the same Impersonate-* headers Coalmine does; the fake's 403 is a
    Status kubectl renders as the real server's Forbidden."""
    user = "system:serviceaccount:shop:deployer"
    kubectl(fake_kube, "apply", "--server-side", "-f", str(manifests / "00-namespace.yaml"))
    fake_kube.restrict(user, namespaces={"shop"})
    as_user = ("--as", user, "--as-group", "system:serviceaccounts", "--as-group", "team")

    kubectl(fake_kube, *as_user, "apply", "--server-side", "-f", str(manifests / "10-app.yaml"))
    refused = kubectl(fake_kube, *as_user, "create", "namespace", "elsewhere", check=False)
    kubectl(fake_kube, *as_user, "-n", "shop", "delete", "configmap", "web-config")

    assert refused.returncode != 0
    assert refused.stderr.strip() == (
        f'Error from server (Forbidden): namespaces is forbidden: User "{user}" cannot create '
        'resource "namespaces" in API group "" at the cluster scope'
    )
    by_user = [(w.verb, w.target, w.allowed) for w in fake_kube.writes_by(user)]
    assert by_user == [
        ("patch", "deployments shop/web", True),
        ("patch", "services shop/web", True),
        ("patch", "configmaps shop/web-config", True),
        ("create", "namespaces *", False),
        ("delete", "configmaps shop/web-config", True),
    ]
    assert {w.groups for w in fake_kube.writes_by(user)} == {("system:serviceaccounts", "team")}
    assert [w.target for w in fake_kube.writes_by(None)] == ["namespaces shop"]
