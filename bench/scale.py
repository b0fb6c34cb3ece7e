"""1000 rollouts in flight on ONE worker: scheduled-job lag, CPU per tick, Redis memory per rollout.

1000 apps (stable Deployments of 2 replicas in a FakeKube) each get a canary rollout with steps
pause 5 s → setWeight 50 → pause 8 s → setWeight 100 → pause 4 s, started in this process through
handlers.rollout.start (as a merge job would), while one real `coalmine worker` subprocess runs
every tick and health poll. Lag is measured without touching bot/ or handlers/: this process
samples the schedule (`coalmine:scheduled`, member → due time) every 20 ms, and afterwards RQ's
finished-job records give when each job started and ended; lag = start (or end) − due.

CPU is read per process, so the worker's own cost per job is told apart from the fakes' (this
process: FakeKube, FakeGitHub, the sampler) and Redis's, which share the same 2 cores. With
`--profile FILE` the worker runs under cProfile and the functions of bot/ and handlers/ that cost
the most are printed (the profiler slows the worker down: read shares, not lags, from that run).

    .venv/bin/python -m bench.scale [--rollouts 1000] [--max-seconds 240] [--profile FILE]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import pstats
import resource
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Self

from bench.common import (
    REPO,
    REPO_ROOT,
    bot_world,
    child_env,
    header,
    percentile,
    python,
    redis_server,
    table,
    verdict,
    wait_for,
    workdir,
)

TARGET_P99_S = 2.0
TARGET_CPU_PER_TICK_S = 0.005
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAMESPACE = "scale"
STEPS = [{"pause": {"duration": 5}}, {"setWeight": 50}, {"pause": {"duration": 8}},
         {"setWeight": 100}, {"pause": {"duration": 4}}]
JOBS = ("handlers.rollout.tick", "handlers.rollout.health_poll")


def _deployment(name: str, image: str) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(labels)},
        "spec": {"replicas": 2, "selector": {"matchLabels": dict(labels)},
                 "template": {"metadata": {"labels": dict(labels)},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
    }


class ScheduleSampler:
    """Remembers every (member, due time) that passes through the schedule sorted set."""

    def __init__(self, redis) -> None:
        from bot.queue import SCHEDULED_KEY

        self.redis, self.key = redis, SCHEDULED_KEY
        self.dues: dict[bytes, set[float]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        # Raw members, decoded only when asked: with 1000 rollouts this loop shares the cores
        # with the worker, so it does as little as it can.
        while not self._stop.wait(0.02):
            for member, score in self.redis.zrange(self.key, 0, -1, withscores=True):
                self.dues[member].add(score)

    def due_of(self, member: str, enqueued_at: float) -> float | None:
        """The latest due time of `member` not after the moment the ticker enqueued it."""
        dues = self.dues.get(member.encode(), ())
        candidates = [d for d in dues if d <= enqueued_at + 0.001]
        return max(candidates) if candidates else None


def _epoch(moment: datetime.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def start_rollouts(bw, count: int) -> float:
    """Create `count` running rollouts as merge jobs would; returns how long that took."""
    from bot import events
    from bot.cluster.model import Owner
    from bot.cluster.ownership import ownership_labels
    from bot.config import AppConfig
    from bot.policy import Policy
    from bot.rollout.plan import CanaryPlan
    from bot.rollout.strategy import parse_canary_config
    from handlers import rollout
    from tests.harness import payloads

    svc = bw.bot.services
    policy = Policy(namespaces=(NAMESPACE,))  # what a merge job reads from the repos: entry
    began = time.time()
    for i in range(count):
        name = f"app-{i:03}"
        strategy = parse_canary_config({"workload": f"Deployment/{name}", "steps": STEPS},
                                       source=".coalmine.yaml", key=f"apps[{i}].canary")
        app = AppConfig(name=name, path=f"deploy/{name}", namespace=NAMESPACE, canary=strategy)
        number = bw.world.github.add_pull(REPO, head=f"pr-{name}", title=f"Bump {name}",
                                          state="merged", merge_sha=f"{i:040x}")
        event = events.parse_github("pull_request", payloads.github_pr_merged(
            full_name=REPO, clone_url=bw.world.clone_url(), number=number,
            merge_sha=f"{i:040x}", head=f"pr-{name}", title=f"Bump {name}"))
        live = bw.kube.get_object("apps/v1", "Deployment", NAMESPACE, name)
        # Owned by the repository and app, as the merge that applied it would have left it: the
        # completion re-applies stable, which Coalmine refuses for an object it does not own.
        live["metadata"]["labels"].update(ownership_labels(
            Owner("github", event.repo.repo_id, REPO, name)))
        bw.kube.put_object(live)
        plan = CanaryPlan(strategy, (), _deployment(name, f"registry.example/{name}:2.0"))
        rollout.start(svc, event, app, plan, live, policy=policy)
    return time.time() - began


def _backlog(redis, sampler: ScheduleSampler, queue, now: float) -> dict[str, list[float]]:
    """Overdue scheduled jobs not yet run at `now`, as lag lower bounds (now - due)."""
    waiting: dict[str, list[float]] = defaultdict(list)
    for member, due in redis.zrangebyscore(sampler.key, "-inf", now, withscores=True):
        waiting[json.loads(member)["f"]].append(now - due)
    for job in queue.get_jobs():
        if job.func_name in JOBS:
            member = json.dumps({"f": job.func_name, "a": list(job.args)})
            due = sampler.due_of(member, _epoch(job.enqueued_at))
            if due is not None:
                waiting[job.func_name].append(now - due)
    return waiting


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_cpu_s(redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# The worker's main thread (where SimpleWorker runs every job) profiled on its own CPU clock,
# so time spent waiting for the next job or for an answer does not count as cost.
_PROFILED_WORKER = """
import cProfile, sys, time
from bot.cli import main
profiler = cProfile.Profile(time.thread_time)
profiler.enable()
try:
    main(["worker"])
