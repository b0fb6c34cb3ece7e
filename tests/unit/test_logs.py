"""Log lines: the job's context on every line, JSON or text, and no secret in either."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from bot.config import ConfigError, load_settings
from bot.logs import (
    bind_log_context,
    current_log_context,
    job_context,
    log_context,
    log_format,
    make_handler,
    revision_job,
    rollout_job,
)
from bot.queue import EmbeddedJobQueue
from bot.redact import MASK, Redactor

TOKEN = "ghs_unitTestToken0123456789"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    """A logger writing through a JSON and a text handler, each to its own buffer."""
    redactor = Redactor([TOKEN])
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    logger = logging.getLogger("tests.unit.test_logs")
    handlers = [make_handler(fmt, redactor, stream) for fmt, stream in streams.items()]
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, streams
    finally:
        for handler in handlers:
            logger.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_carries_the_context_known_where_it_was_logged(capture):
    logger, streams = capture
    with log_context(delivery="d-1", repo="acme/gitops", pr=7, sha="abc1234", job_id="j-9"):
        logger.info("applied %d objects", 3)
    logger.info("outside any job")
    inside, outside = json_lines(streams["json"])
    assert inside["message"] == "applied 3 objects"
    assert (inside["level"], inside["logger"]) == ("INFO", "tests.unit.test_logs")
    assert {k: inside[k] for k in ("delivery", "repo", "pr", "sha", "job_id")} == {
        "delivery": "d-1", "repo": "acme/gitops", "pr": "7", "sha": "abc1234", "job_id": "j-9"}
    assert "time" in inside
    assert not {"delivery", "repo", "pr", "sha", "job_id", "app"} & outside.keys()


def test_a_text_line_appends_the_context_after_the_message(capture):
    logger, streams = capture
    with log_context(repo="acme/gitops", app="web"):
        logger.info("tick")
    line = streams["text"].getvalue().strip()
    assert line.endswith("tests.unit.test_logs: tick [repo=acme/gitops app=web]")


def test_a_token_in_the_message_an_exception_or_an_extra_never_reaches_either_format(capture):
    logger, streams = capture
    with log_context(delivery="d-2"):
        logger.warning("clone https://x-access-token:%s@github.example/a/b failed", TOKEN)
        try:
            raise RuntimeError(f"refused: Authorization: token {TOKEN}")
        except RuntimeError:
            logger.exception("deploy failed")
        logger.info("pushed", extra={"remote": f"https://x:{TOKEN}@h/r.git"})
    for text in streams.values():
        assert TOKEN not in text.getvalue()
        assert MASK in text.getvalue()
    clone, failed, pushed = json_lines(streams["json"])
    assert clone["message"] == f"clone https://x-access-token:{MASK}@github.example/a/b failed"
    assert "RuntimeError: refused" in failed["exc_info"] and failed["delivery"] == "d-2"
    assert pushed["remote"] == f"https://x:{MASK}@h/r.git"
    assert "Traceback" in streams["text"].getvalue()  # the text keeps its (masked) traceback


def test_the_format_is_chosen_by_env_or_by_whether_stderr_is_a_terminal():
    assert log_format({}, Tty()) == "text"
    assert log_format({}, io.StringIO()) == "json"
    assert log_format({"COALMINE_LOG_FORMAT": "JSON"}, Tty()) == "json"
    assert log_format({"COALMINE_LOG_FORMAT": "text"}, io.StringIO()) == "text"
    with pytest.raises(ConfigError, match="COALMINE_LOG_FORMAT: 'xml' must be one of json, text"):
        log_format({"COALMINE_LOG_FORMAT": "xml"}, io.StringIO())


def test_job_context_keeps_the_job_importable_and_drops_its_context_afterwards():
    seen = []

    @job_context(lambda event: {"delivery": event["id"], "pr": event["pr"]})
    def job(event: dict) -> str:
        bind_log_context(sha="f00d")
        seen.append(dict(current_log_context()))
        return "done"

    assert job({"id": "d-3", "pr": 4}) == "done"
    assert seen == [{"delivery": "d-3", "pr": "4", "sha": "f00d"}]
    assert dict(current_log_context()) == {}
    assert job.__qualname__.endswith("job") and job.__module__ == __name__


def test_a_job_whose_arguments_do_not_fit_still_runs_without_context():
    @job_context(lambda event: {"delivery": event.delivery})
    def job(event: object) -> str:
        return str(dict(current_log_context()))

    assert job("an old job's argument") == "{}"


def test_rollout_jobs_name_forge_repository_app_and_revision_from_the_key():
    key = "coalmine:rollout:gitlab:group/ops:api"
    seen = []
    rollout_job(lambda key, version: seen.append(dict(current_log_context())))(key, 3)
    revision_job(lambda key, revision, seq: seen.append(dict(current_log_context())))(
        key, "c0ffee1", 2)
    assert seen == [{"forge": "gitlab", "repo": "group/ops", "app": "api"},
                    {"forge": "gitlab", "repo": "group/ops", "app": "api", "sha": "c0ffee1"}]


def test_a_bad_permission_env_var_is_reported_as_that_variable():
    with pytest.raises(ConfigError) as exc:
        load_settings({"COALMINE_GITHUB_MIN_PERMISSION": "writer"})
    assert str(exc.value) == ("COALMINE_GITHUB_MIN_PERMISSION: 'writer' must be one of "
                              "read, write, admin")
    with pytest.raises(ConfigError, match="^COALMINE_GITLAB_MIN_ACCESS: 'boss'"):
        load_settings({"COALMINE_GITLAB_MIN_ACCESS": "boss"})


def test_a_job_of_the_embedded_queue_logs_with_its_job_id(capture):
    logger, streams = capture
    queue = EmbeddedJobQueue()
    done = threading.Event()
    try:
        job_id = queue.enqueue(lambda: (logger.info("ran"), done.set()))
        assert done.wait(10)
    finally:
        queue.stop()
    [line] = json_lines(streams["json"])
    assert line["job_id"] == job_id and line["message"] == "ran"
