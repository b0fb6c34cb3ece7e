"""`coalmine demo` as a newcomer runs it: the venv's command, no input, no outside service.

It must tell the whole story (a good release promoted, a bad one aborted with a revert PR),
exit 0 by itself, and leave nothing behind: no process of its session, no listening port, no
temporary directory; also when it is interrupted half-way.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.harness.bot import REPO_ROOT

COALMINE = Path(sys.executable).with_name("coalmine")
RUN_TIMEOUT_S = 240  # the demo takes about 25 s alone; this only bounds a hung run
# Above the suite's 120 s default: on a machine busy with the rest of the suite the demo is
# slower, and pytest-timeout killing it would leave its processes behind.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(RUN_TIMEOUT_S + 60)]


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(COALMINE), "demo"], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own session: what is left of it can be found afterwards
    )


def _session_members(sid: int) -> list[str]:
    """Processes still in session `sid` (the demo's children, had it left any)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces, so split after it
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[3]) == sid:
            found.append(text[: text.rindex(")") + 1])
    return found


def _listening(url: str) -> bool:
    host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def _assert_nothing_left(proc: subprocess.Popen[str], output: str) -> None:
    urls = sorted(set(re.findall(r"http://127\.0\.0\.1:\d+", output)))
    assert len(urls) >= 5, output  # kube, GitHub, git, metrics, the bot
    assert [u for u in urls if _listening(u)] == []
    assert _session_members(proc.pid) == []
    workdir = Path(re.search(r"files in (\S+)\)", output).group(1))
    assert workdir.name.startswith("coalmine-demo-") and not workdir.exists()


def test_the_demo_promotes_a_good_release_and_reverts_a_bad_one():
    proc = _start()
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output
    good = output.index("2/3  a good release")
    bad = output.index("3/3  a bad release")
    assert "status   coalmine/web: success - promoted" in output[good:bad]
    assert "status   coalmine/web: failure - aborted: step 3 analysis failed" in output[bad:]
    assert re.search(r"revert PR #\d+ opened: 'Revert \"Web 3.0\"'", output[bad:])
    # The comment as it evolved, and the final one naming the revert PR.
    assert "comment (edited; new lines)" in output[good:bad]
    final = output[output.index("comment (final)"):]
    assert "Revert PR opened" in final and "Aborted" in final
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/dashboard/  token: \S{32,}", output)
    _assert_nothing_left(proc, output)


def test_an_interrupted_demo_stops_everything_it_started():
    proc = _start()
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while True:  # until the good release is being rolled out
            line = lines.get(timeout=RUN_TIMEOUT_S)
            assert line is not None, "".join(seen)
            seen.append(line)
            if "rollout  step 1/5" in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=30)
    while (line := lines.get_nowait() if not lines.empty() else None) is not None:
        seen.append(line)
    output = "".join(seen)
    assert proc.returncode == 130, output
    assert "interrupted; everything it started is stopped" in output
    _assert_nothing_left(proc, output)
