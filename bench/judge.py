"""The statistical judge against a threshold judge, on the same synthetic canaries.

Each trial is one canary analysis: 3 canary pods and 3 baseline pods (a fresh copy of the old
version, sized like the canary) serve traffic for N one-minute intervals. Seeded noise:
- request counts: Poisson per pod and minute, 20 req/s per pod on average, with a per-pod share
  (log-normal, sigma 0.2: the load balancer is not perfectly even) and a slow traffic trend
  (+20 % over the window, on both sides);
- latencies: log-normal per request (median 80 ms, sigma 0.5, so p99 ~ 256 ms), a per-pod
  speed factor (log-normal, sigma 0.03: pods on different nodes), a slow trend (+10 % over the
  window on both sides), counted into a Prometheus-style histogram (buckets 5 ms x 1.2^k) and
  read back with histogram_quantile(0.99) per side and minute, as a PromQL query would;
- errors: Binomial per pod and minute, base rate 0.5 %, a per-pod factor (log-normal, 0.1);
- an outlier pod: in 30 % of trials one of the six pods (either side) has bad minutes (each
  minute with probability 0.1): 3x latency and 5x errors (GC pauses, a noisy neighbour).
Regressions multiply the canary pods' error probability by 2 or their latency by 1.2.

Every case goes through `coalmine judge --cases FILE` (a subprocess, as a user would run it),
with two metrics per case: error rate (increase is bad, allowed +50 %, outliers removed) and p99
latency (increase is bad, allowed +10 %, outliers removed); thresholds pass 95, marginal 75. The
same cases are also judged with outliers kept, to show what removal buys.

The threshold judge is an Argo Rollouts AnalysisTemplate as people write it, on the canary
alone: every 5 minutes, `sum(errors)/sum(requests)` over the last 5 minutes must be < 1 % and
`histogram_quantile(0.99, ...)` < 350 ms (~1.4x the normal p99). Strict: failureLimit 0 (Argo's
default, and the threshold judge the targets compare with); lenient: failureLimit 3 (the Argo
docs' example), shown for information: with 5-minute windows it cannot fail a 10-minute
analysis at all. A measurement without data is inconclusive, as in Coalmine's analysis.

    .venv/bin/python -m bench.judge [--trials 1000] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from bench.common import header, table, verdict, workdir
from bot.judge.model import DEFAULT_MIN_SAMPLES

PODS = 3  # per side
RPS_PER_POD = 20.0
ERROR_RATE = 0.005
MEDIAN_MS = 80.0
LATENCY_SIGMA = 0.5
POD_SHARE_SIGMA = 0.2
POD_SPEED_SIGMA = 0.03
POD_ERROR_SIGMA = 0.1
LATENCY_TREND = 0.10
TRAFFIC_TREND = 0.20
OUTLIER_TRIAL_SHARE = 0.3
OUTLIER_MINUTE_SHARE = 0.1
BUCKETS = 5.0 * 1.2 ** np.arange(47)  # 5 ms .. ~26 s, then +Inf
THRESHOLD_ERROR = 0.01
THRESHOLD_P99_MS = 350.0
WINDOW_MIN = 5
THRESHOLDS = {"pass": 95, "marginal": 75}
TARGET_FALSE_FAIL = 0.01
TARGET_DETECTION = 0.95


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "aa" | "regression" | "short"
    minutes: int
    error_factor: float = 1.0
    latency_factor: float = 1.0


def scenarios() -> list[Scenario]:
    short = DEFAULT_MIN_SAMPLES
    return [
        Scenario(f"A/A, {short} min", "aa", short),
        Scenario("A/A, 30 min", "aa", 30),
        Scenario(f"errors x2, {short} min", "regression", short, error_factor=2.0),
        Scenario("errors x2, 30 min", "regression", 30, error_factor=2.0),
        Scenario(f"latency +20 %, {short} min", "regression", short, latency_factor=1.2),
        Scenario("latency +20 %, 30 min", "regression", 30, latency_factor=1.2),
        Scenario(f"latency +20 %, {short - 1} min (too short)", "short", short - 1,
                 latency_factor=1.2),
        Scenario(f"A/A, {short - 1} min (too short)", "short", short - 1),
    ]


@dataclass
class Sides:
    """Per trial and minute: error rate and p99 of each side, and the canary's raw counts."""

    canary_errors: np.ndarray  # (trials, minutes) error rate, NaN without requests
    baseline_errors: np.ndarray
    canary_p99: np.ndarray  # (trials, minutes) ms, NaN without requests
    baseline_p99: np.ndarray
    canary_requests: np.ndarray  # (trials, minutes)
    canary_failed: np.ndarray  # (trials, minutes) error count
    canary_hist: np.ndarray  # (trials, minutes, buckets + 1)


