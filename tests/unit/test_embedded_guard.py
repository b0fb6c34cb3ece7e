"""The embedded queue stays in one process: `coalmine serve` starts one gunicorn worker and
says so when more were asked for; a second process claiming the embedded queue for the same
data directory is refused with the holder's pid and what to do (a real child process holds the
lock, as a second gunicorn worker would)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import embedded_guard

ROOT = Path(__file__).resolve().parents[2]
CLAIM = """
import sys
from bot import embedded_guard
try:
    embedded_guard.claim(sys.argv[1])
except embedded_guard.EmbeddedInUse as exc:
    print(exc)
    raise SystemExit(3)
print("claimed")
"""


@pytest.mark.parametrize(("requested", "env", "embedded", "count", "noted"), [
    (None, {}, True, 1, None),
    (1, {}, True, 1, None),
    (4, {}, True, 1, "--workers"),
    (None, {"WEB_CONCURRENCY": "3"}, True, 1, "WEB_CONCURRENCY"),
    (None, {"WEB_CONCURRENCY": "1"}, True, 1, None),
    (None, {}, False, 2, None),
    (None, {"WEB_CONCURRENCY": "5"}, False, 5, None),
    (3, {"WEB_CONCURRENCY": "5"}, False, 3, None),
    (None, {"WEB_CONCURRENCY": "lots"}, False, 2, None),
])
def test_serve_runs_one_worker_without_redis_and_says_so(requested, env, embedded, count,
                                                         noted):
    got, note = embedded_guard.web_workers(requested, env, embedded)
    assert got == count
    if noted is None:
        assert note is None
    else:
        assert note is not None and noted in note and "REDIS_URL" in note
        assert note.startswith("coalmine serve: starting 1 worker, not ")


def claim_in_child(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLAIM, str(data_dir)], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_second_process_cannot_claim_the_embedded_queue(tmp_path):
    lock = embedded_guard.claim(str(tmp_path / "data"))
    try:
        assert embedded_guard.claim(str(tmp_path / "data")) == lock  # the holder again: fine
        refused = claim_in_child(tmp_path / "data")
        assert refused.returncode == 3
        assert f"process {os.getpid()} already runs it for {tmp_path / 'data'}" in refused.stdout
        assert "set REDIS_URL" in refused.stdout
        assert claim_in_child(tmp_path / "other").stdout == "claimed\n"  # per data directory
    finally:
        embedded_guard.release(lock)
    assert claim_in_child(tmp_path / "data").stdout == "claimed\n"


def test_a_holder_that_died_leaves_no_lock_behind(tmp_path):
    assert claim_in_child(tmp_path).stdout == "claimed\n"  # exited holding it
    lock = embedded_guard.claim(str(tmp_path))
    embedded_guard.release(lock)
