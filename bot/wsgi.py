"""The web process's composition root: gunicorn runs `bot.wsgi:create_app()`.

It builds the adapters once per process (bot.services), sets up logging, and hands the edge
(bot.web) its ports and the use cases it enqueues, so the edge itself imports neither.
"""

from __future__ import annotations

import logging
import os
import sys

from flask import Flask

from bot import embedded_guard, metrics, services, web
from bot.config import ConfigError, load_settings
from bot.dashboard import pages as dashboard
from bot.logs import setup_logging
from bot.rollout.store import RolloutStore
from handlers import registry
from handlers.drift import drift_counts

# The webhook jobs, from the table of every trigger and its use case (handlers/registry.py).
JOBS = web.Jobs(merged=registry.job("merge"), command=registry.job("command"),
                preview=registry.job("preview"), check_action=registry.job("check run action"))
# Gunicorn's code for a worker that could not boot: the arbiter then stops instead of starting
# workers that fail the same way forever.
WORKER_BOOT_ERROR = 3
log = logging.getLogger(__name__)


def create_app() -> Flask:
    """The production app: settings from the environment, the process's services installed."""
    try:
        settings = load_settings()
        setup_logging(settings)
        svc = services.build(settings)
        if svc.embedded:  # one process only: a second would run a second queue
            embedded_guard.claim(settings.data_dir)
            embedded_guard.refuse_forks()
    except ConfigError as exc:  # one line, not a traceback under "Worker failed to boot"
        print(f"coalmine web: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    except embedded_guard.EmbeddedInUse as exc:
        print(f"coalmine web: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    warning = metrics.split_counts_warning(os.environ)
    if warning:
        log.warning(warning)
    return app_for(services.install(svc))


def app_for(svc: services.Services) -> Flask:
    """The edge over already built services (tests, the embedded mode).

    Embedded, the jobs run on a thread of this process: its queue is wrapped to count and time
    them (an RQ worker does that itself, `coalmine worker`)."""
    if svc.embedded and not isinstance(svc.queue, metrics.MeteredQueue):
        svc.queue = metrics.MeteredQueue(svc.queue, registry.name_of)
    phases = metrics.RolloutPhases(RolloutStore(svc.redis).active_phases)
    drifted = metrics.DriftObjects(lambda: drift_counts(svc.redis))
    app = web.create_app(svc, JOBS, collectors=[phases, drifted])
    # The operator dashboard beside the edge, not inside it (off without its token).
    dashboard.register(app, svc.settings, svc.redis)
    return app
