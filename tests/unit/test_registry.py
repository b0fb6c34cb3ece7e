"""Every job handlers/ enqueues is in the trigger table, and the table's jobs resolve by the
dotted path RQ stores."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from bot import wsgi
from handlers import registry

ROOT = Path(__file__).resolve().parents[2]
# Where the job sits among the arguments of each queue call.
JOB_ARGUMENT = {"enqueue": 0, "enqueue_at": 1, "enqueue_once": 2}


def enqueued_names() -> set[str]:
    """The final name of every function passed as the job to a queue call in handlers/."""
    names = set()
    for path in (ROOT / "handlers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in JOB_ARGUMENT
                    and len(node.args) > JOB_ARGUMENT[node.func.attr]):
                job = node.args[JOB_ARGUMENT[node.func.attr]]
                names.add(job.attr if isinstance(job, ast.Attribute) else ast.unparse(job))
    return names


def test_every_enqueued_job_is_a_registered_trigger():
    registered = {trigger.job.__name__ for trigger in registry.TRIGGERS}
    assert enqueued_names() - registered == set()
    assert {"tick", "measured", "open_revert", "restore", "report_final", "flush"} <= \
        enqueued_names()  # the scan finds what it looks for


def test_each_job_resolves_by_its_dotted_path():
    for trigger in registry.TRIGGERS:
        module = importlib.import_module(trigger.job.__module__)
        assert getattr(module, trigger.job.__qualname__) is trigger.job, trigger.name


def test_the_webhook_jobs_come_from_the_table():
    assert wsgi.JOBS.merged is registry.job("merge")
    assert wsgi.JOBS.command is registry.job("command")
    assert wsgi.JOBS.check_action is registry.job("check run action")