finally:
    profiler.disable()
    profiler.dump_stats(sys.argv[1])
"""


def start_worker(bw, profile: Path | None) -> subprocess.Popen:
    """The one `coalmine worker`; under cProfile (written at its warm shutdown) if asked."""
    if profile is None:
        return bw.bot.start_worker()
    cmd = [python(), "-c", _PROFILED_WORKER, str(profile)]
    with open(bw.tmp / "worker.log", "ab") as log:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(bw.bot.env), stdout=log,
                                stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen) -> None:
    """SIGTERM is RQ's warm shutdown: the job in hand finishes and cProfile writes its file."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def print_profile(path: Path, top: int = 30) -> None:
    """The worker's costliest functions of bot/ and handlers/ (cumulative), and its hottest."""
    if not path.exists():
        print(f"   (no profile written at {path})")
        return
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    total = stats.total_tt
    stats.sort_stats("cumulative").print_stats(r"/(bot|handlers)/", top)
    stats.sort_stats("tottime").print_stats(top)
    print(f"   worker profile ({path}; {total:.1f} s of the main thread's CPU):")
    for line in out.getvalue().splitlines():
        if line.strip():
            print("   " + line)


# What the worker asks of GitHub while reporting, by kind: the calls a tick's report may make.
_REPORT_CALLS = {
    "status POST": ("POST", r"/repos/[^/]+/[^/]+/statuses/\w+"),
    "comment list": ("GET", r"/repos/[^/]+/[^/]+/issues/\d+/comments"),
    "comment edit": ("PATCH", r"/repos/[^/]+/[^/]+/issues/comments/\d+"),
    "comment create": ("POST", r"/repos/[^/]+/[^/]+/issues/\d+/comments"),
}


def report_calls(github) -> dict[str, int]:
    """How many reporting calls of each kind FakeGitHub received over the run.

    Counted at the fake, so the figures are exact whatever the machine's load: they show what
    a tick costs in forge calls (and rate limit) apart from CPU.
    """
    return {kind: len(github.calls_to(method, path))
            for kind, (method, path) in _REPORT_CALLS.items()}


def memory_per_rollout(redis, count: int) -> tuple[float, dict[str, float]]:
    """(bytes of every coalmine:* key ÷ count, bytes per key family ÷ count)."""
    families: dict[str, int] = defaultdict(int)
    for key in redis.scan_iter(match="coalmine:*", count=1000):
        name = key.decode()
        if name.startswith("coalmine:rollout:"):
            tail = name.rsplit(":", 1)[1]
            kind = "per revision" if len(tail) == 40 else tail  # keys ending in a commit sha
            family = "rollout " + ("record" if name.count(":") == 4 else kind)
        else:
            family = ":".join(name.split(":")[:2])
        families[family] += redis.memory_usage(key, samples=0) or 0
    total = sum(families.values())
    return total / count, {k: v / count for k, v in sorted(families.items())}


