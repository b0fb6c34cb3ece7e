"""The web process's composition root: gunicorn runs `bot.wsgi:create_app()`.

It builds the adapters once per process (bot.services), sets up logging, and hands the edge
(bot.web) its ports and the use cases it enqueues, so the edge itself imports neither.
"""

from __future__ import annotations

from flask import Flask

from bot import services, web
from bot.config import load_settings
from bot.logs import setup_logging
from handlers import registry

# The webhook jobs, from the table of every trigger and its use case (handlers/registry.py).
JOBS = web.Jobs(merged=registry.job("merge"), command=registry.job("command"))


def create_app() -> Flask:
    """The production app: settings from the environment, the process's services installed."""
    settings = load_settings()
    setup_logging(settings)
    return app_for(services.install(services.build(settings)))


def app_for(svc: services.Services) -> Flask:
    """The edge over already built services (tests, the embedded mode)."""
    return web.create_app(svc, JOBS)
