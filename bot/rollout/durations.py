"""Durations as Argo Rollouts writes them: `30` (seconds), `"30s"`, `"5m"`, `"1h30m"`.

Argo reads pause durations as an int of seconds or a Go duration string, and metric intervals as
Go duration strings. Coalmine accepts both forms everywhere so a bare number never surprises.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
HINT = '(use 30, "30s", "5m", "1h")'


class DurationError(ValueError):
    """The value is not a duration; the message quotes it and shows accepted forms."""


def parse_duration(value: object) -> float:
    """Seconds in `value`: a non-negative int, a digit string, or a Go duration like "1h30m"."""
    if isinstance(value, bool) or value is None:
        raise DurationError(f"{value!r} is not a duration {HINT}")
    if isinstance(value, int):
        if value < 0:
            raise DurationError(f"{value!r} is negative; a duration must be >= 0")
        return float(value)
    if not isinstance(value, str):
        raise DurationError(f"{value!r} is not a duration {HINT}")
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    if not text or _PART.sub("", text) != "":
        raise DurationError(f"{value!r} is not a duration {HINT}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """Short human form for reports: 45s, 5m, 1h30m, 2m30s."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"
