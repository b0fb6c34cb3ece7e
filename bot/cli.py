"""The `coalmine` command: serve webhooks, run a worker, check a repository, or judge cases."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

# An entry point of the composition root: adapters and use cases are imported at the top like
# anywhere else, so the import graph that import-linter checks is the one that runs.
from bot import checks, embedded_guard, metrics, probes, services, tenancy
from bot.config import ConfigError, load_settings, parse_repo_config
from bot.leases import requeue_lapsed
from bot.logs import log_format, setup_logging
from bot.queue import QUEUE_NAME, MeteredWorker, run_ticker
from handlers import drift, gate, merged
from handlers.registry import name_of
from handlers.rollout import rearm_final_reports, resume_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coalmine", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="the package version, git commit (in a checkout) and Python")
    repo_check = sub.add_parser(
        "check", help="check a checkout of a GitOps repository as a deploy would, without a "
                      "forge or a cluster: every error, each with file, key and reason "
                      "(exit 0 clean, 1 errors, 2 usage)")
    repo_check.add_argument("--repo", default=".", metavar="DIR",
                            help="the checkout's root, where .coalmine.yaml is (default: .)")
    repo_check.add_argument("--server-config", metavar="FILE",
                            help="the server config to load and check against (default: "
                                 "COALMINE_CONFIG when set)")
    repo_check.add_argument("--as", dest="as_repo", metavar="[FORGE:]OWNER/NAME",
                            help="the repository's name, to find its repos: entry and check "
                                 "clusters and namespaces against its policy")
    repo_check.add_argument("--output", choices=("text", "json"), default="text")
    serve = sub.add_parser("serve", help="serve webhooks with gunicorn (and run jobs when embedded)")
    serve.add_argument("--bind", default=f"0.0.0.0:{os.environ.get('PORT', '8000')}")
    serve.add_argument("--workers", type=int, default=None)
    worker = sub.add_parser("worker", help="run an RQ worker and the schedule ticker (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    check = sub.add_parser("check-config", help="validate a .coalmine.yaml and exit "
                                                "(the older, shorter `check`)")
    check.add_argument("path", nargs="?", default=".coalmine.yaml")
    unpin = sub.add_parser(
        "unpin-repo", help="forget which repository id a repos: entry was first served to "
                           "(after re-creating a repository on purpose)")
    unpin.add_argument("forge", choices=("github", "gitlab"))
    unpin.add_argument("repo_id", type=int)
    judge = sub.add_parser(
        "judge", help="judge canary against baseline samples: JSON Lines of cases in, one "
                      "verdict line per case out (README: Judge)")
    judge.add_argument("--cases", required=True, metavar="FILE",
                       help="JSON Lines file of cases, or - for standard input")
    probes.add_arguments(sub.add_parser("probe", help="container health (exit 0/1): the web "
                                        "process answers, or this host's worker is alive"))
    args = parser.parse_args(argv)
    if args.version or args.command == "version":
        print(_version_text())
        return 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: a command is required", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except ConfigError as exc:  # one line a person can act on, not a traceback
        print(f"coalmine {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "judge":
        # Imported only here: the judge needs scipy, ~0.8 s of start-up that serve, worker and
        # check would pay for nothing (README: dependency notes).
        from bot.judge_cli import judge

        return judge(args.cases)
    if args.command == "probe":
        return probes.run(args)
    if args.command == "unpin-repo":
        return _unpin(args.forge, args.repo_id)
    if args.command == "serve":
        return _serve(args.bind, args.workers)
    if args.command == "worker":
        return _worker(args.burst)
    if args.command == "check":
        return _check_repo(Path(args.repo), args.server_config, args.as_repo, args.output)
    return _check(Path(args.path))


def _version_text() -> str:
    try:
        version = metadata.version("coalmine")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    commit = _git_commit(Path(__file__).resolve().parents[1])
    source = f" (git {commit})" if commit else ""
    return f"coalmine {version}{source}, Python {platform.python_version()}"


def _git_commit(root: Path) -> str | None:
    """The checkout's commit when the package runs from one; None otherwise, never an error
    (an installed wheel has no .git, a machine may have no git)."""
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _check_repo(root: Path, server_config: str | None, as_repo: str | None, output: str) -> int:
    if not root.is_dir():
        print(f"coalmine check: {root}: no such directory", file=sys.stderr)
        return 2
    try:
        target = checks.Target.parse(as_repo) if as_repo else None
    except ValueError as exc:
        print(f"coalmine check: --as {exc}", file=sys.stderr)
        return 2
    if server_config is not None and not Path(server_config).is_file():
        print(f"coalmine check: --server-config {server_config}: no such file", file=sys.stderr)
        return 2
    settings, findings = checks.load_server(server_config, os.environ)
    if target is not None and settings is None and not findings:
        print("coalmine check: --as needs a server config (--server-config or COALMINE_CONFIG)",
              file=sys.stderr)
        return 2
    source = server_config or os.environ.get("COALMINE_CONFIG") or "server config"
    findings += checks.check_repo(root, settings, target, server_source=source)
    errors = sum(1 for f in findings if f.severity == checks.ERROR)
    if output == "json":
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding)
        warnings = len(findings) - errors
        print(f"{root}: {errors} error(s), {warnings} warning(s)" if findings else f"{root}: ok")
    return 1 if errors else 0


def _serve(bind: str, workers: int | None) -> int:
    # Checked here, before gunicorn: its workers would report a bad setting as a traceback
    # under "Worker failed to boot" (bot.wsgi still says it in one line for direct gunicorn use).
    settings = load_settings()
    log_format(os.environ, sys.stderr)
    embedded = not os.environ.get("REDIS_URL")
    # The embedded queue lives in one process, so it must be exactly one gunicorn worker.
    count, note = embedded_guard.web_workers(workers, os.environ, embedded)
    if note:
        print(note, file=sys.stderr, flush=True)
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    argv = [gunicorn, "--bind", bind, "--workers", str(count), "--threads", "8",
            "--access-logfile", "-", "bot.wsgi:create_app()"]
    # The workers add their metrics up through files in one directory, which must be in their
    # environment before they start and empty (bot.metrics): this command is their tree's root.
    env = dict(os.environ)
    env[metrics.MULTIPROC_ENV] = metrics.prepare_multiprocess_dir(env, settings.data_dir)
    os.execve(argv[0], argv, env)
    return 0  # not reached


def _worker(burst: bool = False) -> int:
    settings = load_settings()
    setup_logging(settings)
    if not settings.redis_url:
        print("coalmine worker: REDIS_URL is not set; `coalmine serve` runs jobs itself "
              "when no Redis is configured", file=sys.stderr)
        return 2
    if os.environ.get(metrics.MULTIPROC_ENV):
        print(f"coalmine worker: unset {metrics.MULTIPROC_ENV} for the worker: it serves its own "
              f"metrics on {metrics.WORKER_PORT_ENV} (default {metrics.DEFAULT_WORKER_PORT}), and "
              "a directory shared with the web would count its jobs twice", file=sys.stderr)
        return 2
    svc = services.install(services.build(settings))
    port = metrics.serve_worker_metrics(os.environ)
    log = logging.getLogger("coalmine.worker")
    if port is not None:
        log.info("serving metrics on :%d/metrics", port)
    resumed = resume_all(svc)
    log.info("re-armed %d waiting rollout(s)", resumed)
    stop = threading.Event()
    sweeps = (
        (lambda: requeue_lapsed(svc.redis, svc.queue.enqueue), 2.0),
        (lambda: resume_all(svc, overdue_by=30.0), 30.0),
        (lambda: rearm_final_reports(svc), 10.0),
        (svc.queue.requeue_stranded, 5.0),
        (lambda: (gate.resume_waiting(svc, merged.recheck), drift.sweep(svc)), 1.0),
    )
    ticker = threading.Thread(target=run_ticker, args=(svc.queue, stop),
                              kwargs={"sweeps": sweeps}, daemon=True)
    ticker.start()
    # Jobs run in this process (no fork per job), so the cluster, forge and git adapters built
    # on the first job serve every later one instead of being rebuilt a second at a time.
    worker = MeteredWorker([QUEUE_NAME], connection=svc.redis)
    worker.kind_of = name_of  # each job counted and timed under its trigger's name
    try:
        worker.work(burst=burst)
    finally:
        stop.set()
    return 0


def _unpin(forge: str, repo_id: int) -> int:
    settings = load_settings()
    if not settings.redis_url:
        print("coalmine unpin-repo: REDIS_URL is not set; the embedded store keeps no pins "
              "across restarts", file=sys.stderr)
        return 2
    svc = services.build(settings)
    if tenancy.unpin(svc.redis, forge, repo_id):
        print(f"{forge} repository id {repo_id}: pin removed")
        return 0
    print(f"{forge} repository id {repo_id} was not pinned", file=sys.stderr)
    return 1


def _check(path: Path) -> int:
    try:
        config = parse_repo_config(path.read_text(), source=str(path))
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for app in config.apps:
        kind = "canary" if app.canary else "plain apply"
        print(f"{app.name}: {app.path} → namespace {app.namespace} ({kind})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