def main(argv: list[str] | None = None) -> int:
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    from bot.queue import QUEUE_NAME
    from bot.rollout import traffic
    from bot.rollout.store import RolloutStore, rollout_key

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=240,
                        help="stop waiting for the rollouts to finish after this long")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the worker under cProfile, writing this file")
    args = parser.parse_args(argv)
    profile = args.profile.resolve() if args.profile else None
    header(f"scale: {args.rollouts} rollouts in flight on one worker")
    with workdir("scale") as tmp, redis_server(tmp) as server, \
            bot_world(tmp, server.url, {"README.md": "# gitops\n"}) as bw:
        redis = bw.bot.redis
        bw.kube.put_object({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": NAMESPACE}})
        for i in range(args.rollouts):
            # Stable as Coalmine itself applies it (track labels in the selector).
            bw.kube.put_object(traffic.as_stable(
                _deployment(f"app-{i:03}", f"registry.example/app-{i:03}:1.0")))
        memory_before = redis.info("memory")["used_memory"]
        worker = start_worker(bw, profile)
        with ScheduleSampler(redis) as sampler:
            cpu_at_start = (process_cpu_s(worker.pid), own_cpu_s(), redis_cpu_s(redis))
            creation_s = time.time()
            took = start_rollouts(bw, args.rollouts)
            created_at = creation_s + took
            per_key, families = memory_per_rollout(redis, args.rollouts)
            memory_after = redis.info("memory")["used_memory"]
            store = RolloutStore(redis)
            try:
                wait_for(lambda: not store.active_keys(), args.max_seconds,
                         "every rollout finished", 0.2)
            except TimeoutError:
                pass  # bounded run: what is still waiting is reported as backlog below
            stopped = time.time()
            cpu_at_end = (process_cpu_s(worker.pid), own_cpu_s(), redis_cpu_s(redis))
            backlog = _backlog(redis, sampler, Queue(QUEUE_NAME, connection=redis), stopped)
        phases = defaultdict(int)
        for i in range(args.rollouts):
            record = store.load(rollout_key("github", REPO, f"app-{i:03}"))
            phase = record.state.phase if record else "missing"
            if record and record.state.aborted_reason:
                phase += f" ({record.state.aborted_reason[:300]})"
            elif record and record.state.awaiting_health and record.state.health_message:
                phase += f" (waiting: {record.state.health_message[:120]})"
            phases[phase] += 1
        queue = Queue(QUEUE_NAME, connection=redis)
        finished = Job.fetch_many(FinishedJobRegistry(queue=queue).get_job_ids(), redis)
        failed = FailedJobRegistry(queue=queue).count
        lags: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        unmatched = 0
        for job in finished:
            if job is None or job.func_name not in JOBS:
                continue
            member = json.dumps({"f": job.func_name, "a": list(job.args)})
            due = sampler.due_of(member, _epoch(job.enqueued_at))
            if due is None:
                unmatched += 1
                continue
            lags[job.func_name].append(
                (due, _epoch(job.started_at) - due, _epoch(job.ended_at) - due))
        jobs_run = sum(1 for job in finished if job is not None) + failed
        stop_worker(worker)
        calls = report_calls(bw.world.github)
    print(f"   started {args.rollouts} rollouts in {took:.1f} s (in this process, beside the "
          f"worker); final phases {dict(phases)}; failed jobs {failed}; unmatched {unmatched}")
    rows = [["scheduled job", "count", "start lag p50", "start lag p99", "handled lag p50",
             "handled lag p99", "max handled"]]
    for func, samples in sorted(lags.items()):
        later = [s for s in samples if s[0] > created_at]
        for label, chosen in (("all", samples), ("due after start-up", later)):
            if not chosen or (label != "all" and len(chosen) == len(samples)):
                continue
            starts, ends = [s[1] for s in chosen], [s[2] for s in chosen]
            rows.append([f"{func.rsplit('.', 1)[1]} ({label})", str(len(chosen)),
                         f"{percentile(starts, 50):.2f} s", f"{percentile(starts, 99):.2f} s",
                         f"{percentile(ends, 50):.2f} s", f"{percentile(ends, 99):.2f} s",
                         f"{max(ends):.2f} s"])
    print(table(rows))
    print(f"   Redis per rollout: {per_key / 1024:.1f} KiB in coalmine:* keys ("
          + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in families.items()) + "); "
          f"used_memory grew {(memory_after - memory_before) / args.rollouts / 1024:.1f} KiB "
          "per rollout (including RQ job records)")
    ticks = [s[2] for s in lags.get("handlers.rollout.tick", [])]
    waiting = backlog.get("handlers.rollout.tick", [])
    if waiting:
        print(f"   stopped after {args.max_seconds:g} s with {len(waiting)} ticks overdue and not "
              f"yet handled (oldest {max(waiting):.1f} s); they count below as lower bounds")
    p99 = percentile(ticks + waiting, 99)
    print(f"   tick lag p99 (handled, plus overdue backlog): {p99:.2f} s; "
          f"target ≤ {TARGET_P99_S:g} s: {verdict(p99 <= TARGET_P99_S)}")
    ticks_run = len(lags.get("handlers.rollout.tick", []))
    print("   GitHub reporting calls: " + ", ".join(f"{n} {k}" for k, n in calls.items())
          + f" = {sum(calls.values()) / max(1, ticks_run):.2f} per tick ({ticks_run} ticks)")
    worker_cpu, bench_cpu, redis_cpu = (b - a for a, b in zip(cpu_at_start, cpu_at_end))
    wall = stopped - creation_s
    per_job = worker_cpu / max(1, jobs_run)
    print(f"   CPU over {wall:.0f} s on {os.cpu_count()} cores: worker {worker_cpu:.1f} s "
          f"({jobs_run} jobs: {1000 * per_job:.1f} ms per job), this process (rollout "
          f"creation, FakeKube, FakeGitHub, sampler) {bench_cpu:.1f} s, redis-server "
          f"{redis_cpu:.1f} s")
    print(f"   worker CPU per tick/poll job {1000 * per_job:.1f} ms; target ≤ "
          f"{1000 * TARGET_CPU_PER_TICK_S:g} ms: {verdict(per_job <= TARGET_CPU_PER_TICK_S)}"
          + (" (profiled run: inflated)" if profile else ""))
    if profile:
        print_profile(profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
