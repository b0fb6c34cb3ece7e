"""Webhook intake under load: Coalmine's receiver vs a bare Flask app, same gunicorn settings.

Both run as `gunicorn --workers 2 --threads 8` (the Procfile's web process) on 127.0.0.1;
Coalmine's with REDIS_URL pointing at a private redis-server, so every accepted delivery is a
real RQ enqueue. A separate load-generator process (bench/loadgen.py) sends signed ~25 KB
`pull_request` (merged) payloads, ~10 % of them redeliveries of an earlier delivery id.

1. Saturation: closed loop at several concurrencies; the best throughput is the saturation.
2. 80 % load: open loop at 0.8 × each server's own saturation; latency counted from each
   request's due time.
Afterwards, for every Coalmine phase: no 5xx, and the RQ queue holds exactly one job per
distinct accepted (202) delivery id. Every phase also prints the CPU time per request of the
gunicorn processes, redis-server and the load generator (from /proc and getrusage): on a
2-core machine they share, their sum bounds the throughput at 2 s of CPU per second.

    .venv/bin/python -m bench.webhook_intake [--seconds 4] [--concurrency 4,8,16,32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from bench.common import (
    GH_SECRET,
    REPO_ROOT,
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
from tests.harness.processes import free_port

TARGET_RATIO = 0.8
TARGET_P99_S = 0.025
# Commands Coalmine's enqueue script runs inside Redis (not round trips from the app), and the
# benchmark's own bookkeeping; every other command counted came from the app over the network.
SCRIPT_INNER = {"set", "hset", "rpush", "sadd", "del"}
BENCH_OWN = {"info", "config|resetstat", "flushall", "llen"}
APPS = {"coalmine": "bot.wsgi:create_app()", "bare": "bench.bare_app:create_app()"}


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path):
    """The Procfile's web command, bound to a free loopback port; yields the base URL."""
    port = free_port()
    gunicorn_bin = str(Path(python()).with_name("gunicorn"))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [gunicorn_bin, "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8", app],
            cwd=REPO_ROOT, env=child_env(env), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), 30, f"gunicorn serving {app}", 0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (/proc/PID/stat, fields 14 and 15)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (gunicorn's master and its workers)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], check=False,
                         capture_output=True, text=True).stdout
    return [pid, *(int(p) for p in out.split())]


def load(url: str, tmp: Path, *, concurrency: int, seconds: float, rate: float | None = None,
         seed: int = 1, meter: dict[str, list[int]] | None = None) -> dict:
    """Run the load generator as its own process; returns the parsed phase summary, with the
    CPU seconds per request of each process group in `meter` and of the load generator."""
    out = tmp / f"load-{seed}-{concurrency}-{rate}.json"
    count = int((rate or 3000) * seconds) + 10
    cmd = [python(), "-m", "bench.loadgen", "--url", f"{url}/webhooks/github",
           "--secret", GH_SECRET, "--count", str(count), "--concurrency", str(concurrency),
           "--seconds", str(seconds), "--seed", str(seed), "--out", str(out)]
    if rate:
        cmd += ["--rate", f"{rate:.1f}"]
    meter = meter or {}
    before = {name: cpu_s(pids) for name, pids in meter.items()}
    subprocess.run(cmd, cwd=REPO_ROOT, env=child_env({}), check=True, timeout=seconds + 180)
    cpu = {name: cpu_s(pids) - before[name] for name, pids in meter.items()}
    data = json.loads(out.read_text())
    cpu["load generator"] = data["cpu_s"]
    results = data["results"]
    span = max(r["done"] for r in results) - min(r["sent"] for r in results)
    return {
        "cpu_per_request": {name: used / len(results) for name, used in cpu.items()},
        "results": results,
        "body_bytes": data["body_bytes"],
        "throughput": len(results) / span,
        "p50": percentile([r["latency"] for r in results], 50),
        "p99": percentile([r["latency"] for r in results], 99),
        "p99_from_due": percentile([r["from_due"] for r in results], 99),
        "errors": sum(1 for r in results if r["code"] >= 500 or r["code"] == 0),
    }


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def cpu_line(phase: dict) -> str:
    """CPU per request by process, and the throughput their sum allows on this machine's cores
    (the load generator's share is its sending only, not its start-up or plan)."""
    per = phase["cpu_per_request"]
    total = sum(per.values())
    parts = ", ".join(f"{name} {1e6 * used:.0f}" for name, used in per.items())
    return (f"CPU per request (µs): {parts}; total {1e6 * total:.0f} → at most "
            f"{(os.cpu_count() or 1) / total:.0f} req/s on {os.cpu_count()} cores")


def check_enqueued(phase: dict, redis: Redis) -> str:
    """Every accepted delivery enqueued exactly once; duplicates refused; nothing 5xx."""
    from bot.queue import QUEUE_NAME

    results = phase["results"]
    accepted = [r["delivery"] for r in results if r["code"] == 202]
    duplicates = [r for r in results if r["answer"] == "duplicate"]
    jobs = redis.llen(f"rq:queue:{QUEUE_NAME}")
    problems = []
    if len(set(accepted)) != len(accepted):
        problems.append(f"{len(accepted) - len(set(accepted))} deliveries accepted twice")
    if jobs != len(set(accepted)):
        problems.append(f"{jobs} jobs queued for {len(set(accepted))} accepted deliveries")
    if phase["errors"]:
        problems.append(f"{phase['errors']} answers were 5xx or connection errors")
    codes = {r["code"] for r in results} - {200, 202}
    if codes:
        problems.append(f"unexpected codes {sorted(codes)}")
    summary = (f"{len(accepted)} accepted = {jobs} queued jobs, {len(duplicates)} duplicates "
               "answered 200")
    return summary + ("; PROBLEMS: " + "; ".join(problems) if problems else "; ok")


