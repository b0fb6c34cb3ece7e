"""The `coalmine` command: serve webhooks, run a worker, check or render a repository, look at
and steer rollouts, check the set-up (doctor), or judge cases. A thin parser: each command's
logic lives in its own module (bot.checks, bot.cli_render, bot.cli_diff, bot.cli_rollouts,
bot.doctor)."""

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
from bot import (
    checks,
    cli_diff,
    cli_render,
    cli_rollouts,
    doctor,
    embedded_guard,
    metrics,
    probes,
    services,
    tenancy,
)
from bot.cluster.model import Owner
from bot.commands import Command
from bot.config import ConfigError, Settings, load_settings, parse_repo_config
from bot.errors import ManifestError
from bot.forge.base import ForgeError
from bot.leases import requeue_lapsed
from bot.logs import log_format, setup_logging
from bot.queue import QUEUE_NAME, MeteredWorker, run_ticker
from bot.refs import RepoRef
from bot.rollout.fields import StrategyError
from bot.rollout.store import RolloutStore
from handlers import drift, gate, merged
from handlers.commands import event_for
from handlers.preview import (
    AdapterClusters,
    CheckedOut,  # its Tree over a worktree on disk
    preview_app,
)
from handlers.registry import name_of
from handlers.rollout import dispatch, rearm_final_reports, resume_all


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
    _add_operator_commands(sub)
    probes.add_arguments(sub.add_parser("probe", help="container health (exit 0/1): the web "
                                        "process answers, or this host's worker is alive"))
    sub.add_parser("demo", help="run a good and a bad release end to end on simulators, with no "
                   "outside service (README: Quick start)").add_argument(
        "--keep", action="store_true", help="keep serving the dashboard when done, until Ctrl-C")
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


def _add_operator_commands(sub: argparse._SubParsersAction) -> None:
    """render, get, the rollout commands and doctor (README: Command line)."""
    render = sub.add_parser(
        "render", help="the objects a deploy of the checkout would apply for APP, as YAML "
                       "(strategy workloads as the Deployment Coalmine manages)")
    render.add_argument("app", metavar="APP")
    render.add_argument("--repo", default=".", metavar="PATH",
                        help="the checkout's root, where .coalmine.yaml is (default: .)")
    render.add_argument("--output", choices=("yaml", "json"), default="yaml")
    diff = sub.add_parser(
        "diff", help="what applying APP of the checkout would change in the live cluster: a "
                     "server-side dry run, field by field (exit 0 none, 1 changes, 2 the merge "
                     "would fail or an error)")
    diff.add_argument("app", metavar="APP")
    diff.add_argument("--repo", default=".", metavar="PATH",
                      help="the checkout's root, where .coalmine.yaml is (default: .)")
    diff.add_argument("--as", dest="as_repo", required=True, metavar="[FORGE:]OWNER/NAME",
                      help="the repository, whose repos: entry (policy, ServiceAccount) and "
                           "forge id (object ownership) the dry run uses")
    diff.add_argument("--output", choices=("text", "json"), default="text")
    get = sub.add_parser("get", help="show rollouts from Redis (read only; needs REDIS_URL)")
    what = get.add_subparsers(dest="what", required=True)
    listing = what.add_parser("rollouts", help="every active rollout: repository, app, PR, "
                                               "phase, step, weight, age")
    one = what.add_parser("rollout", help="one rollout: steps, weights, analysis runs, history")
    one.add_argument("repo", metavar="REPO", help="[FORGE:]OWNER/NAME (github: is assumed)")
    one.add_argument("app", metavar="APP")
    for command in (listing, one):
        command.add_argument("--output", choices=("text", "json"), default="text")
        command.add_argument("-w", "--watch", action="store_true",
                             help="redraw whenever the rollout changes; Ctrl-C stops")
        command.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                             help="how often --watch polls Redis (default 2, at least 0.2)")
        command.add_argument("--timeout-seconds", type=float, default=None, metavar="SECONDS",
                             help="stop watching after this long (default: until Ctrl-C)")
    for action in cli_rollouts.ACTIONS:
        steer = sub.add_parser(action, help=f"/{action} a rollout as an operator: queued for "
                                            "a worker like the PR command, recorded as "
                                            "'USER (CLI)' (needs REDIS_URL)")
        steer.add_argument("repo", metavar="REPO", help="[FORGE:]OWNER/NAME")
        steer.add_argument("app", metavar="APP")
        steer.add_argument("--as", dest="user", required=True, metavar="USER",
                           help="who is acting, recorded in the history and on the PR")
        steer.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                           help="how long to wait for a worker to carry it out (default 60; "
                                "a command no worker took by then is withdrawn)")
        if action == "promote":
            steer.add_argument("--full", action="store_true",
                               help="skip every remaining step (/promote --full)")
    check = sub.add_parser("doctor", help="check Redis, forge credentials and permissions, "
                                          "clusters and RBAC, Prometheus and the data dir "
                                          "(exit 1 when a check fails)")
    check.add_argument("--output", choices=("text", "json"), default="text")


