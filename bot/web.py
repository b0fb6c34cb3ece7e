"""The webhook receiver: verify → parse → dedupe → enqueue → answer.

Nothing slow happens here (no forge, git or cluster call), because GitHub gives up on a delivery
after 10 seconds and does not redeliver by itself. Every answer is deliberate: a forge records a
4xx as our refusal, and a 503 as a failure it may redeliver, so no input is allowed to become a
500.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from gidgethub import ValidationFailure
from gidgethub.sansio import validate_event
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bot import events, services
from bot.commands import mentions_command
from bot.config import Settings, load_settings
from bot.deployments import load_deployment

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, svc: services.Services | None = None) -> Flask:
    """Flask app factory (gunicorn: `bot.web:create_app()`)."""
    if svc is None:
        settings = settings or load_settings()
        from bot.logs import setup_logging

        setup_logging(settings)
        svc = services.install(services.build(settings))
    settings = svc.settings
    if not settings.github_enabled and not settings.gitlab_enabled:
        log.warning(
            "neither GITHUB_WEBHOOK_SECRET nor GITLAB_WEBHOOK_TOKEN is set: "
            "both webhook endpoints refuse every delivery"
        )
    app = Flask("coalmine")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            svc.redis.ping()
        except RedisError:
            return jsonify(status="unavailable", reason="redis unreachable"), 503
        return jsonify(status="ok", queue="embedded" if svc.embedded else "redis"), 200

    @app.post("/webhooks/github")
    def github() -> tuple[Response, int]:
        secret = settings.github.webhook_secret
        if not secret:
            return _answer(403, "GitHub webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set")
        body = request.get_data(cache=False)
        signature = request.headers.get("X-Hub-Signature-256", "")
        # hmac.compare_digest raises TypeError on non-ASCII text, which would become a 503.
        if not signature.startswith("sha256=") or not signature.isascii():
            return _answer(401, "missing or malformed X-Hub-Signature-256")
        try:
            validate_event(body, signature=signature, secret=secret)
        except ValidationFailure:
            return _answer(401, "signature does not match")
        payload = _json(body)
        if payload is None:
            return _answer(400, "body is not valid JSON")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        event_name = request.headers.get("X-GitHub-Event", "")
        if not delivery or not event_name:
            return _answer(400, "missing X-GitHub-Delivery or X-GitHub-Event")
        return _accept(svc, "github", delivery, events.parse_github(event_name, payload))

    @app.post("/webhooks/gitlab")
    def gitlab() -> tuple[Response, int]:
        secret = settings.gitlab.webhook_token
        if not secret:
            return _answer(403, "GitLab webhooks are disabled: GITLAB_WEBHOOK_TOKEN is not set")
        token = request.headers.get("X-Gitlab-Token", "")
        if not hmac.compare_digest(token.encode(), secret.encode()):
            return _answer(401, "missing or wrong X-Gitlab-Token")
        payload = _json(request.get_data(cache=False))
        if payload is None:
            return _answer(400, "body is not valid JSON")
        delivery = request.headers.get("Idempotency-Key") or request.headers.get(
            "X-Gitlab-Event-UUID", ""
        )
        event_name = request.headers.get("X-Gitlab-Event", "")
        return _accept(svc, "gitlab", delivery, events.parse_gitlab(event_name, payload))

    @app.get("/deployments/<forge>/<path:repo>/commits/<sha>/apps/<app_name>")
    def deployment(forge: str, repo: str, sha: str, app_name: str) -> tuple[Response, int]:
        try:
            record = load_deployment(svc.redis, forge, repo, sha, app_name)
        except RedisError:
            return _answer(503, "redis unreachable")
        if record is None:
            return _answer(404, "no such deployment")
        return jsonify(record), 200

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception) -> tuple[Response, int]:
        return _answer(413, f"body larger than {settings.max_body_bytes} bytes")

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
    key = "error" if code >= 400 else "status"
    return jsonify({key: message, **extra}), code


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting exhausts the stack
        return None


def _accept(svc: services.Services, forge: str, delivery: str, event: events.Event):
    if isinstance(event, events.Ping):
        return _answer(200, "pong")
    if isinstance(event, events.Malformed):
        return _answer(400, event.reason)
    if isinstance(event, events.Ignored):
        return _answer(200, "ignored", reason=event.reason)
    job, reason = _job_for(svc, event)
    if job is None:
        return _answer(200, "ignored", reason=reason)
    try:
        if delivery and not _first_delivery(svc, forge, delivery):
            return _answer(200, "duplicate", delivery=delivery)
        try:
            job_id = svc.queue.enqueue(job, event)
        except Exception:
            if delivery:
                svc.redis.delete(_delivery_key(forge, delivery))  # let a redelivery through
            raise
    except RedisError:
        log.warning("redis unreachable; refusing %s delivery %s", forge, delivery)
        return _answer(503, "queue unavailable; redeliver later")
    log.info("accepted %s delivery %s as job %s", forge, delivery, job_id)
    return _answer(202, "accepted", job_id=job_id)


def _job_for(svc: services.Services, event: events.Event) -> tuple[Callable | None, str]:
    from handlers import commands, merged

    if isinstance(event, events.MergedPullRequest):
        policy = svc.settings.repo_settings(event.repo.full_name)
        deploy_branch = policy.deploy_branch or event.repo.default_branch
        if event.base_branch != deploy_branch:
            return None, f"merged into {event.base_branch!r}, not the deploy branch {deploy_branch!r}"
        return merged.run, ""
    if isinstance(event, events.PullRequestComment):
        if event.author_is_bot or not mentions_command(event.body):
            return None, "comment holds no command"
        return commands.run, ""
    return None, "not acted on"


def _delivery_key(forge: str, delivery: str) -> str:
    return f"coalmine:delivery:{forge}:{delivery[:200]}"


def _first_delivery(svc: services.Services, forge: str, delivery: str) -> bool:
    return bool(svc.redis.set(_delivery_key(forge, delivery), 1, nx=True, ex=svc.settings.delivery_ttl_s))
