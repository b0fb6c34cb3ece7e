"""Logging set-up: one format for web and worker, with every known secret redacted."""

from __future__ import annotations

import logging

from bot.config import Settings


def setup_logging(settings: Settings) -> None:
    from bot.redact import Redactor, RedactingFilter

    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        handler.addFilter(RedactingFilter(Redactor(settings.secrets())))
        root.addHandler(handler)
    root.setLevel(settings.log_level)
