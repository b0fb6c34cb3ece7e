"""Every webhook answer is counted with its outcome, including the ones error handlers give
(413, 503), against a real Redis and RQ queue; the event label is never what an unverified
sender wrote."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from redis import Redis

from bot import services
from bot.queue import RQJobQueue
from bot.wsgi import app_for
from tests.harness import payloads
from tests.harness.processes import free_port
from tests.integration.test_webhooks import (
    GH_SECRET,
    GL_TOKEN,
    make_settings,
    post_github,
    post_gitlab,
)


def _count(forge: str, event: str, outcome: str) -> float:
    labels = {"forge": forge, "event": event, "outcome": outcome}
    return REGISTRY.get_sample_value("coalmine_webhooks_total", labels) or 0.0


def _client(redis_url: str, **kw):
    redis = Redis.from_url(redis_url)
    return app_for(services.Services(make_settings(redis_url, **kw), redis,
                                     RQJobQueue(redis))).test_client()


@pytest.mark.parametrize(("send", "label"), [
    (lambda c: post_github(c, payloads.github_pr_merged()),
     ("github", "pull_request", "accepted")),
    (lambda c: post_github(c, payloads.github_pr_merged(), delivery="same-one") and
     post_github(c, payloads.github_pr_merged(), delivery="same-one"),
     ("github", "pull_request", "duplicate")),
    (lambda c: post_github(c, {"zen": "hi"}, event="ping"), ("github", "ping", "ignored")),
    (lambda c: post_github(c, {}, event="made_up_event"), ("github", "other", "ignored")),
    (lambda c: post_github(c, payloads.github_pr_merged(), event="evil" * 50, secret="wrong"),
     ("github", "unknown", "refused")),
    (lambda c: post_github(c, None, body=b"not json"), ("github", "unknown", "refused")),
    (lambda c: post_gitlab(c, payloads.gitlab_mr_merged()),
     ("gitlab", "merge_request", "accepted")),
    (lambda c: post_gitlab(c, payloads.gitlab_mr_merged(), token="wrong"),
     ("gitlab", "unknown", "refused")),
])
def test_each_answer_is_counted_once(redis_url, send, label):
    client = _client(redis_url)
    before = _count(*label)
    send(client)
    assert _count(*label) == before + 1


def test_an_oversized_body_is_counted_as_refused(redis_url):
    client = _client(redis_url, max_body_bytes=1024)
    before = _count("gitlab", "merge_request", "refused")
    body = b"x" * 4096
    answer = client.post("/webhooks/gitlab", data=body,
                         headers=payloads.gitlab_headers(GL_TOKEN, "Merge Request Hook"))
    assert answer.status_code == 413  # from the error handler, still counted
    assert _count("gitlab", "merge_request", "refused") == before + 1


def test_redis_down_is_counted_as_an_error():
    down = f"redis://127.0.0.1:{free_port()}/0"
    client = _client(down)
    before = _count("github", "pull_request", "error")
    assert post_github(client, payloads.github_pr_merged()).status_code == 503
    assert _count("github", "pull_request", "error") == before + 1
    assert GH_SECRET not in client.get("/metrics").get_data(as_text=True)
