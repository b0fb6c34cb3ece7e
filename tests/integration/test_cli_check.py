"""`coalmine check` and `coalmine version`, run as a real process on small repositories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: {name}, image: "example/{name}:1"}}]}}
"""
TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  metrics:
    - name: success-rate
      successCondition: result[0] >= 0.95
      provider:
        prometheus: {query: "vector(1)"}
"""
CANARY = """    canary:
      workload: Deployment/{name}
      steps:
        - setWeight: 50
        - analysis:
            templates: [{{templateName: {template}}}]
"""
SERVER = """repos:
  acme/gitops:
    namespaces: [shop]
"""


def app(name: str, namespace: str = "shop", path: str | None = None,
        template: str | None = None) -> str:
    text = f"  - name: {name}\n    path: {path or 'deploy/' + name}\n    namespace: {namespace}\n"
    return text + (CANARY.format(name=name, template=template) if template else "")


def repo(tmp_path: Path, *apps: str, manifests: dict[str, str] | None = None) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".coalmine.yaml").write_text("apps:\n" + "".join(apps))
    for rel, text in (manifests or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def coalmine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False, env=clean)


def as_json(done: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    findings = json.loads(done.stdout)
    for finding in findings:
        assert set(finding) == {"file", "key", "reason", "severity"}
    return findings


def test_a_clean_repository_passes_with_canary_and_templates(tmp_path: Path) -> None:
    root = repo(tmp_path, app("web", template="success-rate"), app("api"),
                manifests={"deploy/web/web.yaml": DEPLOYMENT.format(name="web"),
                           "deploy/web/templates.yaml": TEMPLATE,
                           "deploy/api/api.yaml": DEPLOYMENT.format(name="api")})
    done = coalmine("check", "--repo", str(root))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == f"{root}: ok"
    json_done = coalmine("check", "--repo", str(root), "--output", "json")
    assert (json_done.returncode, as_json(json_done)) == (0, [])


def test_every_broken_app_is_reported_not_only_the_first(tmp_path: Path) -> None:
    root = repo(
        tmp_path,
        app("web", template="missing-template"),  # undefined analysis template
        app("Bad_Name"),  # the config parser refuses the name
        app("gone"),  # path not in the checkout
        app("web"),  # defined twice
        app("ok"),
        manifests={"deploy/web/web.yaml": DEPLOYMENT.format(name="web"),
                   "deploy/ok/ok.yaml": DEPLOYMENT.format(name="ok")})
    done = coalmine("check", "--repo", str(root), "--output", "json")
    assert done.returncode == 1, done.stderr
    found = {(f["file"], f["key"]): f["reason"] for f in as_json(done)}
    assert set(found) == {
        (".coalmine.yaml", "apps[0].canary.steps[1].analysis.templates[0].templateName"),
        (".coalmine.yaml", "apps[1].name"),
        (".coalmine.yaml", "apps[2].path"),
        (".coalmine.yaml", "apps[3].name"),
    }
    assert "AnalysisTemplate 'missing-template' not found" in found[
        (".coalmine.yaml", "apps[0].canary.steps[1].analysis.templates[0].templateName")]
    assert "does not exist" in found[(".coalmine.yaml", "apps[2].path")]
    assert "defined twice" in found[(".coalmine.yaml", "apps[3].name")]
    text = coalmine("check", "--repo", str(root))
    assert text.returncode == 1
    assert text.stdout.splitlines()[-1] == f"{root}: 4 error(s), 0 warning(s)"


def test_a_manifest_error_names_the_file_and_document(tmp_path: Path) -> None:
    root = repo(tmp_path, app("web"),
                manifests={"deploy/web/web.yaml": "apiVersion: v1\nkind: ConfigMap\n"})
    done = coalmine("check", "--repo", str(root), "--output", "json")
    assert done.returncode == 1
    assert as_json(done) == [{"file": "deploy/web/web.yaml", "key": "document 1",
                              "reason": "`metadata` is missing or not a mapping",
                              "severity": "error"}]


def test_namespaces_and_clusters_are_checked_against_the_server_policy(tmp_path: Path) -> None:
    root = repo(tmp_path, app("web"), app("api", namespace="billing"),
                manifests={"deploy/web/web.yaml": DEPLOYMENT.format(name="web"),
                           "deploy/api/api.yaml": DEPLOYMENT.format(name="api")
                           + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: "
                             "{name: x, namespace: kube-system}\n"})
    server = tmp_path / "server.yaml"
    server.write_text(SERVER)
    done = coalmine("check", "--repo", str(root), "--server-config", str(server),
                    "--as", "acme/gitops", "--output", "json")
    assert done.returncode == 1, done.stderr
    assert [(f["file"], f["key"]) for f in as_json(done)] == [
        (".coalmine.yaml", "apps[1].namespace"), ("deploy/api", "ConfigMap kube-system/x")]
    assert "'billing' is not in namespaces (shop)" in as_json(done)[0]["reason"]
    unserved = coalmine("check", "--repo", str(root), "--server-config", str(server),
                        "--as", "acme/other", "--output", "json")
    assert unserved.returncode == 1
    assert as_json(unserved)[0]["key"] == "repos"
    assert "not served" in as_json(unserved)[0]["reason"]


def test_an_unknown_cluster_and_a_broken_server_config_are_errors(tmp_path: Path) -> None:
    root = repo(tmp_path, app("web") + "    cluster: mars\n",
                manifests={"deploy/web/web.yaml": DEPLOYMENT.format(name="web")})
    server = tmp_path / "server.yaml"
    server.write_text(SERVER)
    done = coalmine("check", "--repo", str(root), "--output", "json",
                    env={"COALMINE_CONFIG": str(server)})  # COALMINE_CONFIG, like serve
    assert done.returncode == 1
    findings = as_json(done)
    assert [(f["key"], f["severity"]) for f in findings] == [
        ("repos", "warning"), ("apps[0].cluster", "error")]  # no --as: policy not checked
    assert "unknown cluster 'mars'" in findings[1]["reason"]
    server.write_text("repos:\n  acme/gitops: {namespaces: [kube-system]}\n")
    broken = coalmine("check", "--repo", str(root), "--server-config", str(server),
                      "--output", "json")
    assert broken.returncode == 1
    first = as_json(broken)[0]
    assert (first["file"], first["key"]) == (str(server), "repos.acme/gitops.namespaces[0]")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert coalmine("check", "--repo", str(tmp_path / "nowhere")).returncode == 2
    assert coalmine("check", "--repo", str(tmp_path), "--as", "noslash",
                    "--server-config", "x").returncode == 2
    assert coalmine("check", "--repo", str(tmp_path), "--as", "acme/gitops").returncode == 2
    assert coalmine("check", "--output", "yaml").returncode == 2
    assert coalmine().returncode == 2


def test_check_config_stays_as_the_short_alias(tmp_path: Path) -> None:
    root = repo(tmp_path, app("web"))
    done = coalmine("check-config", str(root / ".coalmine.yaml"))
    assert done.returncode == 0, done.stderr
    assert "web: deploy/web → namespace shop" in done.stdout
    (root / ".coalmine.yaml").write_text("apps: []\n")
    assert coalmine("check-config", str(root / ".coalmine.yaml")).returncode == 1


def test_version_names_package_commit_and_python(tmp_path: Path) -> None:
    done = coalmine("version")
    assert done.returncode == 0, done.stderr
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    python = ".".join(str(part) for part in sys.version_info[:3])
    assert done.stdout.strip() == f"coalmine 0.1.0 (git {head}), Python {python}"
    assert coalmine("--version").stdout == done.stdout


def test_a_kind_only_the_cluster_knows_is_a_warning_not_an_error(tmp_path: Path) -> None:
    certificate = ("apiVersion: cert-manager.io/v1\nkind: Certificate\n"
                   "metadata: {name: web-tls}\nspec: {secretName: web-tls}\n")
    root = repo(tmp_path, app("web"), manifests={"deploy/web/cert.yaml": certificate})
    server = tmp_path / "server.yaml"
    server.write_text(SERVER)
    done = coalmine("check", "--repo", str(root), "--server-config", str(server),
                    "--as", "github:acme/gitops", "--output", "json")
    assert done.returncode == 0, done.stdout
    [warning] = as_json(done)
    assert (warning["key"], warning["severity"]) == ("Certificate web-tls", "warning")
    assert "clusterScopedKinds" in warning["reason"]
