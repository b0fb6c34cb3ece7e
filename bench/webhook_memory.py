"""Memory of the web process under a flood of large unsigned webhook bodies, before and after.

Runs the Procfile's web command (`gunicorn --workers 2 --threads 8`) with REDIS_URL on a private
redis-server, then 24 clients at once each POST a 25 MB body to /webhooks/github with a wrong
signature, streamed in 64 KiB pieces. A sampler reads every gunicorn worker's RSS from
/proc every 20 ms. "before" serves bot/ and handlers/ as of commit BEFORE (the whole body read
with `request.get_data()` before the signature check); "after" serves the working tree's.

    .venv/bin/python -m bench.webhook_memory [--clients 24] [--mb 25]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import (
    REPO_ROOT,
    child_env,
    header,
    python,
    redis_server,
    table,
    wait_for,
    workdir,
)
from tests.harness.processes import free_port

BEFORE = "3050873"  # main before the bounded reader
PIECE = 64 * 1024


def source_tree(tmp: Path, version: str) -> tuple[Path, str]:
    """A directory to import the bot from and its gunicorn app: the working tree, or the whole
    of BEFORE's bot and handlers (its web.py alone no longer fits today's modules)."""
    if version == "after":
        return REPO_ROOT, "bot.wsgi:create_app()"
    root = tmp / "before"
    root.mkdir(exist_ok=True)
    archive = subprocess.run(["git", "archive", BEFORE, "bot", "handlers"], cwd=REPO_ROOT,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root, "bot.web:create_app()"  # BEFORE's Procfile entry


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def workers_of(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], check=False,
                         capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def flood(port: int, clients: int, size: int) -> Counter:
    """`clients` concurrent unsigned posts of `size` bytes; returns the status counts."""
    statuses: Counter = Counter()
    start = threading.Barrier(clients)

    def one() -> None:
        head = (f"POST /webhooks/github HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n"
                "Content-Type: application/json\r\nX-GitHub-Event: pull_request\r\n"
                "X-GitHub-Delivery: flood\r\nConnection: close\r\n"
                f"X-Hub-Signature-256: sha256={'0' * 64}\r\n\r\n").encode()
        piece = b" " * PIECE
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            start.wait()
            try:
                sock.sendall(head)
                for sent in range(0, size, PIECE):
                    sock.sendall(piece[: min(PIECE, size - sent)])
            except OSError:
                pass  # the server answered early and closed: read what it said
            try:
                status = sock.recv(64).split(b" ", 2)[1].decode()
            except (OSError, IndexError):
                status = "reset"
        statuses[status] += 1

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def measure(version: str, tmp: Path, redis_url: str, clients: int, size: int) -> list[str]:
    root, app = source_tree(tmp, version)
    port = free_port()
    env = child_env({"REDIS_URL": redis_url, "GITHUB_WEBHOOK_SECRET": "bench-secret",
                     "COALMINE_REPOS": "acme/gitops=shop", "COALMINE_DATA_DIR": str(tmp / "data"),
                     "COALMINE_LOG_LEVEL": "WARNING"})
    env["PYTHONPATH"] = str(root)
    gunicorn_bin = str(Path(python()).with_name("gunicorn"))
    proc = subprocess.Popen([gunicorn_bin, "--bind", f"127.0.0.1:{port}", "--workers", "2",
                             "--threads", "8", app], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 30, "two gunicorn workers", 0.1)
        time.sleep(2)  # both workers have imported the app
        workers = workers_of(proc.pid)
        idle = sum(rss_kib(p) for p in workers)
        peak = {p: 0 for p in workers}
        peak_sum = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_sum
            while not done.is_set():
                now = {p: rss_kib(p) for p in workers}
                for p, v in now.items():
                    peak[p] = max(peak[p], v)
                peak_sum = max(peak_sum, sum(now.values()))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        statuses = flood(port, clients, size)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
    finally:
        proc.terminate()
        proc.wait(10)
    mib = 1024
    return [version, f"{idle / mib:.0f}", f"{max(peak.values()) / mib:.0f}",
            f"{peak_sum / mib:.0f}", f"{elapsed:.1f}",
            " ".join(f"{k}×{v}" for k, v in sorted(statuses.items()))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--mb", type=int, default=25)
    args = parser.parse_args()
    size = args.mb * 1000 * 1000
    header(f"webhook memory: {args.clients} concurrent unsigned {args.mb} MB posts")
    rows = [["web.py", "idle RSS MiB (2 workers)", "peak RSS MiB (one worker)",
             "peak RSS MiB (2 workers)", "seconds", "answers"]]
    with workdir("webhook_memory") as tmp, redis_server(tmp) as redis:
        for version in ("before", "after"):
            rows.append(measure(version, tmp, redis.url, args.clients, size))
    print(table(rows))


if __name__ == "__main__":
    main()
