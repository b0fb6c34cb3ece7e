"""Applying 500 objects: Coalmine's `Cluster.apply` vs `kubectl apply --server-side`.

The same 500 files (4 Namespaces; ConfigMaps, Services and Deployments spread over them) are
applied to a FakeKube running in its own process, first to an empty cluster (create) and then
again unchanged (re-apply). Both sides start cold each time: Coalmine builds a new Cluster
(API discovery included) and renders the directory with bot.manifests; kubectl gets a fresh
discovery cache. Median of the runs, each run on a fresh FakeKube.

Two figures per side and phase (issue 9, item 6):

- **process CPU** (user + system, every thread). Each Coalmine apply runs in its own child
  process (`--child`), which imports its modules first and then reads `getrusage(RUSAGE_SELF)`
  around building the Cluster, rendering and applying: interpreter start-up and imports are
  excluded, everything the apply itself costs is in. kubectl's is the rusage of its own child
  process (`os.wait4`), so its start-up (a Go binary, ~tens of ms) is in. Both talk to the same
  FakeKube process, whose CPU is counted on neither side. Target: Coalmine ≤ 1× kubectl.
- **wall time**, as before: Coalmine's from the same place as its CPU, kubectl's around the
  process. Target (issue 4): ≤ 0.5× kubectl.

    .venv/bin/python -m bench.apply [--runs 3] [--profile FILE]

`--profile FILE` also writes a cProfile of one extra Coalmine create and re-apply (every
thread) to FILE.create / FILE.reapply (`python -m pstats`); it is not part of the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, child_env, header, median, python, table, verdict, workdir
from bot.cluster.client import Cluster
from bot.cluster.model import Owner
from bot.manifests import render

WALL_TARGET_RATIO = 0.5  # issue 4
CPU_TARGET_RATIO = 1.0  # issue 9, item 6
PHASES = ("create", "re-apply")
OBJECTS = 500
NAMESPACES = ("alpha", "beta", "gamma", "delta")
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def write_manifests(root: Path, total: int = OBJECTS) -> Path:
    """One file per object; Namespaces sort first, as kubectl applies files in name order."""
    root.mkdir(parents=True)
    for ns in NAMESPACES:
        (root / f"000-namespace-{ns}.yaml").write_text(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
    for i in range(total - len(NAMESPACES)):
        ns = NAMESPACES[i % len(NAMESPACES)]
        kind = ("ConfigMap", "Service", "Deployment")[i % 3]
        name = f"{kind.lower()}-{i:03}"
        if kind == "ConfigMap":
            text = (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
                    f"  namespace: {ns}\ndata:\n  key: value-{i}\n  mode: blue\n")
        elif kind == "Service":
            text = (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n"
                    f"  namespace: {ns}\nspec:\n  selector: {{app: {name}}}\n"
                    "  ports: [{port: 80, targetPort: 8080}]\n")
        else:
            text = (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n"
                    f"  namespace: {ns}\nspec:\n  replicas: 2\n  selector:\n"
                    f"    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n"
                    f"      labels: {{app: {name}}}\n    spec:\n      containers:\n"
                    f"        - name: app\n          image: registry.example/{name}:1.0\n")
        (root / f"{i + 1:03}-{name}.yaml").write_text(text)
    return root




@dataclass(frozen=True)
class Measure:
    """One side's apply: process CPU (user + system) and wall time, in seconds."""

    cpu_s: float
    wall_s: float
    user_s: float = 0.0
    sys_s: float = 0.0
    render_cpu_s: float = 0.0  # Coalmine only: the part spent rendering the YAML files
    server_cpu_s: float = 0.0  # what the FakeKube process spent answering (not in cpu_s)


