"""The webhook receiver: verify → parse → dedupe → enqueue → answer.

Nothing slow happens here (no forge, git or cluster call), because GitHub gives up on a delivery
after 10 seconds and does not redeliver by itself. Every answer is deliberate: a forge records a
4xx as our refusal, and a 503 as a failure it may redeliver, so no input is allowed to become a
500.

Anyone on the network can post here, so nothing costs more before the sender is known than
after: headers are checked before a body is read, a body is read in bounded chunks while its
signature is computed, and the bodies read at once before their sender is known share a byte
budget per process (beyond it senders are told to come back), so memory stays under the pod's
limit whatever arrives, while many small deliveries are still read side by side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask, Response, g, jsonify, request
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bot import events, keys, metrics, tenancy
from bot.body_gate import (
    RETRY_AFTER_S,
    UNVERIFIED_BODY_BUDGET_BYTES,
    BodyGate,
    GateFull,
    read_body,
)
from bot.commands import mentions_command
from bot.config import Settings
from bot.deployments import load_deployment
from bot.repos import RepoEntry

log = logging.getLogger(__name__)

BODY_GATE = "coalmine.body_gate"  # key of the BodyGate in app.extensions
SIGNATURE_PREFIX = "sha256="
JSON_TYPE = "application/json"


class EdgePorts(Protocol):
    """What the edge needs of the composition root: settings, Redis (dedupe, pins) and queue."""

    settings: Settings
    redis: Redis
    queue: Any
    embedded: bool


@dataclass(frozen=True)
class Jobs:
    """The use cases the edge enqueues, handed in by the composition root (bot.wsgi), so the
    edge never imports a use case or a slow adapter."""

    merged: Callable[..., Any]
    command: Callable[..., Any]
    preview: Callable[..., Any] | None = None  # None: open PRs are not previewed
    check_action: Callable[..., Any] | None = None  # None: check run buttons are not acted on


def create_app(svc: EdgePorts, jobs: Jobs,
               body_budget_bytes: int = UNVERIFIED_BODY_BUDGET_BYTES,
               collectors: Iterable[Collector] = ()) -> Flask:
    """The Flask app over the given ports (gunicorn builds it through `bot.wsgi:create_app()`);
    tests give a small `body_budget_bytes` to fill the BodyGate without sending 128 MiB.
    `collectors` are read on each scrape of /metrics, beside the counters (bot.metrics)."""
    settings = svc.settings
    if not settings.github_enabled and not settings.gitlab_enabled:
        log.warning(
            "neither GITHUB_WEBHOOK_SECRET nor GITLAB_WEBHOOK_TOKEN is set: "
            "both webhook endpoints refuse every delivery"
        )
    app = Flask("coalmine")
    # Werkzeug's own cap, behind ours: request.stream refuses past it as well.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    gate = app.extensions[BODY_GATE] = BodyGate(settings.max_body_bytes,
                                                   body_budget_bytes)

    @app.get("/livez")
    def livez() -> tuple[Response, int]:
        # Liveness: the process serves. Redis being down is not cured by a restart.
        return jsonify(status="ok"), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            svc.redis.ping()
        except RedisError:
            return jsonify(status="unavailable", reason="redis unreachable"), 503
        return jsonify(status="ok", queue="embedded" if svc.embedded else "redis"), 200

    scraped = tuple(collectors)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        # Repository and app names only (bot.metrics bounds its labels); no secret, no sha.
        return Response(metrics.exposition(scraped), 200, content_type=metrics.CONTENT_TYPE)

    @app.after_request
    def count_webhook(resp: Response) -> Response:
        # After the error handlers too, so a 413 or an unexpected 503 is counted as well.
        if request.endpoint in ("github", "gitlab"):
            metrics.webhook(request.endpoint, g.get("webhook_event", "unknown"),
                            metrics.webhook_outcome(resp.status_code,
                                                    g.get("webhook_duplicate", False)))
        return resp

    @app.post("/webhooks/github")
    def github() -> tuple[Response, int]:
        secret = settings.github.webhook_secret
        if not secret:
            return _answer(403, "GitHub webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set")
        headers = request.headers
        signature = headers.get("X-Hub-Signature-256", "")
        # hmac.compare_digest raises TypeError on non-ASCII text, which would become a 503.
        if not signature.startswith(SIGNATURE_PREFIX) or not signature.isascii():
            return _answer(401, "missing or malformed X-Hub-Signature-256")
        _refuse_declared_oversize(settings.max_body_bytes)
        with gate.reserve(request.content_length) as reservation:
            if reservation is None:
                return _busy()
            mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
            try:
                body = read_body(request.stream, settings.max_body_bytes, mac, reservation)
            except GateFull:
                return _busy()
            if not hmac.compare_digest(signature, SIGNATURE_PREFIX + mac.hexdigest()):
                return _answer(401, "signature does not match")
        payload = _json(body)
        if payload is None:
            return _answer(400, "body is not valid JSON")
        delivery = headers.get("X-GitHub-Delivery", "")
        event_name = headers.get("X-GitHub-Event", "")
        g.webhook_event = metrics.webhook_event("github", event_name)
        if not delivery or not event_name:
            return _answer(400, "missing X-GitHub-Delivery or X-GitHub-Event")
        return _accept(svc, jobs, "github", delivery, events.parse_github(event_name, payload))

    @app.post("/webhooks/gitlab")
    def gitlab() -> tuple[Response, int]:
        secret = settings.gitlab.webhook_token
        if not secret:
            return _answer(403, "GitLab webhooks are disabled: GITLAB_WEBHOOK_TOKEN is not set")
        token = request.headers.get("X-Gitlab-Token", "")
        if not hmac.compare_digest(token.encode(), secret.encode()):
            return _answer(401, "missing or wrong X-Gitlab-Token")
        # The sender is known from here on: its body is bounded, but needs no gate slot.
        g.webhook_event = metrics.webhook_event("gitlab", request.headers.get("X-Gitlab-Event", ""))
        _refuse_declared_oversize(settings.max_body_bytes)
        payload = _json(read_body(request.stream, settings.max_body_bytes))
        if payload is None:
            return _answer(400, "body is not valid JSON")
        delivery = request.headers.get("Idempotency-Key") or request.headers.get(
            "X-Gitlab-Event-UUID", ""
        )
        event_name = request.headers.get("X-Gitlab-Event", "")
        return _accept(svc, jobs, "gitlab", delivery, events.parse_gitlab(event_name, payload))

    @app.get("/deployments/<forge>/<path:repo>/commits/<sha>/apps/<app_name>")
    def deployment(forge: str, repo: str, sha: str, app_name: str) -> tuple[Response, int]:
        refused = _view_refusal(settings.view_token, request.headers.get("Authorization", ""))
        if refused is not None:
            return refused
        try:
            record = load_deployment(svc.redis, forge, repo, sha, app_name)
        except RedisError:
            return _answer(503, "redis unreachable")
        if record is None:
            return _answer(404, "no such deployment")
        return jsonify(record), 200

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception) -> tuple[Response, int]:
        resp, code = _answer(413, f"body larger than {settings.max_body_bytes} bytes")
        resp.headers["Connection"] = "close"  # the rest of the body is never read
        return resp, code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _answer(exc.code or 400, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        # A 503 asks the forge to count the delivery as failed, so it can be redelivered.
        log.exception("unexpected error while receiving a webhook")
        return _answer(503, "temporarily unable to accept the delivery")

    return app


def _answer(code: int, message: str, **extra: Any) -> tuple[Response, int]:
    """A small JSON answer, serialised directly: Flask's `jsonify` (sorted keys through the
    app's JSON provider) cost several times as much on every delivery."""
    key = "error" if code >= 400 else "status"
    body = json.dumps({key: message, **extra}, separators=(",", ":")) + "\n"
    return Response(body, code, content_type=JSON_TYPE), code


