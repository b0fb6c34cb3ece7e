"""`coalmine doctor` as a real process against real Redis and Prometheus and the HTTP fakes of
GitHub, GitLab and Kubernetes (whose SelfSubjectAccessReview answers follow its RBAC)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.github import FakeGitHub
from tests.harness.gitlab import FakeGitLab

ROOT = Path(__file__).resolve().parents[2]
GH_TOKEN = "ghp_doctorToken0123456789abcdef"
GL_TOKEN = "glpat-doctorToken0123"
SA_USER = "system:serviceaccount:shop:deployer"


def server_config(tmp_path: Path, namespaces: str = "[shop]") -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(f"""repos:
  github:acme/gitops:
    namespaces: {namespaces}
    serviceAccount: shop/deployer
  gitlab:acme/infra:
    namespaces: ["team-*"]
""")
    return path


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "bot.cli", "doctor", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
                          env=clean)


@pytest.fixture
def setup(tmp_path, redis_url, fake_kube, prometheus, fake_github: FakeGitHub,
          fake_gitlab: FakeGitLab) -> dict[str, str]:
    fake_github.add_token(GH_TOKEN, "coalmine-bot", scopes="repo, read:org")
    fake_gitlab.add_token(GL_TOKEN, "coalmine-bot", scopes=("api", "read_user"))
    fake_kube.restrict(SA_USER, {"shop"})
    return {
        "REDIS_URL": redis_url,
        "COALMINE_DATA_DIR": str(tmp_path / "data"),
        "COALMINE_CONFIG": str(server_config(tmp_path)),
        "GITHUB_TOKEN": GH_TOKEN,
        "GITHUB_API_URL": fake_github.url,
        "GITLAB_TOKEN": GL_TOKEN,
        "GITLAB_URL": fake_gitlab.url,
        "KUBECONFIG": str(fake_kube.kubeconfig),
        "PROMETHEUS_URL": prometheus.url,
    }


def results(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in json.loads(done.stdout)}


def test_a_sound_setup_passes_every_check(setup, fake_kube):
    done = doctor(setup)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith(("ok", "skip")) for line in lines), done.stdout
    text = done.stdout
    assert "redis: answers" in text
    assert "github: token of coalmine-bot has scope repo" in text
    assert "gitlab: coalmine has scopes api, read_user" in text
    assert "cluster default: reachable (Kubernetes v1.32.4-fake)" in text
    assert ("cluster default rbac github:acme/gitops: ServiceAccount shop/deployer may create, "
            "patch, delete deployments and get pods in shop") in text
    assert "cluster default rbac gitlab:acme/infra: its namespaces are patterns only" in text
    assert "prometheus: " in text and "answers a query" in text
    # The reviews were asked as the ServiceAccount, through impersonation.
    reviews = [r for r in fake_kube.requests if r.path.endswith("selfsubjectaccessreviews")]
    assert {r.user for r in reviews} == {None, SA_USER}


def test_each_broken_part_fails_with_its_reason(setup, tmp_path, fake_github, fake_gitlab):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    dead_port = free.getsockname()[1]
    free.close()  # nothing listens there now
    fake_gitlab.add_token("glpat-readonly", "coalmine-bot", scopes=("read_api",))
    env = {**setup,
           "REDIS_URL": f"redis://127.0.0.1:{dead_port}/0",
           "GITHUB_TOKEN": "ghp_notATokenGitHubKnows",
           "GITLAB_TOKEN": "glpat-readonly",
           "COALMINE_CONFIG": str(server_config(tmp_path, "[shop, billing]")),
           "PROMETHEUS_URL": f"http://127.0.0.1:{dead_port}"}
    done = doctor(env, "--output", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    found = results(done)
    assert found["redis"]["result"] == "fail"
    assert found["github"]["result"] == "fail" and "401" in found["github"]["detail"]
    assert "ghp_notATokenGitHubKnows" not in done.stdout + done.stderr
    assert found["gitlab"] == {"name": "gitlab", "result": "fail",
                               "detail": "coalmine lacks scope api (it has: read_api)"}
    rbac = found["cluster default rbac github:acme/gitops"]
    assert rbac["result"] == "fail"
    assert rbac["detail"] == ("ServiceAccount shop/deployer is denied: create deployments in "
                              "billing; patch deployments in billing; delete deployments in "
                              "billing")
    assert found["prometheus"]["result"] == "fail"
    assert found["data dir"]["result"] == "ok"


def test_an_app_lacking_a_permission_and_a_fine_grained_token(setup, fake_github,
                                                              github_app_key):
    private, public = github_app_key
    fake_github.add_app(7, public, slug="coalmine",
                        permissions={"contents": "write", "issues": "write",
                                     "statuses": "read", "checks": "write",
                                     "metadata": "read"})
    env = {k: v for k, v in setup.items() if k != "GITHUB_TOKEN"}
    done = doctor({**env, "GITHUB_APP_ID": "7", "GITHUB_PRIVATE_KEY": private},
                  "--output", "json")
    assert done.returncode == 1
    assert results(done)["github"]["detail"] == (
        "App coalmine[bot] lacks permissions: pull_requests: write, statuses: write")

    fake_github.add_token("github_pat_fineGrained01", "coalmine-bot")  # no X-OAuth-Scopes
    done = doctor({**setup, "GITHUB_TOKEN": "github_pat_fineGrained01"}, "--output", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "does not list a fine-grained token's permissions" in results(done)["github"]["detail"]


def test_without_redis_or_forges_those_checks_are_skipped(tmp_path, fake_kube):
    done = doctor({"COALMINE_DATA_DIR": str(tmp_path / "data"),
                   "KUBECONFIG": str(fake_kube.kubeconfig)}, "--output", "json")
    found = results(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [found[n]["result"] for n in ("redis", "github", "gitlab", "prometheus")] == \
        ["skip"] * 4
    assert "embedded" not in done.stderr  # no bot start-up warning about the embedded store


def test_a_webhook_secret_without_an_api_credential_fails(tmp_path, fake_kube):
    unwritable = tmp_path / "file"
    unwritable.write_text("not a directory")
    done = doctor({"COALMINE_DATA_DIR": str(unwritable), "GITHUB_WEBHOOK_SECRET": "s",
                   "KUBECONFIG": str(fake_kube.kubeconfig)}, "--output", "json")
    found = results(done)
    assert done.returncode == 1
    assert found["github"]["result"] == "fail" and "no API credential" in found["github"]["detail"]
    assert found["data dir"]["result"] == "fail"
