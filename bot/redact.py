"""Keeps credentials out of everything Coalmine writes: logs, PR comments, statuses, errors.

Secrets reach the bot in many shapes (a token in a clone URL, percent-encoded in a query, base64
in a Basic header), so the redactor replaces each registered secret in all of those forms. It is
shared by the whole process and grows as adapters mint new tokens (GitHub App installation
tokens change every hour), hence `add` and a copy-on-write set that readers need no lock for.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "***"


MIN_SECRET_LENGTH = 6


class Redactor:
    """Replaces every registered secret (and its encoded forms) with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: tuple[str, ...] = ()
        self._write_lock = threading.Lock()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Register secrets. Values shorter than MIN_SECRET_LENGTH are ignored: masking every
        "t" would make logs unreadable, and no real credential is that short."""
        new = {form for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH
               for form in _encoded_forms(secret) if len(form) >= MIN_SECRET_LENGTH}
        with self._write_lock:
            forms = new | set(self._forms)
            # Longest first, so a secret containing another one is masked whole.
            self._forms = tuple(sorted(forms, key=lambda s: (-len(s), s)))

    def add_url_credentials(self, url: str) -> None:
        """Register the password (or, when alone, the user name) carried by `url`."""
        user, password = url_credentials(url)
        self.add(password if password else user)

    def redact(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text


def _encoded_forms(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
    }


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """The decoded (user, password) of a URL's userinfo; (None, None) when it has none."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return None, None
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return user, password


def strip_url_credentials(url: str) -> str:
    """`url` without its userinfo, e.g. for a git remote stored on disk or shown to people."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class RedactingFilter(logging.Filter):
    """Rewrites log records so no registered secret survives formatting.

    Attach it to handlers (not loggers): a logger's filters skip records from child loggers.
    The message is formatted here, once, and the exception text rendered and redacted, so a
    formatter further down sees only masked text.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a bad format call must not break the caller
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = self.redactor.redact(message)
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True
