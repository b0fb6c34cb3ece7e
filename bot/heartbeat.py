"""Keeping a Redis-held claim alive while its holder works.

Both rollout locks and job leases live only seconds unless renewed, so a worker that dies lets
go of them quickly; while it lives, a daemon thread renews them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def renewing(renew: Callable[[], bool], every_s: float, name: str) -> Iterator[None]:
    """Call `renew` every `every_s` seconds while the block runs; it returns False to stop."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every_s):
            if not renew():
                return

    watchdog = threading.Thread(target=loop, name=name, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join(timeout=5)
