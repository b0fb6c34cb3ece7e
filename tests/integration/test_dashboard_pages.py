"""The dashboard as the production app serves it (bot.wsgi.app_for) over a real Redis.

Records are written by the real adapters (the rollout store, the deployment records) from
rollouts the real engine produced; the pages are read as a browser would get them: login,
cookies, headers, escaping. tests/e2e/test_dashboard.py drives the same pages in Chromium.
"""

from __future__ import annotations

import re

import pytest
from redis import Redis

from bot import keys, services
from bot.config import load_settings
from bot.dashboard.pages import CSP
from bot.dashboard.session import COOKIE
from bot.deployments import save_deployment
from bot.errors import ConfigError
from bot.queue import RQJobQueue
from bot.rollout.model import Abort, PauseStep, SetWeightStep, Start
from bot.rollout.store import RolloutRecord, RolloutStore, rollout_key
from bot.wsgi import app_for
from tests.unit.test_dashboard_views import context
from tests.unit.test_report_rollout import Rollout

TOKEN = "dashboard-token-0123456789abcdef"
GITHUB_TOKEN = "ghs_secretTokenOfTheBot0123456789"
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script> & "quotes"'
LIST = "/dashboard/"
DETAIL = "/dashboard/rollouts/github/acme/gitops/apps/web"


def make_app(redis_url: str, **env: str):
    values = {"REDIS_URL": redis_url, "GITHUB_TOKEN": GITHUB_TOKEN,
              "COALMINE_REPOS": "acme/gitops=shop", **env}
    settings = load_settings(values)
    redis = Redis.from_url(redis_url)
    return app_for(services.Services(settings, redis, RQJobQueue(redis)))


@pytest.fixture
def client(redis_url):
    return make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN).test_client()


def signed_in(client):
    resp = client.post("/dashboard/login", data={"token": TOKEN})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return client


def save_rollout(redis: Redis, title: str = "Web 2.0",
                 url: str = "https://github.example/acme/gitops/pull/7",
                 aborted_with: str | None = None) -> None:
    rollout = Rollout([SetWeightStep(50), PauseStep()]).send(Start()).healthy(2)
    if aborted_with is not None:
        rollout.send(Abort("bob", aborted_with), 1)
    key = rollout_key("github", "acme/gitops", "web")
    RolloutStore(redis).save(key, RolloutRecord(rollout.state, context(title=title, url=url)),
                             None)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_without_a_token_every_dashboard_url_is_not_found(redis_url, redis_client):
    save_rollout(redis_client)
    client = make_app(redis_url).test_client()
    for path in (LIST, DETAIL, "/dashboard/login", "/dashboard/static/live.js",
                 LIST + "?part=version"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert "COALMINE_DASHBOARD_TOKEN" in resp.get_data(as_text=True)
    assert client.post("/dashboard/login", data={"token": ""}).status_code == 404
    assert client.get("/healthz").status_code == 200  # the edge is untouched


def test_pages_want_a_session_and_a_wrong_token_gets_none(client, redis_client):
    save_rollout(redis_client)
    for path in (LIST, DETAIL):
        resp = client.get(path)
        assert resp.status_code == 303 and resp.headers["Location"] == "/dashboard/login"
    assert client.get(LIST + "?part=version").status_code == 401
    assert client.get(DETAIL + "?part=main").status_code == 401

    for wrong in ("", TOKEN[:-1], TOKEN + "0", GITHUB_TOKEN):
        resp = client.post("/dashboard/login", data={"token": wrong})
        assert resp.status_code == 401
        assert "not the dashboard" in resp.get_data(as_text=True)
        assert "Set-Cookie" not in resp.headers
    assert client.get(LIST).status_code == 303

    client.set_cookie(COOKIE, "1.forged.0000", path="/dashboard/")
    assert client.get(LIST).status_code == 303


def test_the_session_cookie_is_http_only_strict_and_signed_out_again(client):
    resp = client.post("/dashboard/login", data={"token": TOKEN})
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard/" in cookie
    assert "Secure" not in cookie  # plain http here (COALMINE_PUBLIC_URL is http)
    assert TOKEN not in cookie
    assert client.get(LIST).status_code == 200
    assert client.get("/dashboard/login").status_code == 303  # already signed in

    assert client.post("/dashboard/logout").status_code == 303
    assert client.get(LIST).status_code == 303


def test_the_session_cookie_is_secure_behind_https(redis_url):
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN,
                      COALMINE_PUBLIC_URL="https://coalmine.example").test_client()
    cookie = client.post("/dashboard/login", data={"token": TOKEN}).headers["Set-Cookie"]
    assert "; Secure" in cookie


def test_a_form_posted_from_another_site_is_refused(client):
    resp = client.post("/dashboard/login", data={"token": TOKEN},
                       headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403 and "Set-Cookie" not in resp.headers
    signed_in(client)
    resp = client.post("/dashboard/logout", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403
    assert client.get(LIST).status_code == 200


def test_every_dashboard_answer_carries_a_strict_content_security_policy(client, redis_client):
    save_rollout(redis_client)
    answers = [client.get("/dashboard/login"), client.post("/dashboard/login", data={})]
    signed_in(client)
    answers += [client.get(LIST), client.get(DETAIL), client.get(LIST + "?part=version"),
                client.get("/dashboard/static/dashboard.css"),
                client.get("/dashboard/rollouts/github/acme/gitops/apps/nope")]
    for resp in answers:
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in CSP and "script-src 'self'" in CSP
    assert "unsafe-inline" not in CSP and "http" not in CSP
    page = answers[2].get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=\"/dashboard/static/)", page)  # none inline
    assert " style=" not in page and "<style" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page.replace(
        'href="https://github.example/acme/gitops/pull/7"', ""))  # nothing from elsewhere


