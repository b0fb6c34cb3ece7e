"""Drift detection end to end, on GitHub and GitLab: an edit made in the cluster with another
field manager (as `kubectl patch` makes it) is found by the worker's periodic check and reported
with its field-level diff (a `coalmine/drift` status on the deployed commit, the sticky drift
comment on the deploy's PR, the gauge); a field `ignoreDifferences` lists is not drift; with
`selfHeal: true` the commit is applied again."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e import world as w
from tests.e2e.world import final_status, latest_statuses
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e

DRIFT_MARKER = "<!-- coalmine:drift -->"
IGNORING = w.PLAIN_CONFIG + """    ignoreDifferences:
      - group: apps
        kind: Deployment
        jsonPointers: [/spec/replicas]
"""
HEALING = IGNORING + "    selfHeal: true\n"


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    world = request.getfixturevalue(f"{request.param}_world")
    world.bot.env["COALMINE_DRIFT_INTERVAL"] = "1"  # a drift check every second
    return world


def kubectl_patch(fake_kube, kind: str, name: str, patch: dict) -> None:
    """A person's edit: `kubectl patch` (field manager kubectl-patch; a strategic merge, as
    kubectl edit makes it), not Coalmine's apply."""
    subprocess.run(["kubectl", "--kubeconfig", str(fake_kube.kubeconfig), "-n", "shop", "patch",
                    kind, name, "--type", "strategic", "-p", json.dumps(patch)],
                   check=True, capture_output=True, timeout=30)


def drift_comment(world: w.World, number: int, needle: str) -> str:
    def found():
        ours = [c["body"] for c in w.comments(world, number) if DRIFT_MARKER in c["body"]]
        return ours[0] if ours and needle in ours[0] else None

    try:
        return wait_until(found, 60, 0.2)
    except TimeoutError:
        bodies = "\n---\n".join(c["body"] for c in w.comments(world, number))
        raise AssertionError(f"no drift comment with {needle!r}:\n{bodies}\n"
                             + world.bot.worker_log()[-4000:]) from None


def deploy(world: w.World, config: str) -> tuple[int, str]:
    world.bot.start_worker()
    number, sha, resp = w.merge(world, {".coalmine.yaml": config}, "Watch for drift")
    assert resp.status_code == 202
    assert final_status(world, sha)["state"] == "success"
    return number, sha


def test_a_manual_edit_is_reported_with_its_diff_and_an_ignored_field_is_not(world, fake_kube):
    number, sha = deploy(world, IGNORING)
    wait_until(lambda: latest_statuses(world, sha).get("coalmine/drift"), 60, 0.2)
    assert latest_statuses(world, sha)["coalmine/drift"]["state"] == "success"
    assert not any(DRIFT_MARKER in c["body"] for c in w.comments(world, number))

    # replicas is ignored; the image is Coalmine's field, changed by someone else
    kubectl_patch(fake_kube, "deployment", "web", {"spec": {"replicas": 5}})
    kubectl_patch(fake_kube, "deployment", "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "registry.example/web:hotfix"}]}}}})

    body = drift_comment(world, number, "containers[name=web].image")
    assert '- spec.template.spec.containers[name=web].image: "registry.example/web:hotfix"' \
        in body
    assert '+ spec.template.spec.containers[name=web].image: "registry.example/web:1.0"' in body
    assert "replicas" not in body  # listed in ignoreDifferences
    status = wait_until(lambda: (s := latest_statuses(world, sha).get("coalmine/drift")) and
                        s["state"] == "failure" and s, 60, 0.2)
    assert "web: 1 object(s)" in status["description"]
    metrics = world.bot.client.get("/metrics").get_data(as_text=True)
    assert 'coalmine_drift_objects{app="web",repo="acme/gitops"} 1.0' in metrics
    # Nothing was changed back: selfHeal is off.
    assert w.image_of(fake_kube, "web") == "registry.example/web:hotfix"

    # Put right in the cluster: the same comment says so, edited in place.
    kubectl_patch(fake_kube, "deployment", "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "registry.example/web:1.0"}]}}}})
    drift_comment(world, number, "✅ no drift")
    assert sum(DRIFT_MARKER in c["body"] for c in w.comments(world, number)) == 1


def test_self_heal_applies_the_commit_again(world, fake_kube):
    number, sha = deploy(world, HEALING)
    kubectl_patch(fake_kube, "configmap", "web-config", {"data": {"mode": "red"}})

    body = drift_comment(world, number, "selfHeal")
    assert '- data.mode: "red"' in body and '+ data.mode: "blue"' in body
    wait_until(lambda: fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
               ["data"]["mode"] == "blue", 60, 0.2)
    assert "re-applied" in body
    healed = wait_until(lambda: (s := latest_statuses(world, sha).get("coalmine/drift")) and
                        "healed" in s["description"] and s, 60, 0.2)
    assert healed["state"] == "success"
