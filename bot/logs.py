"""Logging set-up: one format for web and worker, JSON lines or text, every secret redacted.

Why JSON: a log collector (Loki, Cloud Logging, Elasticsearch) can then filter one delivery's or
one rollout's lines without parsing prose. Text stays for a person at a terminal. The format is
COALMINE_LOG_FORMAT (`json` or `text`); unset, it is text on a terminal and JSON elsewhere.

Why a context: a merge job logs from a dozen modules (mirrors, cluster, outbox) that know nothing
of the delivery that started it. Job entry points declare what they know with `job_context`
(delivery id, repository, PR, sha, app); `log_context` carries it in a contextvar for the
duration of the job, and `ContextFilter` puts it on every record logged meanwhile, with the
job id (RQ's current job, or the embedded queue's).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TextIO, TypeVar

from pythonjsonlogger.json import JsonFormatter
from rq import get_current_job

from bot import keys
from bot.config import ConfigError, Settings
from bot.redact import RedactingFilter, Redactor

# One redactor per process, shared by the log filter, git mirrors and error reports, so a token
# learnt anywhere (an installation token in a clone URL, say) is hidden everywhere.
PROCESS_REDACTOR = Redactor()

# The fields a job's lines carry, in the order the text format prints them.
CONTEXT_FIELDS = ("job_id", "delivery", "forge", "repo", "pr", "sha", "app")
LOG_FORMAT_ENV = "COALMINE_LOG_FORMAT"
LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("coalmine_log_context", default=_EMPTY)

F = TypeVar("F", bound=Callable[..., Any])


def _merged(fields: Mapping[str, object]) -> Mapping[str, str]:
    """The current context with `fields` added; None and "" leave a field as it was."""
    known = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
    return MappingProxyType({**_CONTEXT.get(), **known}) if known else _CONTEXT.get()


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Every line logged in the block (in this thread or task) carries `fields`."""
    token = _CONTEXT.set(_merged(fields))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**fields: object) -> None:
    """Add fields learnt midway (a rollout's PR once its record is loaded) to the enclosing
    `log_context`, which drops them when it ends. Outside one they would outlive the job, so
    only call it from code that runs inside a job (`job_context`)."""
    _CONTEXT.set(_merged(fields))


def current_log_context() -> Mapping[str, str]:
    return _CONTEXT.get()


def job_context(fields: Callable[..., Mapping[str, object]]) -> Callable[[F], F]:
    """Decorate an RQ entry point: `fields(*args)` names what its arguments tell (delivery,
    repository, PR...), and every line the job logs carries it with the job id.

    `functools.wraps` keeps the module and qualified name, so jobs already queued under the
    function's dotted path still find it, and leases still name it the same way. A `fields`
    that fails (an old job's arguments of another shape) costs the context, never the job.
    """
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                known = dict(fields(*args, **kwargs))
            except Exception:  # noqa: BLE001 - the job must run whatever its arguments
                known = {}
            job = get_current_job()
            if job is not None:
                known.setdefault("job_id", job.id)
            with log_context(**known):
                return func(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def rollout_fields(key: str, revision: str | None = None) -> dict[str, object]:
    """Context of a rollout job from its key (forge, repository, app) and revision."""
    parsed = keys.parse_rollout(key)
    if parsed is None:
        return {"sha": revision}
    forge, repo, app = parsed
    return {"forge": forge, "repo": repo, "app": app, "sha": revision}


# Rollout jobs are handed the rollout key first, and some the revision after it.
rollout_job = job_context(lambda key, *_, **__: rollout_fields(key))
revision_job = job_context(lambda key, revision, *_, **__: rollout_fields(key, revision))


def repo_job_fields(repo_data: Mapping[str, Any], number: int, sha: str,
                    *_: object) -> dict[str, object]:
    """Context of a job handed a repository as a dict (outbox), a PR number and a sha."""
    return {"forge": repo_data.get("forge"), "repo": repo_data.get("full_name"), "pr": number,
            "sha": sha}


class ContextFilter(logging.Filter):
    """Puts the job's context on each record as attributes (`record.delivery`...), which the
    JSON formatter writes as fields and the text formatter appends. Attach it to handlers, like
    the redacting filter, so records of every logger get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        for name in CONTEXT_FIELDS:
            if name in context and not hasattr(record, name):
                setattr(record, name, context[name])
        if not hasattr(record, "job_id"):
            job = get_current_job()  # an RQ job that declared no context still has an id
            if job is not None:
                record.job_id = job.id
        return True


class TextFormatter(logging.Formatter):
    """The classic line, then the context in brackets: `... [job_id=1f2e repo=o/r pr=7]`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
                          if hasattr(record, name))
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [{fields}]{newline}{rest}"


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines: time (ISO 8601, UTC), level, logger, message, the context, `exc_info`.

    The redacting filter already masked the message and the exception; values passed with
    `extra=` reach the JSON untouched by it, so every string value is masked here too, before
    it is escaped (a masked line could otherwise hide a secret behind JSON escapes).
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("{levelname}{name}{message}", style="{", timestamp="time",
                         rename_fields={"levelname": "level", "name": "logger"},
                         json_ensure_ascii=False)  # "→" stays readable, not "\u2192"
        self.redactor = redactor

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: self._redact(value) for key, value in log_data.items()}

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redactor.redact(value)
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact(v) for v in value]
        return value


def log_format(env: Mapping[str, str], stream: TextIO) -> str:
    """`json` or `text`, from COALMINE_LOG_FORMAT or, unset, from whether `stream` is a TTY."""
    chosen = (env.get(LOG_FORMAT_ENV) or "").strip().lower()
    if not chosen:
        return "text" if stream.isatty() else "json"
    if chosen not in LOG_FORMATS:
        raise ConfigError(LOG_FORMAT_ENV, "", f"{chosen!r} must be one of {', '.join(LOG_FORMATS)}")
    return chosen


def make_handler(fmt: str, redactor: Redactor, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler with the context and redacting filters and the chosen formatter."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(RedactingJsonFormatter(redactor) if fmt == "json"
                         else TextFormatter(TEXT_FORMAT))
    return handler


def setup_logging(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Install the process's handler once; ConfigError on a bad COALMINE_LOG_FORMAT."""
    fmt = log_format(os.environ if env is None else env, sys.stderr)
    PROCESS_REDACTOR.add(*settings.secrets())
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        root.addHandler(make_handler(fmt, PROCESS_REDACTOR))
    root.setLevel(settings.log_level)