def redis_per_request(redis: Redis, requests: int) -> str:
    """Round trips from the app per request (by command), and commands run inside scripts."""
    calls = {name.removeprefix("cmdstat_"): stat["calls"]
             for name, stat in redis.info("commandstats").items()}
    trips = {k: v for k, v in calls.items() if k not in SCRIPT_INNER | BENCH_OWN}
    inner = sum(v for k, v in calls.items() if k in SCRIPT_INNER)
    detail = ", ".join(f"{k} {v / requests:.2f}" for k, v in sorted(trips.items()))
    return (f"{sum(trips.values()) / requests:.2f} round trips ({detail}); "
            f"{inner / requests:.2f} commands inside the script")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--concurrency", default="4,8,16,32",
                        help="closed-loop concurrencies tried for saturation")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    header("webhook intake: gunicorn --workers 2 --threads 8, signed ~25 KB pull_request bodies")
    figures: dict[str, dict] = {}
    checks: list[str] = []
    with workdir("webhook") as tmp, redis_server(tmp) as server:
        redis = Redis.from_url(server.url)
        # The load generator's payloads name acme/gitops: served, so every delivery is a merge
        # to enqueue (or a redelivery to refuse), never an "ignored" answer that skips the queue.
        env = {"REDIS_URL": server.url, "GITHUB_WEBHOOK_SECRET": GH_SECRET,
               "COALMINE_DATA_DIR": str(tmp / "data"), "COALMINE_REPOS": "acme/gitops=shop"}
        seed = 0
        for name, app in APPS.items():
            with gunicorn(app, env, tmp / f"{name}.log") as (url, master):
                # Warm-up, discarded: lazy imports, connection pools, first-request costs.
                load(url, tmp, concurrency=max(levels), seconds=1.0, seed=1000)
                meter = {"gunicorn": with_children(master), "redis": [server.proc.pid]}
                best = None
                for concurrency in levels:
                    seed += 1
                    redis.flushall()
                    redis.config_resetstat()
                    phase = load(url, tmp, concurrency=concurrency, seconds=args.seconds,
                                 seed=seed, meter=meter)
                    print(f"   {name:8} closed loop c={concurrency:<3} "
                          f"{phase['throughput']:7.0f} req/s  p50 {1000 * phase['p50']:6.1f} ms"
                          f"  p99 {1000 * phase['p99']:6.1f} ms  ({len(phase['results'])} req, "
                          f"{phase['body_bytes']} B bodies)")
                    print(f"            {cpu_line(phase)}")
                    if name == "coalmine":
                        checks.append(f"c={concurrency}: " + check_enqueued(phase, redis))
                        print("            redis per request: "
                              + redis_per_request(redis, len(phase["results"])))
                    if best is None or phase["throughput"] > best["throughput"]:
                        best = {**phase, "concurrency": concurrency}
                rate = 0.8 * best["throughput"]
                seed += 1
                redis.flushall()
                # Enough connections that the open loop is never short of senders.
                at80 = load(url, tmp, concurrency=max(levels), seconds=args.seconds,
                            rate=rate, seed=seed, meter=meter)
                print(f"   {name:8} open loop {rate:7.0f} req/s offered: achieved "
                      f"{at80['throughput']:.0f} req/s, p50 {1000 * at80['p50']:.1f} ms, "
                      f"p99 {1000 * at80['p99']:.1f} ms (from due time {1000 * at80['p99_from_due']:.1f} ms)")
                if name == "coalmine":
                    checks.append("80 %: " + check_enqueued(at80, redis))
                figures[name] = {"sat": best, "rate80": rate, "at80": at80}
    c, b = figures["coalmine"], figures["bare"]
    ratio = c["sat"]["throughput"] / b["sat"]["throughput"]
    print(table([
        ["measure", "coalmine", "bare flask", "ratio"],
        ["saturation throughput", f"{c['sat']['throughput']:.0f} req/s (c={c['sat']['concurrency']})",
         f"{b['sat']['throughput']:.0f} req/s (c={b['sat']['concurrency']})", f"{ratio:.2f}×"],
        ["p50 / p99 at saturation", f"{ms(c['sat']['p50'])} / {ms(c['sat']['p99'])}",
         f"{ms(b['sat']['p50'])} / {ms(b['sat']['p99'])}", ""],
        ["80 % load offered", f"{c['rate80']:.0f} req/s", f"{b['rate80']:.0f} req/s", ""],
        ["p50 / p99 at 80 %", f"{ms(c['at80']['p50'])} / {ms(c['at80']['p99'])}",
         f"{ms(b['at80']['p50'])} / {ms(b['at80']['p99'])}", ""],
        ["p99 at 80 % from due time", ms(c["at80"]["p99_from_due"]),
         ms(b["at80"]["p99_from_due"]), ""],
        *[[f"CPU per request at saturation: {name}",
           f"{1e6 * c['sat']['cpu_per_request'][name]:.0f} µs",
           f"{1e6 * b['sat']['cpu_per_request'][name]:.0f} µs", ""]
          for name in c["sat"]["cpu_per_request"]],
    ]))
    for line in checks:
        print(f"   check {line}")
    print(f"   target throughput ≥ {TARGET_RATIO}× bare: {verdict(ratio >= TARGET_RATIO)}")
    p99 = c["at80"]["p99"]
    print(f"   target p99 ≤ {1000 * TARGET_P99_S:.0f} ms at 80 % load: "
          f"{verdict(p99 <= TARGET_P99_S)}")
    ok = all(line.endswith("ok") for line in checks)
    print(f"   enqueued exactly once, no 5xx: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
