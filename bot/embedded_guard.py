"""The embedded queue is never split across processes.

Without REDIS_URL the queue and the store live in one process's memory. A second process
(a second gunicorn worker, WEB_CONCURRENCY=2, a preloaded app copied into forked workers,
another `coalmine serve` on the same data directory) would hold a second queue and a second
dedupe table, and accept one delivery twice. `coalmine serve` runs one worker in that mode;
every other way in is refused here, with one line saying why and what to do:

- `claim(data_dir)` takes an exclusive lock on a file in the data directory for the life of
  the process; a second process that tries fails at once (the OS drops the lock when its holder
  dies, so a crash never leaves it behind);
- `refuse_forks()` makes a forked copy of the process that holds the embedded queue exit: the
  copy would hold the queue's objects without the thread that runs its jobs.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

LOCK_NAME = "embedded.lock"
# Gunicorn's code for a worker that cannot boot: its arbiter halts instead of respawning.
BOOT_ERROR = 3
HOW_TO = ("run one web process (`coalmine serve` does), or set REDIS_URL to run several "
          "processes and `coalmine worker`")

_held: dict[str, IO[str]] = {}  # path -> open lock file, kept open for the process's life
_forks_refused = False


class EmbeddedInUse(RuntimeError):
    """Another live process already runs the embedded queue for this data directory."""


def web_workers(requested: int | None, env: Mapping[str, str],
                embedded: bool) -> tuple[int, str | None]:
    """How many gunicorn workers `coalmine serve` starts, and a note when it starts fewer
    than asked: `--workers`, else WEB_CONCURRENCY (as gunicorn reads it), else 2 with Redis;
    always 1 with the embedded queue."""
    asked = requested
    if asked is None:
        text = env.get("WEB_CONCURRENCY", "").strip()
        asked = int(text) if text.isdigit() and int(text) > 0 else None
    if not embedded:
        return asked or 2, None
    if asked is not None and asked > 1:
        source = "--workers" if requested is not None else "WEB_CONCURRENCY"
        return 1, (f"coalmine serve: starting 1 worker, not {asked} ({source}): without "
                   "REDIS_URL the embedded queue lives in one process; set REDIS_URL to run "
                   "several")
    return 1, None


def claim(data_dir: str) -> Path:
    """Hold the embedded queue's lock for this process; returns the lock file's path.

    Raises EmbeddedInUse naming the holder's pid when another process holds it. Claiming
    again from the process that holds it is a no-op."""
    path = Path(data_dir) / LOCK_NAME
    key = str(path.resolve())
    if key in _held:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise EmbeddedInUse(
            f"the embedded queue (no REDIS_URL) runs in one process, and process {holder} "
            f"already runs it for {data_dir}; {HOW_TO}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[key] = handle
    return path


def release(path: Path) -> None:
    """Let go of a lock `claim` took (tests; a process's exit does it otherwise)."""
    handle = _held.pop(str(path.resolve()), None)
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def refuse_forks() -> None:
    """From now on, a forked child of this process says why and exits with BOOT_ERROR
    (gunicorn --preload forks its workers from the process that built the app). Subprocesses
    are unaffected: they are spawned without running Python's fork hooks."""
    global _forks_refused
    if not _forks_refused:
        os.register_at_fork(after_in_child=_exit_forked_copy)
        _forks_refused = True


def _exit_forked_copy() -> None:
    print("coalmine web: the embedded queue (no REDIS_URL) cannot be copied into a forked "
          f"process (gunicorn --preload); {HOW_TO}", file=sys.stderr, flush=True)
    os._exit(BOOT_ERROR)
