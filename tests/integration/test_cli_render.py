"""`coalmine render APP`, run as a real process on small checkouts (plain YAML, a canary in
`.coalmine.yaml`, an Argo Rollout, a kustomization through the real kubectl)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.test_cli_check import DEPLOYMENT, TEMPLATE, app, repo

ROOT = Path(__file__).resolve().parents[2]
SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""
ROLLOUT = """apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: shop
spec:
  replicas: 4
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec: {containers: [{name: shop, image: "example/shop:2"}]}
  strategy:
    canary:
      steps: [{setWeight: 25}, {pause: {}}]
"""


def render(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", "render", *args, "--repo", str(root)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(ROOT)})


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def test_a_plain_app_renders_every_object_with_its_file(tmp_path):
    root = repo(tmp_path, app("api"), manifests={
        "deploy/api/a-deployment.yaml": DEPLOYMENT.format(name="api"),
        "deploy/api/b-config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                                    "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"})
    done = render(root, "api")
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "api"), ("ConfigMap", "c"), ("Secret", "s")]
    assert "# source: deploy/api/a-deployment.yaml" in done.stdout
    assert "# source: deploy/api/b-config.yaml" in done.stdout
    assert "held back" not in done.stdout


def test_a_canary_workload_is_the_managed_deployment_marked_held_back(tmp_path):
    root = repo(tmp_path, app("web", template="success-rate"), manifests={
        "deploy/web/web.yaml": DEPLOYMENT.format(name="web"),
        "deploy/web/service.yaml": SERVICE,
        "deploy/web/templates.yaml": TEMPLATE})
    done = render(root, "web")
    assert done.returncode == 0, done.stderr
    docs = documents(done.stdout)  # the AnalysisTemplate is shown commented out
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Service", "web"), ("Deployment", "web")]
    workload = docs[1]
    assert workload["spec"]["selector"]["matchLabels"]["coalmine.dev/track"] == "stable"
    assert "coalmine.dev/template-hash" in workload["metadata"]["annotations"]
    assert workload["metadata"]["namespace"] == "shop"
    assert ("# workload: held back for a canary: a merge that changes this pod template rolls "
            "it out in 2 step(s) (canary)") in done.stdout
    assert "# read by Coalmine, never applied\n# apiVersion: argoproj.io/v1alpha1\n" \
           "# kind: AnalysisTemplate" in done.stdout

    listed = json.loads(render(root, "web", "--output", "json").stdout)
    assert [(item["role"], item["object"]["kind"]) for item in listed] == [
        ("applied", "Service"), ("workload", "Deployment"), ("read", "AnalysisTemplate")]
    assert listed[2]["source"] == "deploy/web/templates.yaml"


def test_an_argo_rollout_becomes_the_deployment_coalmine_manages(tmp_path):
    root = repo(tmp_path, app("shop"), manifests={"deploy/shop/rollout.yaml": ROLLOUT})
    done = render(root, "shop", "--output", "json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [(i["role"], i["object"]["kind"], i["source"]) for i in listed] == [
        ("workload", "Deployment", "deploy/shop/rollout.yaml"),
        ("read", "Rollout", "deploy/shop/rollout.yaml")]
    assert listed[0]["object"]["spec"]["replicas"] == 4


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_a_kustomization_is_rendered_by_kubectl(tmp_path):
    root = repo(tmp_path, app("api"), manifests={
        "deploy/api/kustomization.yaml": "resources: [deployment.yaml]\nnamePrefix: k-\n",
        "deploy/api/deployment.yaml": DEPLOYMENT.format(name="api")})
    done = render(root, "api")
    assert done.returncode == 0, done.stderr
    assert [d["metadata"]["name"] for d in documents(done.stdout)] == ["k-api"]
    assert "# source: kustomize output of deploy/api" in done.stdout


def test_errors_name_what_is_wrong(tmp_path):
    root = repo(tmp_path, app("web", template="missing"), app("api"), manifests={
        "deploy/web/web.yaml": DEPLOYMENT.format(name="web"),
        "deploy/api/api.yaml": "kind: ConfigMap\n"})
    unknown = render(root, "nope")
    assert unknown.returncode == 1
    assert "no app named 'nope' (apps: web, api)" in unknown.stderr
    template = render(root, "web")
    assert template.returncode == 1
    assert "AnalysisTemplate 'missing' not found" in template.stderr
    manifest = render(root, "api")
    assert manifest.returncode == 1 and "deploy/api/api.yaml" in manifest.stderr
    missing = render(tmp_path / "nowhere", "web")
    assert missing.returncode == 1 and ".coalmine.yaml" in missing.stderr