def simulate(s: Scenario, trials: int, rng: np.random.Generator) -> Sides:
    pods, minutes = 2 * PODS, s.minutes
    t = np.arange(minutes) / max(minutes - 1, 1)
    share = rng.lognormal(0.0, POD_SHARE_SIGMA, (trials, pods, 1))
    speed = rng.lognormal(0.0, POD_SPEED_SIGMA, (trials, pods, 1))
    err_mult = rng.lognormal(0.0, POD_ERROR_SIGMA, (trials, pods, 1))
    outlier_pod = np.where(rng.random(trials) < OUTLIER_TRIAL_SHARE,
                           rng.integers(0, pods, trials), -1)
    bad_minute = rng.random((trials, 1, minutes)) < OUTLIER_MINUTE_SHARE
    is_outlier = (np.arange(pods)[None, :, None] == outlier_pod[:, None, None]) & bad_minute
    canary = (np.arange(pods) < PODS)[None, :, None]
    requests = rng.poisson(RPS_PER_POD * 60 * share * (1 + TRAFFIC_TREND * t))
    p_error = (ERROR_RATE * err_mult * np.where(is_outlier, 5.0, 1.0)
               * np.where(canary, s.error_factor, 1.0))
    failed = rng.binomial(requests, np.minimum(p_error, 1.0))
    median = (MEDIAN_MS * speed * (1 + LATENCY_TREND * t) * np.where(is_outlier, 3.0, 1.0)
              * np.where(canary, s.latency_factor, 1.0))
    cdf = ndtr((np.log(BUCKETS) - np.log(median)[..., None]) / LATENCY_SIGMA)
    pvals = np.diff(np.concatenate([np.zeros(cdf.shape[:-1] + (1,)), cdf,
                                    np.ones(cdf.shape[:-1] + (1,))], axis=-1), axis=-1)
    hist = rng.multinomial(requests, np.clip(pvals, 0.0, 1.0))
    sides = []
    for pods_of_side in (slice(0, PODS), slice(PODS, pods)):
        n = requests[:, pods_of_side].sum(axis=1)
        e = failed[:, pods_of_side].sum(axis=1)
        h = hist[:, pods_of_side].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sides.append((np.where(n > 0, e / n, np.nan), histogram_quantile(0.99, h), n, e, h))
    (c_err, c_p99, c_n, c_e, c_h), (b_err, b_p99, _, _, _) = sides
    return Sides(c_err, b_err, c_p99, b_p99, c_n, c_e, c_h)


def histogram_quantile(q: float, hist: np.ndarray) -> np.ndarray:
    """Prometheus' histogram_quantile over the last axis (counts per bucket, +Inf last)."""
    cumulative = np.cumsum(hist, axis=-1).astype(np.float64)
    total = cumulative[..., -1]
    rank = q * total
    index = np.argmax(cumulative >= rank[..., None], axis=-1)
    uppers = np.append(BUCKETS, np.inf)
    lowers = np.append(0.0, BUCKETS)
    below = np.take_along_axis(cumulative, np.maximum(index - 1, 0)[..., None], -1)[..., 0]
    below = np.where(index == 0, 0.0, below)
    inside = np.take_along_axis(cumulative, index[..., None], -1)[..., 0] - below
    upper, lower = uppers[index], lowers[index]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lower + (upper - lower) * (rank - below) / inside
    value = np.where(index == len(BUCKETS), BUCKETS[-1], value)  # in +Inf: the last bound
    return np.where(total > 0, value, np.nan)


def threshold_judge(sides: Sides, failure_limit: int) -> np.ndarray:
    """Argo-style verdicts per trial on the canary alone: "fail", "nodata" or "pass"."""
    trials, minutes = sides.canary_requests.shape
    windows = minutes // WINDOW_MIN
    failed_err = np.zeros(trials, dtype=int)
    failed_p99 = np.zeros(trials, dtype=int)
    unknown = np.zeros(trials, dtype=bool)
    for w in range(windows):
        part = slice(w * WINDOW_MIN, (w + 1) * WINDOW_MIN)
        n = sides.canary_requests[:, part].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(n > 0, sides.canary_failed[:, part].sum(axis=1) / n, np.nan)
        p99 = histogram_quantile(0.99, sides.canary_hist[:, part].sum(axis=1))
        unknown |= np.isnan(rate) | np.isnan(p99)
        failed_err += rate >= THRESHOLD_ERROR
        failed_p99 += p99 >= THRESHOLD_P99_MS
    fail = (failed_err > failure_limit) | (failed_p99 > failure_limit)
    return np.where(fail, "fail", np.where(unknown | (windows == 0), "nodata", "pass"))


def cases(s: Scenario, sides: Sides, outliers: str) -> list[str]:
    def values(row: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else round(float(v), 7) for v in row]

    lines = []
    for k in range(sides.canary_errors.shape[0]):
        metrics = [
            {"name": "error rate", "direction": "increase", "allowedIncrease": 1.5,
             "outliers": outliers, "canary": values(sides.canary_errors[k]),
             "baseline": values(sides.baseline_errors[k])},
            {"name": "p99 latency", "direction": "increase", "allowedIncrease": 1.1,
             "outliers": outliers, "canary": values(sides.canary_p99[k]),
             "baseline": values(sides.baseline_p99[k])},
        ]
        lines.append(json.dumps({"id": f"{s.name}#{k}", "thresholds": THRESHOLDS,
                                 "metrics": metrics}))
    return lines


