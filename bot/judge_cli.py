"""`coalmine judge --cases FILE|-`: the statistical judge over JSON Lines of cases (README: Judge).

Kept apart from bot/cli.py because it needs scipy: the other commands start without it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TextIO

from bot.judge.cases import CaseError, parse_case, result_json
from bot.judge.model import Case
from bot.judge.score import judge_cases

# Cases judged together: their rank tests go to scipy in one batch per window size, which is
# where the throughput comes from (bot/judge/stats.py), while output still streams.
JUDGE_BATCH = 256


def judge(source: str) -> int:
    """Malformed lines are reported on stderr (file:line: key: problem) and skipped, so one bad
    line of a backtest does not hide the verdicts of the thousands around it; the exit status
    is then 1, so nobody takes the output for complete."""
    if source == "-":
        return _judge_stream(sys.stdin, "<stdin>")
    try:
        with open(source, encoding="utf-8") as stream:
            return _judge_stream(stream, source)
    except OSError as exc:
        print(f"coalmine judge: {source}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2


def _judge_stream(lines: Iterable[str], name: str) -> int:
    bad = 0
    batch: list[Case] = []
    out: TextIO = sys.stdout
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            batch.append(parse_case(json.loads(line)))
        except json.JSONDecodeError as exc:
            bad += 1
            print(f"{name}:{number}: not JSON: {exc.msg} (column {exc.colno})", file=sys.stderr)
        except CaseError as exc:
            bad += 1
            print(f"{name}:{number}: {exc}", file=sys.stderr)
        except (ValueError, RecursionError) as exc:  # an integer of 4300+ digits; deep nesting
            bad += 1
            reason = str(exc).split(";")[0] or type(exc).__name__
            print(f"{name}:{number}: not JSON: {reason}", file=sys.stderr)
        if len(batch) >= JUDGE_BATCH:
            _write_verdicts(batch, out)
            batch = []
    _write_verdicts(batch, out)
    if bad:
        print(f"coalmine judge: {bad} malformed line(s) skipped", file=sys.stderr)
    return 1 if bad else 0


def _write_verdicts(cases: list[Case], out: TextIO) -> None:
    out.writelines(json.dumps(result_json(result), allow_nan=False) + "\n"
                   for result in judge_cases(cases))
    out.flush()
