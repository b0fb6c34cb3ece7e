"""200 rollouts in flight on ONE worker: scheduled-job lag and Redis memory per rollout.

200 apps (stable Deployments of 2 replicas in a FakeKube) each get a canary rollout with steps
pause 5 s → setWeight 50 → pause 8 s → setWeight 100 → pause 4 s, started in this process through
handlers.rollout.start (as a merge job would), while one real `coalmine worker` subprocess runs
every tick and health poll. Lag is measured without touching bot/ or handlers/: this process
samples the schedule (`coalmine:scheduled`, member → due time) every 20 ms, and afterwards RQ's
finished-job records give when each job started and ended; lag = start (or end) − due.

    .venv/bin/python -m bench.scale [--rollouts 200]
"""

from __future__ import annotations

import argparse
import datetime
import json
import threading
import time
from collections import defaultdict
from typing import Self

from bench.common import (
    REPO,
    bot_world,
    header,
    percentile,
    redis_server,
    table,
    verdict,
    wait_for,
    workdir,
)

TARGET_P99_S = 2.0
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
        self.dues: dict[str, set[float]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for member, score in self.redis.zrange(self.key, 0, -1, withscores=True):
                self.dues[member.decode()].add(score)

    def due_of(self, member: str, enqueued_at: float) -> float | None:
        """The latest due time of `member` not after the moment the ticker enqueued it."""
        candidates = [d for d in self.dues.get(member, ()) if d <= enqueued_at + 0.001]
        return max(candidates) if candidates else None


def _epoch(moment: datetime.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def start_rollouts(bw, count: int) -> float:
    """Create `count` running rollouts as merge jobs would; returns how long that took."""
    from bot import events
    from bot.config import AppConfig
    from bot.rollout.plan import CanaryPlan
    from bot.rollout.strategy import parse_canary_config
    from handlers import rollout
    from tests.harness import payloads

    svc = bw.bot.services
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
        plan = CanaryPlan(strategy, (), _deployment(name, f"registry.example/{name}:2.0"))
        rollout.start(svc, event, app, plan, live)
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


def memory_per_rollout(redis, count: int) -> tuple[float, dict[str, float]]:
    """(bytes of every coalmine:* key ÷ count, bytes per key family ÷ count)."""
    families: dict[str, int] = defaultdict(int)
    for key in redis.scan_iter(match="coalmine:*", count=1000):
        name = key.decode()
        if name.startswith("coalmine:rollout:"):
            family = "rollout " + ("record" if name.count(":") == 4 else name.rsplit(":", 1)[1])
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
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=150,
                        help="stop waiting for the rollouts to finish after this long")
    args = parser.parse_args(argv)
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
        bw.bot.start_worker()
        with ScheduleSampler(redis) as sampler:
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
            backlog = _backlog(redis, sampler, Queue(QUEUE_NAME, connection=redis), stopped)
        phases = defaultdict(int)
        for i in range(args.rollouts):
            record = store.load(rollout_key("github", REPO, f"app-{i:03}"))
            phase = record.state.phase if record else "missing"
            if record and record.state.aborted_reason:
                phase += f" ({record.state.aborted_reason[:300]})"
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
