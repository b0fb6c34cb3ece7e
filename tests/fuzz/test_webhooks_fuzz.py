"""Both webhook endpoints under arbitrary input: every answer is deliberate (never a 5xx with
Redis up), always JSON with `error` or `status`, and the event parsers only produce well-typed
events. A 503 here would tell the forge to redeliver garbage forever."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis

from bot import events, services
from bot.config import GitHubSettings, GitLabSettings, Settings
from bot.forge.base import RepoRef
from bot.queue import RQJobQueue
from bot.wsgi import app_for
from tests.fuzz import FUZZ, json_values, mutated
from tests.harness import payloads

GH_SECRET = "fuzz-gh-secret"
GL_TOKEN = "fuzz-gl-token"
ANSWERS = {200, 202, 400, 401, 403, 413}

# What a real HTTP server can hand the app: latin-1 text without control characters.
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=80,
)
GITHUB_EVENTS = (st.sampled_from(["pull_request", "issue_comment", "check_run", "ping", "push"])
                 | header_values)
GITLAB_EVENTS = (
    st.sampled_from(["Merge Request Hook", "Note Hook", "System Hook", "Push Hook"])
    | header_values
)
GITHUB_BASES = [
    ("pull_request", payloads.github_pr_merged()),
    ("issue_comment", payloads.github_comment("/promote web")),
    ("check_run", payloads.github_check_run_action(77)),
]
GITLAB_BASES = [
    ("Merge Request Hook", payloads.gitlab_mr_merged()),
    ("Note Hook", payloads.gitlab_note("/abort")),
]


@pytest.fixture
def client(redis_url: str):
    redis = Redis.from_url(redis_url)
    settings = Settings(
        redis_url=redis_url,
        github=GitHubSettings(webhook_secret=GH_SECRET, token="t"),
        gitlab=GitLabSettings(webhook_token=GL_TOKEN, token="t"),
    )
    return app_for(services.Services(settings, redis, RQJobQueue(redis))).test_client()


@pytest.fixture
def app_client(redis_url: str):
    """The edge of a GitHub App set-up: the only one that acts on check run button clicks."""
    redis = Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, github=GitHubSettings(
        webhook_secret=GH_SECRET, app_id="4242", private_key="not used by the edge"))
    return app_for(services.Services(settings, redis, RQJobQueue(redis))).test_client()


def _signature(body: bytes) -> str:
    return "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()


def _post_github(client, body: bytes, event: str, signature: str | None = None, **extra: str):
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": _signature(body) if signature is None else signature,
        **extra,
    }
    return client.post("/webhooks/github", data=body, headers=headers)


def _post_gitlab(client, body: bytes, event: str, token: str = GL_TOKEN, **extra: str):
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "Idempotency-Key": str(uuid.uuid4()),
        **extra,
    }
    return client.post("/webhooks/gitlab", data=body, headers=headers)


def _assert_deliberate(resp) -> dict[str, Any]:
    assert resp.status_code in ANSWERS, (resp.status_code, resp.get_data()[:300])
    answer = resp.get_json(silent=True)
    assert isinstance(answer, dict) and ("error" in answer or "status" in answer), answer
    return answer


def _dumps(doc: Any) -> bytes:
    # Lone surrogates are legal JSON text once escaped; ensure_ascii keeps them encodable.
    return json.dumps(doc).encode()


# -- raw bytes and arbitrary JSON ---------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=2000), event=GITHUB_EVENTS)
def test_github_signed_bytes_get_a_deliberate_answer(client, body, event):
    _assert_deliberate(_post_github(client, body, event))


@FUZZ
@given(body=st.binary(max_size=2000), event=GITLAB_EVENTS)
def test_gitlab_bytes_get_a_deliberate_answer(client, body, event):
    _assert_deliberate(_post_gitlab(client, body, event))


@FUZZ
@given(doc=json_values, event=GITHUB_EVENTS)
def test_github_signed_json_documents_get_a_deliberate_answer(client, doc, event):
    _assert_deliberate(_post_github(client, _dumps(doc), event))


@FUZZ
@given(doc=json_values, event=GITLAB_EVENTS)
def test_gitlab_json_documents_get_a_deliberate_answer(client, doc, event):
    _assert_deliberate(_post_gitlab(client, _dumps(doc), event))


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
@pytest.mark.parametrize("depth", [10_000, 1_000_000])
def test_deeply_nested_json_is_refused_as_bad_json(client, depth, opener):
    body = opener * depth
    assert _post_github(client, body, "pull_request").status_code == 400
    assert _post_gitlab(client, body, "Merge Request Hook").status_code == 400


# -- mutated real payloads ----------------------------------------------------------------------


@st.composite
def _github_mutants(draw: st.DrawFn) -> tuple[str, Any]:
    event, base = draw(st.sampled_from(GITHUB_BASES))
    return event, draw(mutated(base, max_mutations=draw(st.sampled_from([1, 4]))))


@st.composite
def _gitlab_mutants(draw: st.DrawFn) -> tuple[str, Any]:
    event, base = draw(st.sampled_from(GITLAB_BASES))
    return event, draw(mutated(base, max_mutations=draw(st.sampled_from([1, 4]))))


@FUZZ
@given(case=_github_mutants())
def test_github_mutated_payloads_get_a_deliberate_answer(client, case):
    event, doc = case
    answer = _assert_deliberate(_post_github(client, _dumps(doc), event))
    parsed = events.parse_github(event, doc)
    if isinstance(parsed, events.Malformed):
        assert answer == {"error": parsed.reason}


@FUZZ
@given(case=_gitlab_mutants())
def test_gitlab_mutated_payloads_get_a_deliberate_answer(client, case):
    event, doc = case
    answer = _assert_deliberate(_post_gitlab(client, _dumps(doc), event))
    parsed = events.parse_gitlab(event, doc)
    if isinstance(parsed, events.Malformed):
        assert answer == {"error": parsed.reason}


@FUZZ
@given(doc=mutated(payloads.github_check_run_action(77), max_mutations=4))
def test_github_app_mutated_check_run_payloads_get_a_deliberate_answer(app_client, doc):
    answer = _assert_deliberate(_post_github(app_client, _dumps(doc), "check_run"))
    parsed = events.parse_github("check_run", doc)
    if isinstance(parsed, events.Malformed):
        assert answer == {"error": parsed.reason}
    if isinstance(parsed, events.CheckRunAction):
        assert isinstance(parsed.check_run_id, int) and isinstance(parsed.identifier, str)


# -- headers --------------------------------------------------------------------------------------


@FUZZ
@given(
    signature=header_values | header_values.map(lambda text: "sha256=" + text),
    event=header_values,
    delivery=header_values,
    correctly_signed=st.booleans(),
)
def test_github_arbitrary_headers_get_a_deliberate_answer(
    client, signature, event, delivery, correctly_signed
):
    body = _dumps(payloads.github_pr_merged())
    sig = _signature(body) if correctly_signed else signature
    resp = _post_github(client, body, event, signature=sig, **{"X-GitHub-Delivery": delivery})
    answer = _assert_deliberate(resp)
    if not correctly_signed and not hmac.compare_digest(
        signature.encode("latin-1"), _signature(body).encode()
    ):
        assert resp.status_code == 401, answer


@FUZZ
@given(token=header_values, event=header_values, key=header_values, uuid_=header_values)
def test_gitlab_arbitrary_headers_get_a_deliberate_answer(client, token, event, key, uuid_):
    body = _dumps(payloads.gitlab_mr_merged())
    extra = {"Idempotency-Key": key, "X-Gitlab-Event-UUID": uuid_}
    answer = _assert_deliberate(_post_gitlab(client, body, event, token=token, **extra))
    if token != GL_TOKEN:
        assert answer.get("error", "").startswith("missing or wrong"), answer
    _assert_deliberate(_post_gitlab(client, body, event, **extra))


# -- the events that reach the handlers -----------------------------------------------------------


def _assert_well_typed(event: events.Event) -> None:
    """Handlers rely on the declared types (`body.splitlines()`, `number + 1`)."""
    if isinstance(event, events.MergedPullRequest | events.PullRequestComment):
        repo = event.repo
        assert isinstance(repo, RepoRef)
        for text in (repo.full_name, repo.clone_url, repo.default_branch):
            assert isinstance(text, str) and text
        for number in (repo.project_id, repo.installation_id):
            assert number is None or (isinstance(number, int) and not isinstance(number, bool))
        assert isinstance(event.number, int) and not isinstance(event.number, bool)
    if isinstance(event, events.MergedPullRequest):
        for text in (event.title, event.url, event.head_branch, event.author, event.merged_by):
            assert isinstance(text, str)
        for text in (event.merge_sha, event.base_branch):
            assert isinstance(text, str) and text
    if isinstance(event, events.PullRequestComment):
        assert isinstance(event.body, str) and isinstance(event.author, str) and event.author
        assert isinstance(event.comment_id, int)
        assert event.author_id is None or isinstance(event.author_id, int)
        assert isinstance(event.author_is_bot, bool)
    if isinstance(event, events.Ignored | events.Malformed):
        assert isinstance(event.reason, str) and event.reason


@FUZZ
@given(case=_github_mutants())
def test_github_parser_yields_well_typed_events(case):
    _assert_well_typed(events.parse_github(*case))


@FUZZ
@given(case=_gitlab_mutants())
def test_gitlab_parser_yields_well_typed_events(case):
    _assert_well_typed(events.parse_gitlab(*case))
