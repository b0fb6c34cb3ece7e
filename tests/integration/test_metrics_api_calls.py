"""Forge and Kubernetes API calls are counted at the adapters' transports, each attempt once,
against the HTTP fakes; errors are what failed (a 404 is an answer, not an error)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from bot.forge.base import ForgeError
from bot.forge.gitlab import GitLabForge
from tests.harness.fixtures_forges import GITLAB_TOKEN

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"


def _counts(*names_and_labels: tuple[str, dict[str, str]]) -> list[float]:
    return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in names_and_labels]


def _forge(forge: str) -> list[float]:
    return _counts(("coalmine_forge_api_calls_total", {"forge": forge}),
                   ("coalmine_forge_api_errors_total", {"forge": forge}))


def _kube() -> list[float]:
    return _counts(("coalmine_kubernetes_api_calls_total", {}),
                   ("coalmine_kubernetes_api_errors_total", {}))


def test_github_calls_and_a_retried_server_error(github_forge, github_repo, fake_github):
    calls, errors = _forge("github")
    fake_github.fail_next(1, 502)

    github_forge.set_status(github_repo, SHA, "coalmine/web", "pending", "rolling out")

    assert _forge("github") == [calls + 2, errors + 1]


def test_gitlab_calls_and_a_refused_token(gitlab_forge, gitlab_repo, fake_gitlab):
    calls, errors = _forge("gitlab")
    gitlab_forge.set_status(gitlab_repo, SHA, "coalmine/web", "pending", "rolling out")
    assert _forge("gitlab") == [calls + 1, errors]

    wrong = GitLabForge(fake_gitlab.api_url, GITLAB_TOKEN + "-wrong")
    with pytest.raises(ForgeError):
        wrong.set_status(gitlab_repo, SHA, "coalmine/web", "pending", "rolling out")
    assert _forge("gitlab")[1] == errors + 1


def test_kubernetes_calls_errors_and_a_404_that_is_an_answer(kube_cluster, fake_kube):
    kube_cluster.get("v1", "ConfigMap", "default", "warm")  # discovery's calls, once
    calls, errors = _kube()
    assert kube_cluster.get("v1", "ConfigMap", "default", "absent") is None
    assert _kube() == [calls + 1, errors]

    fake_kube.fail_next(1, status=500, method="GET", path_contains="/configmaps/absent")
    assert kube_cluster.get("v1", "ConfigMap", "default", "absent") is None  # retried

    assert _kube() == [calls + 3, errors + 1]
