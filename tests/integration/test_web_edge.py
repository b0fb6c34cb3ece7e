"""The webhook edge as an attacker meets it: deny by default, bounded bodies, a token on the view.

Body limits are tested over real sockets against a threaded HTTP server running the real app,
because what matters is what the server reads before it answers: a client that sends headers
and then stalls shows whether the app waited for a body it should never have read.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue
from werkzeug.serving import make_server

from bot import services, tenancy
from bot.body_gate import BODY_CHUNK_BYTES, BodyGate
from bot.config import GitHubSettings, GitLabSettings, Settings
from bot.deployments import deployment_path, save_deployment
from bot.policy import Policy
from bot.queue import QUEUE_NAME, RQJobQueue
from bot.web import BODY_GATE, create_app
from bot.wsgi import JOBS, app_for
from tests.harness import payloads
from tests.harness.processes import free_port, wait_until

GH_SECRET = "gh-edge-secret"
GL_TOKEN = "gl-edge-token"
SERVED = {"acme/gitops": Policy(namespaces=("shop",))}
VIEW_TOKEN = "view-token-0123456789"
ANSWER_WITHIN_S = 5.0  # a stalled client must get its answer well before this


def make_settings(redis_url: str, **kw) -> Settings:
    kw.setdefault("repos", SERVED)
    return Settings(redis_url=redis_url,
                    github=GitHubSettings(webhook_secret=GH_SECRET, token="t"),
                    gitlab=GitLabSettings(webhook_token=GL_TOKEN, token="t"), **kw)


def make_app(redis_url: str, body_budget_bytes: int | None = None, **kw):
    """The production app (bot.wsgi); with `body_budget_bytes`, the edge over a BodyGate that
    small, so tests fill it without sending 128 MiB."""
    redis = Redis.from_url(redis_url)
    svc = services.Services(make_settings(redis_url, **kw), redis, RQJobQueue(redis))
    if body_budget_bytes is None:
        return app_for(svc)
    return create_app(svc, JOBS, body_budget_bytes=body_budget_bytes)


@pytest.fixture
def queue(redis_url) -> Queue:
    return Queue(QUEUE_NAME, connection=Redis.from_url(redis_url))


def post_github(client, payload, event="pull_request", delivery=None):
    body = payloads.dumps(payload)
    return client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, GH_SECRET, event, delivery))


def post_gitlab(client, payload, event="Merge Request Hook", key=None):
    body = payloads.dumps(payload)
    return client.post("/webhooks/gitlab", data=body,
                       headers=payloads.gitlab_headers(GL_TOKEN, event, key))


# --------------------------------------------------------------------------- deny by default


@pytest.mark.parametrize("forge,event,payload", [
    ("github", "pull_request", payloads.github_pr_merged(full_name="evil/gitops")),
    ("github", "issue_comment", payloads.github_comment("/promote", full_name="evil/gitops")),
    ("gitlab", "Merge Request Hook", payloads.gitlab_mr_merged(path="evil/gitops")),
    ("gitlab", "Note Hook", payloads.gitlab_note("/promote", path="evil/gitops")),
])
def test_a_repository_not_served_is_ignored_and_enqueues_nothing(redis_url, queue, forge,
                                                                 event, payload):
    client = make_app(redis_url).test_client()
    post = post_github if forge == "github" else post_gitlab
    resp = post(client, payload, event)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "ignored"
    assert f"{forge} repository evil/gitops is not served" in resp.get_json()["reason"]
    assert queue.job_ids == []


def test_nothing_is_served_without_a_repos_entry(redis_url, queue):
    client = make_app(redis_url, repos={}).test_client()
    assert post_github(client, payloads.github_pr_merged()).get_json()["status"] == "ignored"
    assert queue.job_ids == []


def test_a_glob_entry_serves_its_owner_and_a_forge_prefix_holds_on_that_forge(redis_url, queue):
    repos = {"acme/*": Policy(namespaces=("team-a",)),
             "gitlab:ops/gitops": Policy(namespaces=("ops",))}
    client = make_app(redis_url, repos=repos).test_client()
    assert post_github(client, payloads.github_pr_merged(full_name="acme/other")).status_code == 202
    assert post_github(client, payloads.github_pr_merged(full_name="ops/gitops")).status_code == 200
    assert post_gitlab(client, payloads.gitlab_mr_merged(path="ops/gitops")).status_code == 202
    assert len(queue.job_ids) == 2


def test_a_renamed_repository_is_still_served_through_its_pinned_id(redis_url, queue):
    settings = make_settings(redis_url)
    tenancy.resolve(settings, Redis.from_url(redis_url), "github", 1296269, "acme/gitops")
    client = make_app(redis_url).test_client()
    # Same repository id as the payloads' acme/gitops, new name that no entry matches.
    resp = post_github(client, payloads.github_pr_merged(full_name="acme/renamed"))
    assert resp.status_code == 202 and len(queue.job_ids) == 1


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_the_enqueued_event_carries_the_delivery_id(redis_url, queue, forge):
    client = make_app(redis_url).test_client()
    if forge == "github":
        resp = post_github(client, payloads.github_pr_merged(), delivery="d-edge-1")
    else:
        resp = post_gitlab(client, payloads.gitlab_note("/abort"), event="Note Hook",
                           key="d-edge-1")
    assert resp.status_code == 202
    (event,) = queue.fetch_job(resp.get_json()["job_id"]).args
    assert event.delivery == "d-edge-1"


# --------------------------------------------------------------------------- bounded bodies


@pytest.fixture
def serve(redis_url) -> Iterator:
    """Starts the real app on a threaded HTTP server; yields (port, app)."""
    servers = []

    def start(**kw):
        app = make_app(redis_url, **kw)
        server = make_server("127.0.0.1", free_port(), app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port, app

    yield start
    for server in servers:
        server.shutdown()


def open_request(port: int, path: str, headers: dict[str, str], body: bytes = b"") -> socket.socket:
    """Sends a request's head and the first `body` bytes, and leaves the connection open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN_S)
    head = [f"POST {path} HTTP/1.1", "Host: coalmine.test"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def answer(sock: socket.socket) -> http.client.HTTPResponse:
    """The server's response on a connection whose request body may still be unfinished;
    a server that waits for the rest of the body makes this time out."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    resp.read()
    return resp


def unsigned_head(length: int | None = None, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "pull_request",
               "X-GitHub-Delivery": "unsigned", "X-Hub-Signature-256": "sha256=" + "0" * 64}
    if length is not None:
        headers["Content-Length"] = str(length)
    return {**headers, **extra}


def post_signed(port: int, body: bytes, delivery: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN_S)
    conn.request("POST", "/webhooks/github", body,
                 payloads.github_headers(body, GH_SECRET, "pull_request", delivery))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_the_gate_admits_budget_over_cap_readers_and_never_fewer_than_two():
    assert BodyGate(25 * 1024 * 1024).capacity == 5
    assert BodyGate(100 * 1024 * 1024).capacity == 2


def test_the_gate_reserves_declared_bytes_and_gives_them_back_however_the_reader_ends():
    gate = BodyGate(100, budget_bytes=1000)
    with gate.reserve(600) as first, gate.reserve(500) as refused, gate.reserve(400) as third:
        assert first is not None and third is not None and refused is None
        assert (gate.reserved, gate.in_use) == (1000, 2)
        assert not third.cover(401)  # the budget is spent: a reader may not grow past it
    assert (gate.reserved, gate.in_use) == (0, 0)
    with pytest.raises(RuntimeError), gate.reserve(None) as unsized:
        assert unsized is not None and unsized.cover(700) and gate.reserved == 700
        raise RuntimeError("the reader failed half way")
    assert (gate.reserved, gate.in_use) == (0, 0)


def test_many_small_unauthenticated_bodies_are_read_at_the_same_time(serve, queue):
    """A count of readers (128 MiB // the cap = 5) refused the sixth small delivery in flight
    at once with a 503, which GitHub does not redeliver by itself; a byte budget reads them."""
    port, app = serve()
    gate = app.extensions[BODY_GATE]
    senders = 16
    bodies = [payloads.dumps(payloads.github_pr_merged(merge_sha=f"{i:040x}"))
              for i in range(senders)]
    stalled = [open_request(port, "/webhooks/github",
                            {**payloads.github_headers(body, GH_SECRET, "pull_request",
                                                       f"small-{i}"),
                             "Content-Length": str(len(body))},
                            body[:100])
               for i, body in enumerate(bodies)]
    wait_until(lambda: gate.in_use == senders, message="every small body is being read at once")
    assert gate.reserved == sum(len(body) for body in bodies)
    for sock, body in zip(stalled, bodies, strict=True):
        sock.sendall(body[100:])
    assert [answer(sock).status for sock in stalled] == [202] * senders
    for sock in stalled:
        sock.close()
    assert len(queue.job_ids) == senders
    wait_until(lambda: gate.in_use == 0, message="finished bodies give their bytes back")
    assert gate.reserved == 0


def test_a_flood_of_unsized_bodies_is_held_to_the_budget(serve):
    """Chunked bodies declare no length: each reserves as its pieces arrive, and the one that
    would pass the budget is refused with Retry-After without being read to its end."""
    # Pieces of the reader's chunk size, so what is read (and reserved) is known exactly.
    piece = b" " * BODY_CHUNK_BYTES
    budget, each = 16 * len(piece), 3 * len(piece)
    port, app = serve(max_body_bytes=4 * len(piece), body_budget_bytes=budget)
    gate = app.extensions[BODY_GATE]

    def send_unsized(sock: socket.socket) -> None:
        for _ in range(each // len(piece)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))

    chunked = unsigned_head(**{"Transfer-Encoding": "chunked"})
    held = []
    for n in range(1, budget // each + 1):
        held.append(open_request(port, "/webhooks/github", chunked))
        send_unsized(held[-1])
        wait_until(lambda n=n: gate.reserved == n * each, message="each piece is reserved")
    over = open_request(port, "/webhooks/github", chunked)
    send_unsized(over)
    refused = answer(over)
    assert refused.status == 503
    assert int(refused.getheader("Retry-After")) > 0
    assert gate.reserved == len(held) * each <= budget  # the refused reader gave its bytes back
    over.close()
    for sock in held:
        sock.close()
    wait_until(lambda: gate.in_use == 0, message="dropped connections give their bytes back")
    assert gate.reserved == 0


def test_unauthenticated_bodies_beyond_the_gate_are_refused_with_retry_after(serve):
    cap = 256 * 1024
    port, app = serve(max_body_bytes=cap, body_budget_bytes=2 * cap)
    gate = app.extensions[BODY_GATE]
    assert gate.capacity == 2
    # Bodies that declare the cap and stall hold the whole budget.
    stalled = [open_request(port, "/webhooks/github", unsigned_head(cap), b'{"a": ')
               for _ in range(gate.capacity)]
    wait_until(lambda: gate.in_use == gate.capacity, message="stalled bodies hold the gate")
    assert gate.reserved == gate.budget

    refused = post_signed(port, payloads.dumps(payloads.github_pr_merged()), "over-the-gate")
    assert refused.status == 503
    assert int(refused.getheader("Retry-After")) > 0

    # One stalled sender finishes its (badly signed) body: its bytes free, the next gets in.
    stalled[0].sendall(b" " * (cap - len(b'{"a": ')))
    assert answer(stalled[0]).status == 401
    wait_until(lambda: gate.in_use == 1, message="a finished body releases its bytes")
    admitted = post_signed(port, payloads.dumps(payloads.github_pr_merged()), "after-the-gate")
    assert admitted.status == 202
    for sock in stalled:
        sock.close()
    wait_until(lambda: gate.in_use == 0, message="a dropped connection releases its bytes")
    assert gate.reserved == 0


def test_an_over_cap_chunked_body_is_refused_without_being_read_to_its_end(serve):
    cap = 256 * 1024
    port, _ = serve(max_body_bytes=cap)
    piece = b"x" * 32 * 1024
    sock = open_request(port, "/webhooks/github", unsigned_head(**{"Transfer-Encoding": "chunked"}))
    for _ in range(cap // len(piece) + 1):
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    # The terminating chunk is never sent: only a server that stopped at the cap can answer.
    assert answer(sock).status == 413
    sock.close()


def test_a_declared_oversize_body_is_refused_before_a_byte_of_it_is_read(serve):
    cap = 256 * 1024
    port, _ = serve(max_body_bytes=cap)
    for path, headers in (
        ("/webhooks/github", unsigned_head(cap + 1)),
        ("/webhooks/gitlab", {"X-Gitlab-Token": GL_TOKEN, "X-Gitlab-Event": "Note Hook",
                              "Content-Length": str(cap + 1)}),
    ):
        sock = open_request(port, path, headers)
        assert answer(sock).status == 413, path
        sock.close()


@pytest.mark.parametrize("path,headers", [
    ("/webhooks/github", {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d"}),
    ("/webhooks/github", {"X-Hub-Signature-256": "sha1=" + "0" * 40}),
    ("/webhooks/gitlab", {"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Note Hook"}),
])
def test_a_missing_signature_or_token_is_refused_before_the_body_is_read(serve, path, headers):
    port, app = serve()
    sock = open_request(port, path, {**headers, "Content-Length": "1000"})  # no body follows
    assert answer(sock).status == 401
    sock.close()
    assert app.extensions[BODY_GATE].in_use == 0


def test_a_signed_chunked_body_is_verified_across_its_chunks(serve, queue):
    port, _ = serve(max_body_bytes=256 * 1024)
    body = payloads.dumps(payloads.github_pr_merged(padding=200 * 1024))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN_S)
    conn.request("POST", "/webhooks/github",
                 (body[i:i + 10_000] for i in range(0, len(body), 10_000)),
                 payloads.github_headers(body, GH_SECRET, "pull_request"), encode_chunked=True)
    assert conn.getresponse().status == 202
    conn.close()
    assert len(queue.job_ids) == 1


def test_a_body_of_exactly_the_cap_is_accepted(redis_url, queue):
    body = payloads.dumps(payloads.github_pr_merged())
    client = make_app(redis_url, max_body_bytes=len(body)).test_client()
    resp = client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, GH_SECRET, "pull_request"))
    assert resp.status_code == 202
    client = make_app(redis_url, max_body_bytes=len(body) - 1).test_client()
    resp = client.post("/webhooks/github", data=body,
                       headers=payloads.github_headers(body, GH_SECRET, "pull_request"))
    assert resp.status_code == 413


# --------------------------------------------------------------------------- the JSON view

PATH = deployment_path("github", "acme/gitops", "abc123", "web")


@pytest.fixture
def saved(redis_url) -> None:
    save_deployment(Redis.from_url(redis_url), {"forge": "github", "repo": "acme/gitops",
                                                "sha": "abc123", "app": "web", "state": "success"})


def test_the_view_is_off_without_a_token(redis_url, saved):
    resp = make_app(redis_url).test_client().get(PATH)
    assert resp.status_code == 404
    assert "COALMINE_VIEW_TOKEN" in resp.get_json()["error"]
    assert "acme/gitops" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer wrong", f"Basic {VIEW_TOKEN}", f"Bearer {VIEW_TOKEN}x",
    "Bearer \u00e9t\u00e9",
])
def test_the_view_refuses_without_the_right_bearer_token(redis_url, saved, authorization):
    client = make_app(redis_url, view_token=VIEW_TOKEN).test_client()
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = client.get(PATH, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "success" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_view_answers_with_the_token(redis_url, saved, scheme):
    client = make_app(redis_url, view_token=VIEW_TOKEN).test_client()
    resp = client.get(PATH, headers={"Authorization": f"{scheme} {VIEW_TOKEN}"})
    assert resp.status_code == 200 and resp.get_json()["state"] == "success"
    missing = deployment_path("github", "acme/gitops", "def456", "web")
    assert client.get(missing, headers={"Authorization": f"Bearer {VIEW_TOKEN}"}).status_code == 404


# --------------------------------------------------------------------------- probes


def test_livez_does_not_depend_on_redis_and_healthz_does(redis_url):
    dead = Redis(port=free_port(), socket_connect_timeout=0.5)
    svc = services.Services(make_settings("redis://dead"), dead, RQJobQueue(dead))
    client = app_for(svc).test_client()
    assert client.get("/livez").status_code == 200
    assert client.get("/healthz").status_code == 503
    live = make_app(redis_url).test_client()
    assert live.get("/livez").status_code == 200 and live.get("/healthz").status_code == 200