def _run(args: argparse.Namespace) -> int:
    if args.command in ("render", "diff", "get", "doctor", *cli_rollouts.ACTIONS):
        try:
            return _operator(args)
        except cli_rollouts.CliError as exc:
            print(f"coalmine {args.command}: {exc}", file=sys.stderr)
            return exc.code
    if args.command == "judge":
        # Imported only here: the judge needs scipy, ~0.8 s of start-up that serve, worker and
        # check would pay for nothing (README: dependency notes).
        from bot.judge_cli import judge

        return judge(args.cases)
    if args.command == "probe":
        return probes.run(args)
    if args.command == "demo":
        # Imported only here: the demo brings the whole web app (Flask, the dashboard, every
        # handler) and the simulators, ~0.4 s that every other command would pay for nothing.
        from bot.demo import run as run_demo

        return run_demo(keep=args.keep)
    if args.command == "unpin-repo":
        return _unpin(args.forge, args.repo_id)
    if args.command == "serve":
        return _serve(args.bind, args.workers)
    if args.command == "worker":
        return _worker(args.burst)
    if args.command == "check":
        return _check_repo(Path(args.repo), args.server_config, args.as_repo, args.output)
    return _check(Path(args.path))


def _operator(args: argparse.Namespace) -> int:
    if args.command == "render":
        return _render(Path(args.repo), args.app, args.output)
    settings = load_settings()
    if not settings.redis_url:
        # The embedded store's start-up warning is about a bot process; these commands say
        # what Redis means to them themselves (doctor skips it, get and the steering refuse).
        logging.getLogger(services.__name__).setLevel(logging.ERROR)
    if args.command == "diff":
        return _diff(settings, Path(args.repo), args.app, args.as_repo, args.output)
    if args.command == "doctor":
        found = doctor.run(services.build(settings))
        if args.output == "json":
            print(cli_rollouts.dumps([c.as_dict() for c in found]))
        else:
            print("\n".join(str(c) for c in found))
        return 1 if doctor.failed(found) else 0
    svc = _with_redis(settings, args.command)
    if args.command == "get":
        return _get(args, RolloutStore(svc.redis))
    # The PR command's own event and job (handlers.commands, handlers.rollout).
    command = Command(args.command, None, full=getattr(args, "full", False))
    event = event_for(command, cli_rollouts.actor(args.user))
    outcome = cli_rollouts.steer(svc.redis, svc.queue, dispatch, args.repo, args.app, event,
                                 wait_s=args.wait)
    print(cli_rollouts.outcome_text(outcome))
    return 0


def _with_redis(settings: Settings, command: str) -> services.Services:
    if not settings.redis_url:
        raise cli_rollouts.CliError(
            "REDIS_URL is not set: rollouts live in the Redis the bot uses (the embedded "
            "store of `coalmine serve` without Redis is not reachable from outside)", 2)
    return services.build(settings)


def _get(args: argparse.Namespace, store: RolloutStore) -> int:
    repo, app = (args.repo, args.app) if args.what == "rollout" else (None, None)
    as_json = args.output == "json"

    def draw() -> tuple[object, str]:
        return cli_rollouts.frame(store, repo, app, as_json=as_json, compact=args.watch)

    if not args.watch:
        print(draw()[1])
        return 0
    return cli_rollouts.watch(draw, sys.stdout, interval_s=max(args.interval, 0.2),
                              timeout_s=args.timeout_seconds,
                              tty=sys.stdout.isatty() and not as_json,
                              between="" if as_json else "\n")


def _diff(settings: Settings, root: Path, name: str, as_repo: str, output: str) -> int:
    """The PR preview's engine (handlers.preview.preview_app) on a local checkout."""
    try:
        target = checks.Target.parse(as_repo)
    except ValueError as exc:
        raise cli_rollouts.CliError(f"--as {exc}", 2) from None
    entry = settings.entry_for(target.forge, target.full_name)
    if entry is None:
        raise cli_rollouts.CliError(f"{target.forge} repository {target.full_name} is not "
                                    "served: no repos: entry of the server config names it", 2)
    try:
        app = cli_render.app_of(root, name, settings)
        svc = services.build(settings)
        facts = svc.forge_of(target.forge).repository_facts(
            RepoRef(target.forge, target.full_name, ""))
    except (ConfigError, ForgeError) as exc:
        raise cli_rollouts.CliError(str(exc), 2) from None
    owner = Owner(target.forge, facts.id, facts.full_name, app.name)
    found = preview_app(app, CheckedOut(root), policy=entry.policy,
                        server_rules=settings.rules, clusters=AdapterClusters(svc),
                        owner=owner, sha=cli_diff.revision(root))
    print(cli_rollouts.dumps(cli_diff.as_dict(found)) if output == "json"
          else cli_diff.text(found))
    return cli_diff.exit_code(found)


def _render(root: Path, name: str, output: str) -> int:
    try:
        app = cli_render.app_of(root, name)
        rendered = cli_render.render_app(root, app)
    except (ManifestError, StrategyError) as exc:
        print(f"coalmine render: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"coalmine render: {exc}", file=sys.stderr)
        return 1
    if output == "json":
        print(cli_rollouts.dumps(cli_render.as_list(rendered)))
    else:
        sys.stdout.write(cli_render.as_yaml(rendered))
    return 0


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
