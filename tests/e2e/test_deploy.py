"""Merged PR → manifests applied → status and sticky comment, on GitHub and on GitLab."""

from __future__ import annotations

import pytest

from tests.e2e import world as w
from tests.e2e.world import final_status

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    return request.getfixturevalue(f"{request.param}_world")


def test_merge_applies_manifests_and_reports(world, fake_kube):
    world.bot.start_worker()
    number, sha, resp = w.merge(world, {"deploy/web/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: green\n"
    )}, "Switch web to green")
    assert resp.status_code == 202, resp.get_json()

    status = final_status(world, sha)
    assert status["state"] == "success", status
    assert len(status["description"]) <= 140
    assert status["target_url"].startswith("https://coalmine.test/deployments/")
    states = w.posted_states(world, sha)
    assert states[0] == "pending" and states[-1] == "success", states

    web = fake_kube.get_object("apps/v1", "Deployment", "shop", "web")
    assert web["metadata"]["labels"]["coalmine.dev/app"] == "web"
    assert web["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "coalmine"
    assert web["metadata"]["labels"]["coalmine.dev/revision"] == sha
    cm = fake_kube.get_object("v1", "ConfigMap", "shop", "web-config")
    assert cm["data"] == {"mode": "green"}
    assert fake_kube.get_object("v1", "Namespace", None, "shop") is not None

    body = w.wait_comment(world, number, "Health: ✅")["body"]
    assert "created: `Deployment shop/web`" in body
    assert len(w.comments(world, number)) == 1


def test_a_merge_delivered_again_changes_nothing_and_second_pr_prunes(world, fake_kube):
    world.bot.start_worker()
    number, sha, _ = w.merge(world, {"deploy/web/extra.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n")}, "Add extra")
    assert final_status(world, sha)["state"] == "success"
    w.wait_comment(world, number, "created: `ConfigMap shop/extra`")
    # Stored writes only: the drift sweep's server-side dry runs may come at any time.
    def stored() -> int:
        return len([write for write in fake_kube.writes if not write.dry_run])

    writes = stored()

    # The same merge delivered again under a new delivery id runs the job, which finds the
    # commit already deployed: nothing is written, the one comment stays as it was.
    resp = w.redeliver(world, number, sha, new_id=True)
    assert resp.status_code == 202
    w.wait_log(world, "is already deployed")
    assert stored() == writes
    assert len(w.comments(world, number)) == 1
    assert "created: `ConfigMap shop/extra`" in w.comments(world, number)[0]["body"]

    # A second PR removes the file: prune deletes the ConfigMap and reports it.
    number2, sha2, _ = w.merge(world, {"deploy/web/extra.yaml": None}, "Drop extra")
    assert final_status(world, sha2)["state"] == "success"
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "extra") is None
    w.wait_comment(world, number2, "pruned: `ConfigMap shop/extra`")


def test_redelivered_delivery_id_creates_no_second_job(world):
    number, sha, resp = w.merge(world, {"deploy/web/x.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")}, "x", delivery="same-id")
    assert resp.status_code == 202
    again = w.redeliver(world, number, sha, delivery="same-id")
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    from rq import Queue

    assert len(Queue("coalmine", connection=world.bot.redis).job_ids) == 1


def test_invalid_config_reports_file_key_reason_and_applies_nothing(world, fake_kube):
    world.bot.start_worker()
    number, sha, _ = w.merge(world, {
        ".coalmine.yaml": "apps:\n  - name: web\n    path: deploy/web\n    namespace: Shop!\n",
        "deploy/web/config.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  m: red\n"),
    }, "Break config")
    status = final_status(world, sha, "coalmine/config")
    assert status["state"] in ("failure", "failed")
    body = w.wait_comment(world, number, "Invalid configuration")["body"]
    assert ".coalmine.yaml: apps[0].namespace:" in body.replace("\\", "")
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "web-config") is None
    assert fake_kube.get_object("apps/v1", "Deployment", "shop", "web") is None


def test_unhealthy_workload_fails_with_reason(world, fake_kube):
    fake_kube.block_image("registry.example/web:broken")
    world.bot.start_worker()
    number, sha, _ = w.merge(world, {"deploy/web/deployment.yaml": w.deployment(
        "web", "registry.example/web:broken", deadline="1")}, "Ship broken")
    status = final_status(world, sha)
    assert status["state"] in ("failure", "failed")
    assert "ProgressDeadlineExceeded" in status["description"] or "unhealthy" in status["description"]
    w.wait_comment(world, number, "Health: ❌")


def test_policy_violation_applies_nothing_and_names_object_and_rule(world, fake_kube):
    world.bot.start_worker()
    number, sha, _ = w.merge(world, {
        "deploy/web/rbac.yaml": (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n"
            "  name: admin-all\nrules: []\n"),
        "deploy/web/config.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  m: x\n"),
    }, "Sneak in a ClusterRole")
    status = final_status(world, sha)
    assert status["state"] == "failure" and "ClusterRole admin-all" in status["description"]
    body = w.wait_comment(world, number, "Refused by the repository")["body"].replace("\\", "")
    assert "ClusterRole admin-all" in body and "clusterScopedKinds" in body
    assert fake_kube.get_object("v1", "ConfigMap", "shop", "web-config") is None
    assert fake_kube.get_object("rbac.authorization.k8s.io/v1", "ClusterRole", None,
                                "admin-all") is None
