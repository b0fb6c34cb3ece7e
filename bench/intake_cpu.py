"""CPU per webhook delivery inside one process: where an accepted delivery's time goes.

The load benchmark (bench/webhook_intake.py) shares 2 cores between gunicorn, redis-server and
the load generator, so its figures move with everything else on the machine. This one calls the
apps the way gunicorn does (a WSGI environ with the body as `wsgi.input`), one request after the
other in this process, with the same signed ~25 KB merges and ~10 % redeliveries as the load
generator, and counts this process's CPU (`time.process_time`): the bare Flask reference, and
Coalmine on a private redis-server with each stage of the accepted path timed on its own.

Stages are timed by wrapping the functions the edge calls (measurement only; the wrapping costs
about a microsecond per stage). "Flask, werkzeug and the rest" is the total minus the stages.

    .venv/bin/python -m bench.intake_cpu [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.job import Job

from bench import bare_app
from bench.common import GH_SECRET, header, redis_server, table, workdir
from bench.loadgen import plan
from bot import events, queue, services, web, wsgi
from bot.config import Settings

WARM_UP = 200


def environ(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """What gunicorn hands the app for one POST of `body`."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/github", "SCRIPT_NAME": "",
        "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[f"HTTP_{key}"] = value
    return env


def serve_all(app: Callable, envs: list[dict[str, Any]]) -> dict[str, int]:
    """Calls the app for each environ; returns how many answers had each status."""
    statuses: dict[str, int] = {}

    def start_response(status: str, _headers: list, _exc_info: Any = None) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    for env in envs:
        env["wsgi.input"].seek(0)
        for _ in app(env, start_response):
            pass
    return statuses


class Stages:
    """CPU seconds spent in each wrapped function, and how often it ran."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Times `owner.attr` under `label` (several functions may share one); a function this
        version of the bot lacks is skipped, so an older tree can be measured the same way."""
        inner = getattr(owner, attr, None)
        if inner is None:
            return
        spent = self.spent.setdefault(label, [0.0, 0])

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - start
                spent[1] += 1

        setattr(owner, attr, timed)

    def reset(self) -> None:
        for spent in self.spent.values():
            spent[0], spent[1] = 0.0, 0


def timed_round(app: Callable, envs: list[dict[str, Any]]) -> tuple[float, dict[str, int]]:
    start = time.process_time()
    statuses = serve_all(app, envs)
    return (time.process_time() - start) / len(envs), statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    header(f"intake CPU in one process: {args.requests} signed ~25 KB merges per round, "
           f"median of {args.rounds} rounds")
    with workdir("intake-cpu") as tmp, redis_server(tmp) as server:
        os.environ.update({"REDIS_URL": server.url, "GITHUB_WEBHOOK_SECRET": GH_SECRET,
                           "COALMINE_DATA_DIR": str(tmp / "data"),
                           "COALMINE_REPOS": "acme/gitops=shop"})
        apps = {"bare": bare_app.create_app(), "coalmine": wsgi.create_app()}
        svc = services.current()
        stages = Stages()
        stages.wrap(web, "_read_body", "body read + HMAC")  # before bot/body_gate.py
        stages.wrap(web, "read_body", "body read + HMAC")
        stages.wrap(web, "_json", "JSON parse")
        stages.wrap(events, "parse_github", "event parse")
        stages.wrap(Settings, "entry_for", "repos entry")
        # The job hash: RQ's create_job + to_dict per call before JobTemplate (56b9768 and
        # older), the template's fill after it (where RQ builds only the template, once).
        stages.wrap(getattr(queue, "JobTemplate", None), "fill", "RQ job fields")
        stages.wrap(Queue, "create_job", "RQ job fields")
        stages.wrap(Job, "to_dict", "RQ job fields")
        stages.wrap(svc.queue, "_enqueue_once", "Redis script call (EVALSHA)")
        stages.wrap(web, "_answer", "JSON answer")
        totals: dict[str, list[float]] = {"bare": [], "coalmine": []}
        per_stage: dict[str, list[float]] = {label: [] for label in stages.spent}
        answers: dict[str, int] = {}
        for round_no in range(args.rounds):
            requests = plan(args.requests + WARM_UP, GH_SECRET, 20800, 0.10, seed=round_no + 1)
            envs = [environ(body, headers) for _, body, headers in requests]
            for name, app in apps.items():
                svc.redis.flushall()
                serve_all(app, envs[:WARM_UP])
                stages.reset()
                per_request, statuses = timed_round(app, envs[WARM_UP:])
                totals[name].append(per_request)
                if name == "coalmine":
                    answers = statuses
                    for label, (spent, _) in stages.spent.items():
                        per_stage[label].append(spent / args.requests)
    bare, coal = statistics.median(totals["bare"]), statistics.median(totals["coalmine"])
    rows = [["", "µs CPU per request", "share of Coalmine's"]]
    stage_sum = 0.0
    for label, values in per_stage.items():
        spent = statistics.median(values)
        stage_sum += spent
        rows.append([f"  {label}", f"{1e6 * spent:.1f}", f"{100 * spent / coal:.0f} %"])
    rows.append(["  Flask, werkzeug and the rest", f"{1e6 * (coal - stage_sum):.1f}",
                 f"{100 * (coal - stage_sum) / coal:.0f} %"])
    rows.insert(1, ["Coalmine, whole request", f"{1e6 * coal:.1f}", "100 %"])
    rows.append(["bare Flask, whole request", f"{1e6 * bare:.1f}", ""])
    print(table(rows))
    print(f"   Coalmine's answers (last round): {answers}; every round: "
          + ", ".join(f"{1e6 * v:.0f}" for v in totals["coalmine"]) + " µs; bare: "
          + ", ".join(f"{1e6 * v:.0f}" for v in totals["bare"]) + " µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
