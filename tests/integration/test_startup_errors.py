"""A bad setting stops `coalmine serve`, `coalmine worker` and gunicorn's app factory with one
line naming the variable or file at fault, not a traceback, through real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD = {
    "COALMINE_CONFIG": ("/nonexistent/coalmine.yaml",
                        "/nonexistent/coalmine.yaml: cannot read: No such file or directory"),
    "COALMINE_GITHUB_MIN_PERMISSION": (
        "writer", "COALMINE_GITHUB_MIN_PERMISSION: 'writer' must be one of read, write, admin"),
    "COALMINE_LOG_FORMAT": ("xml", "COALMINE_LOG_FORMAT: 'xml' must be one of json, text"),
}


def run(argv: list[str], name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COALMINE_", "GITHUB_", "GITLAB_", "REDIS_URL"))}
    env.update({"COALMINE_REPOS": "acme/gitops=shop", "COALMINE_DATA_DIR": str(tmp_path),
                "PYTHONPATH": str(ROOT), name: BAD[name][0]})
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
                          check=False)


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_cli_reports_a_bad_setting_in_one_line(command: str, name: str, tmp_path: Path):
    done = run([sys.executable, "-m", "bot.cli", command], name, tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"coalmine {command}: configuration error: {BAD[name][1]}\n"


@pytest.mark.parametrize("name", sorted(BAD))
def test_gunicorn_stops_on_the_factorys_one_line_instead_of_a_traceback(name: str, tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    done = run([str(gunicorn), "--bind", "127.0.0.1:0", "--workers", "1",
                "bot.wsgi:create_app()"], name, tmp_path)
    assert done.returncode == 3  # the arbiter halts: "Worker failed to boot", no respawning
    assert f"coalmine web: configuration error: {BAD[name][1]}\n" in done.stderr
    assert "Traceback" not in done.stderr
