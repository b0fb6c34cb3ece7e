"""`coalmine diff APP` as a real process: the PR preview's engine (a server-side dry run as the
repository's account, the field diff, prune candidates) against the fake API server, with the
repository's id read from the fake GitHub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from bot.cluster.model import Owner
from tests.harness.fixtures_forges import GITHUB_REPO, GITHUB_TOKEN
from tests.integration.test_cli_check import DEPLOYMENT, app, repo

ROOT = Path(__file__).resolve().parents[2]
SA_USER = "system:serviceaccount:shop:deployer"


def config_map(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: {value}}}\n"


def secret(value: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{pw: {value}}}\n"


def live_objects(names: dict[str, str]) -> list[dict]:
    return [yaml.safe_load(text) for text in names.values()]


def diff(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", "diff", "web", "--repo", str(root),
                           "--as", GITHUB_REPO, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False, env=clean)


def setup(tmp_path: Path, fake_github, fake_kube, kube_cluster, github_forge, github_repo,
          namespaces: str = "[shop]") -> dict[str, str]:
    server = tmp_path / "server.yaml"
    server.write_text(f"repos:\n  {GITHUB_REPO}:\n    namespaces: {namespaces}\n"
                      "    serviceAccount: shop/deployer\n")
    repo_id = github_forge.repository_facts(github_repo).id
    live = {"deployment": DEPLOYMENT.format(name="web").replace("example/web:1", "web:1"),
            "keep": config_map("keep", "same"), "cfg": config_map("cfg", "old"),
            "gone": config_map("gone", "x"), "creds": secret("hunter2")}
    kube_cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}]
                       + live_objects(live), app="web", revision="a" * 40,
                       default_namespace="shop",
                       owner=Owner("github", repo_id, GITHUB_REPO, "web"))
    fake_kube.restrict(SA_USER, {"shop"})
    return {"COALMINE_CONFIG": str(server), "GITHUB_TOKEN": GITHUB_TOKEN,
            "GITHUB_API_URL": fake_github.url, "KUBECONFIG": str(fake_kube.kubeconfig),
            "COALMINE_DATA_DIR": str(tmp_path / "data")}


def test_changes_fields_prune_and_hidden_secret_values(tmp_path, fake_github, fake_kube,
                                                       kube_cluster, github_forge, github_repo):
    env = setup(tmp_path, fake_github, fake_kube, kube_cluster, github_forge, github_repo)
    stored = len(fake_kube.stored)
    root = repo(tmp_path, app("web") + "    prune: true\n", manifests={
        "deploy/web/deployment.yaml": DEPLOYMENT.format(name="web").replace("example/web:1",
                                                                            "web:2"),
        "deploy/web/keep.yaml": config_map("keep", "same"),
        "deploy/web/cfg.yaml": config_map("cfg", "new"),
        "deploy/web/fresh.yaml": config_map("fresh", "1"),
        "deploy/web/creds.yaml": secret("s3cret-new")})
    done = diff(root, env)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "  create     ConfigMap shop/fresh" in out
    assert "  change     Deployment shop/web" in out
    assert ('      spec.template.spec.containers[name=web].image: "web:1" → "web:2"') in out
    assert '      data.k: "old" → "new"' in out
    assert "  change     Secret shop/creds" in out and "data.pw: changed (value hidden)" in out
    assert "hunter2" not in out and "s3cret-new" not in out
    assert "  prune      ConfigMap shop/gone" in out
    assert "  prune      Namespace shop" in out  # applied by the app before, not in Git now
    assert "  unchanged  ConfigMap shop/keep" in out
    assert out.rstrip().endswith("summary: 1 create, 3 change, 2 prune, 1 unchanged")
    assert len(fake_kube.stored) == stored  # a dry run stores nothing
    dry = [w for w in fake_kube.writes if w.dry_run]
    assert dry and {w.user for w in dry} == {SA_USER}  # as the repository's account

    found = json.loads(diff(root, env, "--output", "json").stdout)
    actions = {c["ref"]: c["action"] for c in found["changes"]}
    assert actions["ConfigMap shop/gone"] == "prune" and found["failed"] is False
    [hidden] = [f for c in found["changes"] for f in c["fields"] if f["hidden"]]
    assert hidden == {"path": "data.pw", "change": "changed", "hidden": True}


def test_nothing_to_change_exits_zero(tmp_path, fake_github, fake_kube, kube_cluster,
                                      github_forge, github_repo):
    env = setup(tmp_path, fake_github, fake_kube, kube_cluster, github_forge, github_repo)
    root = repo(tmp_path, app("web"), manifests={
        "deploy/web/deployment.yaml": DEPLOYMENT.format(name="web").replace("example/web:1",
                                                                            "web:1"),
        "deploy/web/keep.yaml": config_map("keep", "same")})
    done = diff(root, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "summary: 2 unchanged" in done.stdout


def test_a_merge_that_would_fail_exits_two(tmp_path, fake_github, fake_kube, kube_cluster,
                                           github_forge, github_repo):
    env = setup(tmp_path, fake_github, fake_kube, kube_cluster, github_forge, github_repo)
    root = repo(tmp_path, app("web", namespace="billing"), manifests={
        "deploy/web/cfg.yaml": config_map("cfg", "new")})
    done = diff(root, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "  policy: " in done.stdout and "billing" in done.stdout

    unserved = diff(root, env | {"COALMINE_CONFIG": str(tmp_path / "none.yaml")})
    assert unserved.returncode == 2
    served_elsewhere = subprocess.run(
        [sys.executable, "-m", "bot.cli", "diff", "web", "--repo", str(root), "--as",
         "acme/other"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env})
    assert served_elsewhere.returncode == 2 and "is not served" in served_elsewhere.stderr
