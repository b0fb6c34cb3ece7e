"""Applying 500 objects: Coalmine's `Cluster.apply` vs `kubectl apply --server-side`.

The same 500 files (4 Namespaces; ConfigMaps, Services and Deployments spread over them) are
applied to a FakeKube running in its own process, first to an empty cluster (create) and then
again unchanged (re-apply). Both sides start cold each time: Coalmine builds a new Cluster
(API discovery included) and renders the directory with bot.manifests; kubectl gets a fresh
discovery cache. Wall time, median of 3 runs, each run on a fresh FakeKube.

    .venv/bin/python -m bench.apply [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from bench.common import REPO_ROOT, child_env, header, median, python, table, verdict, workdir
from bot.cluster.model import Owner

TARGET_RATIO = 0.5
NAMESPACES = ("alpha", "beta", "gamma", "delta")
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def write_manifests(root: Path, total: int = 500) -> Path:
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


@contextmanager
def fake_kube(kubeconfig: Path):
    proc = subprocess.Popen([python(), "-m", "bench.fake_kube_process", str(kubeconfig)],
                            cwd=REPO_ROOT, env=child_env({}), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # the URL: the server is up
        yield
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def coalmine_apply(kubeconfig: Path, manifests: Path) -> tuple[float, dict[str, int]]:
    from bot.cluster.client import Cluster
    from bot.manifests import render

    began = time.perf_counter()
    cluster = Cluster.from_config(str(kubeconfig))
    objects = render(manifests.parent, manifests.name)
    report = cluster.apply(objects, app="bench", revision="r1", default_namespace="alpha",
                           owner=Owner("github", 1, "bench/bench", "bench"))
    took = time.perf_counter() - began
    return took, {"created": len(report.created), "configured": len(report.configured),
                  "unchanged": len(report.unchanged)}


def kubectl_apply(kubeconfig: Path, manifests: Path, cache: Path) -> tuple[float, int]:
    shutil.rmtree(cache, ignore_errors=True)
    began = time.perf_counter()
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), "apply",
         "--server-side", "--field-manager", "coalmine", "-f", str(manifests)],
        capture_output=True, text=True, timeout=600, check=False)
    took = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {result.stderr[-2000:]}")
    return took, len(result.stdout.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    header("apply 500 objects: Cluster.apply vs kubectl apply --server-side (same FakeKube)")
    times: dict[str, list[float]] = {k: [] for k in
                                     ("coalmine create", "coalmine re-apply",
                                      "kubectl create", "kubectl re-apply")}
    with workdir("apply") as tmp:
        manifests = write_manifests(tmp / "manifests")
        for run in range(args.runs):
            kubeconfig = tmp / f"kubeconfig-c{run}"
            with fake_kube(kubeconfig):
                took, first = coalmine_apply(kubeconfig, manifests)
                times["coalmine create"].append(took)
                took, again = coalmine_apply(kubeconfig, manifests)
                times["coalmine re-apply"].append(took)
            kubeconfig = tmp / f"kubeconfig-k{run}"
            with fake_kube(kubeconfig):
                took, lines = kubectl_apply(kubeconfig, manifests, tmp / "kubectl-cache")
                times["kubectl create"].append(took)
                took, _ = kubectl_apply(kubeconfig, manifests, tmp / "kubectl-cache")
                times["kubectl re-apply"].append(took)
            print(f"   run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                  + f"  (coalmine first {first}, again {again}; kubectl {lines} lines)")
    rows = [["phase", "coalmine (median)", "kubectl (median)", "ratio", "target ≤ 0.5×"]]
    for phase in ("create", "re-apply"):
        c, k = median(times[f"coalmine {phase}"]), median(times[f"kubectl {phase}"])
        ratio = c / k
        rows.append([phase, f"{c:.2f} s", f"{k:.2f} s", f"{ratio:.2f}×",
                     verdict(ratio <= TARGET_RATIO)])
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
