"""A small HTTP load generator for signed GitHub webhooks, run as its own process.

Threads share a request plan; each keeps one HTTP/1.1 keep-alive connection (http.client). The
plan holds `count` merged-PR payloads of ~`padding` bytes; a `duplicates` share of them repeat an
earlier delivery (same id, same body), as a forge's redelivery would. Without `--rate` the
threads send back to back (closed loop, for saturation); with `--rate` request i is due at
start + i / rate (open loop) and its latency is also counted from that due time, so a stalled
server cannot hide its queueing (coordinated omission). It stops after `count` requests or
`--seconds`, whichever comes first, and writes one JSON record per request to `--out`, with
the CPU seconds the sending took (`cpu_s`, the plan excluded).

    python -m bench.loadgen --url http://127.0.0.1:PORT/webhooks/github --secret S \
        --count 5000 --concurrency 16 [--rate 300] --seconds 5 --out results.json
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import random
import threading
import time
import uuid
from urllib.parse import urlsplit

from tests.harness import payloads

TEMPLATE_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"


def plan(count: int, secret: str, padding: int, duplicates: float, seed: int):
    """(delivery id, body, headers) per request; duplicates reuse an earlier delivery."""
    rng = random.Random(seed)
    template = payloads.dumps(payloads.github_pr_merged(merge_sha=TEMPLATE_SHA, padding=padding))
    requests: list[tuple[str, bytes, dict[str, str]]] = []
    for i in range(count):
        if requests and rng.random() < duplicates:
            requests.append(requests[rng.randrange(len(requests))])
            continue
        sha = hashlib.sha1(f"{seed}-{i}".encode()).hexdigest()
        body = template.replace(TEMPLATE_SHA.encode(), sha.encode())
        delivery = str(uuid.UUID(int=rng.getrandbits(128)))
        headers = payloads.github_headers(body, secret, "pull_request", delivery)
        headers["Connection"] = "keep-alive"
        requests.append((delivery, body, headers))
    return requests


def run(url: str, requests, concurrency: int, rate: float | None, seconds: float) -> list[dict]:
    parts = urlsplit(url)
    results: list[dict] = []
    lock = threading.Lock()
    counter = itertools.count()
    start = time.perf_counter() + 0.05
    stop_at = start + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        own = []
        while True:
            i = next(counter)
            if i >= len(requests):
                break
            due = start + i / rate if rate else None
            if due is not None:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent = time.perf_counter()
            if sent > stop_at:
                break
            delivery, body, headers = requests[i]
            try:
                conn.request("POST", parts.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                code = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                code, data = 0, str(exc).encode()
            done = time.perf_counter()
            try:
                answer = json.loads(data).get("status", "") if data.startswith(b"{") else ""
            except ValueError:
                answer = ""
            own.append({"i": i, "delivery": delivery, "code": code, "answer": answer,
                        "sent": sent - start, "done": done - start, "latency": done - sent,
                        "from_due": done - (due if due is not None else sent)})
        conn.close()
        with lock:
            results.extend(own)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return sorted(results, key=lambda r: r["i"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=None, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--padding", type=int, default=20800, help="bytes added to the body")
    parser.add_argument("--duplicates", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("load goes to 127.0.0.1 only")
    requests = plan(args.count, args.secret, args.padding, args.duplicates, args.seed)
    cpu_before = time.process_time()
    results = run(args.url, requests, args.concurrency, args.rate, args.seconds)
    # The sending's own CPU (not the plan's), so the benchmark can say what load costs.
    cpu_s = time.process_time() - cpu_before
    with open(args.out, "w") as out:
        json.dump({"body_bytes": len(requests[0][1]), "cpu_s": cpu_s, "results": results}, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
