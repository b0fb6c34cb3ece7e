"""`coalmine judge --cases`: the JSON Lines contract, through a real process's stdin and stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def case(case_id: str, factor: float, samples: int = 12, **metric) -> dict:
    baseline = [100.0 + (7 * i) % 13 for i in range(samples)]
    return {
        "id": case_id,
        "thresholds": {"pass": 95, "marginal": 75},
        "metrics": [
            {"name": "p99 latency", "direction": "increase", "critical": False,
             "canary": [v * factor for v in baseline], "baseline": baseline, **metric},
            {"name": "error rate", "direction": "increase", "critical": False,
             "canary": [0.01] * samples, "baseline": [0.01] * samples},
        ],
    }


def judge(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", "judge", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def lines(*cases: dict) -> str:
    return "".join(json.dumps(c) + "\n" for c in cases)


def test_stdin_to_stdout_one_verdict_per_case_in_order() -> None:
    done = judge("--cases", "-", stdin=lines(case("good", 1.0), case("slow", 1.3),
                                             case("short", 1.3, samples=4)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(o["id"], o["verdict"], o["score"]) for o in out] == [
        ("good", "pass", 100.0), ("slow", "fail", 50.0), ("short", "nodata", 0.0)]
    for o in out:
        assert {"id", "verdict", "score", "metrics"} <= set(o)
        for m in o["metrics"]:
            assert {"name", "classification", "explanation"} <= set(m)
    slow = out[1]["metrics"][0]
    assert slow["classification"] == "high"
    assert slow["explanation"].startswith(
        "p99 latency 30 % higher on canary (mean ratio 1.30), p < 0.001, allowed +10 %")
    assert out[2]["metrics"][0]["classification"] == "nodata"


def test_a_file_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(lines(case("a", 1.0)) + "\n   \n" + lines(case("b", 0.5)))
    done = judge("--cases", str(path))
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["id"] for x in done.stdout.splitlines()] == ["a", "b"]


def test_malformed_lines_are_named_skipped_and_fail_the_exit_status() -> None:
    bad_number = case("bad", 1.0)
    bad_number["metrics"][0]["canary"][2] = "12ms"
    huge = json.dumps(case("huge", 1.0)).replace("100.0", "1" + "0" * 5000, 1)
    deep = "[" * 100_000 + "]" * 100_000
    stdin = (lines(case("first", 1.0)) + "{not json\n" + lines(bad_number)
             + '["a list"]\n' + huge + "\n" + deep + "\n" + lines(case("last", 1.3)))
    done = judge("--cases", "-", stdin=stdin)
    assert done.returncode == 1
    assert [json.loads(x)["id"] for x in done.stdout.splitlines()] == ["first", "last"]
    errors = done.stderr.splitlines()
    assert errors[:3] == [
        "<stdin>:2: not JSON: Expecting property name enclosed in double quotes (column 2)",
        "<stdin>:3: metrics[0].canary[2]: expected a number or null, got '12ms'",
        "<stdin>:4: expected a JSON object, got a list",
    ]
    # Python's own words for these two; the line number and "not JSON" are ours.
    assert errors[3].startswith("<stdin>:5: not JSON: Exceeds the limit (4300 digits)")
    assert errors[4].startswith("<stdin>:6: not JSON: maximum recursion depth exceeded")
    assert errors[5:] == ["coalmine judge: 5 malformed line(s) skipped"]


def test_an_unreadable_file_is_exit_status_2(tmp_path: Path) -> None:
    done = judge("--cases", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert "missing.jsonl: cannot read: No such file or directory" in done.stderr


def test_help_lists_the_subcommand_and_its_option() -> None:
    top = subprocess.run([sys.executable, "-m", "bot.cli", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60, check=False)
    assert "judge" in top.stdout
    sub = judge("--help")
    assert sub.returncode == 0 and "--cases FILE" in sub.stdout and "standard input" in sub.stdout
