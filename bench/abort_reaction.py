"""Abort reaction: a failing measurement recorded → stable back at full weight, canary gone.

A canary app (3 replicas; steps: setWeight 34, analysis) whose analysis uses the web provider
against a local endpoint (tests.harness CannedHTTPServer) answering a failing value. A real
`coalmine worker` runs the rollout against the FakeKube in this process. For each release:
t0 = when the engine recorded the Failed measurement (the metric point's time in the stored
rollout), t1 = when the FakeKube first shows no `web-canary` and `web` at 3 replicas. t1 - t0 is
Coalmine's own overhead (the provider's latency is not in it).

    .venv/bin/python -m bench.abort_reaction [--releases 5]
"""

from __future__ import annotations

import argparse
import json

from bench.common import (
    REPO,
    bot_world,
    deployment_yaml,
    header,
    median,
    redis_server,
    table,
    verdict,
    wait_for,
    workdir,
)

TARGET_S = 1.0
NAMESPACE = "shop"
REPLICAS = 3

CONFIG = f"""apps:
  - name: web
    path: deploy/web
    namespace: {NAMESPACE}
    healthTimeoutSeconds: 30
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: 60
      steps:
        - setWeight: 34
        - analysis:
            templates: [{{templateName: error-rate}}]
"""


def template(url: str) -> str:
    return f"""apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
spec:
  metrics:
    - name: error-rate
      interval: 1s
      count: 1
      successCondition: result >= 0.95
      failureCondition: result < 0.90
      provider:
        web:
          url: {url}/quality
          jsonPath: "{{$.value}}"
"""


def main(argv: list[str] | None = None) -> int:
    from bot.rollout.store import RolloutStore, rollout_key
    from tests.harness.prometheus import CannedHTTPServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=5)
    args = parser.parse_args(argv)
    header("abort reaction: Failed measurement recorded → stable at full weight, canary gone")
    metric = CannedHTTPServer().start()
    metric.reply(200, json.dumps({"value": 0.5}))
    files = {
        ".coalmine.yaml": CONFIG,
        "deploy/web/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n",
        "deploy/web/deployment.yaml": deployment_yaml("web", "registry.example/web:1.0", REPLICAS),
        "deploy/web/analysis.yaml": template(metric.url),
    }
    samples = []
    try:
        with workdir("abort") as tmp, redis_server(tmp) as redis, \
                bot_world(tmp, redis.url, files) as bw:
            bw.bot.start_worker()
            bw.merge({"deploy/web/README": "stable v1\n"}, "Stable v1")
            bw.wait_kube(lambda: bw.deployment("web", NAMESPACE) is not None, 120, "stable v1")
            bw.idle()
            store = RolloutStore(bw.bot.redis)
            key = rollout_key("github", REPO, "web")
            for i in range(1, args.releases + 1):
                image = f"registry.example/web:bad-{i}"
                _, sha, _, _ = bw.merge(
                    {"deploy/web/deployment.yaml": deployment_yaml("web", image, REPLICAS)},
                    f"Bad release {i}")
                bw.wait_kube(lambda image=image: _image(bw, "web-canary") == image, 60,
                             f"canary {image}")
                restored = bw.wait_kube(lambda: _restored(bw), 60, "stable restored")
                # The job saves the record after its cluster writes: wait for the save.
                record = wait_for(lambda sha=sha: _aborted(store.load(key), sha), 30,
                                  "aborted record")
                failed = [p.at for p in record.state.metric_points if p.phase == "Failed"]
                if record.state.revision != sha or record.state.phase != "Aborted" or not failed:
                    raise RuntimeError(f"release {i}: rollout is {record.state.phase}, "
                                       f"revision {record.state.revision[:7]}, no Failed point"
                                       f"\n{record.state.history}\n{bw.bot.worker_log()[-4000:]}")
                samples.append(restored - failed[-1])
                print(f"   release {i}: {1000 * samples[-1]:7.1f} ms")
                bw.idle()  # the revert PR job runs before the next release
    finally:
        metric.stop()
    med = median(samples)
    print(table([
        ["measure", "coalmine"],
        ["median Failed recorded → stable restored", f"{1000 * med:.1f} ms"],
        ["min / max", f"{1000 * min(samples):.1f} / {1000 * max(samples):.1f} ms"],
    ]))
    print(f"   target ≤ {TARGET_S:g} s: {verdict(med <= TARGET_S)}")
    return 0


def _aborted(record, sha: str):
    return record if record.state.revision == sha and record.state.phase == "Aborted" else None


def _image(bw, name: str) -> str | None:
    obj = bw.deployment(name, NAMESPACE)
    return obj["spec"]["template"]["spec"]["containers"][0]["image"] if obj else None


def _restored(bw) -> bool:
    stable = bw.deployment("web", NAMESPACE)
    return (bw.deployment("web-canary", NAMESPACE) is None and stable is not None
            and stable["spec"]["replicas"] == REPLICAS)


if __name__ == "__main__":
    raise SystemExit(main())
