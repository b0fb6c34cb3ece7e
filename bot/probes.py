"""Container health probes: is this container's worker alive, is its web process serving.

Kubernetes runs `python -m bot.probes worker` in the worker pod (deploy/base/worker.yaml);
Docker runs `python -m bot.probes` as the image's HEALTHCHECK, which probes whichever process
the container runs. `coalmine probe` is the same command. The module imports only redis, rq
and the standard library (about half of bot.cli's start-up), since a probe runs every few
seconds for the life of the pod.

The worker's heartbeat is RQ's own: a registered worker keeps a key in Redis that expires
unless the worker renews it, between jobs every few minutes (RQ's worker TTL) and during a job
for the job's timeout plus a minute. A worker that is dead, or stuck past that, has no key. The
probe looks for a live key of a worker on this host (a pod's hostname is its name) whose
process exists here.

Liveness and readiness differ on a Redis outage: readiness fails (the worker can do nothing),
liveness passes, since restarting the worker cannot bring Redis back and RQ reconnects by
itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from rq import Worker

HEALTHY, UNHEALTHY = 0, 1
DEFAULT_PORT = "8000"
WEB_PATH = "/livez"  # answers while the process serves, Redis or not (bot.web)
TIMEOUT_S = 4.0


def web(port: str | None = None, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """The web process on this host answers /livez."""
    url = f"http://127.0.0.1:{port or os.environ.get('PORT') or DEFAULT_PORT}{WEB_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return UNHEALTHY, f"web: {url}: {getattr(exc, 'reason', None) or exc}"
    if status != 200:
        return UNHEALTHY, f"web: {url} answered {status}"
    return HEALTHY, f"web: {url} answered 200"


def worker(redis: Redis, *, ready: bool, hostname: str | None = None) -> tuple[int, str]:
    """An RQ worker of this host (its process alive here) holds a live key in Redis."""
    host = hostname or socket.gethostname()
    try:
        mine = [w for w in Worker.all(connection=redis) if w.hostname == host]
    except RedisError as exc:
        if ready:
            return UNHEALTHY, f"worker: Redis unreachable: {exc}"
        return HEALTHY, (f"worker: Redis unreachable ({exc}); alive as far as a probe can tell "
                         "(a restart would not bring Redis back)")
    alive = [w for w in mine if w.pid is not None and _process_exists(w.pid)]
    if not alive:
        others = f" ({len(mine)} registered here without a live process)" if mine else ""
        return UNHEALTHY, (f"worker: no RQ worker of host {host} holds a live heartbeat key in "
                           f"Redis{others}: the worker is not running, still starting, or "
                           "stuck past its heartbeat")
    found = alive[0]
    return HEALTHY, f"worker: {found.name} (pid {found.pid}) is {found.get_state()}"


def role_of(cmdline: Sequence[str]) -> str:
    """"worker" for a `coalmine worker` command line, "web" for anything else."""
    words = [Path(word).name for word in cmdline]
    for i, word in enumerate(words):
        if word in ("coalmine", "bot.cli") and "worker" in words[i + 1:]:
            return "worker"
    return "web"


def main_command_line() -> list[str]:
    """The command line of the container's main process (PID 1)."""
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", nargs="?", choices=("auto", "web", "worker"), default="auto",
                        help="what to probe; auto (the default, Docker's HEALTHCHECK) picks "
                             "the process the container runs")
    parser.add_argument("--ready", action="store_true",
                        help="readiness: a worker is also unready while Redis is unreachable")


def run(args: argparse.Namespace) -> int:
    role = role_of(main_command_line()) if args.role == "auto" else args.role
    if role == "web":
        code, text = web()
    else:
        url = os.environ.get("REDIS_URL")
        if not url:
            code, text = UNHEALTHY, "worker: REDIS_URL is not set"
        else:
            client = Redis.from_url(url, socket_timeout=TIMEOUT_S,
                                    socket_connect_timeout=TIMEOUT_S)
            code, text = worker(client, ready=args.ready)
    print(text, file=sys.stdout if code == HEALTHY else sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.probes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


if __name__ == "__main__":
    raise SystemExit(main())
