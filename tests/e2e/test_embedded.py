"""Without REDIS_URL one process serves webhooks and runs the jobs (embedded queue and store)."""

from __future__ import annotations

import pytest

from bot import services
from bot.config import load_settings
from bot.queue import EmbeddedJobQueue
from bot.wsgi import app_for
from tests.e2e import world as w
from tests.harness import payloads
from tests.harness.github import FakeGitHub
from tests.harness.gitrepos import GitHttpServer
from tests.harness.processes import wait_until

pytestmark = pytest.mark.e2e


def test_embedded_mode_deploys_a_merge_in_one_process(tmp_path, fake_kube, gitops_remote):
    gh = FakeGitHub()
    gh.start()
    gh.add_repo(w.REPO)
    gh.add_token(w.GH_TOKEN, "coalmine-bot")
    with GitHttpServer(tmp_path / "repos", username="x-access-token", password=w.GH_TOKEN) as http:
        settings = load_settings({
            "GITHUB_WEBHOOK_SECRET": w.GH_SECRET, "GITHUB_TOKEN": w.GH_TOKEN,
            "GITHUB_API_URL": gh.url, "KUBECONFIG": str(fake_kube.kubeconfig),
            "COALMINE_DATA_DIR": str(tmp_path / "data"), "COALMINE_REPOS": f"{w.REPO}=shop",
        })
        svc = services.install(services.build(settings))
        try:
            assert svc.embedded and isinstance(svc.queue, EmbeddedJobQueue)
            client = app_for(svc).test_client()
            assert client.get("/healthz").get_json() == {"status": "ok", "queue": "embedded"}
            sha = gitops_remote.merge_pr("feature", {"deploy/web/config.yaml": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n")}, "Embedded")
            number = gh.add_pull(w.REPO, head="feature", title="Embedded", state="merged",
                                merge_sha=sha)
            body = payloads.dumps(payloads.github_pr_merged(
                full_name=w.REPO, clone_url=http.url(gitops_remote, credentials=False),
                number=number, merge_sha=sha, head="feature", title="Embedded"))
            resp = client.post("/webhooks/github", data=body, headers=payloads.github_headers(
                body, w.GH_SECRET, "pull_request"))
            assert resp.status_code == 202

            def done():
                status = gh.latest_statuses(w.REPO, sha).get("coalmine/web")
                return status if status and status["state"] != "pending" else None

            assert wait_until(done, 60, 0.1)["state"] == "success"
            assert fake_kube.get_object("v1", "ConfigMap", "shop", "web-config") is not None
        finally:
            svc.queue.stop()
            gh.stop()