def _busy() -> tuple[Response, int]:
    """The unauthenticated-body budget has no room for this body: ask the sender to come back."""
    resp, code = _answer(503, "too many deliveries being received; retry later")
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    resp.headers["Connection"] = "close"
    return resp, code


def _refuse_declared_oversize(cap: int) -> None:
    """413 before reading a byte when the sender announces more than the cap."""
    if request.content_length is not None and request.content_length > cap:
        raise RequestEntityTooLarge()


def _view_refusal(token: str | None, authorization: str) -> tuple[Response, int] | None:
    """Why the JSON view refuses this request, or None when the bearer token matches.

    Deployment records name repositories, commits and apps, so the view is off unless an
    operator sets a token; the token travels in a header, never the URL, to stay out of logs.
    """
    if not token:
        return _answer(404, "the deployment view is off: set COALMINE_VIEW_TOKEN to turn it on "
                            "and send it as `Authorization: Bearer <token>`")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        resp, code = _answer(401, "send the view token as `Authorization: Bearer <token>`")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="coalmine"'
        return resp, code
    return None


def _json(body: bytes | bytearray) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting exhausts the stack
        return None


def _accept(svc: EdgePorts, jobs: Jobs, forge: str, delivery: str, event: events.Event):
    """Answer an authenticated delivery; an accepted one costs exactly one Redis round trip.

    The repository check reads Redis only for a name no entry matches (its pinned id), the
    job choice reads nothing, and the dedupe and the enqueue are one atomic script call, so a
    delivery is either claimed and queued or neither (a failure leaves its redelivery welcome).
    """
    if isinstance(event, events.Ping):
        return _answer(200, "pong")
    if isinstance(event, events.Malformed):
        return _answer(400, event.reason)
    if isinstance(event, events.Ignored):
        return _answer(200, "ignored", reason=event.reason)
    if isinstance(event, events.CheckRunAction) and not svc.settings.github.app_id:
        # Only an App's own webhook receives requested_action; with a token set-up, such a
        # payload can only come from a hook someone added by hand (see handlers.check_actions).
        reason = "check run actions are acted on only when Coalmine runs as a GitHub App"
        log.warning("refused %s delivery %s: %s", forge, delivery, reason)
        return _answer(200, "ignored", reason=reason)
    try:
        # Deny by default: a repository the server config does not serve enqueues nothing.
        # The entry is looked up once (it also names the deploy branch); only a name no entry
        # matches goes on to tenancy's check of its pinned id.
        entry = svc.settings.entry_for(event.repo.forge, event.repo.full_name)
        if entry is None:
            ok, reason = tenancy.served(svc.settings, svc.redis, event.repo)
            if not ok:
                log.info("ignored %s delivery %s: %s", forge, delivery, reason)
                return _answer(200, "ignored", reason=reason)
        job, reason = _job_for(jobs, event, entry)
        if job is None:
            return _answer(200, "ignored", reason=reason)
        claim = keys.delivery(forge, delivery) if delivery else None
        job_id = svc.queue.enqueue_once(claim, svc.settings.delivery_ttl_s, job,
                                        dataclasses.replace(event, delivery=delivery))
    except RedisError:
        log.warning("redis unreachable; refusing %s delivery %s", forge, delivery)
        return _answer(503, "queue unavailable; redeliver later")
    if job_id is None:
        g.webhook_duplicate = True
        return _answer(200, "duplicate", delivery=delivery)
    # DEBUG, not INFO: at webhook rates a line per delivery was ~8 % of the edge's CPU, and the
    # worker logs each job (with its delivery id) when it runs it.
    log.debug("accepted %s delivery %s as job %s", forge, delivery, job_id)
    return _answer(202, "accepted", job_id=job_id)


def _job_for(jobs: Jobs, event: events.Event,
             entry: RepoEntry | None) -> tuple[Callable | None, str]:
    if isinstance(event, events.MergedPullRequest):
        deploy_branch = (entry and entry.policy.deploy_branch) or event.repo.default_branch
        if event.base_branch != deploy_branch:
            return None, f"merged into {event.base_branch!r}, not the deploy branch {deploy_branch!r}"
        return jobs.merged, ""
    if isinstance(event, events.PullRequestUpdated):
        deploy_branch = (entry and entry.policy.deploy_branch) or event.repo.default_branch
        if event.base_branch != deploy_branch:
            return None, f"targets {event.base_branch!r}, not the deploy branch {deploy_branch!r}"
        return jobs.preview, "" if jobs.preview else "previews are not enabled"
    if isinstance(event, events.PullRequestComment):
        if event.author_is_bot or not mentions_command(event.body):
            return None, "comment holds no command"
        return jobs.command, ""
    if isinstance(event, events.CheckRunAction):
        return jobs.check_action, "" if jobs.check_action else "check run actions are off"
    return None, "not acted on"
