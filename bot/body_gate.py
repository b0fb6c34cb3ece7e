"""How the edge reads a body whose sender is not known yet: in bounded chunks, within a byte
budget per process.

Anyone on the network can post to the webhook endpoints, and GitHub's signature can only be
checked once the whole body is read. So every body is read in BODY_CHUNK_BYTES pieces (the
signature computed as they arrive), never past the configured cap, and the bytes all such bodies
may hold at once in one process are bounded by a BodyGate: memory stays under the pod's limit
whatever arrives, while many small deliveries are still read at the same time.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from werkzeug.exceptions import RequestEntityTooLarge

BODY_CHUNK_BYTES = 64 * 1024
# Memory one process may spend on bodies whose sender is not yet known (GitHub's signature is
# only checked at the end of the body): five bodies of the default 25 MiB cap, or hundreds of
# GitHub's usual few-KB deliveries.
UNVERIFIED_BODY_BUDGET_BYTES = 128 * 1024 * 1024
RETRY_AFTER_S = 5


class BodyGate:
    """A byte budget for the bodies one process reads before their sender is known.

    A reader reserves what its body can really use before reading it: the declared
    Content-Length (bounded by the cap; the stream yields no more), or, for a chunked body that
    declares nothing, each piece as it arrives. So many small deliveries are read at once while
    a flood of large or unsized ones still holds at most `budget` bytes. Refusing at once (503
    with Retry-After) rather than queueing keeps a flood from holding threads, and a 503 is what
    a forge counts as a failed delivery it may send again.
    """

    def __init__(self, max_body_bytes: int, budget_bytes: int = UNVERIFIED_BODY_BUDGET_BYTES):
        cap = max(1, max_body_bytes)
        # Never fewer than two bodies of the cap at once, so one slow sender cannot shut out
        # every other (with a cap over half the budget the bound is 2 × cap, as it always was).
        self.budget = max(budget_bytes, 2 * cap)
        self.capacity = self.budget // cap  # bodies of the cap that fit at once
        self._lock = threading.Lock()
        self._reserved = 0
        self._readers = 0

    @property
    def in_use(self) -> int:
        """Readers holding a reservation now (for tests and metrics)."""
        return self._readers

    @property
    def reserved(self) -> int:
        """Bytes reserved now; never more than `budget`."""
        return self._reserved

    @contextmanager
    def reserve(self, declared: int | None) -> Iterator[BodyReservation | None]:
        """Yields a reservation of `declared` bytes (none yet for an unsized body), or None
        when the budget has no room for it; what was reserved is given back when the block
        ends, however it ends."""
        held = declared or 0
        with self._lock:
            if self._reserved + held > self.budget:
                admitted = False
            else:
                admitted = True
                self._reserved += held
                self._readers += 1
        if not admitted:
            yield None
            return
        reservation = BodyReservation(self, held)
        try:
            yield reservation
        finally:
            with self._lock:
                self._reserved -= reservation.held
                self._readers -= 1

    def grow(self, more: int) -> bool:
        """Reserves `more` bytes for a reader already admitted, if the budget has room."""
        with self._lock:
            if self._reserved + more > self.budget:
                return False
            self._reserved += more
            return True


class BodyReservation:
    """The bytes one reader holds of its BodyGate's budget."""

    def __init__(self, gate: BodyGate, held: int) -> None:
        self._gate = gate
        self.held = held

    def cover(self, size: int) -> bool:
        """Holds at least `size` bytes, reserving the difference; False when the budget has
        no room (the body must not grow past what is held)."""
        if size <= self.held:
            return True
        if not self._gate.grow(size - self.held):
            return False
        self.held = size
        return True


class GateFull(Exception):
    """An unsized body grew past what the BodyGate's budget has left."""


def read_body(stream: IO[bytes], cap: int, mac: hmac.HMAC | None = None,
               reservation: BodyReservation | None = None) -> bytearray:
    """The body, read in chunks into one buffer and fed to `mac` as it arrives.

    Stops with 413 as soon as the body passes `cap`, so an endless (chunked) body is never read
    to its end, and with GateFull as soon as it passes what `reservation` can hold; one
    bytearray grows in place instead of chunks being joined into a copy.
    """
    body = bytearray()
    while chunk := stream.read(BODY_CHUNK_BYTES):
        size = len(body) + len(chunk)
        if size > cap:
            raise RequestEntityTooLarge()
        if reservation is not None and not reservation.cover(size):
            raise GateFull()
        body += chunk
        if mac is not None:
            mac.update(chunk)
    return body
