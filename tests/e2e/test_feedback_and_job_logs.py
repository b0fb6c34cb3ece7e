"""A served repository whose merge commit has no `.coalmine.yaml` hears so on the PR, on both
forges; and every line the merge job logs names its delivery, job, repository, PR and sha.

The job runs in this process on a real RQ worker (burst), so the test's log handler sees the
records the job wrote, with the context the job's entry point set.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rq import SimpleWorker

from bot.logs import PROCESS_REDACTOR, make_handler
from bot.queue import QUEUE_NAME
from tests.e2e import world as w

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["github", "gitlab"])
def world(request) -> w.World:
    return request.getfixturevalue(f"{request.param}_world")


@contextmanager
def json_log() -> Iterator[io.StringIO]:
    """Every record logged in the block, as the JSON lines a worker writes."""
    stream = io.StringIO()
    handler = make_handler("json", PROCESS_REDACTOR, stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_jobs(world: w.World) -> None:
    SimpleWorker([QUEUE_NAME], connection=world.bot.redis).work(burst=True)


def coalmine_comment(world: w.World, number: int) -> list[str]:
    """Coalmine's comments on the PR, markdown escapes removed."""
    return [c["body"].replace("\\", "") for c in w.comments(world, number)
            if "<!-- coalmine:pr-comment -->" in c["body"]]


def test_a_merge_without_config_gets_a_success_status_and_one_comment_saying_so(world):
    number, sha, resp = w.merge(world, {".coalmine.yaml": None}, "Stop deploying",
                                delivery="d-no-config")
    assert resp.status_code == 202, resp.get_json()
    with json_log() as log:
        run_jobs(world)

    statuses = w.latest_statuses(world, sha)
    assert set(statuses) == {"coalmine/config"}, statuses
    assert statuses["coalmine/config"]["state"] == "success"
    assert statuses["coalmine/config"]["description"] == "no .coalmine.yaml: nothing to deploy"
    [body] = coalmine_comment(world, number)
    assert "This commit has no .coalmine.yaml, so Coalmine deployed nothing" in body
    assert ".coalmine.yml" not in body

    # The job's own lines carry its ids (RQ's lines around the job are not the job's).
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    job_lines = [line for line in lines if line["logger"].startswith(("bot.", "handlers."))]
    assert any("has no .coalmine.yaml" in line["message"] for line in job_lines), lines
    for line in job_lines:
        assert line.get("delivery") == "d-no-config", line
        assert line.get("repo") == w.REPO and line.get("pr") == str(number), line
        assert line.get("sha") == sha and line.get("forge") == world.forge, line
        assert line.get("job_id"), line


def test_a_misnamed_coalmine_yml_is_named_in_the_status_and_the_comment(world):
    number, sha, resp = w.merge(world, {".coalmine.yaml": None,
                                        ".coalmine.yml": w.PLAIN_CONFIG}, "Rename config")
    assert resp.status_code == 202, resp.get_json()
    run_jobs(world)

    status = w.latest_statuses(world, sha)["coalmine/config"]
    assert status["state"] == "success"
    assert status["description"] == ("no .coalmine.yaml (.coalmine.yml is not read): "
                                      "nothing to deploy")
    [body] = coalmine_comment(world, number)
    assert "This commit has .coalmine.yml but no .coalmine.yaml" in body
    assert "Rename the file" in body