def test_the_list_shows_rollouts_and_recent_deployments(client, redis_client):
    save_rollout(redis_client)
    save_deployment(redis_client, {"forge": "github", "repo": "acme/gitops", "sha": "abcdef0123",
                                   "app": "web", "pr": 7, "state": "success",
                                   "summary": "applied 4 objects"})
    html = signed_in(client).get(LIST).get_data(as_text=True)
    text = text_of(html)
    assert "acme/gitops github web #7 Web 2.0 Paused needs you 2/2" in text
    assert "50%" in text and "a1b2c3d" in text
    assert '<a class="pr" href="https://github.example/acme/gitops/pull/7"' in html
    assert 'href="/dashboard/rollouts/github/acme/gitops/apps/web"' in html
    assert "abcdef0 #7 success applied 4 objects" in text


def test_the_detail_shows_steps_history_and_the_weight_chart(client, redis_client):
    save_rollout(redis_client)
    html = signed_in(client).get(DETAIL).get_data(as_text=True)
    text = text_of(html)
    assert "1 setWeight 50 done 2 pause (until /promote) paused" in text
    assert "started rollout of a1b2c3d started" in text
    assert "Comment /promote web on the PR to continue" in text
    (line,) = re.findall(r'<polyline class="line" points="([^"]+)"', html)
    assert len(line.split()) == 4  # from 0, up to 50 at the start, along to now
    assert client.get("/dashboard/rollouts/github/acme/gitops/apps/nope").status_code == 404
    assert client.get("/dashboard/rollouts/gopher/acme/gitops/apps/web").status_code == 404


def test_untrusted_text_renders_as_text_and_unsafe_links_are_not_links(client, redis_client):
    save_rollout(redis_client, title=HOSTILE, url="javascript:alert(3)",
                 aborted_with=HOSTILE)
    signed_in(client)
    for path in (LIST, DETAIL):
        html = client.get(path).get_data(as_text=True)
        assert "<img" not in html and "<script>alert" not in html
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" \
            " &amp; &#34;quotes&#34;" in html
        assert "javascript:" not in html


def test_a_secret_that_reached_a_message_is_not_shown(client, redis_client):
    leak = f"clone of https://x-access-token:{GITHUB_TOKEN}@github.example failed"
    save_rollout(redis_client, title=f"leaked {GITHUB_TOKEN} and {TOKEN}", aborted_with=leak)
    signed_in(client)
    for path in (LIST, DETAIL):
        html = client.get(path).get_data(as_text=True)
        assert GITHUB_TOKEN not in html and TOKEN not in html
        assert "leaked *** and ***" in html


def test_the_version_changes_when_the_rollout_is_saved(client, redis_client):
    save_rollout(redis_client)
    signed_in(client)
    list_before = client.get(LIST + "?part=version").get_json()["version"]
    detail_before = client.get(DETAIL + "?part=version").get_json()["version"]
    main = client.get(DETAIL + "?part=main").get_data(as_text=True)
    assert main.startswith('<main id="live" data-version="' + detail_before + '"')
    assert "<html" not in main
    assert client.get(DETAIL + "?part=version").get_json()["version"] == detail_before

    save_rollout(redis_client, aborted_with="looks wrong")
    assert client.get(DETAIL + "?part=version").get_json()["version"] != detail_before
    assert client.get(LIST + "?part=version").get_json()["version"] != list_before
    assert "Aborted" in client.get(DETAIL + "?part=main").get_data(as_text=True)


def test_redis_away_is_a_clear_503(redis_url, redis_server):
    app = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN)
    client = signed_in(app.test_client())
    redis_server.stop()
    try:
        resp = client.get(LIST)
    finally:
        redis_server.start()
    assert resp.status_code == 503 and "Redis is unreachable" in resp.get_data(as_text=True)


def test_the_token_comes_from_a_file_and_a_short_one_is_refused(tmp_path, redis_url):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN_FILE=str(path)).test_client()
    assert client.post("/dashboard/login", data={"token": TOKEN}).status_code == 303
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings({"COALMINE_DASHBOARD_TOKEN": "short"})
    settings = load_settings({"COALMINE_DASHBOARD_TOKEN": TOKEN,
                              "COALMINE_DASHBOARD_SECRET": "a-server-secret"})
    assert {TOKEN, "a-server-secret"} <= set(settings.secrets())  # redacted from logs



def test_a_record_another_version_wrote_is_named_not_fatal(client, redis_client):
    save_rollout(redis_client)
    odd = rollout_key("gitlab", "group/ops", "api")
    redis_client.set(odd, '{"state": {"__type__": "FromTheFuture"}, "context": {}}')
    redis_client.sadd(keys.ROLLOUTS_ACTIVE, odd)
    resp = signed_in(client).get(LIST)
    assert resp.status_code == 200
    text = text_of(resp.get_data(as_text=True))
    assert "The rollout of api in group/ops could not be read" in text
    assert "acme/gitops github web #7" in text
    assert client.get("/dashboard/rollouts/gitlab/group/ops/apps/api").status_code == 404