@contextmanager
def fake_kube(kubeconfig: Path) -> Iterator[int]:
    """A FakeKube process writing `kubeconfig`; yields its pid, for `process_cpu`."""
    proc = subprocess.Popen([python(), "-m", "bench.fake_kube_process", str(kubeconfig)],
                            cwd=REPO_ROOT, env=child_env({}), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # the URL: the server is up
        yield proc.pid
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def child_apply(kubeconfig: Path, manifests: Path) -> dict[str, Any]:
    """One cold Coalmine apply in this (otherwise idle) process: CPU of every thread."""
    user0, sys0 = _cpu()
    began = time.perf_counter()
    cluster = Cluster.from_config(str(kubeconfig))
    render_user0, render_sys0 = _cpu()
    objects = render(manifests.parent, manifests.name)
    render_user1, render_sys1 = _cpu()
    report = cluster.apply(objects, app="bench", revision="r1", default_namespace="alpha",
                           owner=Owner("github", 1, "bench/bench", "bench"))
    wall = time.perf_counter() - began
    user1, sys1 = _cpu()
    return {"user_s": user1 - user0, "sys_s": sys1 - sys0, "wall_s": wall,
            "render_cpu_s": render_user1 - render_user0 + render_sys1 - render_sys0,
            "created": len(report.created), "configured": len(report.configured),
            "unchanged": len(report.unchanged)}


def profiled(fn: Callable[[], Any], out: Path) -> Any:
    """Runs `fn` under cProfile in this thread and in every thread it starts; writes `out`.

    cProfile sees only the thread that enabled it, and apply works from a thread pool: each new
    thread enables a profiler of its own on its first event, and the stats are merged. The
    clock is each thread's CPU time, so time spent waiting for the server is not counted.
    """
    profiles = [cProfile.Profile(time.thread_time)]
    lock = threading.Lock()

    def start_in_thread(*_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook in the new thread

    threading.setprofile(start_in_thread)
    profiles[0].enable()
    try:
        return fn()
    finally:
        profiles[0].disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        with lock:
            for profile in profiles[1:]:
                profile.disable()  # harmless from another thread: it only stops collecting
            pstats.Stats(*profiles).dump_stats(str(out))


def coalmine_apply(
    kubeconfig: Path, manifests: Path, server: int, profile: Path | None = None
) -> tuple[Measure, dict[str, int]]:
    """Runs the apply in a child process (`--child`) and reads its figures from stdout."""
    command = [python(), "-m", "bench.apply", "--child", str(kubeconfig), str(manifests)]
    if profile is not None:
        command += ["--profile", str(profile)]
    server_before = process_cpu(server)
    result = subprocess.run(command, cwd=REPO_ROOT, env=child_env({}), capture_output=True,
                            text=True, timeout=600, check=False)
    server_cpu = process_cpu(server) - server_before
    if result.returncode != 0:
        raise RuntimeError(f"coalmine apply failed: {result.stderr[-2000:]}")
    figures = json.loads(result.stdout.splitlines()[-1])
    counts = {k: figures[k] for k in ("created", "configured", "unchanged")}
    return Measure(figures["user_s"] + figures["sys_s"], figures["wall_s"], figures["user_s"],
                   figures["sys_s"], figures["render_cpu_s"], server_cpu), counts


def kubectl_apply(
    kubeconfig: Path, manifests: Path, cache: Path, server: int
) -> tuple[Measure, int]:
    """kubectl's wall time around the process, and its CPU from its own rusage (`os.wait4`,
    which on Linux includes any process it started and reaped: the SDK's dispatcher)."""
    shutil.rmtree(cache, ignore_errors=True)
    out_file, err_file = cache.with_suffix(".out"), cache.with_suffix(".err")
    server_before = process_cpu(server)
    with out_file.open("w") as out, err_file.open("w") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), "apply",
             "--server-side", "--field-manager", "coalmine", "-f", str(manifests)],
            stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): it would drop the rusage
        took = time.perf_counter() - began
    server_cpu = process_cpu(server) - server_before
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {err_file.read_text()[-2000:]}")
    measure = Measure(usage.ru_utime + usage.ru_stime, took, usage.ru_utime, usage.ru_stime,
                      server_cpu_s=server_cpu)
    return measure, len(out_file.read_text().splitlines())


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kubeconfig", type=Path)
    parser.add_argument("manifests", type=Path)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    if args.profile is None:
        figures = child_apply(args.kubeconfig, args.manifests)
    else:
        figures = profiled(lambda: child_apply(args.kubeconfig, args.manifests), args.profile)
    print(json.dumps(figures), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="also write cProfile stats to FILE.<phase>")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        return _child(rest + (["--profile", str(args.profile)] if args.profile else []))
    header("apply 500 objects: Cluster.apply vs kubectl apply --server-side (same FakeKube)")
    print(f"   load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    measures: dict[str, list[Measure]] = {f"{side} {phase}": [] for side in ("coalmine", "kubectl")
                                          for phase in PHASES}
    with workdir("apply") as tmp:
        manifests = write_manifests(tmp / "manifests")
        for run in range(args.runs):
            kubeconfig = tmp / f"kubeconfig-c{run}"
            with fake_kube(kubeconfig) as server:
                measure, first = coalmine_apply(kubeconfig, manifests, server)
                measures["coalmine create"].append(measure)
                measure, again = coalmine_apply(kubeconfig, manifests, server)
                measures["coalmine re-apply"].append(measure)
            kubeconfig = tmp / f"kubeconfig-k{run}"
            with fake_kube(kubeconfig) as server:
                cache = tmp / "kubectl-cache"
                measure, lines = kubectl_apply(kubeconfig, manifests, cache, server)
                measures["kubectl create"].append(measure)
                measure, _ = kubectl_apply(kubeconfig, manifests, cache, server)
                measures["kubectl re-apply"].append(measure)
            print(f"   run {run + 1}: " + ", ".join(
                f"{k} {v[-1].wall_s:.2f} s / CPU {v[-1].cpu_s:.2f} s" for k, v in measures.items())
                + f"  (coalmine first {first}, again {again}; kubectl {lines} lines)")
        if args.profile is not None:
            kubeconfig = tmp / "kubeconfig-profile"
            with fake_kube(kubeconfig) as server:
                for phase in ("create", "reapply"):
                    coalmine_apply(kubeconfig, manifests, server, args.profile.with_name(
                        f"{args.profile.name}.{phase}"))
            print(f"   profiles: {args.profile}.create, {args.profile}.reapply")
    print(f"   load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(_report(measures, objects=OBJECTS))
    return 0


def _report(measures: dict[str, list[Measure]], objects: int) -> str:
    """Medians per phase: CPU per object (with user/system and render split) and wall time."""
    rows = [["phase", "coalmine CPU/object", "kubectl CPU/object", "CPU ratio",
             f"≤ {CPU_TARGET_RATIO:g}×", "coalmine wall", "kubectl wall", "wall ratio",
             f"≤ {WALL_TARGET_RATIO:g}×"]]
    notes = []
    for phase in PHASES:
        ours, theirs = measures[f"coalmine {phase}"], measures[f"kubectl {phase}"]
        c_cpu, k_cpu = median([m.cpu_s for m in ours]), median([m.cpu_s for m in theirs])
        c_wall, k_wall = median([m.wall_s for m in ours]), median([m.wall_s for m in theirs])
        rows.append([phase, f"{c_cpu / objects * 1000:.2f} ms", f"{k_cpu / objects * 1000:.2f} ms",
                     f"{c_cpu / k_cpu:.2f}×", verdict(c_cpu / k_cpu <= CPU_TARGET_RATIO),
                     f"{c_wall:.2f} s", f"{k_wall:.2f} s", f"{c_wall / k_wall:.2f}×",
                     verdict(c_wall / k_wall <= WALL_TARGET_RATIO)])
        notes.append(
            f"   {phase}: coalmine CPU {c_cpu:.2f} s (user {median([m.user_s for m in ours]):.2f}, "
            f"system {median([m.sys_s for m in ours]):.2f}, of which rendering "
            f"{median([m.render_cpu_s for m in ours]):.2f}); kubectl CPU {k_cpu:.2f} s (user "
            f"{median([m.user_s for m in theirs]):.2f}, system {median([m.sys_s for m in theirs]):.2f})"
            f"; FakeKube CPU answering coalmine {median([m.server_cpu_s for m in ours]):.2f} s, "
            f"kubectl {median([m.server_cpu_s for m in theirs]):.2f} s")
    return table(rows) + "\n" + "\n".join(notes)


if __name__ == "__main__":
    raise SystemExit(main())
