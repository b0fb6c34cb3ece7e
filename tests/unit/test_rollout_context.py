"""The typed rollout context reads records written when it was a plain dict."""

from __future__ import annotations

import json

from bot.refs import RepoRef
from bot.rollout.context import RolloutContext

REPO = RepoRef("github", "acme/gitops", "https://github.example/acme/gitops.git", repo_id=7)
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}


def test_round_trips_through_json_without_sharing_the_deployments():
    context = RolloutContext(repo=REPO, number=4, app="web", namespace="shop",
                             deployment=DEPLOYMENT, stable=DEPLOYMENT, replicas=3,
                             template_hash="h", revert={"state": "pending"}, stable_touched=True)
    again = RolloutContext.from_dict(json.loads(json.dumps(context.to_dict())))
    assert again == context


def test_reads_the_untyped_context_of_earlier_versions():
    legacy = {
        "repo": {"forge": "github", "full_name": "acme/gitops",
                 "clone_url": "https://github.example/acme/gitops.git", "repo_id": 7},
        "number": 4, "title": "t", "url": "u", "base_branch": "main", "app": "web",
        "cluster": None, "namespace": "shop", "deployment": DEPLOYMENT, "stable": DEPLOYMENT,
        "replicas": 3, "template_hash": "h", "impersonate": "system:serviceaccount:shop:deployer",
        "adopt": False, "stable_revision": "a" * 40, "restore_pending": "refused",
        "some_key_a_later_version_dropped": 1,
    }
    context = RolloutContext.from_dict(legacy)
    assert context.repo == REPO and context.restore_pending == "refused"
    assert context.impersonate == "system:serviceaccount:shop:deployer"
    assert not context.stable_touched and context.revert is None


def test_unset_facts_are_left_out_as_before():
    data = RolloutContext(repo=REPO, number=4, app="web", namespace="shop", deployment={},
                          stable={}, replicas=1, template_hash="h").to_dict()
    assert not {"restore_pending", "revert", "superseded_by_pr", "stable_touched"} & set(data)
