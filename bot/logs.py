"""Logging set-up: one format for web and worker, with every known secret redacted."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.redact import RedactingFilter, Redactor

# One redactor per process, shared by the log filter, git mirrors and error reports, so a token
# learnt anywhere (an installation token in a clone URL, say) is hidden everywhere.
PROCESS_REDACTOR = Redactor()


def setup_logging(settings: Settings) -> None:
    PROCESS_REDACTOR.add(*settings.secrets())
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        handler.addFilter(RedactingFilter(PROCESS_REDACTOR))
        root.addHandler(handler)
    root.setLevel(settings.log_level)