def run_judge(path: Path) -> tuple[list[dict], float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bot.cli", "judge", "--cases", str(path)],
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"coalmine judge failed ({done.returncode}): {done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines()], elapsed


def rate(verdicts: list[str] | np.ndarray, what: str) -> float:
    return float(np.mean(np.asarray(verdicts) == what)) if len(verdicts) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    header("judge: statistical judge vs threshold judge on synthetic canaries")
    print(f"   load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.trials} trials per scenario, seed {args.seed}, minimum samples "
          f"{DEFAULT_MIN_SAMPLES}")
    rng = np.random.default_rng(args.seed)
    plan = scenarios()
    data = [simulate(s, args.trials, rng) for s in plan]
    with workdir("judge") as tmp:
        outcome = {}
        for outliers in ("remove", "keep"):
            path = tmp / f"cases-{outliers}.jsonl"
            path.write_text("\n".join(line for s, d in zip(plan, data, strict=True)
                                      for line in cases(s, d, outliers)) + "\n")
            outcome[outliers] = run_judge(path)
        empty = tmp / "empty.jsonl"
        empty.write_text("")
        _, startup = run_judge(empty)
    results, elapsed = outcome["remove"]
    kept, _ = outcome["keep"]
    total = len(results)
    rows = [["scenario", "judge fail", "judge pass", "judge nodata", "outliers kept: fail",
             "threshold strict: fail", "threshold lenient: fail"]]
    summary: dict[str, dict[str, float]] = {}
    offset = 0
    bad_nodata = 0
    for s, d in zip(plan, data, strict=True):
        mine = results[offset:offset + args.trials]
        verdicts = [r["verdict"] for r in mine]
        kept_verdicts = [r["verdict"] for r in kept[offset:offset + args.trials]]
        offset += args.trials
        bad_nodata += sum(
            m["classification"] == "pass"
            for r in mine for m in r["metrics"]
            if min(measured(m["canary"]), measured(m["baseline"])) < DEFAULT_MIN_SAMPLES)
        if s.kind == "short":
            bad_nodata += sum(v == "pass" for v in verdicts)
        strict, lenient = threshold_judge(d, 0), threshold_judge(d, 3)
        summary[s.name] = {"judge": rate(verdicts, "fail"), "strict": rate(strict, "fail"),
                           "lenient": rate(lenient, "fail"), "kind": s.kind}
        rows.append([s.name, pct(rate(verdicts, "fail")), pct(rate(verdicts, "pass")),
                     pct(rate(verdicts, "nodata")), pct(rate(kept_verdicts, "fail")),
                     pct(rate(strict, "fail")), pct(rate(lenient, "fail"))])
    print(table(rows))
    aa = [v for v in summary.values() if v["kind"] == "aa"]
    reg = [v for v in summary.values() if v["kind"] == "regression"]
    false_fail = max(v["judge"] for v in aa)
    detection = min(v["judge"] for v in reg)
    strict_beaten = (max(v["judge"] - v["strict"] for v in aa) <= 0
                     and min(v["judge"] - v["strict"] for v in reg) >= 0)
    lenient_worse = [name for name, v in summary.items()
                     if (v["kind"] == "aa" and v["judge"] > v["lenient"])
                     or (v["kind"] == "regression" and v["judge"] < v["lenient"])]
    throughput = total / elapsed
    print(f"   false failures on A/A (worst window): {pct(false_fail)} "
          f"(target <= {pct(TARGET_FALSE_FAIL)}): {verdict(false_fail <= TARGET_FALSE_FAIL)}")
    print(f"   detection of each regression (worst): {pct(detection)} "
          f"(target >= {pct(TARGET_DETECTION)}): {verdict(detection >= TARGET_DETECTION)}")
    print(f"   below the minimum samples, pass given: {bad_nodata} times "
          f"(target 0): {verdict(bad_nodata == 0)}")
    print(f"   judge no worse than the threshold judge (failureLimit 0) on both rates in "
          f"every scenario: {verdict(strict_beaten)}")
    print("   (lenient threshold judge, failureLimit 3, for information: the judge is worse in "
          f"{', '.join(lenient_worse) or 'no scenario'}; it cannot fail before 4 windows)")
    print(f"   coalmine judge: {total} cases in {elapsed:.2f} s = {throughput:.0f} cases/s "
          f"including {startup:.2f} s of process start "
          f"({total / max(elapsed - startup, 1e-9):.0f} cases/s without it); "
          f"target thousands/s: {verdict(throughput >= 1000)}")
    print(f"   load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def measured(side: dict) -> int:
    """Samples measured on a side: the minimum is counted before outliers are removed."""
    return side["count"] + side["outliers"]


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


if __name__ == "__main__":
    raise SystemExit(main())
