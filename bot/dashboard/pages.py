"""The dashboard's pages: a Flask blueprint under /dashboard/, registered by bot.wsgi.

Deny by default: without COALMINE_DASHBOARD_TOKEN every dashboard URL answers 404, and with it
every page but the login form wants a valid session cookie (bot.dashboard.session). Every value
reaches HTML through the templates' autoescape, and through the process's secret redactor
first; no page loads anything from another origin (a strict Content-Security-Policy says so to
the browser, which then also refuses inline scripts and styles). A page keeps itself current
with one same-origin script (static/live.js) that asks for the page's version every POLL_S
seconds and swaps its <main> when that changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, jsonify, redirect, request, url_for
from jinja2 import Environment, PackageLoader, StrictUndefined
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from bot.config import Settings
from bot.dashboard import svg, views
from bot.dashboard.reader import FORGES, DashboardReader
from bot.dashboard.session import COOKIE, SESSION_TTL_S, Gate
from bot.dashboard.throttle import LoginThrottle, client_address
from bot.redact import Redactor

log = logging.getLogger(__name__)
PREFIX = "/dashboard"
POLL_S = 2  # how often an open page asks whether it changed (live.js keeps it within 1-60 s)
MAX_LOGIN_BYTES = 4096
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # with no-referrer, a form posts `Origin: null`
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
OFF = ("the dashboard is off: set COALMINE_DASHBOARD_TOKEN (or COALMINE_DASHBOARD_TOKEN_FILE) "
       "to turn it on")
PUBLIC_ENDPOINTS = frozenset({"dashboard.login", "dashboard.static"})


def register(app: Flask, settings: Settings, redis: Redis, *,
             clock: Callable[[], float] = time.time, poll_s: int = POLL_S,
             throttle: LoginThrottle | None = None) -> None:
    """Mount the dashboard on `app` (off, answering 404, without a dashboard token)."""
    app.register_blueprint(blueprint(settings, redis, clock=clock, poll_s=poll_s,
                                     throttle=throttle))


def blueprint(settings: Settings, redis: Redis, *, clock: Callable[[], float] = time.time,
              poll_s: int = POLL_S, throttle: LoginThrottle | None = None) -> Blueprint:
    token = settings.dashboard_token
    throttle = throttle or LoginThrottle(redis)
    gate = Gate(token, settings.dashboard_secret, clock) if token else None
    reader = DashboardReader(redis)
    render = _renderer(Redactor(settings.secrets()), poll_s)
    https = settings.public_url.startswith("https://")
    bp = Blueprint("dashboard", __name__, url_prefix=PREFIX, static_folder="static")

    @bp.before_request
    def deny_by_default() -> Response | None:
        if gate is None:
            return _plain(404, OFF)
        if request.endpoint in PUBLIC_ENDPOINTS or gate.valid(request.cookies.get(COOKIE)):
            return None
        if request.args.get("part"):
            return _plain(401, "signed out")
        return redirect(url_for("dashboard.login"), 303)

    @bp.after_request
    def security_headers(resp: Response) -> Response:
        resp.headers.update(HEADERS)
        return resp

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        assert gate is not None  # deny_by_default answered otherwise
        if request.method == "GET":
            if gate.valid(request.cookies.get(COOKIE)):
                return redirect(url_for("dashboard.index"), 303)
            return render("login.html", signed_in=False)
        if not _same_origin():
            return _plain(403, "cross-origin form refused")
        if (request.content_length or 0) > MAX_LOGIN_BYTES:
            return _plain(413, "login form too large")
        client = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                settings.dashboard_proxy_hops)
        wait_s = throttle.blocked_for(client)
        if wait_s:
            log.warning("dashboard login from %s refused: too many wrong tokens", client)
            resp = render("login.html", 429, signed_in=False, throttled=True)
            resp.headers["Retry-After"] = str(wait_s)
            return resp
        if not gate.token_matches(request.form.get("token", "")):
            throttle.failed(client)
            return render("login.html", 401, signed_in=False, refused=True)
        throttle.succeeded(client)
        resp = redirect(url_for("dashboard.index"), 303)
        resp.set_cookie(COOKIE, gate.issue(), max_age=SESSION_TTL_S, path=PREFIX + "/",
                        secure=https or request.is_secure, httponly=True, samesite="Strict")
        return resp

    @bp.post("/logout")
    def logout() -> Response:
        if not _same_origin():
            return _plain(403, "cross-origin form refused")
        resp = redirect(url_for("dashboard.login"), 303)
        resp.delete_cookie(COOKIE, path=PREFIX + "/", secure=https or request.is_secure,
                           httponly=True, samesite="Strict")
        return resp

    @bp.get("/")
    def index() -> Response:
        now = clock()
        version = f"{reader.list_version()}-{int(now // 60)}"  # ages change by the minute
        part = request.args.get("part")
        if part == "version":
            return jsonify(version=version)
        listed = reader.rollouts()
        rows = [views.rollout_row(item.forge, item.repo, item.record.state,
                                  item.record.context, now)
                for item in listed if item.record is not None]
        rows.sort(key=lambda row: not row.active)  # stable: newest first within each group
        deployments = [row for row in (views.deployment_row(record, now)
                                       for record in reader.deployments()) if row is not None]
        return render("list_main.html" if part == "main" else "list.html", signed_in=True,
                      version=version, rows=rows, deployments=deployments,
                      unreadable=[item for item in listed if item.record is None])

    @bp.get("/rollouts/<forge>/<path:repo>/apps/<app>")
    def rollout(forge: str, repo: str, app: str) -> Response:
        if forge not in FORGES:
            return render("missing.html", 404, signed_in=True)
        now = clock()
        version = f"{reader.rollout_version(forge, repo, app)}-{int(now // 60)}"
        part = request.args.get("part")
        if part == "version":
            return jsonify(version=version)
        record = reader.rollout(forge, repo, app)
        if record is None:
            return render("missing.html", 404, signed_in=True)
        state = record.state
        return render("rollout_main.html" if part == "main" else "rollout.html", signed_in=True,
                      version=version,
                      detail=views.rollout_detail(forge, repo, state, record.context, now),
                      weight_chart=svg.weight_chart(state, now),
                      metric_charts=svg.metric_charts(state))

    @bp.errorhandler(RedisError)
    def redis_down(_: Exception) -> Response:
        return _plain(503, "Redis is unreachable; the dashboard shows nothing until it is back")

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _plain(exc.code or 400, exc.description or exc.name)

    @bp.errorhandler(Exception)
    def unexpected(_: Exception) -> Response:
        # Not the edge's handler, which would log it as a webhook it failed to accept.
        log.exception("dashboard: unexpected error on %s", request.path)
        return _plain(500, "the dashboard failed to render this page; see the web log")

    return bp


def _renderer(redactor: Redactor, poll_s: int) -> Callable[..., Response]:
    """Renders a template of this package into a response.

    Its own Jinja environment rather than the app's: autoescape is on for every template
    whatever its name, an undefined value is an error, and every value printed passes through
    the redactor (a secret that reached a message is never shown)."""
    env = Environment(
        loader=PackageLoader("bot.dashboard", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=lambda value: redactor.redact(value) if isinstance(value, str) else value,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(url_for=url_for, poll_s=poll_s)

    def render(template: str, status: int = 200, **values: Any) -> Response:
        html = env.get_template(template).render(**values)
        return Response(html, status, content_type="text/html; charset=utf-8")

    return render


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status, content_type="text/plain; charset=utf-8")


def _same_origin() -> bool:
    """A form posted from another site is refused (the SameSite cookie aside): browsers send
    Origin with every POST, and it must name this host."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host
