"""When to try a forge call again, and how long to wait first.

Forges fail transiently (5xx, dropped connections) and throttle (429, or 403 with a rate-limit
header). Waiting as the server asks is polite and usually enough; waiting longer than a job can
afford is not, so a request for a long pause ends the call with an error instead, and the job's own
retry picks it up later. `sleep` and `clock` are injectable so tests can prove the waits without
spending them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def delay(self, status: int | None, headers: Mapping[str, str], attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up.

        `status` is None for a transport failure (no response at all). `headers` must look up
        names case-insensitively, as httpx and requests headers do.
        """
        if attempt >= self.max_attempts or not self._retryable(status, headers):
            return None
        asked = self._server_wait(headers)
        if asked is None:
            return min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
        return asked if asked <= self.max_delay_s else None

    @staticmethod
    def _retryable(status: int | None, headers: Mapping[str, str]) -> bool:
        if status is None or status >= 500 or status == 429:
            return True
        # A 403 is a throttle only when it says so; otherwise it is a real permission error.
        return status == 403 and (
            "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
        )

    def _server_wait(self, headers: Mapping[str, str]) -> float | None:
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            if retry_after.strip().isdigit():
                return float(retry_after)
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - self.clock())
            except (TypeError, ValueError):
                return None
        # GitHub: X-RateLimit-Reset once the allowance is spent; GitLab names it without the
        # X- (RateLimit-Reset, on its 429s). Both are Unix times.
        reset = headers.get("ratelimit-reset")
        if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
            reset = headers["x-ratelimit-reset"]
        if reset is not None:
            try:
                return max(0.0, float(reset) - self.clock())
            except ValueError:
                return None
        return None
