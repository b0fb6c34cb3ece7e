"""The shipped start commands go through `coalmine serve`, which keeps the embedded queue in one
process (two gunicorn workers without REDIS_URL made two queues, and one delivery id was
accepted twice) and prepares the shared metrics directory for several workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_procfile_web_process_is_coalmine_serve():
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if line.strip())
    assert lines["web"].split()[:2] == ["coalmine", "serve"]
    assert lines["worker"].split() == ["coalmine", "worker"]


def test_the_image_starts_coalmine_serve():
    cmd = re.search(r"^CMD (.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert cmd is not None and json.loads(cmd.group(1)) == ["coalmine", "serve"]
