"""The webhook endpoints against a real Redis and RQ queue: every answer the issue lists."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue

from bot import services
from bot.config import GitHubSettings, GitLabSettings, Settings
from bot.policy import Policy
from bot.queue import QUEUE_NAME, RQJobQueue
from bot.wsgi import app_for
from tests.harness import payloads
from tests.harness.processes import free_port

GH_SECRET = "gh-webhook-secret-123"
GL_TOKEN = "gl-webhook-token-456"
SERVED = {"acme/gitops": Policy(namespaces=("shop",))}  # the repository the payloads name


def make_settings(redis_url: str | None, **kw) -> Settings:
    kw.setdefault("repos", SERVED)
    return Settings(
        redis_url=redis_url,
        github=GitHubSettings(webhook_secret=GH_SECRET, token="t"),
        gitlab=GitLabSettings(webhook_token=GL_TOKEN, token="t"),
        **kw,
    )


@pytest.fixture
def app_and_queue(redis_url):
    redis = Redis.from_url(redis_url)
    svc = services.Services(make_settings(redis_url), redis, RQJobQueue(redis))
    app = app_for(svc)
    return app.test_client(), Queue(QUEUE_NAME, connection=redis)


def post_github(client, payload, event="pull_request", delivery=None, secret=GH_SECRET, body=None):
    body = body if body is not None else payloads.dumps(payload)
    return client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, secret, event, delivery))


def post_gitlab(client, payload, event="Merge Request Hook", key=None, token=GL_TOKEN, body=None):
    body = body if body is not None else payloads.dumps(payload)
    return client.post("/webhooks/gitlab", data=body,
                       headers=payloads.gitlab_headers(token, event, key))


def test_github_merge_is_accepted_with_job_id(app_and_queue):
    client, queue = app_and_queue
    resp = post_github(client, payloads.github_pr_merged())
    assert resp.status_code == 202
    job_id = resp.get_json()["job_id"]
    assert queue.job_ids == [job_id]
    assert queue.fetch_job(job_id).func_name == "handlers.merged.run"


def test_github_redelivery_enqueues_nothing(app_and_queue):
    client, queue = app_and_queue
    first = post_github(client, payloads.github_pr_merged(), delivery="d-1")
    again = post_github(client, payloads.github_pr_merged(), delivery="d-1")
    assert first.status_code == 202
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert len(queue.job_ids) == 1


def test_github_ping_answers_200(app_and_queue):
    client, queue = app_and_queue
    resp = post_github(client, {"zen": "Design for failure.", "hook_id": 1}, event="ping")
    assert resp.status_code == 200 and queue.job_ids == []


@pytest.mark.parametrize("payload,event", [
    (payloads.github_pr_updated(action="edited"), "pull_request"),
    (payloads.github_pr_updated(base="develop"), "pull_request"),
    (payloads.github_pr_merged(merged=False), "pull_request"),
    (payloads.github_pr_merged(base="develop"), "pull_request"),
    ({"ref": "refs/heads/main"}, "push"),
    (payloads.github_comment("just a comment"), "issue_comment"),
    (payloads.github_comment("/abort", action="edited"), "issue_comment"),
    (payloads.github_comment("/abort", login="coalmine[bot]", user_type="Bot"), "issue_comment"),
])
def test_github_events_not_acted_on_are_ignored(app_and_queue, payload, event):
    client, queue = app_and_queue
    resp = post_github(client, payload, event=event)
    assert resp.status_code == 200 and resp.get_json()["status"] == "ignored"
    assert queue.job_ids == []


def test_open_pull_requests_into_the_deploy_branch_enqueue_the_preview(app_and_queue):
    client, queue = app_and_queue
    resp = post_github(client, payloads.github_pr_updated(action="synchronize"))
    assert resp.status_code == 202
    assert queue.fetch_job(resp.get_json()["job_id"]).func_name == "handlers.preview.run"
    resp = post_gitlab(client, payloads.gitlab_mr_updated(action="open"))
    assert resp.status_code == 202
    assert queue.fetch_job(resp.get_json()["job_id"]).func_name == "handlers.preview.run"


def test_github_comment_with_command_is_enqueued(app_and_queue):
    client, queue = app_and_queue
    resp = post_github(client, payloads.github_comment("/promote"), event="issue_comment")
    assert resp.status_code == 202
    assert queue.fetch_job(resp.get_json()["job_id"]).func_name == "handlers.commands.run"


def test_configured_deploy_branch_replaces_default(redis_url):
    from bot.config import RepoPolicy

    redis = Redis.from_url(redis_url)
    settings = make_settings(redis_url, repos={"acme/gitops": RepoPolicy(deploy_branch="prod")})
    client = app_for(services.Services(settings, redis, RQJobQueue(redis))).test_client()
    assert post_github(client, payloads.github_pr_merged(base="main")).status_code == 200
    assert post_github(client, payloads.github_pr_merged(base="prod")).status_code == 202


@pytest.mark.parametrize("headers_change", ["missing", "wrong", "sha1"])
def test_github_bad_signature_is_401(app_and_queue, headers_change):
    client, queue = app_and_queue
    body = payloads.dumps(payloads.github_pr_merged())
    headers = payloads.github_headers(body, GH_SECRET, "pull_request")
    if headers_change == "missing":
        del headers["X-Hub-Signature-256"]
    elif headers_change == "wrong":
        headers = payloads.github_headers(body, "not-the-secret", "pull_request")
    else:
        headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"].replace("sha256=", "sha1=")
    resp = client.post("/webhooks/github", data=body, headers=headers)
    assert resp.status_code == 401 and queue.job_ids == []


@pytest.mark.parametrize("body", [b"", b"not json", b"{\"a\": ", b"\xff\xfe", b"[1,2]"])
def test_github_bad_json_is_400(app_and_queue, body):
    client, queue = app_and_queue
    resp = post_github(client, None, body=body)
    assert resp.status_code == 400, resp.get_json()
    assert queue.job_ids == []


def test_github_missing_delivery_header_is_400(app_and_queue):
    client, _ = app_and_queue
    body = payloads.dumps(payloads.github_pr_merged())
    headers = payloads.github_headers(body, GH_SECRET, "pull_request")
    del headers["X-GitHub-Delivery"]
    assert client.post("/webhooks/github", data=body, headers=headers).status_code == 400


def test_body_over_25_mb_is_413(app_and_queue):
    client, queue = app_and_queue
    body = b"{" + b" " * (25 * 1024 * 1024) + b"}"
    resp = client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, GH_SECRET, "pull_request"))
    assert resp.status_code == 413 and queue.job_ids == []
    resp = client.post("/webhooks/gitlab", data=body,
                       headers=payloads.gitlab_headers(GL_TOKEN, "Merge Request Hook"))
    assert resp.status_code == 413


def test_gitlab_merge_accepted_and_deduped_by_idempotency_key(app_and_queue):
    client, queue = app_and_queue
    first = post_gitlab(client, payloads.gitlab_mr_merged(), key="k-1")
    again = post_gitlab(client, payloads.gitlab_mr_merged(), key="k-1")
    assert first.status_code == 202 and again.status_code == 200
    assert len(queue.job_ids) == 1


def test_gitlab_falls_back_to_event_uuid(app_and_queue):
    client, queue = app_and_queue
    body = payloads.dumps(payloads.gitlab_mr_merged())
    headers = payloads.gitlab_headers(GL_TOKEN, "Merge Request Hook")
    del headers["Idempotency-Key"]
    headers["X-Gitlab-Event-UUID"] = "uuid-1"
    assert client.post("/webhooks/gitlab", data=body, headers=headers).status_code == 202
    assert client.post("/webhooks/gitlab", data=body, headers=headers).status_code == 200
    assert len(queue.job_ids) == 1


@pytest.mark.parametrize("token", ["", "wrong", GL_TOKEN + "x"])
def test_gitlab_bad_token_is_401(app_and_queue, token):
    client, queue = app_and_queue
    resp = post_gitlab(client, payloads.gitlab_mr_merged(), token=token)
    assert resp.status_code == 401 and queue.job_ids == []


def test_gitlab_bad_json_and_ignored_events(app_and_queue):
    client, queue = app_and_queue
    assert post_gitlab(client, None, body=b"{{").status_code == 400
    resp = post_gitlab(client, payloads.gitlab_mr_merged(action="close"))
    assert resp.status_code == 200 and resp.get_json()["status"] == "ignored"
    resp = post_gitlab(client, payloads.gitlab_mr_updated(target="develop"))
    assert resp.status_code == 200 and "deploy branch" in resp.get_json()["reason"]
    resp = post_gitlab(client, {"object_kind": "push"}, event="Push Hook")
    assert resp.status_code == 200
    resp = post_gitlab(client, payloads.gitlab_note("/abort", action="update"), event="Note Hook")
    assert resp.status_code == 200
    assert queue.job_ids == []


def test_gitlab_note_command_is_enqueued(app_and_queue):
    client, queue = app_and_queue
    resp = post_gitlab(client, payloads.gitlab_note("/abort"), event="Note Hook")
    assert resp.status_code == 202 and len(queue.job_ids) == 1


def test_redis_unreachable_is_503_and_a_later_redelivery_goes_through(redis_url):
    dead = Redis(port=free_port(), socket_connect_timeout=0.5)
    svc = services.Services(make_settings("redis://dead"), dead, RQJobQueue(dead))
    client = app_for(svc).test_client()
    resp = post_github(client, payloads.github_pr_merged(), delivery="d-503")
    assert resp.status_code == 503
    assert post_gitlab(client, payloads.gitlab_mr_merged()).status_code == 503
    assert client.get("/healthz").status_code == 503
    # The forge redelivers the same delivery id once Redis is back: it must not count as a dupe.
    live = Redis.from_url(redis_url)
    client = app_for(services.Services(make_settings(redis_url), live, RQJobQueue(live))).test_client()
    assert post_github(client, payloads.github_pr_merged(), delivery="d-503").status_code == 202


def test_endpoint_without_secret_refuses(redis_url):
    redis = Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, github=GitHubSettings(), gitlab=GitLabSettings())
    client = app_for(services.Services(settings, redis, RQJobQueue(redis))).test_client()
    body = payloads.dumps(payloads.github_pr_merged())
    resp = client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, "", "pull_request"))
    assert resp.status_code == 403
    assert post_gitlab(client, payloads.gitlab_mr_merged(), token="").status_code == 403


def test_healthz_and_unknown_routes(app_and_queue):
    client, _ = app_and_queue
    assert client.get("/healthz").get_json()["status"] == "ok"
    assert client.get("/nope").status_code == 404
    assert client.get("/webhooks/github").status_code == 405
    resp = client.get("/deployments/github/acme/gitops/commits/abc/apps/web")
    assert resp.status_code == 404 and json.loads(resp.data)["error"]
