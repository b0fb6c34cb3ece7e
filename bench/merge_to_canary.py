"""Webhook arrival → canary Deployment in the cluster, for an app of 200 manifests.

A real `coalmine worker` subprocess runs the merge job against the FakeKube (this process) and
fake GitHub; the git mirror is warm (one merge before measuring). Each measured merge changes
the image, so each starts a canary (superseding the previous one). Time: from the webhook POST
to the FakeKube holding `web-canary` with the new image.

Reference: Argo CD polls Git every 3 minutes by default (timeout.reconciliation 120 s plus up
to 60 s jitter); with a Git webhook configured it starts syncing within seconds.

    .venv/bin/python -m bench.merge_to_canary [--merges 10]
"""

from __future__ import annotations

import argparse

from bench.common import (
    bot_world,
    deployment_yaml,
    header,
    median,
    redis_server,
    table,
    verdict,
    workdir,
)

TARGET_S = 1.0
NAMESPACE = "shop"

CONFIG = f"""apps:
  - name: web
    path: deploy/web
    namespace: {NAMESPACE}
    prune: true
    healthTimeoutSeconds: 30
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: 60
      steps:
        - setWeight: 34
        - pause: {{}}
"""


def app_files(image: str) -> dict[str, str]:
    """200 manifests: a Namespace, the canary Deployment, 99 ConfigMaps and 99 Services."""
    files = {
        ".coalmine.yaml": CONFIG,
        "deploy/web/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n",
        "deploy/web/deployment.yaml": deployment_yaml("web", image),
    }
    for i in range(99):
        files[f"deploy/web/config/cm-{i:03}.yaml"] = (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:03}\n"
            f"data:\n  key: value-{i}\n  mode: blue\n")
        files[f"deploy/web/services/svc-{i:03}.yaml"] = (
            f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i:03}\n"
            f"spec:\n  selector: {{app: svc-{i:03}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merges", type=int, default=10)
    args = parser.parse_args(argv)
    header("merge → canary (app of 200 manifests, real RQ worker, warm mirror)")
    with workdir("merge") as tmp, redis_server(tmp) as redis, \
            bot_world(tmp, redis.url, app_files("registry.example/web:1.0")) as bw:
        bw.bot.start_worker()
        # Warm-up: the first merge clones the mirror and applies stable v1 without a canary.
        bw.merge({"deploy/web/config/cm-000.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-000\ndata:\n  key: warm\n")},
            "Warm up")
        bw.wait_kube(lambda: _image(bw, "web") == "registry.example/web:1.0", 120, "stable v1")
        bw.idle()
        samples = []
        requests_before = len(bw.kube.requests)
        for i in range(1, args.merges + 1):
            image = f"registry.example/web:2.{i}"
            _, _, sent, _ = bw.merge(
                {"deploy/web/deployment.yaml": deployment_yaml("web", image)}, f"Web 2.{i}")
            seen = bw.wait_kube(lambda image=image: _image(bw, "web-canary") == image, 60,
                                f"canary {image}")
            samples.append(seen - sent)
            bw.idle()  # let the job finish its reports before the next merge
            print(f"   merge {i:2}: {1000 * (seen - sent):7.1f} ms")
        objects = len(bw.kube.objects(namespace=NAMESPACE))
        per_merge = (len(bw.kube.requests) - requests_before) / args.merges
    med = median(samples)
    print(table([
        ["measure", "coalmine", "reference (Argo CD)"],
        ["median webhook → canary", f"{med:.3f} s",
         "≤ 180 s polling (120 s + ≤ 60 s jitter); seconds with a webhook"],
        ["min / max", f"{min(samples):.3f} / {max(samples):.3f} s", ""],
    ]))
    print(f"   objects in namespace {NAMESPACE} at the end: {objects}; Kubernetes API requests "
          f"per merge (job and rollout until idle): {per_merge:.0f}")
    print(f"   target median ≤ {TARGET_S:g} s: {verdict(med <= TARGET_S)}")
    return 0


def _image(bw, name: str) -> str | None:
    obj = bw.deployment(name, NAMESPACE)
    return obj["spec"]["template"]["spec"]["containers"][0]["image"] if obj else None


if __name__ == "__main__":
    raise SystemExit(main())
